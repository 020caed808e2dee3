"""Evaluation: accuracy (and Matthews correlation), blocks executed, estimated FLOPs, time.

Everything here runs the real inference path, `DACTBert.predict`, with per-example early
exit and batch compaction, so the blocks and seconds reported are what a user gets. With
`method` (static, deebert, pabee) and its `knob` it runs a baseline's exit rule instead,
through the same early-exit loop (`baselines.predict_exit`).
"""

import math
import time

import torch
from tqdm import tqdm

from .baselines import check_knob, predict_exit
from .bert import BertConfig
from .dact import can_halt
from .data import batch_plan, encode_batch, example_lengths
from .errors import TinydactError


def matthews(pred, gold) -> float:
    """Matthews correlation for binary labels (CoLA's metric); 0 when undefined."""
    tp = sum(p == 1 and g == 1 for p, g in zip(pred, gold))
    tn = sum(p == 0 and g == 0 for p, g in zip(pred, gold))
    fp = sum(p == 1 and g == 0 for p, g in zip(pred, gold))
    fn = sum(p == 0 and g == 1 for p, g in zip(pred, gold))
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / den if den else 0.0


def estimate_flops(cfg: BertConfig, seq_len: int, blocks: int, num_labels: int) -> int:
    """Floating-point operations (a multiply-add = 2) for one example of `seq_len` tokens
    that runs `blocks` blocks and their DACT heads. Embedding look-ups are free; the
    embedding LayerNorm and the softmaxes are small and counted roughly."""
    T, H, I, K = seq_len, cfg.hidden_size, cfg.intermediate_size, num_labels
    embed = 8 * T * H  # three-way sum + LayerNorm
    block = (
        2 * T * H * 3 * H  # Q, K, V projections
        + 2 * T * T * H * 2  # Q Kᵀ and att · V, all attention heads together
        + 5 * T * T * cfg.num_attention_heads  # softmax
        + 2 * T * H * H  # output projection
        + 2 * T * H * I * 2  # MLP, two matrices
        + 8 * T * I  # GELU
        + 16 * T * H  # two residual sums + two LayerNorms
    )
    head = 2 * (H * H + H * K + H) + 8 * K  # dense, answer, halt; recursion + halting test
    return embed + blocks * (block + head)


@torch.no_grad()
def evaluate(model, examples, tokenizer, batch_size=64, max_length=128, halt=True, rule="paper", device="cpu",
             method="dact", knob=None):
    """Run `model.predict` (or, for a baseline `method`, `predict_exit` with its `knob`) over
    `examples`; returns a dict of metrics (see keys below)."""
    if method != "dact" and not halt:
        raise TinydactError(f"--no-halt is DACT's full depth; {method} runs full depth with its knob "
                            f"(static {model.num_blocks}, deebert 0, pabee {model.num_blocks})")
    knob = check_knob(method, knob, model.num_blocks)
    model.eval()
    device = torch.device(device)
    lengths = example_lengths(examples, tokenizer, max_length)
    plan = batch_plan(lengths, batch_size)  # sorted by length: little padding
    pred = [0] * len(examples)
    blocks = [0] * len(examples)
    start, cpu_start = time.perf_counter(), time.process_time()
    for idx in plan:
        enc, _, _ = encode_batch(examples, idx, tokenizer, max_length)
        inputs = [t.to(device) for t in enc]
        if method == "dact":
            labels, _, used = model.predict(*inputs, halt=halt, rule=rule)
        else:
            labels, _, used = predict_exit(model, *inputs, method=method, knob=knob)
        for i, lab, n in zip(idx, labels.tolist(), used.tolist()):
            pred[i], blocks[i] = lab, n
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    gold = [e.label for e in examples]
    N, cfg = model.num_blocks, model.bert.config
    flops = [estimate_flops(cfg, t, n, model.num_labels) for t, n in zip(lengths, blocks)]
    full = [estimate_flops(cfg, t, N, model.num_labels) for t in lengths]
    result = {
        "examples": len(examples),
        "accuracy": sum(p == g for p, g in zip(pred, gold)) / len(examples),
        "avg_blocks": sum(blocks) / len(examples),
        "num_blocks": N,
        "histogram": [blocks.count(n) for n in range(1, N + 1)],  # examples that ran exactly n blocks
        "gflops_per_example": sum(flops) / len(examples) / 1e9,
        "flops_ratio": sum(flops) / sum(full),  # against the same model run to full depth
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,  # this process's CPU time over the same span (all its threads)
        "batch_size": batch_size,
        "halt": halt,
        "rule": rule,
    }
    if method != "dact":
        result.update(method=method, knob=knob)
    if model.num_labels == 2:
        result["matthews"] = matthews(pred, gold)
    result["predictions"] = pred
    result["blocks"] = blocks
    return result


@torch.no_grad()
def evaluate_states(model, xs, labels, rule: str, device) -> dict:
    """Dev metrics from cached head inputs xs (n, N, H) of a frozen backbone (`head_inputs`):
    the same halting test as `predict`, read off the whole trajectory (the backbone is not
    run here)."""
    model.eval()
    a, p, _, _ = model.forward_heads(xs.to(device, torch.float32))  # a_1..a_N (n, N, K), p_1..p_N (n, N)
    N = model.num_blocks
    halts = torch.stack([can_halt(a[:, n - 1], p[:, n - 1], N - n, rule) for n in range(1, N + 1)], 1)  # (n, N)
    blocks = halts.float().argmax(1) + 1  # the first block whose test passes (block N always does)
    acc = (a[:, -1].argmax(-1).cpu() == labels).float().mean().item()
    return {"accuracy": acc, "avg_blocks": blocks.float().mean().item(), "ponder": p.sum(1).mean().item()}


@torch.no_grad()
def block_accuracies(model, xs, labels, device) -> list:
    """Accuracy of each block's own answer y_n on cached head inputs xs (n, N, H)."""
    model.eval()
    xs, labels = xs.to(device, torch.float32), labels.to(device)
    return [(head(xs[:, n])[0].argmax(-1) == labels).float().mean().item() for n, head in enumerate(model.heads)]


@torch.no_grad()
def cache_head_inputs(model, examples, tokenizer, max_length: int, device, desc: str):
    """What the DACT modules read after every block, x_1..x_N (n, N, H) per example (the [CLS]
    state or the token mean), of a frozen backbone, in float16 on the CPU."""
    model.eval()
    out = torch.empty(len(examples), model.num_blocks, model.bert.config.hidden_size, dtype=torch.float16)
    plan = batch_plan(example_lengths(examples, tokenizer, max_length), 128)
    for idx in tqdm(plan, desc=desc, leave=False, disable=None):  # shown on a terminal only
        enc, _, _ = encode_batch(examples, idx, tokenizer, max_length)
        out[idx] = model.head_inputs(*(t.to(device) for t in enc)).to("cpu", torch.float16)
    return out


def dev_metrics(model, cfg, dev_ex, dev_xs, tokenizer, device) -> dict:
    """The dev figures a training run logs, for the run's TrainConfig `cfg`. Phase 1: each
    block's own answer ("accuracy" is the last block's); phase 2: the DACT model with halting,
    from the cached head inputs `dev_xs` of a frozen backbone, or through `evaluate`."""
    labels = torch.tensor([e.label for e in dev_ex])
    if cfg.phase == 1:
        states = dev_xs if dev_xs is not None else cache_head_inputs(model, dev_ex, tokenizer, cfg.max_length, device, "dev")
        per_block = block_accuracies(model, states, labels, device)
        m = {"accuracy": per_block[-1], "avg_blocks": float(model.num_blocks), "block_accuracy": per_block}
    elif dev_xs is not None:
        m = evaluate_states(model, dev_xs, labels, cfg.rule, device)
    else:
        r = evaluate(model, dev_ex, tokenizer, 64, cfg.max_length, rule=cfg.rule, device=device)
        m = {k: r[k] for k in ("accuracy", "avg_blocks", "seconds")}
    model.train()
    return m
