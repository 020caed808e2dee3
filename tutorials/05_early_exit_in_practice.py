# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial 5: early exit in practice
#
# Tutorial 3 proved that the halting test never changes a prediction; tutorial 4 trained
# DACT modules and counted, on cached states, how many blocks each sentence would need.
# This tutorial runs the real thing, `DACTBert.predict`, the default model on real
# sentences, and looks at what it saves:
#
# 1. **blocks per sentence**: clear-cut reviews against mixed or ambiguous ones;
# 2. **one sentence, block by block**: the answer, the halting value and the test after
#    every block, as `tinydact classify --explain` prints them;
# 3. **batch compaction**: in a batch, the rows of sentences that have stopped are removed
#    before the next block; forward hooks on the blocks show how many rows each block ran;
# 4. **time**: measured against the same model run to full depth, one sentence at a time
#    and in a batch.
#
# The last cell asserts two numbers: the agreement between predictions with and without
# halting (exactly 1), and that the rows each block ran are exactly the sentences that
# `predict` says reached it.
#
# **What it needs.** The default model in `weights/` (a DACT-BERT fine-tuned on SST-2 from
# `all-MiniLM-L6-v2`, N = 6 blocks), which comes with the repository. The batch of section 3
# is made of SST-2 dev sentences, from `../shared/data/glue/SST-2/dev.tsv` beside the
# repository when it is there (`tinydact download glue SST-2 --to ../shared/data/glue`
# fetches it), else of the sentences written into this script. `TINYDACT_DATA=builtin`
# forces the built-in ones; `TINYDACT_FAST=1` (set by the tests) uses a smaller batch and
# fewer timing repeats.

# %%
import os
import statistics
import time
from pathlib import Path

import torch

from tinydact.cli import halting_bounds
from tinydact.data import read_examples
from tinydact.model import estimate_flops, load_checkpoint
from tinydact.tokenizer import Tokenizer

torch.set_grad_enabled(False)  # inference only
FAST = os.environ.get("TINYDACT_FAST") == "1"

# This file's folder; in a notebook (no __file__) the folder Jupyter started the kernel in.
HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
ROOT = HERE.parent  # the repository
WEIGHTS = ROOT / "weights"
SST2 = ROOT.parent / "shared" / "data" / "glue" / "SST-2"

if not (WEIGHTS / "model.safetensors").is_file():
    raise SystemExit(f"the default model is missing: {WEIGHTS / 'model.safetensors'} should come with the repository "
                     "(a clone without Git LFS or a partial copy?); this tutorial needs it")  # fmt: skip
model, meta = load_checkpoint(WEIGHTS)  # in eval mode: dropout off
tok = Tokenizer.from_pretrained(WEIGHTS)
LABELS = meta["labels"]
N, K = model.num_layers, model.num_labels
print(f"default model: N = {N} blocks, labels {LABELS}")

# %% [markdown]
# ## 1. Blocks per sentence
#
# `model.predict(input_ids, attention_mask, token_type_ids)` returns three things per
# sentence: the predicted label, the accumulated answer `a_n` at the block where it stopped,
# and the number of blocks it ran. After block n it stops as soon as the exact test
# `can_halt(a_n, p_n, N − n)` (tutorial 3, the paper's rule) proves that the remaining
# blocks cannot change the top class.
#
# Two groups of short reviews, written for this tutorial: clear-cut ones, and mixed,
# hedged or sarcastic ones. The test needs the answer to be confident *and* `p_n` to be
# small already, so the clear-cut ones should tend to stop earlier; which ones actually do
# depends on the model.

# %%
EASY = [
    "a masterpiece: funny, moving and beautifully acted.",
    "the worst film i have seen this year.",
    "i loved every minute of it.",
    "an awful, boring mess.",
    "brilliant performances and a gripping story.",
    "dull, lifeless and far too long.",
    "a warm, witty and wonderful film.",
]
HARD = [
    "it is not bad, but it is not good either.",
    "the plot is thin, but the actors are charming.",
    "i wanted to like it more than i did.",
    "not quite the disaster everyone said it was.",
    "only occasionally as clever as it thinks it is.",
    "well, that was two hours of my life.",
    "the first half drags; the second half almost makes up for it.",
]


def show(texts):
    """Classify `texts` in one batch, print label, confidence and blocks run; return blocks (B,)
    and confidences (B,)."""
    pred, probs, layers = model.predict(*tok(texts))  # (B,), (B, K), (B,)
    for text, k, a, n in zip(texts, pred.tolist(), probs, layers.tolist()):
        print(f"  {n} of {N} blocks  {LABELS[k]:>9} {a[k]:.3f}  {text}")
    return layers.float(), probs.max(-1).values


print("clear-cut:")
easy_blocks, easy_confidence = show(EASY)
print("mixed or ambiguous:")
hard_blocks, _ = show(HARD)
print(f"average blocks: clear-cut {easy_blocks.mean():.2f}, mixed {hard_blocks.mean():.2f} (of {N})")

# %% [markdown]
# The confidence printed is `a_n[label]` at the exit, not at block N: the remaining blocks
# could have moved it, only not enough to change the label. And confidence is not
# correctness: a sarcastic line can fool the model into a sure, early, wrong answer. The
# test is exact with respect to the model's own full-depth answer, not to the truth.
#
# ## 2. One sentence, block by block
#
# `predict` takes an optional list, `trace`, and appends to it, after every block, what it
# computed for the sentences still running: the block's own answer `y_n`, its halting value
# `h_n`, `p_n = h_n · p_{n−1}`, the accumulated answer `a_n`, and the test's verdict. The two
# sides of the test come from `halting_bounds` (the function behind
# `tinydact classify --explain`): the lowest the top class c* can fall to, and the highest
# the runner-up c' can rise to, whatever the `d = N − n` remaining blocks do,
#
#     a_n[c*] · (1 − p_n)^d     against     a_n[c'] + p_n · d
#
# We trace the clear-cut sentence that stopped earliest (with the most confident answer on
# a tie).

# %%
SENTENCE = EASY[min(range(len(EASY)), key=lambda i: (easy_blocks[i], -easy_confidence[i]))]
trace = []
pred, probs, layers = model.predict(*tok([SENTENCE]), trace=trace)
print(f"{SENTENCE!r}: {LABELS[pred[0]]}, after {int(layers[0])} of {N} blocks\n")
def num(x):
    x = float(x)
    return f"{x:.4f}" if x == 0 or x >= 1e-3 else f"{x:.1e}"  # small p_n and h_n stay readable


columns = ["n", f"y_n[{LABELS[1]}]", "h_n", "p_n", f"a_n[{LABELS[1]}]", "a_n[c*]·(1−p_n)^d", "", "a_n[c']+p_n·d",
           "d", "verdict"]  # fmt: skip
rows = [columns]
for t in trace:  # one entry per block run; each holds the rows still running (here: one)
    n, d = t["n"], N - t["n"]
    lower, upper = halting_bounds(t["a_n"], t["p_n"], d)  # (1,), (1,)
    verdict = "last block: stop" if d == 0 else "stop" if t["halt"][0] else "go on"
    rows.append([str(n), num(t["y_n"][0, 1]), num(t["h_n"][0]), num(t["p_n"][0]), num(t["a_n"][0, 1]),
                 num(lower[0]), ">" if lower[0] > upper[0] else "≤", num(upper[0]), str(d), verdict])  # fmt: skip
widths = [max(len(r[c]) for r in rows) for c in range(len(columns))]
for r in rows:
    print("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())

# %% [markdown]
# The same table, with a legend, from the command line:
#
#     tinydact classify --explain "a masterpiece: funny, moving and beautifully acted."
#
# What did the skipped blocks have to say? `halt=False` runs all N blocks (every sentence
# to the end, as in training) and returns `a_N`; its label is the same, its confidence
# may differ a little:

# %%
full_pred, full_probs, full_layers = model.predict(*tok([SENTENCE]), halt=False)
print(f"full depth: {LABELS[full_pred[0]]} {full_probs[0, full_pred[0]]:.4f} after {int(full_layers[0])} blocks; "
      f"with halting: {LABELS[pred[0]]} {probs[0, pred[0]]:.4f} after {int(layers[0])}")  # fmt: skip

# %% [markdown]
# ## 3. Batch compaction
#
# One sentence at a time, stopping early simply means not calling the remaining blocks. In
# a batch, the sentences stop at different blocks. Most early-exit code keeps running the
# whole batch until every row has stopped, and so saves no time at all. `predict` instead
# (`run_with_early_exit` in `tinydact/model.py`) removes the rows that stopped from the
# hidden states and the attention mask before the next block, and, when the longest
# sentence left is shorter than the padding, the unused columns too. Results are put back
# in input order.
#
# To watch it we register a **forward hook** on every block: a function PyTorch calls after
# the block's forward, with the block's inputs. The hidden states `x` it received are
# `(rows, T, H)`: the rows and columns that block really computed.

# %%
if SST2.is_dir() and os.environ.get("TINYDACT_DATA") != "builtin":
    source = f"SST-2 dev ({SST2})"
    BATCH = [e.text_a for e in read_examples(SST2 / "dev.tsv")[0]][: 64 if FAST else 128]
else:
    source = "the sentences of section 1, four times over"
    BATCH = (EASY + HARD) * 4  # the same sentence gives the same answer in any row
print(f"batch: {len(BATCH)} sentences from {source}")

seen = {}  # block n -> (rows, columns) of the hidden states it received


def recorder(n):
    def record(block, inputs, output):
        x = inputs[0]  # the hidden states block n received, (rows, T, H)
        seen[n] = tuple(x.shape[:2])

    return record


hooks = [block.register_forward_hook(recorder(n)) for n, block in enumerate(model.bert.blocks, start=1)]
enc = tok(BATCH)  # (B, T) each, padded to the longest sentence
pred, probs, layers = model.predict(*enc)
for h in hooks:
    h.remove()  # hooks stay until removed: the timing below runs without them

B, T = enc.input_ids.shape
rows_seen = [seen[n][0] if n in seen else 0 for n in range(1, N + 1)]  # a block never called ran 0 rows
reached = [int((layers >= n).sum()) for n in range(1, N + 1)]  # sentences that ran block n, from predict's answer
print(f"B = {B} sentences, padded to T = {T} tokens")
print("  block n  rows run  columns  sentences with layers ≥ n")
for n in range(1, N + 1):
    cols = seen[n][1] if n in seen else "-"
    print(f"  {n:>7}  {rows_seen[n - 1]:>8}  {cols:>7}  {reached[n - 1]:>8}")
print(f"exits after block 1..{N}:", torch.bincount(layers, minlength=N + 1)[1:].tolist())

# %% [markdown]
# Two measures of the work saved, against the same batch run to full depth: the token
# positions the blocks processed (rows × columns, summed over blocks), and
# `estimate_flops`, the floating-point operations per sentence of its own length, counted
# for the blocks (and DACT modules) it ran, summed over the batch.

# %%
rows_cols = sum(r * c for r, c in seen.values()) / (B * T * N)
lengths = enc.attention_mask.sum(1).tolist()  # real tokens per sentence
flops = sum(estimate_flops(model.bert.config, t, n, K) for t, n in zip(lengths, layers.tolist()))
full_flops = sum(estimate_flops(model.bert.config, t, N, K) for t in lengths)
print(f"average blocks {layers.float().mean():.2f} of {N} = {layers.float().mean() / N:.1%} of full depth")
print(f"token positions processed: {rows_cols:.1%} of full depth; estimated FLOPs: {flops / full_flops:.1%}")

# %% [markdown]
# ## 4. Time
#
# Fewer blocks should mean less time, but only measuring says how much: every block call
# has a fixed cost, the halting test runs after every block, compaction copies tensors, and
# small batches use a CPU poorly. We time `predict` with halting against `halt=False` (all
# N blocks; the DACT modules still run after each block, to give `a_N`), on the same
# already-tokenised inputs:
#
# - **batch 1**: a few sentences, one `predict` call each;
# - **batched**: the whole batch of section 3 in one call.
#
# Each is repeated a few times after one warm-up call and the median is kept. Timings on a
# shared machine are noisy (other programs compete for the cores), so read the ratios
# roughly; `benchmarks/halting_speed.py` measures more carefully.

# %%
REPEATS = 3 if FAST else 7
singles = [tok([s]) for s in BATCH[:16]]  # batch 1: sixteen sentences, one at a time


def median_seconds(fn):
    fn()  # warm-up: the first call pays for memory allocation
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def one_by_one(halt):
    for e in singles:
        model.predict(*e, halt=halt)


threads = torch.get_num_threads()
print(f"{threads} thread(s), median of {REPEATS} runs:")
def whole_batch(halt):
    model.predict(*enc, halt=halt)


for name, fn, count in [("batch 1", one_by_one, len(singles)), (f"batch {B}", whole_batch, B)]:
    t_halt = median_seconds(lambda: fn(True))  # seconds for all `count` sentences
    t_full = median_seconds(lambda: fn(False))
    print(f"  {name:>9}: with halting {t_halt / count * 1e3:6.2f} ms per sentence, "
          f"full depth {t_full / count * 1e3:6.2f} ms  -> {t_full / t_halt:.2f}x faster")  # fmt: skip

# %% [markdown]
# At batch 1 the gain should follow the blocks saved for those sentences (plus the fixed
# cost of the embeddings and the Python around the blocks). In a batch it follows the
# token positions processed, as long as the batch is big enough to keep the CPU busy after
# rows have left. Without compaction, the batched gain would be nothing.
#
# ## The check
#
# 1. **Halting never changes a prediction.** The labels from `predict` with halting equal
#    those with `halt=False` on every sentence of this tutorial: agreement exactly 1.
# 2. **Compaction runs exactly the rows that are still going.** The rows each block
#    received (seen by the hooks) equal the number of sentences whose returned blocks-run
#    is at least n, for every block n.

# %%
all_texts = EASY + HARD + BATCH
same = 0
for start in range(0, len(all_texts), 64):
    e = tok(all_texts[start : start + 64])
    same += int((model.predict(*e)[0] == model.predict(*e, halt=False)[0]).sum())
agreement = same / len(all_texts)
print(f"agreement of predictions with and without halting: {agreement:.3f} ({same} of {len(all_texts)} sentences)")
print(f"rows run per block (hooks): {rows_seen}; sentences with layers ≥ n: {reached}; equal: {rows_seen == reached}")
assert agreement == 1.0, "early exit changed a prediction"
assert rows_seen == reached, "the blocks ran other rows than the sentences still going"
