"""Evaluation: accuracy (and Matthews correlation), blocks executed, estimated FLOPs, time.

Everything here runs the real inference path, `DACTBert.predict`, with per-example early
exit and batch compaction, so the blocks and seconds reported are what a user gets. With
`method` (static, deebert, pabee) and its `knob` it runs a baseline's exit rule instead,
through the same early-exit loop (`baselines.predict_exit`).
"""

import math
import time

import torch

from .baselines import check_knob, predict_exit
from .data import batch_plan, encode_batch, example_lengths
from .errors import TinydactError
from .model import estimate_flops


def matthews(pred, gold) -> float:
    """Matthews correlation for binary labels (CoLA's metric); 0 when undefined."""
    tp = sum(p == 1 and g == 1 for p, g in zip(pred, gold))
    tn = sum(p == 0 and g == 0 for p, g in zip(pred, gold))
    fp = sum(p == 1 and g == 0 for p, g in zip(pred, gold))
    fn = sum(p == 0 and g == 1 for p, g in zip(pred, gold))
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / den if den else 0.0


@torch.no_grad()
def evaluate(model, examples, tokenizer, batch_size=64, max_length=128, halt=True, rule="paper", device="cpu",
             method="dact", knob=None):
    """Run `model.predict` (or, for a baseline `method`, `predict_exit` with its `knob`) over
    `examples`; returns a dict of metrics (see keys below)."""
    if method != "dact" and not halt:
        raise TinydactError(f"--no-halt is DACT's full depth; {method} runs full depth with its knob "
                            f"(static {model.num_layers}, deebert 0, pabee {model.num_layers})")
    knob = check_knob(method, knob, model.num_layers)
    model.eval()
    device = torch.device(device)
    lengths = example_lengths(examples, tokenizer, max_length)
    plan = batch_plan(lengths, batch_size)  # sorted by length: little padding
    pred = [0] * len(examples)
    layers = [0] * len(examples)
    start, cpu_start = time.perf_counter(), time.process_time()
    for idx in plan:
        enc, _, _ = encode_batch(examples, idx, tokenizer, max_length)
        inputs = [t.to(device) for t in enc]
        if method == "dact":
            labels, _, used = model.predict(*inputs, halt=halt, rule=rule)
        else:
            labels, _, used = predict_exit(model, *inputs, method=method, knob=knob)
        for i, lab, n in zip(idx, labels.tolist(), used.tolist()):
            pred[i], layers[i] = lab, n
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    gold = [e.label for e in examples]
    N, cfg = model.num_layers, model.bert.config
    flops = [estimate_flops(cfg, t, n, model.num_labels) for t, n in zip(lengths, layers)]
    full = [estimate_flops(cfg, t, N, model.num_labels) for t in lengths]
    result = {
        "examples": len(examples),
        "accuracy": sum(p == g for p, g in zip(pred, gold)) / len(examples),
        "avg_layers": sum(layers) / len(examples),
        "num_layers": N,
        "histogram": [layers.count(n) for n in range(1, N + 1)],  # examples that ran exactly n blocks
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
    result["layers"] = layers
    return result
