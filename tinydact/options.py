"""The names the whole project agrees on, each listed once, and the one check of each.

Halting rules, what the DACT heads read, dtypes, methods and their exit knobs: the library,
the command line and the benchmarks all take their choices from here. Then every training
option (`TrainConfig`, with its help text and range), which option a run uses (`APPLIES`: one
it does not use is an error, never ignored), and the method a checkpoint was trained for
(`trained_method`, and `eval_method`, the exit rule `tinydact eval` runs on it). No torch in
this file: `tinydact --help` builds its options from it without importing torch.
"""

import math
from dataclasses import dataclass, field, fields

from .errors import TinydactError

RULES = ("paper", "tight")  # the halting rules (docs/dact.md §3): the paper's bound, or the tight one
SCHEDULERS = ("depth", "compact", "static")  # `tinydact serve`: scheduler.py
POLICIES = ("oldest", "fair", "fullest")  # which depth queue the depth scheduler serves next

# What each DACT head reads after its block (our choices): the [CLS] state (the default), the
# same through a LayerNorm of the head's own, or the mean of the block's token states.
HEAD_INPUTS = ("cls", "cls-norm", "mean")

# Compute dtypes by name. float16 runs on CUDA only; training takes float32 or bfloat16 (autocast).
DTYPES = ("float32", "bfloat16", "float16")
TRAIN_DTYPES = ("float32", "bfloat16")

# The early-exit methods: DACT and the baselines of docs/dact.md §6 (baselines.py).
METHODS = ("dact", "static", "deebert", "pabee")
KNOBS = {"static": "k (exit at block k)", "deebert": "S (exit when the answer's entropy < S)",
         "pabee": "t (exit when t blocks in a row agree)"}  # each baseline's exit knob (baselines.py)


def check_choice(value, choices: tuple, what: str):
    """`value` if it is one of `choices`, else a `TinydactError` naming `what` and the choices."""
    if value not in choices:
        raise TinydactError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_serve_options(scheduler: str, given: set):
    """`tinydact serve`: an error for an option given (a name in `given`) that `scheduler` does
    not use (static runs every block: no halting rule; only the depth scheduler has a policy)."""
    unused = {"static": {"rule", "policy"}, "compact": {"policy"}}.get(scheduler, set()) & set(given)
    if unused:
        raise TinydactError(f"--{min(unused)} does nothing with --scheduler {scheduler}")


def check_rule(rule):
    return check_choice(rule, RULES, "the halting rule")


def check_head_input(head_input):
    return check_choice(head_input, HEAD_INPUTS, "the head input")


def check_dtype(name, choices: tuple = DTYPES):
    return check_choice(name, choices, "the dtype")


def check_method(method):
    return check_choice(method, METHODS, "the method")


# ----------------------------------------------------------------------------------------
# Training options: one dataclass, from which `tinydact train` builds its command line
# ----------------------------------------------------------------------------------------

# The initial halting bias b_h of new DACT heads, h_n ≈ sigmoid(3.0) ≈ 0.953 (why: dact.py).
HALT_BIAS = 3.0

BLOCKS = ("all", "last", "weighted", "all-but-last")  # phase 1: which blocks' answers learn


def option(default, help: str, **click):
    """A training option: its default, its help text and (for the command line) its range."""
    return field(default=default, metadata={"help": help, **click})


@dataclass
class TrainConfig:
    """Every training option, with its default and help text (the command line is built from it)."""

    model: str | None = option(None, "pretrained BERT directory or downloaded model name, or a tinydact checkpoint")
    train: str | None = option(None, "training TSV (GLUE format, or text<TAB>label)")
    out: str | None = option(None, "run folder: best/, final/, state.pt, log.jsonl (the recipe: one subfolder per phase)")
    dev: str | None = option(None, "dev TSV, evaluated during training")
    task: str | None = option(None, "data format (default: detected from the file)")
    phase: int | None = option(None, "run one phase: 1 (cross-entropy) or 2 (DACT loss); default: the whole recipe", min=1, max=2)
    blocks: str = option("all", "phase 1: cross-entropy on every block's answer (all), the last's (last), "
                         "depth-weighted (weighted: PABEE) or all but the last (all-but-last: DeeBERT stage 2)", choices=BLOCKS)
    tau: float = option(0.1, "ponder penalty τ of the DACT loss; with the recipe on the 6-block all-MiniLM-L6-v2, τ 0.1 "
                        "gave 88.65% on SST-2 dev at 3.25 blocks of 6 (the shipped model: τ 0.16, 2.79 blocks); the "
                        "authors' default, 1e-3, is for their 12-block models and never stops early here", min=0.0)
    tau_end: float = option(0.0, "phase 2, our option: τ rises linearly from --tau to --tau-end over the run (0: constant)", min=0.0)
    freeze_backbone: bool = option(False, "phase 2 (and DeeBERT's stage 2): train only the per-block modules, on cached head inputs")
    epochs: float = option(1.0, "epochs of a single phase (the recipe: --phase-epochs)", min=0.0, min_open=True)
    phase_epochs: str = option("2,3,1", "the recipe: epochs of phase 1, heads only and joint")
    keep_states: bool = option(False, "the recipe: keep each phase's state.pt, best/, final/ and cache once --out/final is "
                               "written (without it only final/, recipe.json and each phase's log.jsonl remain)")
    batch_size: int = option(32, "examples per optimizer step (all processes together)", min=1)
    max_length: int = option(128, "tokens per example, longer ones are truncated", min=2)
    lr: float = option(5e-5, "backbone learning rate (AdamW, linear warm-up then linear decay)", min=0.0)
    head_lr: float = option(1e-3, "learning rate of the DACT modules", min=0.0)
    halt_lr: float = option(0.0, "phase 2: learning rate of the halting units h_n = sigmoid(w_h·z + b_h); 0: --head-lr", min=0.0)
    warmup: float = option(0.1, "fraction of the steps with a linear warm-up", min=0.0, max=1.0)
    weight_decay: float = option(0.01, "AdamW weight decay of the backbone's matrices", min=0.0)
    clip: float = option(1.0, "gradient-norm clipping", min=0.0, min_open=True)
    halt_bias: float = option(HALT_BIAS, "new heads only: initial b_h, so h_n ≈ sigmoid(b_h) at the start (ours: 3, h ≈ 0.95; "
                              "the authors' DACT code starts at 0, h = 0.5)")
    shared_classifier: bool = option(False, "new heads only: one answer classifier shared by every block's head, as in the "
                                     "authors' DACT code (the halting units stay one per block)")
    deep_supervision: float = option(0.0, "phase 2, our option: weight λ of each block's own cross-entropy kept beside the "
                                     "DACT loss: L + λ · mean over blocks of −log y_n[label]; 0: off", min=0.0)
    head_input: str = option("cls", "new heads only, our option: what each DACT module reads after its block: the [CLS] "
                             "state (cls), the same through a LayerNorm (cls-norm), or the mean of the token states (mean)",
                             choices=HEAD_INPUTS)
    distill: float = option(0.0, "phase 1, our option: self-distillation weight γ: each block's loss is (1−γ)·CE + "
                            "γ·T²·KL(last block's softened answer ‖ this block's); 0: off", min=0.0, max=1.0)
    distill_temperature: float = option(3.0, "phase 1 with --distill: the softening temperature T", min=0.0, min_open=True)
    rule: str = option("paper", "phase 2: halting rule for dev evaluation", choices=RULES)
    seed: int = option(0, "random seed (batch order, dropout, new heads)")
    eval_every: int = option(0, "steps between dev evaluations; 0: once per epoch", min=0)
    save_every: int = option(200, "steps between resume saves (state.pt)", min=1)
    max_steps: int = option(0, "stop each phase after this many steps (0: no limit), e.g. for a smoke run", min=0)
    cache: str | None = option(None, "with --freeze-backbone: file for the frozen backbone's head inputs, reused when "
                               "model and data match")
    dtype: str = option("float32", "compute dtype: bfloat16 runs forward and backward under torch.autocast (float32 master "
                        "weights and loss; fast on CPUs with AVX512-BF16/AMX and on GPUs)", choices=TRAIN_DTYPES)
    save_dtype: str = option("float32", "dtype of best/ and final/ (float16 halves the size)", choices=DTYPES)


def check_config(cfg: TrainConfig, one_phase: bool = True) -> None:
    """Every option against its range and choices (the field's metadata), before any work:
    the same rules for the command line, the library and a resumed run's saved settings."""
    for f in fields(cfg):
        v, m, flag = getattr(cfg, f.name), f.metadata, "--" + f.name.replace("_", "-")
        if v is None or isinstance(v, bool):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise TinydactError(f"{flag} must be a finite number, got {v}")
        if "choices" in m:
            check_choice(v, m["choices"], flag)
        low_ok = "min" not in m or (v > m["min"] if m.get("min_open") else v >= m["min"])
        if not low_ok or ("max" in m and v > m["max"]):
            bound = f"{'>' if m.get('min_open') else '>='} {m['min']}" + (f" and <= {m['max']}" if "max" in m else "")
            raise TinydactError(f"{flag} must be {bound}, got {v}")
    if one_phase and cfg.phase is None:
        raise TinydactError("one phase needs --phase 1 or 2 (without --phase: the whole recipe)")


# Which run uses which option: an option set that the run would not use is an error
# (`check_options_apply`), never silently ignored. Each entry: option -> (the runs it applies
# to, in words; whether the run `c` uses it, given what --model's DACT heads read, None
# when it has none). A
# run is the recipe (phase None: it sets some options for each phase itself) or one phase.
APPLIES = {
    "blocks": ("phase 1 (the recipe sets it itself)", lambda c, heads: c.phase == 1),
    "distill": ("phase 1 with --blocks other than last, or the recipe", lambda c, heads: c.phase != 2 and c.blocks != "last"),
    "distill_temperature": ("--distill", lambda c, heads: c.phase != 2 and c.distill > 0),
    "tau": ("the DACT loss: phase 2 or the recipe", lambda c, heads: c.phase != 1),
    "tau_end": ("the DACT loss: phase 2 or the recipe", lambda c, heads: c.phase != 1),
    "halt_lr": ("the DACT loss: phase 2 or the recipe", lambda c, heads: c.phase != 1),
    "deep_supervision": ("the DACT loss: phase 2 or the recipe", lambda c, heads: c.phase != 1),
    "rule": ("dev evaluation with halting: phase 2 or the recipe, with --dev", lambda c, heads: c.phase != 1 and c.dev),
    "eval_every": ("runs with --dev", lambda c, heads: c.dev),
    "freeze_backbone": ("phase 2, or phase 1 with --blocks all-but-last (DeeBERT's stage 2); the recipe sets it itself",
                        lambda c, heads: c.phase == 2 or c.phase == 1 and c.blocks == "all-but-last"),
    "cache": ("--freeze-backbone", lambda c, heads: c.freeze_backbone),
    "lr": ("one phase whose backbone trains (not --freeze-backbone; the recipe sets it for each phase itself)",
           lambda c, heads: c.phase is not None and not c.freeze_backbone),
    "head_lr": ("one phase (the recipe sets it for each phase itself)", lambda c, heads: c.phase is not None),
    "weight_decay": ("a backbone that trains (not --freeze-backbone)", lambda c, heads: not c.freeze_backbone),
    "halt_bias": ("new DACT heads: a --model without them (a plain BERT)", lambda c, heads: not heads),
    "head_input": ("new DACT heads: a --model without them (a plain BERT)", lambda c, heads: not heads),
    "shared_classifier": ("new DACT heads (a --model without them, a plain BERT) trained for DACT: the recipe, phase 1 "
                          "with --blocks all, or phase 2", lambda c, heads: not heads and (c.phase != 1 or c.blocks == "all")),
    "epochs": ("one phase (the recipe: --phase-epochs)", lambda c, heads: c.phase is not None),
    "phase_epochs": ("the recipe (no --phase)", lambda c, heads: c.phase is None),
    "keep_states": ("the recipe (no --phase)", lambda c, heads: c.phase is None),
}


NEW_HEADS = ("halt_bias", "head_input", "shared_classifier")  # options of new heads: a model with heads has its own


def set_options(cfg: TrainConfig) -> set:
    """The options of `cfg` that differ from their defaults (a library caller's choices)."""
    return {f.name for f in fields(cfg) if getattr(cfg, f.name) != f.default}


def check_options_apply(cfg: TrainConfig, given, heads: str | None) -> None:
    """An error naming the first option in `given` (the TrainConfig fields the user set: on
    the command line, or `set_options`) that the run `cfg` would not use (see APPLIES).
    `heads`: what --model's DACT heads read (None: it has none, a plain BERT). What the
    recipe passes on to its phases or --method sets is not `given`: only the user's choices
    are checked."""
    for name in [f.name for f in fields(TrainConfig) if f.name in given and f.name in APPLIES]:
        where, used = APPLIES[name]
        if not used(cfg, heads):
            run = "the recipe" if cfg.phase is None else f"--phase {cfg.phase}" + (f" --blocks {cfg.blocks}" if cfg.phase == 1 else "")
            run += " with --freeze-backbone" if cfg.freeze_backbone else ""
            run = f"{cfg.model} already has heads that read {heads!r}" if heads and name in NEW_HEADS else f"this run is {run}"
            raise TinydactError(f"--{name.replace('_', '-')} applies to {where}; {run}: leave it out")


# ----------------------------------------------------------------------------------------
# The method a checkpoint was trained for
# ----------------------------------------------------------------------------------------

# (phase, phase 1's --blocks) of a training run -> the method its checkpoint serves. "plain"
# (only the last block's classifier learnt) is DeeBERT's stage 1, no early-exit method yet.
# Checkpoints record it as `dact.trained.method`; older ones are read through this table.
TRAINED_METHOD = {
    (2, None): "dact",  # phase 2 (or the recipe's final model): the halting units learnt
    (1, "all"): "static",  # every block's classifier, jointly
    (1, "weighted"): "pabee",
    (1, "all-but-last"): "deebert",  # stage 2: every classifier but the last, on stage 1's backbone
    (1, "last"): "plain",
}


def trained_method(trained) -> str | None:
    """The method of a checkpoint's `dact.trained` record (None when it has no record)."""
    if not isinstance(trained, dict):
        return None
    if "method" in trained:
        return trained["method"]
    return TRAINED_METHOD.get((trained.get("phase"), None if trained.get("phase") == 2 else trained.get("blocks")))


def eval_method(method, knob, rule_given: bool, no_halt: bool, model, num_blocks: int) -> str:
    """The exit rule `tinydact eval` runs: `method`, or by default the one the checkpoint `model`
    (None: the shipped one) was trained for (its config's `dact.trained`, `options.trained_method`). A method whose
    modules were never trained for it, or an option it does not use, is an error."""
    from .checkpoint import read_dact_config  # not at the top: it imports torch
    from .home import model_dir, shipped_model

    name = str(shipped_model() if model is None else model_dir(model))
    trained = trained_method(read_dact_config(name).get("trained"))
    if method is None and trained == "plain" or method == "dact" and trained not in (None, "dact"):
        what = {"plain": "a plain classifier on its last block (DeeBERT's stage 1)"}.get(trained, f"a {trained} baseline (phase 1 only)")
        instead = f"--method static --knob {num_blocks}" if trained == "plain" else f"--method {trained} --knob {KNOBS[trained].split()[0]}"
        raise TinydactError(f"{name} was trained as {what}: its halting units were never trained, so DACT's exit would be "
                            f"meaningless; evaluate it with {instead}, or train DACT's phase 2 on it first "
                            f"(tinydact train --phase 2 --model {name} ...)")
    if method is None and trained in KNOBS and knob is None:
        raise TinydactError(f"{name} was trained for {trained} exits: give its knob, --knob {KNOBS[trained]} "
                            "(or another exit rule with --method)")
    method = method or trained or "dact"
    if rule_given and (method != "dact" or no_halt):
        why = "--no-halt runs every block" if method == "dact" else f"{method} exits by its --knob"
        raise TinydactError(f"--rule is DACT's halting rule, and {why}: leave out --rule")
    return method
