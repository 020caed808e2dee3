"""Fine-tuning DACT-BERT: a plain PyTorch loop, the two-phase recipe of DACT.md section 4.

Phase 1 (`--phase 1`): fine-tune the backbone with cross-entropy on the answer y_n of the
    last block's module (`--layers last`: a plain classifier) or of every block's module
    (`--layers all`: the mean over blocks, so early blocks learn to answer too). Halting
    units are not trained here. Two more `--layers` for the baselines (baselines.py):
    `weighted`, PABEE's layer-weighted loss Σ_j j·L_j / Σ_j j; `all-but-last`, DeeBERT's
    stage 2 (with `--freeze-backbone`): every block's answer but the last's, whose module
    stays as it is.
Phase 2 (`--phase 2`): the DACT loss of DACT.md section 2, CE(a_N) + τ Σ_n p_n, on
    everything, or with `--freeze-backbone` on the heads only: then the per-block [CLS]
    states are computed once (optionally cached on disk with `--cache`) and an epoch takes
    seconds, which makes τ sweeps cheap. With `--tau-end` (our option) τ rises linearly from
    `--tau` to `--tau-end` over the run instead of staying constant.

The run's folder (`--out`) gets `best/` (best dev score), `final/` (end of training),
`state.pt` (everything needed to resume: weights, optimizer, schedule, step, RNG; written
atomically every `save_every` steps and on Ctrl-C / SIGTERM) and `log.jsonl`.

Several processes (`torchrun --nproc-per-node=N -m tinydact train ...`): each rank takes every
N-th row of each planned batch and PyTorch's DistributedDataParallel averages the gradients,
so a step is the step of one process on the whole batch (`--batch-size` is the global batch).
Rank 0 alone evaluates, logs, shows progress and writes the run folder.
"""

import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .dact import can_halt, dact_forward, dact_loss
from .data import batch_plan, encode_batch, example_lengths, read_examples
from .errors import TinydactError
from .evaluate import evaluate
from .model import atomic_write, load_checkpoint, new_from_bert, read_dact_config, save_checkpoint
from .tokenizer import Tokenizer


@dataclass
class TrainConfig:
    model: str  # a pretrained BERT directory, or a tinydact checkpoint (phase 2 after phase 1)
    train: str  # training TSV
    out: str  # run folder
    dev: str | None = None  # dev TSV, evaluated during training
    task: str | None = None  # data format; default: detected from the file
    phase: int = 2
    layers: str = "all"  # phase 1: "all", "last", "weighted" or "all-but-last" (see LAYERS)
    tau: float = 1e-3  # ponder penalty τ (phase 2); the authors' default
    tau_end: float = 0.0  # > 0: τ rises linearly from `tau` to `tau_end` over the run (our option); 0: τ throughout
    freeze_backbone: bool = False
    epochs: float = 1.0
    batch_size: int = 32
    max_length: int = 128
    lr: float = 5e-5  # backbone
    head_lr: float = 1e-3  # DACT modules
    halt_lr: float = 0.0  # their halting units (h_n = sigmoid(w_h·z + b_h)); 0: same as head_lr
    warmup: float = 0.1  # fraction of steps with a linear warm-up
    weight_decay: float = 0.01
    clip: float = 1.0  # gradient-norm clipping
    halt_bias: float = 3.0  # new heads only: sigmoid(3) ≈ 0.95
    rule: str = "paper"  # halting rule for dev evaluation
    seed: int = 0
    eval_every: int = 0  # steps between dev evaluations; 0: once per epoch
    save_every: int = 200  # steps between resume saves
    max_steps: int = 0  # stop early (0: no limit), e.g. for smoke tests
    cache: str | None = None  # file for cached [CLS] states (frozen backbone)
    save_dtype: str = "float32"  # dtype of best/ and final/ (float16 halves the size)


class Interrupted(Exception):
    pass


def _on_sigterm(signum, frame):
    raise Interrupted()


def parameter_groups(model, cfg: TrainConfig):
    """AdamW groups: backbone at lr (no decay on biases and LayerNorms), heads at head_lr,
    their halting units at halt_lr."""
    decay, no_decay = [], []
    for name, p in model.bert.named_parameters():
        (no_decay if p.ndim == 1 else decay).append(p)
    groups = [
        {"params": decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "lr": cfg.lr, "weight_decay": 0.0},
        {"params": [p for h in model.heads for n, p in h.named_parameters() if not n.startswith("halt.")],
         "lr": cfg.head_lr, "weight_decay": 0.0},
        {"params": [p for h in model.heads for p in h.halt.parameters()], "lr": cfg.halt_lr or cfg.head_lr, "weight_decay": 0.0},
    ]
    if cfg.freeze_backbone:
        groups = groups[2:]
    return groups


LAYERS = ("all", "last", "weighted", "all-but-last")  # phase 1's choices of per-block answers to train


def layer_weights(layers: str, N: int) -> list:
    """w_1..w_N, the weight of block j's cross-entropy L_j in phase 1's loss."""
    j = range(1, N + 1)
    if layers == "all":
        return [1.0 for _ in j]  # the plain mean over blocks
    if layers == "last":
        return [float(n == N) for n in j]  # a plain classifier on the last block
    if layers == "weighted":
        return [float(n) for n in j]  # PABEE: Σ_j j·L_j / Σ_j j, deeper blocks weigh more
    if layers == "all-but-last":
        return [float(n < N) for n in j]  # DeeBERT stage 2: the last module is left alone
    raise ValueError(f"unknown --layers {layers!r}, expected one of {LAYERS}")


def phase1_loss(model, cls, labels, layers: str):
    """Σ_j w_j·L_j / Σ_j w_j with L_j = CE(y_j, label), the cross-entropy of block j's answer,
    and w_j from `layer_weights` (all: the mean over blocks; last: the last block's alone)."""
    w = layer_weights(layers, model.num_layers)
    # blocks of weight 0 are skipped: their modules get no gradient at all
    loss = sum(w_j * F.cross_entropy(model.heads[j].logits(cls[:, j]), labels) for j, w_j in enumerate(w) if w_j)
    return loss / sum(w)


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
        cls = inputs if cfg.freeze_backbone else model.cls_states(*inputs)  # (B, N, H)
        if cfg.phase == 1:
            loss = phase1_loss(model, cls, y_true, cfg.layers)
            return loss, (model.heads[-1].logits(cls[:, -1]).argmax(-1) == y_true).float().mean(), None
        a_N, p, _, _ = model.forward_heads(cls)
        loss = dact_loss(a_N.float(), y_true, p.float(), tau)
        return loss, (a_N.argmax(-1) == y_true).float().mean(), p.sum(1).mean()


def tau_at(cfg: TrainConfig, step: int, total: int) -> float:
    """The ponder penalty of optimizer step `step` (0-based) of `total`: `tau`, or with
    `tau_end` a straight line from `tau` at the first step to `tau_end` at the last."""
    if not cfg.tau_end:
        return cfg.tau
    return cfg.tau + (cfg.tau_end - cfg.tau) * step / max(1, total - 1)


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


@torch.no_grad()
def cls_cache(model, examples, tokenizer, cfg: TrainConfig, device, desc: str):
    """Per-block [CLS] states (n, N, H) of a frozen backbone, in float16 on the CPU."""
    model.eval()
    out = torch.empty(len(examples), model.num_layers, model.bert.config.hidden_size, dtype=torch.float16)
    plan = batch_plan(example_lengths(examples, tokenizer, cfg.max_length), 128)
    for idx in tqdm(plan, desc=desc, leave=False, disable=None):  # shown on a terminal only
        enc, _, _ = encode_batch(examples, idx, tokenizer, cfg.max_length)
        out[idx] = model.cls_states(*(t.to(device) for t in enc)).to("cpu", torch.float16)
    return out


def cached_states(model, train_ex, dev_ex, tokenizer, cfg, device):
    """The frozen backbone's [CLS] states for train and dev, from `cfg.cache` when it matches."""
    key = {"model": str(Path(cfg.model).resolve()), "train": str(Path(cfg.train).resolve()),
           "dev": str(Path(cfg.dev).resolve()) if cfg.dev else None, "max_length": cfg.max_length,
           "sizes": [len(train_ex), len(dev_ex or [])]}
    if cfg.cache and Path(cfg.cache).is_file():
        saved = torch.load(cfg.cache, weights_only=True)
        if saved["key"] == json.dumps(key):
            return saved["train"], saved["dev"]
    train_cls = cls_cache(model, train_ex, tokenizer, cfg, device, "caching train [CLS] states")
    dev_cls = cls_cache(model, dev_ex, tokenizer, cfg, device, "caching dev [CLS] states") if dev_ex else None
    if cfg.cache:
        Path(cfg.cache).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(cfg.cache), lambda p: torch.save({"key": json.dumps(key), "train": train_cls, "dev": dev_cls}, p))
    return train_cls, dev_cls


@torch.no_grad()
def evaluate_cached(model, cls, labels, rule: str, device) -> dict:
    """Dev metrics from cached [CLS] states: the same halting test as `predict`, run on the
    full trajectory (no compaction needed: the backbone is not run here)."""
    model.eval()
    cls = cls.to(device, torch.float32)
    _, _, y, h = model.forward_heads(cls)  # (B, N, K), (B, N)
    a, p = dact_forward(y, h)  # a_1..a_N (B, N, K), p_1..p_N (B, N)
    N = model.num_layers
    halts = torch.stack([can_halt(a[:, n - 1], p[:, n - 1], N - n, rule) for n in range(1, N + 1)], 1)  # (B, N)
    layers = halts.float().argmax(1) + 1  # the first block whose test passes (block N always does)
    acc = (a[:, -1].argmax(-1).cpu() == labels).float().mean().item()
    return {"accuracy": acc, "avg_layers": layers.float().mean().item(), "ponder": p.sum(1).mean().item()}


@torch.no_grad()
def layer_accuracies(model, cls, labels, device) -> list:
    """Accuracy of each block's own answer y_n on cached [CLS] states (n, N, H)."""
    model.eval()
    cls, labels = cls.to(device, torch.float32), labels.to(device)
    return [(head(cls[:, n])[0].argmax(-1) == labels).float().mean().item() for n, head in enumerate(model.heads)]


def train(cfg: TrainConfig, device: torch.device, resume: bool = False, quiet: bool = False) -> dict:
    """Run (or continue) one training run. Returns the best dev metrics."""
    out = Path(cfg.out)
    state_path = out / "state.pt"
    state = None
    if resume:
        if not state_path.is_file():
            raise TinydactError(f"nothing to resume: {state_path} does not exist")
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        cfg = TrainConfig(**state["config"])  # a resumed run keeps its own settings
    if cfg.phase not in (1, 2) or cfg.layers not in LAYERS:
        raise TinydactError(f"--phase must be 1 or 2 and --layers one of {', '.join(repr(k) for k in LAYERS)}")
    if cfg.tau < 0 or cfg.tau_end < 0:
        raise TinydactError(f"--tau and --tau-end must be >= 0 (got {cfg.tau:g} and {cfg.tau_end:g})")
    rank, world, device = distributed_setup(device)
    if world > 1 and cfg.freeze_backbone:
        raise TinydactError("--freeze-backbone trains in one process (an epoch on cached states takes seconds): "
                            "start it without torchrun")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed + rank)  # ranks draw different dropout masks; DDP gives all rank 0's initial weights

    # Data and model
    meta = read_dact_config(cfg.model)
    train_ex, task, labels = read_examples(cfg.train, cfg.task, meta.get("labels"))
    dev_ex = read_examples(cfg.dev, task, labels)[0] if cfg.dev else None
    if meta and meta["labels"] != labels:
        raise TinydactError(f"{cfg.model} was trained for labels {meta['labels']}, the data has {labels}")
    tokenizer = Tokenizer.from_pretrained(cfg.model)
    model = load_checkpoint(cfg.model)[0] if meta else new_from_bert(cfg.model, len(labels), cfg.halt_bias)
    model.to(device)
    if cfg.freeze_backbone:
        model.bert.requires_grad_(False)
        train_cls, dev_cls = cached_states(model, train_ex, dev_ex, tokenizer, cfg, device)
        train_labels = torch.tensor([e.label for e in train_ex])
        dev_labels = torch.tensor([e.label for e in dev_ex]) if dev_ex else None
        lengths = [1] * len(train_ex)  # all "batches" cost the same: no bucketing needed
    else:
        lengths = example_lengths(train_ex, tokenizer, cfg.max_length)

    steps_per_epoch = len(batch_plan(lengths, cfg.batch_size))
    total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    warm = int(cfg.warmup * total)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm))
    )
    step, best = 0, None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        step, best = state["step"], state["best"]
        if rank == 0:  # the saved random state is rank 0's; other ranks keep their own stream
            torch.set_rng_state(state["rng"])
    objective = BatchLoss(model, cfg)
    if world > 1:  # find_unused_parameters: the pooler gets no gradient, in phase 1 nor do the halting units
        objective = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None,
                                            find_unused_parameters=True)

    def dev_metrics():
        if cfg.phase == 1:  # each block's own answer; "accuracy" is the last block's
            states = dev_cls if cfg.freeze_backbone else cls_cache(model, dev_ex, tokenizer, cfg, device, "dev")
            per_layer = layer_accuracies(model, states, torch.tensor([e.label for e in dev_ex]), device)
            m = {"accuracy": per_layer[-1], "avg_layers": float(model.num_layers), "layer_accuracy": per_layer}
        elif cfg.freeze_backbone:
            m = evaluate_cached(model, dev_cls, dev_labels, cfg.rule, device)
        else:
            r = evaluate(model, dev_ex, tokenizer, 64, cfg.max_length, halt=cfg.phase == 2, rule=cfg.rule, device=device)
            m = {k: r[k] for k in ("accuracy", "avg_layers", "seconds")}
        model.train()
        return m

    def score(m):  # dev accuracy; DeeBERT stage 2 leaves the last block's answer alone: the mean over the blocks it trains
        if cfg.phase == 1 and cfg.layers == "all-but-last":
            return sum(m["layer_accuracy"][:-1]) / (len(m["layer_accuracy"]) - 1)
        return m["accuracy"]

    def is_better(m):  # higher score; on a tie, fewer blocks
        return best is None or (score(m), -m["avg_layers"]) > (score(best), -best["avg_layers"])

    def save_state():
        snapshot = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "step": step, "best": best, "config": asdict(cfg), "rng": torch.get_rng_state()}
        atomic_write(state_path, lambda p: torch.save(snapshot, p))

    def save_model(name):
        save_checkpoint(model, tokenizer, out / name, labels, task, getattr(torch, cfg.save_dtype),
                        extra={"trained": {"phase": cfg.phase, "tau": cfg.tau, "step": step, "layers": cfg.layers,
                                           **({"tau_end": cfg.tau_end} if cfg.tau_end else {})}})

    def log(record):
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    eval_every = cfg.eval_every or steps_per_epoch
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")  # bf16 only on CUDA
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    bar = tqdm(total=total, initial=step, desc=f"phase {cfg.phase}", disable=quiet or rank > 0, dynamic_ncols=True)
    running = {}
    model.train()
    try:
        while step < total:
            epoch, offset = divmod(step, steps_per_epoch)
            plan = batch_plan(lengths, cfg.batch_size, shuffle=True, seed=cfg.seed + epoch)
            for idx in plan[offset:]:
                if step >= total:
                    break
                idx, weight = shard(idx, rank, world)  # one process: all rows, weight 1
                with autocast:
                    if cfg.freeze_backbone:
                        inputs, y_true = train_cls[idx].to(device, torch.float32), train_labels[idx].to(device)
                    else:
                        enc, y_true, _ = encode_batch(train_ex, idx, tokenizer, cfg.max_length)
                        inputs, y_true = [t.to(device) for t in enc], y_true.to(device)
                    loss, correct, ponder = objective(inputs, y_true, tau_at(cfg, step, total))
                optimizer.zero_grad(set_to_none=True)
                (loss * weight).backward()  # with DDP: gradients averaged over ranks here
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.clip)
                optimizer.step()
                schedule.step()
                step += 1
                stats = {k: v for k, v in (("loss", loss), ("acc", correct), ("ponder", ponder)) if v is not None}
                for k, v in global_means(stats, weight, world).items():
                    running[k] = v if k not in running else 0.98 * running[k] + 0.02 * v
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()} | ({"dev": f"{best['accuracy']:.3f}/{best['avg_layers']:.2f}"} if best else {}))
                if dev_ex is not None and (step % eval_every == 0 or step == total):
                    if rank == 0:
                        m = dev_metrics()
                        log({"step": step, "epoch": step / steps_per_epoch, "tau": tau_at(cfg, step - 1, total),
                             **{f"train_{k}": v for k, v in running.items()}, "dev": m})
                        if is_better(m):
                            best = {**m, "step": step}
                            save_model("best")
                        if not quiet:
                            tqdm.write(f"step {step}: dev accuracy {m['accuracy']:.4f}, avg blocks {m['avg_layers']:.2f}")
                    if world > 1:
                        dist.barrier()  # the other ranks wait while rank 0 evaluates
                if step % cfg.save_every == 0 and rank == 0:
                    save_state()
    except (KeyboardInterrupt, Interrupted):
        if rank == 0:
            save_state()
        again = "torchrun [its options] -m tinydact" if world > 1 else "tinydact"
        raise TinydactError(f"interrupted at step {step}/{total}; state saved, continue with: {again} train --resume --out {out}")
    finally:
        bar.close()
        signal.signal(signal.SIGTERM, previous)
    if rank == 0:
        save_state()
        save_model("final")
        if dev_ex is None:
            save_model("best")
    if world > 1:  # every rank returns rank 0's best metrics, once rank 0 has written its files
        shared = [best]
        dist.broadcast_object_list(shared, src=0)
        best = shared[0]
        dist.destroy_process_group()
    return best or {}
