"""Early-exit baselines on the same backbone (docs/dact.md §6): static truncation, DeeBERT
and PABEE, beside DACT-BERT.

Every baseline has DACT-BERT's architecture minus the use of the halting units: a classifier
after every block, reading the block's head input x_n (its [CLS] state, or the token mean).
So a `DACTBert` checkpoint serves them all; a baseline reads the per-block answers y_n of its
DACT heads and ignores h_n. What differs is how the classifiers are trained (train.py's
`--blocks`, mapped by `training_settings`; the baselines' own phase-1 losses are
`phase1_block_weights` here) and the exit rule (here):

    method   knob               exit after block n when ...                  answer
    static   k (int, 1..N)      n = k                                        y_k
    deebert  S (float, >= 0)    entropy(y_n) < S  (S = 0: full depth)        y_n
    pabee    t (int, 1..N)      the argmaxes of y_{n-t+1} .. y_n agree       y_n
    dact     (none; τ is a      `can_halt(a_n, p_n, N − n)` (model.py)       a_n
             training knob)

and every rule stops at block N. Each rule is a `step` function for `run_with_early_exit`:
per example, with batch compaction, exactly like `DACTBert.predict`, so blocks, FLOPs and
wall-clock are counted the same way for every method.

References: DeeBERT, Xin et al., ACL 2020 (entropy in nats of the softmax, as in their code);
PABEE, Zhou et al., NeurIPS 2020. PABEE's paper and code count the patience as the number
of times the prediction stayed *unchanged*, so their patience t stops after t + 1 agreeing
blocks; here (as in docs/dact.md §6) t counts the agreeing blocks themselves: our t = their t + 1,
and t = 1 exits after block 1.
"""

import math

import torch

from .errors import TinydactError
from .model import run_with_early_exit
from .options import check_method

# `tinydact train --method M` sets these TrainConfig fields; "phase" is the step of the
# method's recipe the user asks for with --phase (None: the method has one step).
TRAINING = {
    ("dact", None): {},  # the whole recipe (train.recipe)
    ("dact", 1): {"phase": 1},  # backbone + every block's answer (--blocks all, or last)
    ("dact", 2): {"phase": 2},  # the DACT loss CE(a_N) + τ Σ p_n (--freeze-backbone: heads only)
    ("static", None): {"phase": 1, "blocks": "all"},  # one classifier per block, trained jointly
    ("deebert", 1): {"phase": 1, "blocks": "last"},  # stage 1: backbone + last classifier
    ("deebert", 2): {"phase": 1, "blocks": "all-but-last", "freeze_backbone": True},  # stage 2
    ("pabee", None): {"phase": 1, "blocks": "weighted"},  # jointly, loss Σ_j j·L_j / Σ_j j
}


def training_settings(method: str, phase: int | None) -> dict:
    """The TrainConfig fields of one training run of `method` (see TRAINING)."""
    check_method(method)
    steps = [p for m, p in TRAINING if m == method]
    if method == "dact":
        return dict(TRAINING[method, phase])
    if steps == [None]:
        if phase not in (None, 1):
            raise TinydactError(f"--method {method} trains in one step: leave out --phase (or give --phase 1)")
        return dict(TRAINING[method, None])
    if phase not in steps:
        raise TinydactError(f"--method {method} has two steps: give --phase 1 or --phase 2 (see tinydact train --help)")
    return dict(TRAINING[method, phase])


def method_settings(method: str, options: dict, given: set) -> dict:
    """The TrainConfig fields `tinydact train --method` sets (`training_settings`), checked
    against `options`: one the user `given` on the command line with another value is an
    error, not silently replaced."""
    settings = training_settings(method, options["phase"] if "phase" in given or method == "dact" else None)
    for name, value in settings.items():
        if name != "phase" and name in given and options[name] != value:
            flag = "--" + name.replace("_", "-")
            raise TinydactError(f"--method {method} sets {flag} {value}; it cannot be combined with {flag} {options[name]}")
    return settings


def phase1_block_weights(blocks: str, N: int) -> list:
    """w_1..w_N, the weight of block j's cross-entropy L_j in phase 1's loss Σ_j w_j·L_j / Σ_j w_j:
    DACT's recipe trains every block's answer (all) or the last's (last); the baselines'
    own losses are PABEE's depth weights and DeeBERT's second stage."""
    j = range(1, N + 1)
    if blocks == "all":
        return [1.0 for _ in j]  # the plain mean over blocks
    if blocks == "last":
        return [float(n == N) for n in j]  # a plain classifier on the last block
    if blocks == "weighted":
        return [float(n) for n in j]  # PABEE: Σ_j j·L_j / Σ_j j, deeper blocks weigh more
    if blocks == "all-but-last":
        return [float(n < N) for n in j]  # DeeBERT stage 2: the last module is left alone
    raise ValueError(f"unknown --blocks {blocks!r}")


def dev_score(blocks: str, metrics: dict) -> float:
    """The dev figure a run keeps its best model by: the accuracy, except in DeeBERT's stage 2,
    which leaves the last block's answer alone: the mean accuracy over the blocks it trains."""
    if blocks == "all-but-last" and "block_accuracy" in metrics:
        return sum(metrics["block_accuracy"][:-1]) / (len(metrics["block_accuracy"]) - 1)
    return metrics["accuracy"]


def check_knob(method: str, knob, num_blocks: int):
    """The knob as its method wants it (an int k or t, a float S, None), or a clear error."""
    check_method(method)
    if method == "dact":
        if knob is not None:
            raise TinydactError("dact has no exit knob (its trade-off is τ, set at training time): leave out --knob")
        return None
    if knob is not None and not math.isfinite(knob):
        raise TinydactError(f"--knob must be a finite number, got {knob}")
    if knob is None:
        raise TinydactError(f"--method {method} needs --knob ({'the entropy threshold S' if method == 'deebert' else f'an integer 1..{num_blocks}'})")
    if method == "deebert":
        if not knob >= 0:
            raise TinydactError(f"deebert's entropy threshold must be >= 0, got {knob}")
        return float(knob)
    if knob != int(knob) or not 1 <= knob <= num_blocks:
        raise TinydactError(f"{method}'s knob must be an integer from 1 to {num_blocks}, got {knob}")
    return int(knob)


def entropy(y: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of probability rows y (B, K) -> (B,); 0·log 0 = 0."""
    return torch.special.entr(y).sum(-1)  # −Σ_c y_c log y_c


def exit_rule(model, method: str, knob, batch_size: int, device):
    """The exit rule of a baseline as (step, start state) for `run_with_early_exit`.
    `step(n, x_n, state)` gets x_n (b, H), what block n's head reads for the live rows (the
    [CLS] state, or the token mean), and returns (state, probs (b, K), done (b,) bool)."""
    heads, K = model.heads, model.num_labels

    if method == "static":
        k = knob

        def step(n, x_n, state):
            b = x_n.size(0)
            if n < k:  # nothing to decide before block k: no classifier runs
                return state, x_n.new_zeros(b, K), torch.zeros(b, dtype=torch.bool, device=x_n.device)
            y_n, _ = heads[n - 1](x_n)  # (b, K); the halting value is ignored
            return state, y_n, torch.ones(b, dtype=torch.bool, device=x_n.device)

        return step, ()

    if method == "deebert":
        S = knob

        def step(n, x_n, state):
            y_n, _ = heads[n - 1](x_n)  # (b, K)
            # exit when the block's answer is confident: entropy(y_n) < S
            return state, y_n, entropy(y_n) < S

        return step, ()

    if method == "pabee":
        t = knob

        def step(n, x_n, state):
            previous, count = state  # argmax of y_{n-1} (−1 before block 1), agreeing blocks so far
            y_n, _ = heads[n - 1](x_n)  # (b, K)
            c_n = y_n.argmax(-1)  # (b,)
            # count = how many consecutive blocks, ending at n, answer c_n
            count = torch.where(c_n == previous, count + 1, torch.ones_like(count))
            return (c_n, count), y_n, count >= t

        start = (torch.full((batch_size,), -1, device=device), torch.zeros(batch_size, dtype=torch.long, device=device))
        return step, start

    raise TinydactError(f"no exit rule for method {method!r}")


@torch.no_grad()
def predict_exit(model, input_ids, attention_mask=None, token_type_ids=None, method: str = "dact", knob=None):
    """`DACTBert.predict` for any method: labels (B,), probabilities at the exit (B, K),
    blocks executed (B,). Per example early exit with batch compaction; `dact` is
    `model.predict` itself (paper rule)."""
    knob = check_knob(method, knob, model.num_blocks)
    if method == "dact":
        return model.predict(input_ids, attention_mask, token_type_ids)
    step, state = exit_rule(model, method, knob, input_ids.size(0), input_ids.device)
    probs, blocks = run_with_early_exit(model.bert, input_ids, attention_mask, token_type_ids, step, state, model.read)
    return probs.argmax(-1), probs, blocks
