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
# This tutorial runs the real thing, `DACTBert.predict`, with the model shipped in
# `weights/`, on real sentences, and looks at what it saves:
#
# 1. **blocks per sentence**: clear-cut reviews against mixed or ambiguous ones;
# 2. **one sentence, block by block**: the answer, the halting value and both sides of the
#    test after every block, from `predict`'s `trace` (what `tinydact classify --explain`
#    prints);
# 3. **the early-exit loop, written by us**: embeddings, then block after block, the DACT
#    module, the test, and **batch compaction**: the rows of sentences that have stopped
#    are removed before the next block. Ours must give exactly what `predict` gives;
# 4. **compaction watched** through forward hooks on the blocks, with two pictures: how
#    many sentences stopped after each block, and how many rows each block ran;
# 5. **time**: measured against the same model run to full depth, one sentence at a time
#    and in a batch.
#
# The last cell checks three things: predictions with and without halting agree on every
# sentence (agreement exactly 1); our loop returns the same labels, probabilities and
# blocks as `predict`; and the rows each block ran are exactly the sentences that `predict`
# says reached it.
#
# **What it needs.** The DACT-BERT shipped with the repository in `weights/` (fine-tuned
# on SST-2 from `all-MiniLM-L6-v2`, N = 6 blocks). The batch of sections 3 and 4 is made of
# SST-2 dev sentences, found by `tinydact.home.locate` as `data/glue/SST-2` in
# `$TINYDACT_HOME` or in `~/.cache/tinydact` (`tinydact download glue SST-2` puts it
# there); without it, of the sentences written into this script. `TINYDACT_FAST=1` (set
# by the tests) uses a smaller batch and fewer timing repeats.

# %%
import os
import statistics
import time
from pathlib import Path

import torch

import tinydact
from tinydact.bert import key_mask
from tinydact.checkpoint import load_checkpoint
from tinydact.dact import can_halt, dact_update
from tinydact.data import read_examples
from tinydact.evaluate import estimate_flops
from tinydact.home import locate, shipped_model
from tinydact.tokenizer import Tokenizer

torch.set_grad_enabled(False)  # inference only
FAST = os.environ.get("TINYDACT_FAST") == "1"
# The repository is the folder that holds the tinydact package (not the working directory):
# pictures are written next to the tutorials, from a script or a notebook alike.
PICTURES = Path(tinydact.__file__).resolve().parent.parent / "tutorials"

WEIGHTS = shipped_model()  # weights/ of the repository (an error that says so if it is missing)
model, meta = load_checkpoint(WEIGHTS)  # in eval mode: dropout off
tok = Tokenizer.from_pretrained(WEIGHTS)
LABELS = meta["labels"]
N, K = model.num_blocks, model.num_labels
print(f"model: the DACT-BERT shipped in {WEIGHTS}: N = {N} blocks, labels {LABELS}")

# %% [markdown]
# ## 1. Blocks per sentence
#
# `model.predict(input_ids, attention_mask, token_type_ids)` returns three things per
# sentence: the predicted label, the accumulated answer `a_n` at the block where it stopped,
# and the number of blocks it ran. After block n it stops as soon as the exact test
# `can_halt(a_n, p_n, N − n)` (tutorial 3, the paper's rule,
# `docs/dact.md#3-halting-exactly-at-inference`) proves that the remaining blocks cannot
# change the top class.
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
    pred, probs, blocks = model.predict(*tok(texts))  # (B,), (B, K), (B,)
    for text, k, a, n in zip(texts, pred.tolist(), probs, blocks.tolist()):
        print(f"  {n} of {N} blocks  {LABELS[k]:>9} {a[k]:.3f}  {text}")
    return blocks.float(), probs.max(-1).values


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
# `predict` takes an optional list, `trace`. It fills it with one list per sentence (in
# input order), holding one dict per block the sentence ran: `n` and `d = N − n`, the
# block's own answer `y_n`, its halting value `h_n`, `p_n = h_n · p_{n−1}`, the
# accumulated answer `a_n`, both sides of the test (from `dact.halting_bounds`),
#
#     top_lower_bound        = a_n[c*] · (1 − p_n)^d   the lowest the top class can fall to
#     runner_up_upper_bound  = a_n[c'] + p_n · d       the highest any other class can rise to
#
# whether the test passes (`passes_test`), and whether the sentence stopped there (`stop`).
#
# We trace the clear-cut sentence that stopped earliest (with the most confident answer on
# a tie).

# %%
SENTENCE = EASY[min(range(len(EASY)), key=lambda i: (easy_blocks[i], -easy_confidence[i]))]
trace = []
pred, probs, blocks = model.predict(*tok([SENTENCE]), trace=trace)
print(f"{SENTENCE!r}: {LABELS[pred[0]]}, after {int(blocks[0])} of {N} blocks\n")


def num(x):
    return f"{x:.4f}" if x == 0 or x >= 1e-3 else f"{x:.1e}"  # small p_n and h_n stay readable


columns = ["n", f"y_n[{LABELS[1]}]", "h_n", "p_n", f"a_n[{LABELS[1]}]", "a_n[c*]·(1−p_n)^d", "", "a_n[c']+p_n·d",
           "d", "verdict"]  # fmt: skip
rows = [columns]
for t in trace[0]:  # the first (only) sentence: one dict per block it ran
    verdict = "last block: stop" if t["d"] == 0 else "stop" if t["stop"] else "go on"
    rows.append([str(t["n"]), num(t["y_n"][1]), num(t["h_n"]), num(t["p_n"]), num(t["a_n"][1]),
                 num(t["top_lower_bound"]), ">" if t["passes_test"] else "≤", num(t["runner_up_upper_bound"]),
                 str(t["d"]), verdict])  # fmt: skip
widths = [max(len(r[c]) for r in rows) for c in range(len(columns))]
for r in rows:
    print("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())

# %% [markdown]
# The same table, with a legend, from the command line:
#
#     tinydact classify --explain "a masterpiece: funny, moving and beautifully acted."
#
# and from Python, `tinydact.load()` (the shipped model) returns a classifier whose
# results carry the same trace under `steps` with `explain=True`:

# %%
clf = tinydact.load()
result = clf([SENTENCE], explain=True)[0]
print({k: v for k, v in result.items() if k != "steps"})
print("its steps equal the trace above:", result["steps"] == trace[0])

# %% [markdown]
# What did the skipped blocks have to say? `halt=False` runs all N blocks (every sentence
# to the end, as in training) and returns `a_N`; its label is the same, its confidence
# may differ a little:

# %%
full_pred, full_probs, full_blocks = model.predict(*tok([SENTENCE]), halt=False)
print(f"full depth: {LABELS[full_pred[0]]} {full_probs[0, full_pred[0]]:.4f} after {int(full_blocks[0])} blocks; "
      f"with halting: {LABELS[pred[0]]} {probs[0, pred[0]]:.4f} after {int(blocks[0])}")  # fmt: skip

# %% [markdown]
# ## 3. The early-exit loop, written by us
#
# One sentence at a time, stopping early simply means not calling the remaining blocks. In
# a batch, the sentences stop at different blocks. Most early-exit code keeps running the
# whole batch until every row has stopped, and so saves no time at all. tinydact removes
# the work itself (`docs/dact.md#5-saving-real-computation`): before the next block, the
# rows that stopped are dropped from the hidden states, the attention mask and the running
# `a`, `p`; then the padding columns no remaining row needs are cut away (with right
# padding, everything past the longest live row). Each finished row's answer goes back to
# its position in the input.
#
# Here is that loop, written out. It uses the pieces of the earlier tutorials: the
# embeddings and blocks of tutorial 1 (with the key mask), the DACT modules and
# `dact_update`, `can_halt` of tutorials 3 and 4. `rows` remembers which input sentence each
# live row is.

# %%
def my_predict(model, input_ids, attention_mask, token_type_ids, rule="paper"):
    """Labels (B,), a_n at the exit (B, K), blocks run (B,): DACT-BERT with early exit."""
    B, N = input_ids.shape[0], model.num_blocks
    x = model.bert.embed(input_ids, token_type_ids)  # (B, T, H)
    mask, rows = attention_mask, torch.arange(B)  # rows: the input index of each live row
    a, p = x.new_zeros(B, model.num_labels), x.new_ones(B)  # a_0 = 0, p_0 = 1
    probs, blocks = x.new_zeros(B, model.num_labels), torch.zeros(B, dtype=torch.long)
    for n in range(1, N + 1):
        x = model.bert.blocks[n - 1](x, key_mask(mask))  # (b, T, H): only the b live rows
        y_n, h_n = model.heads[n - 1](x[:, 0])  # the DACT module reads the [CLS] row
        a, p = dact_update(a, p, y_n, h_n)  # (b, K), (b,)
        done = can_halt(a, p, N - n, rule)  # (b,) bool; all True after block N
        probs[rows[done]], blocks[rows[done]] = a[done], n  # finished rows, back in input order
        keep = ~done
        x, mask, a, p, rows = x[keep], mask[keep], a[keep], p[keep], rows[keep]  # drop them
        if len(rows) == 0:
            break
        T = int(mask.sum(1).max())  # the longest live row: later columns are all padding
        x, mask = x[:, :T], mask[:, :T]
    return probs.argmax(-1), probs, blocks


# %% [markdown]
# Ours against the library's `model.predict` (whose loop is `run_with_early_exit` in
# `tinydact/model.py`) on a batch: real sentences, padded to the longest.

# %%
BATCH_DATA, line = locate("data/glue/SST-2", None, "the sentences of section 1, four times over")
print(line)
if BATCH_DATA is not None:
    BATCH = [e.text_a for e in read_examples(BATCH_DATA / "dev.tsv")[0]][: 64 if FAST else 128]
else:
    BATCH = (EASY + HARD) * 4  # the same sentence gives the same answer in any row
enc = tok(BATCH)  # (B, T) each, padded to the longest sentence
B, T = enc.input_ids.shape
print(f"batch: {B} sentences, padded to T = {T} tokens")

ours = my_predict(model, *enc)
theirs = model.predict(*enc)
loop_diff = (ours[1] - theirs[1]).abs().max().item()
loop_same = torch.equal(ours[0], theirs[0]) and torch.equal(ours[2], theirs[2])
print(f"labels and blocks identical: {loop_same}; max |probabilities ours − predict| = {loop_diff:.2e}")

# %% [markdown]
# ## 4. Compaction, watched
#
# To watch the library's loop we register a **forward hook** on every block: a function
# PyTorch calls after the block's forward, with the block's inputs. The hidden states `x` it
# received are `(rows, T, H)`: the rows and columns that block really computed. The trace
# tells the same story from the other side: a sentence's trace has one entry per block it
# ran.

# %%
seen = {}  # block n -> (rows, columns) of the hidden states it received


def recorder(n):
    def record(block, inputs, output):
        x = inputs[0]  # the hidden states block n received, (rows, T, H)
        seen[n] = tuple(x.shape[:2])

    return record


hooks = [block.register_forward_hook(recorder(n)) for n, block in enumerate(model.bert.blocks, start=1)]
batch_trace = []
pred, probs, blocks = model.predict(*enc, trace=batch_trace)
for hook in hooks:
    hook.remove()  # hooks stay until removed: the timing below runs without them

rows_seen = [seen[n][0] if n in seen else 0 for n in range(1, N + 1)]  # a block never called ran 0 rows
rows_traced = [sum(any(t["n"] == n for t in steps) for steps in batch_trace) for n in range(1, N + 1)]
reached = [int((blocks >= n).sum()) for n in range(1, N + 1)]  # sentences that ran block n, from predict's answer
exits_per_block = torch.bincount(blocks, minlength=N + 1)[1:].tolist()
print("  block n  rows run (hooks)  columns  rows in the trace  sentences with blocks ≥ n  stopped here")
for n in range(1, N + 1):
    cols = seen[n][1] if n in seen else "-"
    print(f"  {n:>7}  {rows_seen[n - 1]:>16}  {cols:>7}  {rows_traced[n - 1]:>17}  {reached[n - 1]:>25}  "
          f"{exits_per_block[n - 1]:>12}")  # fmt: skip

# %% [markdown]
# The pictures (`tutorials/early_exit.png`, when matplotlib is installed): on the left, how
# many sentences stopped after each block; on the right, how many rows each block ran (the
# hooks), with the columns it ran on written above its bar. Without compaction, every
# block would run all B rows and T columns.

# %%
try:
    import matplotlib.pyplot as plt  # without a display, matplotlib draws into files only
except ImportError:
    plt = None
    print("matplotlib is not installed: no picture")

if plt is not None:
    blocks_axis = list(range(1, N + 1))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.bar(blocks_axis, exits_per_block, color="C2")
    left.set(xlabel="block n", ylabel="sentences", xticks=blocks_axis, title=f"exits: stopped after block n (B = {B})")
    right.bar(blocks_axis, [B] * N, color="lightgray", label="without compaction")
    right.bar(blocks_axis, rows_seen, color="C0", label="rows the block ran")
    for n in blocks_axis:
        if n in seen:
            right.annotate(f"T = {seen[n][1]}", (n, rows_seen[n - 1]), textcoords="offset points", xytext=(0, 3),
                           ha="center", fontsize=8)  # fmt: skip
    right.set(xlabel="block n", ylabel="rows", xticks=blocks_axis, ylim=(0, 1.3 * B), title="live rows per block")
    right.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(PICTURES / "early_exit.png", dpi=100)
    print("saved", PICTURES / "early_exit.png")

# %% [markdown]
# Two measures of the work saved, against the same batch run to full depth: the token
# positions the blocks processed (rows × columns, summed over blocks), and
# `estimate_flops`, the floating-point operations per sentence of its own length, counted
# for the blocks (and DACT modules) it ran, summed over the batch.

# %%
rows_cols = sum(r * c for r, c in seen.values()) / (B * T * N)
lengths = enc.attention_mask.sum(1).tolist()  # real tokens per sentence
flops = sum(estimate_flops(model.bert.config, t, n, K) for t, n in zip(lengths, blocks.tolist()))
full_flops = sum(estimate_flops(model.bert.config, t, N, K) for t in lengths)
print(f"average blocks {blocks.float().mean():.2f} of {N} = {blocks.float().mean() / N:.1%} of full depth")
print(f"token positions processed: {rows_cols:.1%} of full depth; estimated FLOPs: {flops / full_flops:.1%}")

# %% [markdown]
# ## 5. Time
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


def whole_batch(halt):
    model.predict(*enc, halt=halt)


print(f"{torch.get_num_threads()} thread(s), median of {REPEATS} runs:")
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
# 2. **Our loop is the library's.** On the batch of section 3, `my_predict` and
#    `model.predict` return the same labels and blocks, and the same probabilities (max
#    difference below 1e-6; the same operations on the same rows give the same numbers).
# 3. **Compaction runs exactly the rows that are still going.** For every block n, the rows
#    it received (seen by the hooks) and the sentences whose trace has an entry for block n
#    both equal the number of sentences whose returned blocks-run is at least n.

# %%
all_texts = EASY + HARD + BATCH
same = 0
for start in range(0, len(all_texts), 64):
    e = tok(all_texts[start : start + 64])
    same += int((model.predict(*e)[0] == model.predict(*e, halt=False)[0]).sum())
agreement = same / len(all_texts)
print(f"1. agreement of predictions with and without halting: {agreement:.3f} ({same} of {len(all_texts)} sentences)")
print(f"2. my_predict against model.predict: labels and blocks identical {loop_same}, "
      f"max probability difference {loop_diff:.2e}")  # fmt: skip
print(f"3. rows run per block (hooks): {rows_seen}; in the trace: {rows_traced}; sentences with blocks ≥ n: {reached}")
assert agreement == 1.0, "early exit changed a prediction"
assert loop_same and loop_diff < 1e-6, "my_predict does not do what model.predict does"
assert rows_seen == rows_traced == reached, "the blocks ran other rows than the sentences still going"
print("all checks passed")
