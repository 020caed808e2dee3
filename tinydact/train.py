"""Fine-tuning DACT-BERT: the recipe of docs/dact.md §4, as a plain PyTorch loop.

`tinydact train` without `--phase` runs the whole recipe (`recipe`), each phase in its own
subfolder of `--out`, and leaves the final model in `--out/final`:

    phase1/  cross-entropy on every block's answer y_n (the mean over blocks), backbone too
    heads/   the DACT loss CE(a_N) + τ Σ_n p_n, heads only, on the frozen backbone's cached
             per-block [CLS] states (an epoch takes seconds)
    joint/   the DACT loss again, everything trains

`--phase 1` or `--phase 2` runs one phase (`train`) for experiments: phase 1 with `--blocks
all|last` (or the baselines' `weighted` and `all-but-last`, see baselines.py), phase 2 with
or without `--freeze-backbone`; `--tau-end` (our option) raises τ linearly over a run.

A run folder holds `best/` (best dev score), `final/` (end of training), `state.pt`
(everything needed to resume: weights, optimizer, step, RNG; written atomically every
`save_every` steps and on Ctrl-C / SIGTERM) and `log.jsonl`.

Several processes (`torchrun --nproc-per-node=N -m tinydact train ...`): each rank takes every
N-th row of each planned batch and DistributedDataParallel averages the gradients, so a step
is the step of one process on the whole batch (`--batch-size` is the global batch). Rank 0
alone evaluates, logs, shows progress and writes the run folder.
"""

import hashlib
import json
import math
import os
import shutil
import signal
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .baselines import dev_score, phase1_block_weights
from .dact import HALT_BIAS, dact_loss
from .options import HEAD_INPUTS, RULES
from .data import batch_plan, encode_batch, example_lengths, read_examples
from .errors import TinydactError
from .evaluate import block_accuracies, evaluate, evaluate_states
from .checkpoint import load_checkpoint, new_from_bert, read_dact_config, save_checkpoint
from .model import atomic_write, replace_folder
from .tokenizer import Tokenizer


def option(default, help: str, **click):
    """A training option: its default, its help text and (for the command line) its range."""
    return field(default=default, metadata={"help": help, **click})


BLOCKS = ("all", "last", "weighted", "all-but-last")  # phase 1: which blocks' answers learn


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
    tau: float = option(1e-3, "ponder penalty τ of the DACT loss (the authors' default; 0.1-0.2 on a 6-block MiniLM)", min=0.0)
    tau_end: float = option(0.0, "phase 2, our option: τ rises linearly from --tau to --tau-end over the run (0: constant)", min=0.0)
    freeze_backbone: bool = option(False, "phase 2: train only the DACT modules, on cached [CLS] states")
    epochs: float = option(1.0, "epochs of a single phase (the recipe: --phase-epochs)", min=0.0, min_open=True)
    phase_epochs: str = option("2,3,1", "the recipe: epochs of phase 1, heads only and joint")
    batch_size: int = option(32, "examples per optimizer step (all processes together)", min=1)
    max_length: int = option(128, "tokens per example, longer ones are truncated", min=2)
    lr: float = option(5e-5, "backbone learning rate (AdamW, linear warm-up then linear decay)", min=0.0)
    head_lr: float = option(1e-3, "learning rate of the DACT modules", min=0.0)
    halt_lr: float = option(0.0, "learning rate of their halting units h_n = sigmoid(w_h·z + b_h); 0: --head-lr", min=0.0)
    warmup: float = option(0.1, "fraction of the steps with a linear warm-up", min=0.0, max=1.0)
    weight_decay: float = option(0.01, "AdamW weight decay of the backbone's matrices", min=0.0)
    clip: float = option(1.0, "gradient-norm clipping", min=0.0, min_open=True)
    halt_bias: float = option(HALT_BIAS, "new heads only: initial b_h, so h_n ≈ sigmoid(b_h) at the start")
    head_input: str = option("cls", "new heads only, our option: what each DACT module reads after its block: the [CLS] "
                             "state (cls), the same through a LayerNorm (cls-norm), or the mean of the token states (mean)",
                             choices=HEAD_INPUTS)
    distill: float = option(0.0, "phase 1, our option: self-distillation weight γ: each block's loss is (1−γ)·CE + "
                            "γ·T²·KL(last block's softened answer ‖ this block's); 0: off", min=0.0, max=1.0)
    distill_temperature: float = option(3.0, "phase 1 with --distill: the softening temperature T", min=0.0, min_open=True)
    rule: str = option("paper", "halting rule for dev evaluation", choices=RULES)
    seed: int = option(0, "random seed (batch order, dropout, new heads)")
    eval_every: int = option(0, "steps between dev evaluations; 0: once per epoch", min=0)
    save_every: int = option(200, "steps between resume saves (state.pt)", min=1)
    max_steps: int = option(0, "stop each phase after this many steps (0: no limit), e.g. for a smoke run", min=0)
    cache: str | None = option(None, "file for the frozen backbone's [CLS] states, reused when model and data match")
    dtype: str = option("float32", "compute dtype: bfloat16 runs forward and backward under torch.autocast (float32 master "
                        "weights and loss; fast on CPUs with AVX512-BF16/AMX and on GPUs)", choices=("float32", "bfloat16"))
    save_dtype: str = option("float32", "dtype of best/ and final/ (float16 halves the size)", choices=("float32", "float16", "bfloat16"))


class Interrupted(Exception):
    pass


def _on_sigterm(signum, frame):
    raise Interrupted()


# ----------------------------------------------------------------------------------------
# The loss of one batch
# ----------------------------------------------------------------------------------------


def phase1_loss(model, cls, labels, blocks: str, distill: float = 0.0, T: float = 3.0):
    """Σ_j w_j·L_j / Σ_j w_j with L_j = CE(y_j, label), the cross-entropy of block j's answer,
    and w_j from `phase1_block_weights` (all: the mean over blocks; last: the last block's).

    With `distill` = γ > 0 (self-distillation, our option, as RomeBERT), every block j < N
    also learns from the last block's answer softened by the temperature T, which it cannot
    move (stop-gradient): L_j = (1 − γ)·CE(y_j, label) + γ·T²·KL(softmax(u_N / T) ‖ softmax(u_j / T)),
    u the logits. The halting guarantee does not depend on how the answers were trained."""
    w = phase1_block_weights(blocks, model.num_blocks)
    logits = {j: model.heads[j].logits(cls[:, j]) for j, w_j in enumerate(w) if w_j or (distill and j == len(w) - 1)}
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
    encoded batch, or cached [CLS] states (B, N, H) when the backbone is frozen. Returns
    (loss, accuracy, ponder or None), each a mean over the batch's rows."""

    def __init__(self, model, cfg: TrainConfig):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, inputs, y_true, tau: float):
        model, cfg = self.model, self.cfg
        cls = inputs if cfg.freeze_backbone else model.head_inputs(*inputs)  # (B, N, H)
        if cfg.phase == 1:
            loss = phase1_loss(model, cls, y_true, cfg.blocks, cfg.distill, cfg.distill_temperature)
            return loss, (model.heads[-1].logits(cls[:, -1]).argmax(-1) == y_true).float().mean(), None
        a, p, _, _ = model.forward_heads(cls)  # (B, N, K), (B, N)
        a_N = a[:, -1]  # the model's answer
        return dact_loss(a_N.float(), y_true, p.float(), tau), (a_N.argmax(-1) == y_true).float().mean(), p.sum(1).mean()


# ----------------------------------------------------------------------------------------
# Schedules: learning rate and τ
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
        {"params": [p for h in model.heads for n, p in h.named_parameters() if not n.startswith("halt.")],
         "base_lr": cfg.head_lr, "weight_decay": 0.0},
        {"params": [p for h in model.heads for p in h.halt.parameters()], "base_lr": cfg.halt_lr or cfg.head_lr, "weight_decay": 0.0},
    ]
    return groups[2:] if cfg.freeze_backbone else groups


# ----------------------------------------------------------------------------------------
# Data: batches of text for the full backbone, of cached [CLS] states for a frozen one
# ----------------------------------------------------------------------------------------


class Batches:
    """The training data of a run, and its batches: `plan(epoch)` lists each batch's example
    indices, `get(idx)` gives (inputs, labels) on the device."""

    def __init__(self, cfg: TrainConfig, model, tokenizer, train_ex, dev_ex, device):
        self.cfg, self.examples, self.tokenizer, self.device = cfg, train_ex, tokenizer, device
        self.labels = torch.tensor([e.label for e in train_ex])
        if cfg.freeze_backbone:  # the backbone's states, once; every "batch" then costs the same
            self.train_cls, self.dev_cls = cached_states(model, train_ex, dev_ex, tokenizer, cfg, device)
            self.lengths = [1] * len(train_ex)
        else:
            self.train_cls, self.dev_cls = None, None
            self.lengths = example_lengths(train_ex, tokenizer, cfg.max_length)
        self.steps_per_epoch = len(batch_plan(self.lengths, cfg.batch_size))

    def plan(self, epoch: int) -> list:
        return batch_plan(self.lengths, self.cfg.batch_size, shuffle=True, seed=self.cfg.seed + epoch)

    def get(self, idx):
        if self.train_cls is not None:
            return self.train_cls[idx].to(self.device, torch.float32), self.labels[idx].to(self.device)
        enc, y_true, _ = encode_batch(self.examples, idx, self.tokenizer, self.cfg.max_length)
        return [t.to(self.device) for t in enc], y_true.to(self.device)


def file_digest(path) -> str:
    """sha256 of a file's bytes (the cache key covers content, not names and sizes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@torch.no_grad()
def cls_cache(model, examples, tokenizer, max_length: int, device, desc: str):
    """Per-block [CLS] states (n, N, H) of a frozen backbone, in float16 on the CPU."""
    model.eval()
    out = torch.empty(len(examples), model.num_blocks, model.bert.config.hidden_size, dtype=torch.float16)
    plan = batch_plan(example_lengths(examples, tokenizer, max_length), 128)
    for idx in tqdm(plan, desc=desc, leave=False, disable=None):  # shown on a terminal only
        enc, _, _ = encode_batch(examples, idx, tokenizer, max_length)
        out[idx] = model.head_inputs(*(t.to(device) for t in enc)).to("cpu", torch.float16)
    return out


def cached_states(model, train_ex, dev_ex, tokenizer, cfg: TrainConfig, device):
    """The frozen backbone's [CLS] states for train and dev, from `cfg.cache` when its key
    (the bytes of the model's weights and of the data files, and max_length) matches."""
    from .home import model_dir

    files = [model_dir(cfg.model) / "model.safetensors", cfg.train] + ([cfg.dev] if cfg.dev else [])
    key = json.dumps({"files": [file_digest(f) for f in files], "max_length": cfg.max_length, "read": model.head_input})
    if cfg.cache and Path(cfg.cache).exists():
        saved = load_file(Path(cfg.cache), "a tinydact cache of [CLS] states") if Path(cfg.cache).is_file() else None
        if not isinstance(saved, dict) or not {"key", "train", "dev"} <= set(saved):
            raise TinydactError(f"--cache {cfg.cache} is not a tinydact cache of [CLS] states; delete it or pass another file")
        if saved["key"] == key:
            return saved["train"], saved["dev"]
    train_cls = cls_cache(model, train_ex, tokenizer, cfg.max_length, device, "caching train [CLS] states")
    dev_cls = cls_cache(model, dev_ex, tokenizer, cfg.max_length, device, "caching dev [CLS] states") if dev_ex else None
    if cfg.cache:
        Path(cfg.cache).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(cfg.cache), lambda p: torch.save({"key": key, "train": train_cls, "dev": dev_cls}, p))
    return train_cls, dev_cls


def dev_metrics(model, cfg: TrainConfig, dev_ex, dev_cls, tokenizer, device) -> dict:
    """Dev accuracy and blocks. Phase 1: each block's own answer ("accuracy" is the last
    block's); phase 2: the DACT model with halting, from cached states or the real path."""
    labels = torch.tensor([e.label for e in dev_ex])
    if cfg.phase == 1:
        states = dev_cls if dev_cls is not None else cls_cache(model, dev_ex, tokenizer, cfg.max_length, device, "dev")
        per_block = block_accuracies(model, states, labels, device)
        m = {"accuracy": per_block[-1], "avg_blocks": float(model.num_blocks), "block_accuracy": per_block}
    elif dev_cls is not None:
        m = evaluate_states(model, dev_cls, labels, cfg.rule, device)
    else:
        r = evaluate(model, dev_ex, tokenizer, 64, cfg.max_length, rule=cfg.rule, device=device)
        m = {k: r[k] for k in ("accuracy", "avg_blocks", "seconds")}
    model.train()
    return m


# ----------------------------------------------------------------------------------------
# Several processes (torchrun): one per GPU, or a few on a CPU
# ----------------------------------------------------------------------------------------


def distributed_setup(device: torch.device):
    """(rank, world size, device) of this process. Under torchrun (which sets WORLD_SIZE, RANK,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT) join the process group: NCCL on CUDA, where the
    process takes GPU LOCAL_RANK, gloo on CPU. Without torchrun: (0, 1, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        local_rank = int(os.environ["LOCAL_RANK"])
        if local_rank >= torch.cuda.device_count():
            raise TinydactError(f"LOCAL_RANK {local_rank}, but this machine has {torch.cuda.device_count()} GPUs: "
                                "give torchrun at most one process per GPU (--nproc-per-node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():  # device_id: NCCL's collectives (the barrier too) run on this GPU
        cuda = device.type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return dist.get_rank(), world, device


def shard(idx: list, rank: int, world: int):
    """This rank's rows of a planned batch `idx`, and the weight of its mean loss.

    Rank r takes rows r, r + world, ... DDP averages the gradients over ranks, so weighting
    rank r's mean loss by its share, rows_r · world / len(idx), makes the average exactly the
    gradient of the whole batch's mean loss, also when the rows do not split evenly. A rank
    left without rows (a batch smaller than the world) runs the first row with weight 0: it
    still takes part in the gradient all-reduce, so every rank runs the same steps."""
    rows = idx[rank::world]
    if not rows:
        return idx[:1], 0.0
    return rows, len(rows) * world / len(idx)


def global_means(values: dict, weight: float, world: int) -> dict:
    """Batch means for the log, as floats. With several ranks: the whole batch's mean, the
    sum over ranks of weight · (the rank's mean) / world, in one all-reduce."""
    if world == 1:
        return {k: v.item() for k, v in values.items()}
    packed = torch.stack([v.detach().float() * weight for v in values.values()])
    dist.all_reduce(packed)
    return dict(zip(values, (packed / world).tolist()))


# ----------------------------------------------------------------------------------------
# One phase
# ----------------------------------------------------------------------------------------


def check_config(cfg: TrainConfig, one_phase: bool = True) -> None:
    """Every option against its range and choices (the field's metadata), before any work:
    the same rules for the command line, the library and a resumed run's saved settings."""
    for f in fields(cfg):
        v, m, flag = getattr(cfg, f.name), f.metadata, "--" + f.name.replace("_", "-")
        if v is None or isinstance(v, bool):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise TinydactError(f"{flag} must be a finite number, got {v}")
        if "choices" in m and v not in m["choices"]:
            raise TinydactError(f"{flag} must be one of {', '.join(map(str, m['choices']))}, got {v!r}")
        low_ok = "min" not in m or (v > m["min"] if m.get("min_open") else v >= m["min"])
        if not low_ok or ("max" in m and v > m["max"]):
            bound = f"{'>' if m.get('min_open') else '>='} {m['min']}" + (f" and <= {m['max']}" if "max" in m else "")
            raise TinydactError(f"{flag} must be {bound}, got {v}")
    if one_phase and cfg.phase is None:
        raise TinydactError("one phase needs --phase 1 or 2 (without --phase: the whole recipe)")


def load_data_and_model(cfg: TrainConfig, device):
    """(train examples, dev examples or None, task, labels, tokenizer, model on `device`)."""
    meta = read_dact_config(cfg.model)
    train_ex, task, labels = read_examples(cfg.train, cfg.task, meta.get("labels"))
    dev_ex = read_examples(cfg.dev, task, labels)[0] if cfg.dev else None
    if meta and meta["labels"] != labels:
        raise TinydactError(f"{cfg.model} was trained for labels {meta['labels']}, the data has {labels}")
    model = load_checkpoint(cfg.model)[0] if meta else new_from_bert(cfg.model, len(labels), cfg.halt_bias, head_input=cfg.head_input)
    if meta and cfg.head_input != "cls" and cfg.head_input != model.head_input:
        raise TinydactError(f"--head-input {cfg.head_input}: {cfg.model} already has heads that read {model.head_input!r}")
    if cfg.freeze_backbone:
        model.bert.requires_grad_(False)
    tokenizer = Tokenizer.from_pretrained(cfg.model)
    tokenizer.check_fits(model.bert.config.vocab_size, model.bert.config.pad_token_id, str(cfg.model))
    return train_ex, dev_ex, task, labels, tokenizer, model.to(device)


RUN_FILES = ("state.pt", "best", "final", "log.jsonl")  # what a run leaves in its folder


_deferring = []  # non-empty while a block of `uninterrupted` runs


@contextmanager
def uninterrupted(reraise: bool = True):
    """Ctrl-C and SIGTERM wait until the block is done, so a save is finished, not cut; the
    interrupt then arrives (with `reraise`) as soon as the block ends."""
    if threading.current_thread() is not threading.main_thread() or _deferring:
        yield  # signal handlers belong to the main thread; an outer block already defers them
        return
    caught = []
    old = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    _deferring.append(True)
    try:
        yield
    finally:
        _deferring.pop()
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if caught and reraise:
            raise KeyboardInterrupt if caught[0] == signal.SIGINT else Interrupted()


def claim_folder(out: Path, resume: bool, overwrite: bool, held=RUN_FILES) -> Path:
    """Take the run folder `out` for this process: a lock file that a second writer finds at
    once, and a refusal to write over a run (`held` files) unless resuming or `overwrite`.
    Leftover temporary files of an interrupted save are removed. Returns the lock's path."""
    if out.exists() and not out.is_dir():
        raise TinydactError(f"--out {out} is a file, not a folder")
    lock = out / ".lock"
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        pid = lock.read_text().strip() or "?"
        alive = pid.isdigit() and _alive(int(pid))
        if alive:
            raise TinydactError(f"another training (process {pid}) is writing to {out}; wait for it, or stop it first") from None
        lock.unlink(missing_ok=True)  # its process is gone: a stale lock
        return claim_folder(out, resume, overwrite, held)
    except OSError as e:
        raise TinydactError(f"cannot write to {out} ({e.strerror})") from None
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    found = [name for name in held if (out / name).exists()]
    if found and not resume:
        if not overwrite:
            lock.unlink()
            raise TinydactError(f"{out} already holds a run ({', '.join(found)}): continue it with --resume, "
                                "or start again with --overwrite (which deletes it)")
        for name in found:
            shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    for leftover in [*out.glob(".*.tmp*"), *out.glob(".*.old*")]:
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
    return lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunFolder:
    """What a run writes into its folder: `state.pt` to resume, the models `best/` and
    `final/`, and `log.jsonl`, one line per dev evaluation."""

    def __init__(self, out: Path, cfg: TrainConfig, model, tokenizer, labels, task: str):
        self.out, self.cfg, self.model, self.tokenizer, self.labels, self.task = out, cfg, model, tokenizer, labels, task

    def save_state(self, optimizer, step: int, best, reraise: bool = True) -> None:
        snapshot = {"model": self.model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "best": best,
                    "config": asdict(self.cfg), "rng": torch.get_rng_state()}
        with uninterrupted(reraise):
            atomic_write(self.out / "state.pt", lambda p: torch.save(snapshot, p))

    def save_model(self, name: str, step: int) -> None:
        cfg = self.cfg
        trained = {"phase": cfg.phase, "tau": cfg.tau, "step": step, "blocks": cfg.blocks, **({"tau_end": cfg.tau_end} if cfg.tau_end else {})}
        with uninterrupted():
            save_checkpoint(self.model, self.tokenizer, self.out / name, self.labels, self.task, getattr(torch, cfg.save_dtype),
                            extra={"trained": trained})

    def log(self, record: dict) -> None:
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


def saved_state(out: Path):
    """The state.pt of the run in `out`, to resume it, or a clear error."""
    path = out / "state.pt"
    if not path.is_file():
        raise TinydactError(f"nothing to resume: {path} does not exist")
    state = load_file(path, "the resume state of a tinydact run")
    if not isinstance(state, dict) or not {"model", "optimizer", "step", "best", "config", "rng"} <= set(state):
        raise TinydactError(f"{path} is not the resume state of a tinydact run")
    return state


def saved_config(d, path: Path) -> TrainConfig:
    """The settings a run saved (in state.pt or recipe.json), or a clear error."""
    try:
        return TrainConfig(**d)
    except TypeError:
        raise TinydactError(f"{path}: the saved settings do not fit this version of tinydact") from None


def load_file(path: Path, what: str):
    """torch.load(weights_only=True) of a file that should hold `what`, or a one-line error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # empty, truncated, garbage, a pickle with code: torch's messages run over lines
        raise TinydactError(f"cannot read {path} as {what} ({type(e).__name__}); delete or replace it") from None


def restore(saved: dict, model, optimizer, rank: int):
    """Put a resumed run back where it stood; returns (step, best)."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if rank == 0:  # the saved random state is rank 0's; other ranks keep their own stream
        torch.set_rng_state(saved["rng"])
    return saved["step"], saved["best"]


def for_ranks(objective: nn.Module, world: int, device) -> nn.Module:
    """The loss module, wrapped in DistributedDataParallel under torchrun (find_unused_parameters:
    the pooler gets no gradient, and in phase 1 neither do the halting units)."""
    if world == 1:
        return objective
    return DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def show_progress(bar, running: dict, stats: dict, best: dict | None) -> None:
    """Update the running means (an exponential average over ~50 steps) and the progress bar."""
    for k, v in stats.items():
        running[k] = v if k not in running else 0.98 * running[k] + 0.02 * v
    bar.update(1)
    bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()} | ({"dev": f"{best['accuracy']:.3f}/{best['avg_blocks']:.2f}"} if best else {}))


def is_better(cfg: TrainConfig, m: dict, best: dict | None) -> bool:
    """A higher dev score (`baselines.dev_score`); on a tie, fewer blocks."""
    return best is None or (dev_score(cfg.blocks, m), -m["avg_blocks"]) > (dev_score(cfg.blocks, best), -best["avg_blocks"])


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
    lock = claim_folder(out, resume, overwrite) if rank == 0 else None
    try:
        return run_phase(cfg, out, saved, rank, world, device, quiet, again)
    finally:
        if lock is not None:
            lock.unlink(missing_ok=True)


def run_phase(cfg: TrainConfig, out: Path, saved, rank: int, world: int, device, quiet: bool, again: str | None) -> dict:
    """The training loop of one phase, in a folder this process holds (see `train`)."""
    torch.manual_seed(cfg.seed + rank)  # ranks draw different dropout masks; DDP gives all rank 0's initial weights

    # data, model, batches, the run folder; the optimizer and where the run stands
    train_ex, dev_ex, task, labels, tokenizer, model = load_data_and_model(cfg, device)
    batches = Batches(cfg, model, tokenizer, train_ex, dev_ex, device)
    run = RunFolder(out, cfg, model, tokenizer, labels, task)
    total = min(max(1, math.ceil(cfg.epochs * batches.steps_per_epoch)), cfg.max_steps or math.inf)
    warm, eval_every = int(cfg.warmup * total), cfg.eval_every or batches.steps_per_epoch
    optimizer = adamw(parameter_groups(model, cfg))
    step, best = restore(saved, model, optimizer, rank) if saved else (0, None)
    objective = for_ranks(BatchLoss(model, cfg), world, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    bar = tqdm(total=total, initial=step, desc=out.name, disable=quiet or rank > 0, dynamic_ncols=True)
    running = {}
    model.train()
    try:
        while step < total:
            epoch, offset = divmod(step, batches.steps_per_epoch)
            for idx in batches.plan(epoch)[offset : offset + total - step]:
                # one optimizer step on this rank's share of the batch (one process: all rows, weight 1)
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * get_lr(step, warm, total)
                idx, weight = shard(idx, rank, world)
                inputs, y_true = batches.get(idx)
                with autocast:
                    loss, accuracy, ponder = objective(inputs, y_true, tau_at(cfg, step, total))
                optimizer.zero_grad(set_to_none=True)
                (loss * weight).backward()  # with DDP: gradients averaged over ranks here
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.clip)
                optimizer.step()
                step += 1

                # running means of the batch figures, on the progress bar
                stats = {k: v for k, v in (("loss", loss), ("acc", accuracy), ("ponder", ponder)) if v is not None}
                means = global_means(stats, weight, world)
                if not math.isfinite(means["loss"]):  # stop before anything of this step is saved
                    raise TinydactError(f"the training loss is not a finite number at step {step}/{total} of {out}: training diverged "
                                        "(try a lower --lr or --head-lr); nothing from this step on is saved")
                show_progress(bar, running, means, best)

                # dev evaluation on rank 0: log it, keep the best model
                if dev_ex is not None and (step % eval_every == 0 or step == total):
                    if rank == 0:
                        m = dev_metrics(model, cfg, dev_ex, batches.dev_cls, tokenizer, device)
                        run.log({"step": step, "epoch": step / batches.steps_per_epoch, "tau": tau_at(cfg, step - 1, total),
                                 **{f"train_{k}": v for k, v in running.items()}, "dev": m})
                        if is_better(cfg, m, best):
                            with uninterrupted():  # best/ is written before the state may name it
                                run.save_model("best", step)
                                best = {**m, "step": step}
                        if not quiet:
                            tqdm.write(f"{out.name} step {step}: dev accuracy {m['accuracy']:.4f}, avg blocks {m['avg_blocks']:.2f}")
                    if world > 1:
                        dist.barrier()  # the other ranks wait while rank 0 evaluates

                # the resume state
                if step % cfg.save_every == 0 and rank == 0:
                    run.save_state(optimizer, step, best)
    except (KeyboardInterrupt, Interrupted):
        if rank == 0:
            run.save_state(optimizer, step, best, reraise=False)
        again = again or ("torchrun [its options] -m tinydact" if world > 1 else "tinydact") + f" train --resume --out {out}"
        raise TinydactError(f"interrupted at step {step}/{total} of {out}; state saved, continue with: {again}")
    finally:
        bar.close()
        signal.signal(signal.SIGTERM, previous)
    return finish(run, optimizer, step, best, dev_ex is None, rank, world)


def finish(run: RunFolder, optimizer, step: int, best, no_dev: bool, rank: int, world: int) -> dict:
    """The end of a run: rank 0 writes the resume state and final/ (and best/ when there is no
    dev set); every rank returns rank 0's best dev metrics."""
    if rank == 0:
        run.save_state(optimizer, step, best)
        run.save_model("final", step)
        if no_dev:
            run.save_model("best", step)
    if world > 1:
        shared = [best]
        dist.broadcast_object_list(shared, src=0)
        best = shared[0]
        dist.destroy_process_group()
    return best or {}


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
RECIPE_SETS = ("phase", "blocks", "freeze_backbone", "epochs", "lr", "head_lr", "cache")  # options each phase sets itself


def phase_epochs(text: str) -> list:
    try:
        epochs = [float(x) for x in text.split(",")]
    except ValueError:
        epochs = []
    if len(epochs) != len(RECIPE) or not all(0 < e < math.inf for e in epochs):
        raise TinydactError(f"--phase-epochs takes {len(RECIPE)} positive numbers separated by commas "
                            f"(phase 1, heads only, joint), got {text!r}")
    return epochs


def recipe(cfg: TrainConfig, device: torch.device, resume: bool = False, quiet: bool = False, overwrite: bool = False) -> dict:
    """Run (or continue) the whole recipe in `cfg.out`: phase1/, heads/, joint/, then the
    joint phase's final model copied to `cfg.out/final`. Returns the last phase's best dev
    metrics. With `resume`, each phase with a state.pt continues (a finished one just
    rewrites its final/) and the others start; the saved recipe.json gives the settings."""
    out = Path(cfg.out)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TinydactError("the recipe's heads-only phase trains in one process: under torchrun, run the phases "
                            "one at a time with --phase (docs/distributed.md)")
    if resume:
        try:
            cfg = saved_config(json.loads((out / "recipe.json").read_text()), out / "recipe.json")
        except (OSError, ValueError):
            raise TinydactError(f"nothing to resume: {out / 'recipe.json'} is missing or unreadable") from None
    check_config(cfg, one_phase=False)
    epochs = phase_epochs(cfg.phase_epochs)
    own = [f for f in RECIPE_SETS if f != "phase" and getattr(cfg, f) != getattr(TrainConfig, f)]
    if own:
        flags = ", ".join("--" + f.replace("_", "-") for f in own)
        raise TinydactError(f"the recipe sets {flags} for each phase itself: give --phase 1 or 2 to run one phase "
                            "with them (--phase-epochs sets the recipe's epochs)")
    lock = claim_folder(out, resume, overwrite, held=("recipe.json", "final", *(name for name, _ in RECIPE)))
    try:
        atomic_write(out / "recipe.json", lambda p: p.write_text(json.dumps(asdict(cfg), indent=2) + "\n"))
        start, best = cfg.model, {}
        for (name, settings), n_epochs in zip(RECIPE, epochs):
            phase = TrainConfig(**{**asdict(cfg), **settings, "model": start, "out": str(out / name), "epochs": n_epochs})
            if phase.freeze_backbone:
                phase.cache = str(out / name / "cls-cache.pt")
            again = f"tinydact train --resume --out {out}"
            started = (out / name / "state.pt").is_file()  # a phase that never saved a state starts (again)
            best = train(phase, device, resume=started, quiet=quiet, again=again, overwrite=not started)
            start = str(out / name / "final")
        replace_folder(out / "final", lambda tmp: shutil.copytree(start, tmp))
        return best
    finally:
        lock.unlink(missing_ok=True)


def run_training(cfg: TrainConfig, device: torch.device, resume: bool = False, quiet: bool = False, overwrite: bool = False) -> dict:
    """`tinydact train`: the whole recipe when no phase is given (or the run in `cfg.out` is
    a recipe, to resume), else one phase."""
    if resume and overwrite:
        raise TinydactError("--resume continues a run, --overwrite deletes it: give one of them")
    whole = (Path(cfg.out) / "recipe.json").is_file() if resume else cfg.phase is None
    return (recipe if whole else train)(cfg, device, resume=resume, quiet=quiet, overwrite=overwrite)
