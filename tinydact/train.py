"""Fine-tuning DACT-BERT: the recipe of docs/dact.md §4, as a plain PyTorch loop.

`tinydact train` without `--phase` runs the whole recipe (`recipe`), each phase in its own
subfolder of `--out`, and leaves the final model in `--out/final`:

    phase1/  cross-entropy on every block's answer y_n (the mean over blocks), backbone too
    heads/   the DACT loss CE(a_N) + τ Σ_n p_n, heads only, on the frozen backbone's cached
             per-block head inputs (an epoch takes seconds)
    joint/   the DACT loss again, everything trains

Once `final/` is written, the phases keep only their `log.jsonl` (`--keep-states` keeps all).
`--phase 1` or `--phase 2` runs one phase (`train`) for experiments: phase 1 with `--blocks
all|last` (or the baselines' `weighted` and `all-but-last`, see baselines.py), phase 2 with
or without `--freeze-backbone`; `--tau-end` (our option) raises τ linearly over a run.

The file reads in order: the options (options.py) -> the loss of one batch -> the schedules ->
the batches -> one phase's loop -> the recipe. What a run folder holds and why it survives
Ctrl-C, kill -9 and a second writer: runfolder.py. Several processes (`torchrun
--nproc-per-node=N -m tinydact train ...`, `--batch-size` the global batch): distributed.py.
"""

import json
import math
import os
import shutil
import signal
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .baselines import dev_score, phase1_block_weights
from .dact import dact_loss, deep_supervision_loss
from .data import batch_plan, encode_batch, example_lengths, read_examples
from .distributed import barrier, broadcast, distributed_setup, for_ranks, global_means, shard
from .errors import TinydactError
from .evaluate import cache_head_inputs, dev_metrics
from .checkpoint import checked_tokenizer, load_checkpoint, new_from_bert, read_dact_config
from .options import TrainConfig, check_config, check_options_apply, set_options
from .runfolder import (RUN_FILES, Interrupted, RunFolder, atomic_write, claim_folder, file_digest, leftovers, load_saved, on_sigterm, remove,
                        replace_folder, restore, run_kind, saved_config, saved_state, uninterrupted, worth_keeping)
from .tokenizer import Tokenizer


# ----------------------------------------------------------------------------------------
# The loss of one batch
# ----------------------------------------------------------------------------------------


def phase1_loss(model, xs, labels, blocks: str, distill: float = 0.0, T: float = 3.0):
    """Σ_j w_j·L_j / Σ_j w_j with L_j = CE(y_j, label), the cross-entropy of block j's answer,
    and w_j from `phase1_block_weights` (all: the mean over blocks; last: the last block's).

    With `distill` = γ > 0 (self-distillation, our option, as RomeBERT), every block j < N
    also learns from the last block's answer softened by the temperature T, which it cannot
    move (stop-gradient): L_j = (1 − γ)·CE(y_j, label) + γ·T²·KL(softmax(u_N / T) ‖ softmax(u_j / T)),
    u the logits. The halting guarantee does not depend on how the answers were trained."""
    w = phase1_block_weights(blocks, model.num_blocks)
    logits = {j: model.heads[j].logits(xs[:, j]) for j, w_j in enumerate(w) if w_j or (distill and j == len(w) - 1)}
    teacher = F.log_softmax(logits[len(w) - 1].detach().float() / T, -1) if distill else None  # (B, K)

    def L(j):  # blocks of weight 0 are skipped: their modules get no gradient at all
        ce = F.cross_entropy(logits[j], labels)
        if not distill or j == len(w) - 1:
            return ce
        kl = F.kl_div(F.log_softmax(logits[j].float() / T, -1), teacher, log_target=True, reduction="batchmean")
        return (1 - distill) * ce + distill * T * T * kl

    return sum(w_j * L(j) for j, w_j in enumerate(w) if w_j) / sum(w)


class BatchLoss(nn.Module):
    """The training loss of one batch as a module, because DistributedDataParallel wraps a
    module and synchronises the gradients of what runs inside its forward. `inputs` is the
    encoded batch, or cached head inputs x_1..x_N (B, N, H) when the backbone is frozen. Returns
    (loss, accuracy, ponder or None), each a mean over the batch's rows."""

    def __init__(self, model, cfg: TrainConfig):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, inputs, y_true, tau: float):
        model, cfg = self.model, self.cfg
        xs = inputs if cfg.freeze_backbone else model.head_inputs(*inputs)  # (B, N, H)
        if cfg.phase == 1:
            loss = phase1_loss(model, xs, y_true, cfg.blocks, cfg.distill, cfg.distill_temperature)
            return loss, (model.heads[-1].logits(xs[:, -1]).argmax(-1) == y_true).float().mean(), None
        a, p, y, _ = model.forward_heads(xs)  # (B, N, K), (B, N), (B, N, K)
        a_N = a[:, -1]  # the model's answer
        loss = dact_loss(a_N.float(), y_true, p.float(), tau)
        if cfg.deep_supervision:  # our option: + λ · (1/N) Σ_n −log y_n[label]
            loss = loss + cfg.deep_supervision * deep_supervision_loss(y, y_true)
        return loss, (a_N.argmax(-1) == y_true).float().mean(), p.sum(1).mean()


# ----------------------------------------------------------------------------------------
# Schedules (learning rate, τ) and the optimizer
# ----------------------------------------------------------------------------------------


def get_lr(step: int, warm: int, total: int) -> float:
    """The learning-rate factor of optimizer step `step` (0-based): a linear warm-up over
    `warm` steps to 1, then a linear decay to 0 at `total`."""
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


def tau_at(cfg: TrainConfig, step: int, total: int) -> float:
    """The ponder penalty of optimizer step `step` (0-based) of `total`: `tau`, or with
    `tau_end` a straight line from `tau` at the first step to `tau_end` at the last."""
    if not cfg.tau_end:
        return cfg.tau
    return cfg.tau + (cfg.tau_end - cfg.tau) * step / max(1, total - 1)


def adamw(groups) -> torch.optim.AdamW:
    """AdamW, in its fused form where this torch has one for the device (one kernel for all
    parameters: the optimizer step then costs a sixth of the loop over tensors)."""
    try:
        return torch.optim.AdamW(groups, fused=True)
    except (RuntimeError, TypeError, ValueError):  # an older torch, or a device without the fused kernel
        return torch.optim.AdamW(groups)


def parameter_groups(model, cfg: TrainConfig):
    """AdamW groups, each with its `base_lr`: the backbone at lr (no decay on biases and
    LayerNorms), the DACT modules at head_lr, their halting units at halt_lr."""
    decay, no_decay = [], []
    for name, p in model.bert.named_parameters():
        (no_decay if p.ndim == 1 else decay).append(p)
    groups = [
        {"params": decay, "base_lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "base_lr": cfg.lr, "weight_decay": 0.0},
        {"params": [p for n, p in model.heads.named_parameters() if ".halt." not in n],  # a shared classifier once
         "base_lr": cfg.head_lr, "weight_decay": 0.0},
        {"params": [p for n, p in model.heads.named_parameters() if ".halt." in n], "base_lr": cfg.halt_lr or cfg.head_lr, "weight_decay": 0.0},
    ]
    return groups[2:] if cfg.freeze_backbone else groups


# ----------------------------------------------------------------------------------------
# Batches: text for the full backbone, cached head inputs for a frozen one
# ----------------------------------------------------------------------------------------


class Batches:
    """The training data of a run, and its batches: `plan(epoch)` lists each batch's example
    indices, `get(idx)` gives (inputs, labels) on the device."""

    def __init__(self, cfg: TrainConfig, model, tokenizer, train_ex, dev_ex, device):
        self.cfg, self.examples, self.tokenizer, self.device = cfg, train_ex, tokenizer, device
        self.labels = torch.tensor([e.label for e in train_ex])
        self.lengths = [1] * len(train_ex) if cfg.freeze_backbone else example_lengths(train_ex, tokenizer, cfg.max_length)
        self.steps_per_epoch = len(batch_plan(self.lengths, cfg.batch_size))
        self.total = min(max(1, math.ceil(cfg.epochs * self.steps_per_epoch)), cfg.max_steps or math.inf)  # the run's steps
        self.train_xs, self.dev_xs = None, None
        if cfg.freeze_backbone:  # the backbone's head inputs, once; every "batch" then costs the same
            self.train_xs, self.dev_xs = cached_head_inputs(model, train_ex, dev_ex, tokenizer, cfg, device, self.used_rows())

    def used_rows(self) -> list | None:
        """The training examples a run that --max-steps stops within its first epoch uses (the
        rows of its batches); None: all of them."""
        if self.total >= self.steps_per_epoch or not self.cfg.max_steps:
            return None
        return sorted(i for idx in self.plan(0)[: self.total] for i in idx)

    def plan(self, epoch: int) -> list:
        return batch_plan(self.lengths, self.cfg.batch_size, shuffle=True, seed=self.cfg.seed + epoch)

    def get(self, idx):
        if self.train_xs is not None:
            return self.train_xs[idx].to(self.device, torch.float32), self.labels[idx].to(self.device)
        enc, y_true, _ = encode_batch(self.examples, idx, self.tokenizer, self.cfg.max_length)
        return [t.to(self.device) for t in enc], y_true.to(self.device)


def cached_head_inputs(model, train_ex, dev_ex, tokenizer, cfg: TrainConfig, device, rows=None):
    """The frozen backbone's head inputs for train and dev, from `cfg.cache` when its key
    (the bytes of the model's weights and of the data files, and max_length) matches. With
    `rows` (a run cut short by --max-steps) only those training examples are computed (the
    others stay 0, never read) and no cache file is read or written."""
    from .home import model_dir

    if rows is not None:
        train_xs = torch.zeros(len(train_ex), model.num_blocks, model.bert.config.hidden_size, dtype=torch.float16)
        train_xs[rows] = cache_head_inputs(model, [train_ex[i] for i in rows], tokenizer, cfg.max_length, device, "caching train head inputs")
        return train_xs, cache_head_inputs(model, dev_ex, tokenizer, cfg.max_length, device, "caching dev head inputs") if dev_ex else None
    files = [model_dir(cfg.model) / "model.safetensors", cfg.train] + ([cfg.dev] if cfg.dev else [])
    key = json.dumps({"files": [file_digest(f) for f in files], "max_length": cfg.max_length, "read": model.head_input})
    if cfg.cache and Path(cfg.cache).exists():
        saved = load_saved(Path(cfg.cache), "a tinydact cache of head inputs") if Path(cfg.cache).is_file() else None
        if not isinstance(saved, dict) or not {"key", "train", "dev"} <= set(saved):
            raise TinydactError(f"--cache {cfg.cache} is not a tinydact cache of head inputs; delete it or pass another file")
        if saved["key"] == key:
            return saved["train"], saved["dev"]
    train_xs = cache_head_inputs(model, train_ex, tokenizer, cfg.max_length, device, "caching train head inputs")
    dev_xs = cache_head_inputs(model, dev_ex, tokenizer, cfg.max_length, device, "caching dev head inputs") if dev_ex else None
    if cfg.cache:
        Path(cfg.cache).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(cfg.cache), lambda p: torch.save({"key": key, "train": train_xs, "dev": dev_xs}, p))
    return train_xs, dev_xs


# ----------------------------------------------------------------------------------------
# One phase
# ----------------------------------------------------------------------------------------


def heads_read(model) -> str | None:
    """What the DACT heads of checkpoint `model` read (None: a plain BERT, no heads yet)."""
    meta = read_dact_config(model) if model else {}
    return meta.get("head_input", "cls") if meta else None


def read_inputs(cfg: TrainConfig):
    """(train examples, dev examples or None, task, labels, the model's DACT settings or {} for
    a plain BERT), checked against each other: read before the run folder is touched, so bad
    input leaves nothing behind."""
    meta = read_dact_config(cfg.model)
    train_ex, task, labels = read_examples(cfg.train, cfg.task, meta.get("labels"))
    dev_ex = read_examples(cfg.dev, task, labels)[0] if cfg.dev else None
    if meta and meta["labels"] != labels:
        raise TinydactError(f"{cfg.model} was trained for labels {meta['labels']}, the data has {labels}")
    if meta and cfg.head_input != "cls" and cfg.head_input != heads_read(cfg.model):
        raise TinydactError(f"--head-input {cfg.head_input}: {cfg.model} already has heads that read {heads_read(cfg.model)!r}")
    Tokenizer.from_pretrained(cfg.model)
    return train_ex, dev_ex, task, labels, meta


def load_data_and_model(cfg: TrainConfig, device, inputs=None):
    """(train examples, dev examples or None, task, labels, tokenizer, model on `device`);
    `inputs`: what `read_inputs` returned, when it was called already."""
    train_ex, dev_ex, task, labels, meta = inputs or read_inputs(cfg)
    model = load_checkpoint(cfg.model)[0] if meta else new_from_bert(cfg.model, len(labels), cfg.halt_bias, head_input=cfg.head_input,
                                                                     shared_classifier=cfg.shared_classifier)
    if cfg.freeze_backbone:
        model.bert.requires_grad_(False)
    tokenizer = checked_tokenizer(cfg.model, model, meta.get("vocab_sha256"))
    return train_ex, dev_ex, task, labels, tokenizer, model.to(device)


def show_progress(bar, running: dict, stats: dict, best: dict | None) -> None:
    """Update the running means (an exponential average over ~50 steps) and the progress bar."""
    for k, v in stats.items():
        running[k] = v if k not in running else 0.98 * running[k] + 0.02 * v
    bar.update(1)
    bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()} | ({"dev": f"{best['accuracy']:.3f}/{best['avg_blocks']:.2f}"} if best else {}))


def is_better(cfg: TrainConfig, m: dict, best: dict | None) -> bool:
    """A higher dev score (`baselines.dev_score`); on a tie, fewer blocks."""
    return best is None or (dev_score(cfg.blocks, m), -m["avg_blocks"]) > (dev_score(cfg.blocks, best), -best["avg_blocks"])


class Phase:
    """One phase, in a folder this process holds: its data, model, optimizer, run folder and
    where it stands (`step` of `total`, the `best` dev figures so far)."""

    def __init__(self, cfg: TrainConfig, out: Path, saved, rank: int, world: int, device, inputs=None):
        torch.manual_seed(cfg.seed + rank)  # ranks draw different dropout masks; DDP gives all rank 0's initial weights
        train_ex, self.dev_ex, task, labels, self.tokenizer, self.model = load_data_and_model(cfg, device, inputs)
        self.batches = Batches(cfg, self.model, self.tokenizer, train_ex, self.dev_ex, device)
        self.run = RunFolder(out, cfg, self.model, self.tokenizer, labels, task)
        self.cfg, self.out, self.rank, self.world, self.device = cfg, out, rank, world, device
        self.total = self.batches.total
        self.warm, self.eval_every = int(cfg.warmup * self.total), cfg.eval_every or self.batches.steps_per_epoch
        self.optimizer = adamw(parameter_groups(self.model, cfg))
        self.step, self.best = restore(saved, self.model, self.optimizer, rank) if saved else (0, None)
        if saved and rank == 0:
            self.run.keep_log_until(self.step)
        self.objective = for_ranks(BatchLoss(self.model, cfg), world, device)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")

    def optimizer_step(self, idx) -> dict:
        """One optimizer step on this rank's share of the planned batch `idx` (one process: all
        rows, weight 1); returns the whole batch's loss, accuracy (and ponder) as floats."""
        cfg, step, total, optimizer = self.cfg, self.step, self.total, self.optimizer
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * get_lr(step, self.warm, total)
        idx, weight = shard(idx, self.rank, self.world)
        inputs, y_true = self.batches.get(idx)
        with self.autocast:
            loss, accuracy, ponder = self.objective(inputs, y_true, tau_at(cfg, step, total))
        optimizer.zero_grad(set_to_none=True)
        (loss * weight).backward()  # with DDP: gradients averaged over ranks here
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.clip)
        optimizer.step()
        self.step += 1
        stats = {k: v for k, v in (("loss", loss), ("acc", accuracy), ("ponder", ponder)) if v is not None}
        means = global_means(stats, weight, self.world)
        if not math.isfinite(means["loss"]):  # stop before anything of this step is saved
            raise TinydactError(f"the training loss is not a finite number at step {self.step}/{total} of {self.out}: training "
                                "diverged (try a lower --lr or --head-lr); nothing from this step on is saved")
        return means

    def evaluate_dev(self, running: dict, quiet: bool) -> None:
        """On rank 0: the dev figures, logged; a better model is saved as best/. Every rank waits."""
        if self.rank == 0:
            m = dev_metrics(self.model, self.cfg, self.dev_ex, self.batches.dev_xs, self.tokenizer, self.device)
            self.run.log({"step": self.step, "epoch": self.step / self.batches.steps_per_epoch,
                          "tau": tau_at(self.cfg, self.step - 1, self.total), **{f"train_{k}": v for k, v in running.items()}, "dev": m})
            if is_better(self.cfg, m, self.best):
                with uninterrupted():  # best/ is written before the state may name it
                    self.run.save_model("best", self.step)
                    self.best = {**m, "step": self.step}
            if not quiet:
                tqdm.write(f"{self.out.name} step {self.step}: dev accuracy {m['accuracy']:.4f}, avg blocks {m['avg_blocks']:.2f}")
        barrier(self.world)

    def finish(self) -> dict:
        """Rank 0 writes the resume state and final/ (and best/ when there is no dev set); every
        rank returns rank 0's best dev figures."""
        if self.rank == 0:
            self.run.save_state(self.optimizer, self.step, self.best)
            self.run.save_model("final", self.step)
            if self.dev_ex is None:
                self.run.save_model("best", self.step)
        self.objective = None  # under torchrun: DDP lets go of the process group before it is destroyed
        return broadcast(self.best, self.world) or {}


def run_phase(cfg: TrainConfig, out: Path, saved, rank: int, world: int, device, quiet: bool, again: str | None,
              inputs=None) -> dict:
    """The training loop of one phase (see `train`): optimizer steps, a dev evaluation every
    `eval_every` steps and at the end, the resume state every `save_every` steps. Ctrl-C or
    SIGTERM, from loading the model to the last save, ends in one error naming the command
    that continues the run (or, before it has anything to continue, that starts it again)."""
    p, bar = None, None
    try:
        p = Phase(cfg, out, saved, rank, world, device, inputs)
        bar = tqdm(total=p.total, initial=p.step, desc=out.name, disable=quiet or rank > 0, dynamic_ncols=True)
        running = {}  # running means of the batch figures, on the progress bar
        p.model.train()
        while p.step < p.total:
            epoch, offset = divmod(p.step, p.batches.steps_per_epoch)
            for idx in p.batches.plan(epoch)[offset : offset + p.total - p.step]:
                show_progress(bar, running, p.optimizer_step(idx), p.best)
                if p.dev_ex is not None and (p.step % p.eval_every == 0 or p.step == p.total):
                    p.evaluate_dev(running, quiet)
                if p.step % cfg.save_every == 0 and rank == 0:
                    p.run.save_state(p.optimizer, p.step, p.best)
        return p.finish()
    except (KeyboardInterrupt, Interrupted):
        if p is not None and rank == 0:
            p.run.save_state(p.optimizer, p.step, p.best, reraise=False)
        if p is None and saved is None and again is None:  # nothing saved, nothing to continue
            raise TinydactError(f"interrupted while loading the model and data of {out}, before its first step: "
                                "nothing saved; start it again with the same command") from None
        again = again or ("torchrun [its options] -m tinydact" if world > 1 else "tinydact") + f" train --resume --out {out}"
        where = f"at step {p.step}/{p.total} of {out}; state saved" if p is not None else f"while loading the model and data of {out}"
        raise TinydactError(f"interrupted {where}, continue with: {again}") from None
    finally:
        if bar is not None:
            bar.close()


def train(cfg: TrainConfig, device: torch.device, resume: bool = False, quiet: bool = False, again: str | None = None,
          overwrite: bool = False) -> dict:
    """Run (or, with `resume`, continue) one phase in `cfg.out`; a folder that holds a run is
    refused unless `overwrite`. Returns the best dev metrics. `again`: the command that
    continues the run, shown when it is interrupted."""
    out = Path(cfg.out)
    saved = saved_state(out) if resume else None
    cfg = saved_config(saved["config"], out / "state.pt") if saved else cfg  # a resumed run keeps its own settings
    check_config(cfg)
    rank, world, device = distributed_setup(device)
    if world > 1 and cfg.freeze_backbone:
        raise TinydactError("--freeze-backbone trains in one process (an epoch on cached states takes seconds): start it without torchrun")
    inputs = read_inputs(cfg)  # bad input: an error before the folder is touched
    lock = claim_folder(out, resume, overwrite, leftovers(PHASES), worth_keeping(out, PHASES)) if rank == 0 else None
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return run_phase(cfg, out, saved, rank, world, device, quiet, again, inputs)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if lock is not None:
            lock.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------
# The whole recipe
# ----------------------------------------------------------------------------------------


# (subfolder, the settings of that phase over the user's). Each phase starts from the
# previous one's final/; phase 1 from --model. These made the shipped model (docs/dact.md §4).
RECIPE = (
    ("phase1", {"phase": 1, "blocks": "all", "freeze_backbone": False, "lr": 5e-5, "head_lr": 1e-3}),
    ("heads", {"phase": 2, "blocks": "all", "freeze_backbone": True, "batch_size": 256, "head_lr": 1e-3}),
    ("joint", {"phase": 2, "blocks": "all", "freeze_backbone": False, "lr": 2e-5, "head_lr": 5e-4}),
)
PHASES = tuple(name for name, _ in RECIPE)
HEAD_CACHE = "head-inputs.pt"  # the heads phase's cache of the frozen backbone's head inputs
# what a finished recipe removes from each phase: all a run leaves but its log, and the cache
RECIPE_FILES = (*(name for name in RUN_FILES if name != "log.jsonl"), HEAD_CACHE)


def phase_epochs(text: str) -> list:
    try:
        epochs = [float(x) for x in text.split(",")]
    except ValueError:
        epochs = []
    if len(epochs) != len(RECIPE) or not all(0 < e < math.inf for e in epochs):
        raise TinydactError(f"--phase-epochs takes {len(RECIPE)} positive numbers separated by commas "
                            f"(phase 1, heads only, joint), got {text!r}")
    return epochs


def recipe_config(cfg: TrainConfig, resume: bool) -> TrainConfig:
    """The recipe's settings: the saved recipe.json when resuming, else `cfg`, checked."""
    out = Path(cfg.out)
    if resume:
        try:
            cfg = saved_config(json.loads((out / "recipe.json").read_text()), out / "recipe.json")
        except (OSError, ValueError):
            raise TinydactError(f"nothing to resume: {out / 'recipe.json'} is missing or unreadable; start again with "
                                "--overwrite (which deletes what the recipe left)") from None
    check_config(cfg, one_phase=False)
    check_options_apply(cfg, set_options(cfg), heads_read(cfg.model))
    return cfg


def recipe(cfg: TrainConfig, device: torch.device, resume: bool = False, quiet: bool = False, overwrite: bool = False) -> dict:
    """Run (or continue) the whole recipe in `cfg.out`: phase1/, heads/, joint/, then the
    joint phase's final model copied to `cfg.out/final`, and (unless `keep_states`) each
    phase's files but its log.jsonl removed. Returns the last phase's best dev metrics. With
    `resume`, each phase with a state.pt continues (a finished one just rewrites its final/)
    and the others start; the saved recipe.json gives the settings. A finished recipe (its
    final/ written) is not run again."""
    out = Path(cfg.out)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TinydactError("the recipe's heads-only phase trains in one process: under torchrun, run the phases "
                            "one at a time with --phase (docs/distributed.md)")
    cfg = recipe_config(cfg, resume)
    epochs = phase_epochs(cfg.phase_epochs)
    read_inputs(cfg)  # bad input: an error before the folder is touched
    lock = claim_folder(out, resume, overwrite, leftovers(PHASES), worth_keeping(out, PHASES))
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    again = f"tinydact train --resume --out {out}"
    try:
        if resume and (out / "final").is_dir():
            raise TinydactError(f"the recipe in {out} is finished, its model is {out / 'final'}: nothing to resume "
                                "(start again with --overwrite, which deletes it)")
        atomic_write(out / "recipe.json", lambda p: p.write_text(json.dumps(asdict(cfg), indent=2) + "\n"))
        start, best = cfg.model, {}
        for (name, settings), n_epochs in zip(RECIPE, epochs):
            phase = TrainConfig(**{**asdict(cfg), **settings, "model": start, "out": str(out / name), "epochs": n_epochs})
            if phase.freeze_backbone:
                phase.cache = str(out / name / HEAD_CACHE)
            started = (out / name / "state.pt").is_file()  # a phase that never saved a state starts (again)
            best = train(phase, device, resume=started, quiet=quiet, again=again, overwrite=not started)
            start = str(out / name / "final")
        with uninterrupted(reraise=False):  # seconds: an interrupt now lets the recipe finish
            replace_folder(out / "final", lambda tmp: shutil.copytree(start, tmp))
            for name in PHASES if not cfg.keep_states else ():
                for file in RECIPE_FILES:
                    remove(out / name / file)
        return best
    except (KeyboardInterrupt, Interrupted):  # between phases (inside one, the phase says where it stopped)
        raise TinydactError(f"interrupted in {out}, continue with: {again}") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        lock.unlink(missing_ok=True)


def run_training(cfg: TrainConfig, device: torch.device, resume: bool = False, quiet: bool = False, overwrite: bool = False,
                 given=()) -> dict:
    """`tinydact train`: the whole recipe when no phase is given (or the run in `cfg.out` is
    a recipe, to resume), else one phase. `given`: the options the user set on the command
    line; one the run does not use is an error (`options.check_options_apply`)."""
    if resume and overwrite:
        raise TinydactError("--resume continues a run, --overwrite deletes it: give one of them")
    if resume and set(given) - {"out"}:
        flag = "--" + sorted(set(given) - {"out"})[0].replace("_", "-")
        raise TinydactError(f"--resume continues with the run's saved settings: leave out {flag}")
    if given:
        check_config(cfg, one_phase=False)
        check_options_apply(cfg, given, heads_read(cfg.model))
    whole = run_kind(Path(cfg.out), PHASES) == "recipe" if resume else cfg.phase is None
    return (recipe if whole else train)(cfg, device, resume=resume, quiet=quiet, overwrite=overwrite)
