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
# # Tutorial 4: training DACT-BERT
#
# Tutorial 3 worked out the DACT arithmetic on numbers picked by hand. Here the numbers come
# from a real BERT, and the DACT modules learn them. We
#
# 1. go through the **two-phase recipe** that trains DACT-BERT, in words;
# 2. compute, once, the **[CLS] state after every block** of a frozen, already fine-tuned
#    backbone for a few hundred SST-2 sentences;
# 3. train **fresh DACT modules** on those states with the DACT loss, in a ten-line loop,
#    for a few values of the ponder penalty τ;
# 4. watch how **τ moves accuracy and the number of blocks** used on held-out sentences
#    (with the exact halting test of tutorial 3), and see why the test is conservative;
# 5. check that the exits we read off the cached states are the ones `model.predict`, which
#    really stops running blocks, takes on the same sentences.
#
# The last cell asserts two numbers: that the average number of blocks does not grow with τ
# (within 0.1 of a block), and that the agreement rate with `model.predict` is exactly 1.
#
# **What it needs.** The default model in `weights/` (a DACT-BERT fine-tuned on SST-2 from
# `all-MiniLM-L6-v2`: N = 6 blocks of width H = 384), which comes with the repository. The
# sentences are SST-2's, from `../shared/data/glue/SST-2/` beside the repository when it is
# there (`tinydact download glue SST-2 --to ../shared/data/glue` fetches it), else 60 sentences
# written into this script. `TINYDACT_DATA=builtin` forces the built-in ones;
# `TINYDACT_FAST=1` (set by the tests) uses fewer sentences and shorter training.

# %%
import os
import random
import time
from pathlib import Path

import torch

from tinydact.dact import HALT_BIAS, can_halt, dact_forward, dact_loss
from tinydact.data import read_examples
from tinydact.model import DACTBert, load_checkpoint
from tinydact.tokenizer import Tokenizer

FAST = os.environ.get("TINYDACT_FAST") == "1"
START = time.perf_counter()

# This file's folder; in a notebook (no __file__) the folder Jupyter started the kernel in.
HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
ROOT = HERE.parent  # the repository
WEIGHTS = ROOT / "weights"
SST2 = ROOT.parent / "shared" / "data" / "glue" / "SST-2"

# %% [markdown]
# ## 1. The recipe, in words
#
# A DACT-BERT is a BERT whose every block n is followed by a small DACT module: it reads the
# block's `[CLS]` state and emits an answer `y_n` and a halting value `h_n` (tutorial 3,
# `dact.DACTHead`). Training them all from scratch at once asks a lot of the fresh modules:
# at the start their answers are random, so the mixture `a_N` is random, and the halting
# values get gradients that mean nothing. So the recipe has two phases (ours, modelled on
# what the DACT authors did for their visual-reasoning model; see the project README):
#
# **Phase 1: cross-entropy on every block's answer.** Fine-tune the backbone together with
# the answer part of every module, with the mean over blocks of `CE(y_n, label)`. Every
# block learns to answer on its own, early blocks included; the halting units are not used.
# (`tinydact train --phase 1 --layers all`; `--layers last` trains a plain classifier on
# the last block only.)
#
# **Phase 2: the DACT loss.** Now train with the loss of tutorial 3,
#
#     L = CE(a_N, label) + τ · Σ_n p_n      (dact.dact_loss)
#
# where `a_N` is the mixture of all the blocks' answers and `Σ_n p_n` the ponder cost. All N
# blocks run for every example: nothing halts during training, everything is smooth and
# every `h_n` gets a gradient. Either the whole model trains (`tinydact train --phase 2`), or
# only the DACT modules, with the backbone frozen (`--freeze-backbone`). Frozen, a sentence's
# `[CLS]` states never change, so they can be computed once and reused every epoch: an
# epoch of phase 2 then costs a few small matrix products per sentence instead of a whole
# BERT, which makes it cheap to try several τ.
#
# That frozen phase 2 is what we run here, in miniature: the backbone of the default model
# (already through both phases), fresh DACT modules, and our own short loop.

# %% [markdown]
# ## 2. The model and the sentences
#
# `load_checkpoint` reads the default model (backbone and DACT modules); `.eval()` mode
# (dropout off) is what it returns. We keep its backbone, `model.bert`, and freeze it.

# %%
if not (WEIGHTS / "model.safetensors").is_file():
    raise SystemExit(f"the default model is missing: {WEIGHTS / 'model.safetensors'} should come with the repository "
                     "(a clone without Git LFS or a partial copy?); this tutorial needs it")  # fmt: skip
model, meta = load_checkpoint(WEIGHTS)
tok = Tokenizer.from_pretrained(WEIGHTS)
backbone = model.bert.requires_grad_(False)  # frozen: no gradient will reach it
LABELS = meta["labels"]
N, H, K = model.num_layers, backbone.config.hidden_size, model.num_labels
print(f"default model: N = {N} blocks, H = {H}, labels {LABELS}; trained with {meta.get('trained')}")

# %% [markdown]
# The sentences: training sentences (the DACT modules learn on them) and held-out ones (we
# measure on them). From SST-2 we take a random few hundred of its training sentences and,
# held out, sentences of its dev set. One caveat: the default backbone was fine-tuned on
# SST-2's training set, so it knows those sentences well, and modules trained on them see
# easier states than the held-out ones; held-out accuracy is the honest number.
#
# Without SST-2, 60 short reviews written for this tutorial stand in (40 to train on, 20
# held out): enough to see the effect of τ, too few for accuracies to mean much.

# %%
POSITIVE = [
    "a warm, funny and surprisingly moving film.",
    "the best thing i have seen in a cinema all year.",
    "beautifully shot, and the two leads are wonderful together.",
    "smart, tender and never once boring.",
    "i laughed from the first scene to the last.",
    "a gripping thriller that keeps you guessing until the end.",
    "the performances are superb across the board.",
    "an absolute delight for children and their parents.",
    "it is a joy to watch from start to finish.",
    "a bold, original story told with real confidence.",
    "the music alone is worth the price of a ticket.",
    "clever writing and a cast that clearly had fun.",
    "one of the most charming comedies in years.",
    "a moving portrait of a family that feels completely real.",
    "the director handles every scene with a light, sure touch.",
    "i was hooked from the opening shot.",
    "a rare sequel that is better than the original.",
    "fresh, lively and full of heart.",
    "the ending is perfect and earned.",
    "an inventive, gorgeous piece of animation.",
    "a thoughtful film that stays with you long after it ends.",
    "the acting is terrific and the dialogue sparkles.",
    "a triumph of style and substance.",
    "i would happily watch it again tomorrow.",
    "exciting, beautifully paced and very well made.",
    "a sweet, witty romance with genuine chemistry.",
    "the best performance of her career.",
    "an uplifting story, told with great warmth.",
    "sharp, funny and wonderfully strange.",
    "a real pleasure, and a great night out.",
]
NEGATIVE = [
    "a dull, lifeless film that goes nowhere.",
    "the worst movie i have seen this year.",
    "the plot makes no sense and the acting is wooden.",
    "two hours of my life i will never get back.",
    "boring, predictable and far too long.",
    "the jokes fall flat, one after another.",
    "a lazy sequel with nothing new to say.",
    "i nearly fell asleep halfway through.",
    "the dialogue is clumsy and the characters are paper thin.",
    "an ugly, joyless mess.",
    "it wastes a talented cast on a terrible script.",
    "the story is stupid and the ending is worse.",
    "a tedious film that mistakes noise for excitement.",
    "painfully slow and completely forgettable.",
    "nothing in it works, not even the music.",
    "a confused, shallow and irritating movie.",
    "the special effects cannot save this disaster.",
    "i wanted to walk out after twenty minutes.",
    "flat, cold and badly edited.",
    "a cheap imitation of better films.",
    "the lead gives a stiff, awkward performance.",
    "not funny, not scary, not anything.",
    "an embarrassing failure from start to finish.",
    "the pacing is awful and the story drags.",
    "a silly, pointless remake.",
    "every scene feels longer than the last.",
    "dreary, muddled and hard to sit through.",
    "a loud, empty film with no heart at all.",
    "the worst script the actors have ever been handed.",
    "a complete waste of time and money.",
]

if SST2.is_dir() and os.environ.get("TINYDACT_DATA") != "builtin":
    source = f"SST-2 ({SST2})"
    train_ex = read_examples(SST2 / "train.tsv")[0]
    train_ex = random.Random(0).sample(train_ex, 300 if FAST else 2000)
    held_ex = read_examples(SST2 / "dev.tsv")[0]
    held_ex = held_ex[:200] if FAST else held_ex  # the whole dev set (872) in full mode
    train_texts, train_y = [e.text_a for e in train_ex], [e.label for e in train_ex]
    held_texts, held_y = [e.text_a for e in held_ex], [e.label for e in held_ex]
else:
    source = "the 60 sentences written into this script"
    builtin = [(s, 1) for s in POSITIVE] + [(s, 0) for s in NEGATIVE]  # label 1 = positive, as in SST-2
    train_texts = [s for i, (s, _) in enumerate(builtin) if i % 3 != 2]
    train_y = [y for i, (_, y) in enumerate(builtin) if i % 3 != 2]
    held_texts = [s for i, (s, _) in enumerate(builtin) if i % 3 == 2]  # every third one is held out
    held_y = [y for i, (_, y) in enumerate(builtin) if i % 3 == 2]
train_y, held_y = torch.tensor(train_y), torch.tensor(held_y)
print(f"sentences: {source}; {len(train_texts)} to train on, {len(held_texts)} held out")
print("e.g.", repr(train_texts[0]), "->", LABELS[train_y[0]])

# %% [markdown]
# ## 3. Every block's [CLS] state, computed once
#
# `model.cls_states` runs the backbone and returns the `[CLS]` row after every block:
# `(B, N, H)`, exactly what the N DACT modules read. We run it once per sentence, in
# batches of similar lengths (little padding), and keep the result. This is the expensive
# part, a whole BERT per sentence; everything after it is cheap.

# %%
@torch.no_grad()
def cls_states_of(texts, batch_size=64):
    """The frozen backbone's [CLS] state after every block, (len(texts), N, H)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together
    out = torch.empty(len(texts), N, H)
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        out[idx] = model.cls_states(*tok([texts[i] for i in idx]))  # (b, N, H)
    return out


t0 = time.perf_counter()
train_cls, held_cls = cls_states_of(train_texts), cls_states_of(held_texts)
print(f"cached states: train {tuple(train_cls.shape)}, held-out {tuple(held_cls.shape)} "
      f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip

# %% [markdown]
# ## 4. Exits read off a trajectory
#
# With all N blocks' states at hand, the DACT modules give the whole trajectory at once:
# `forward_heads(cls)` runs the N modules and the recursion and returns `a_N`, `p`, `y`, `h`;
# `dact_forward(y, h)` gives every `a_n` and `p_n` (tutorial 3's recursion, batched). The
# exit of an example is the first block n where the exact test `can_halt(a_n, p_n, N − n)`
# holds (the paper's rule; at n = N it always holds). Its prediction is `argmax a_N`, which
# by tutorial 3 is also `argmax a_n` at the exit.
#
# This is what `model.predict` decides too, but without running the blocks after the exit;
# the last cell checks that they agree.

# %%
@torch.no_grad()
def exits(dact_model, cls):
    """Predictions (B,) and exit blocks (B,) of `dact_model` on cached states cls (B, N, H)."""
    a_N, _, y, h = dact_model.forward_heads(cls)
    a, p = dact_forward(y, h)  # (B, N, K), (B, N): a_1..a_N and p_1..p_N
    exit_n = torch.full((len(cls),), N)
    for n in range(N - 1, 0, -1):  # from the back, so the earliest block that passes wins
        exit_n[can_halt(a[:, n - 1], p[:, n - 1], N - n)] = n
    return a_N.argmax(-1), exit_n


pred, exit_n = exits(model, held_cls)
print(f"the default model's own modules: held-out accuracy {(pred == held_y).float().mean():.3f}, "
      f"average blocks {exit_n.float().mean():.2f} of {N}")  # fmt: skip

# %% [markdown]
# ## 5. What it takes to stop
#
# Before training, a look at the target. The exact test (tutorial 3) stops after block n,
# with d = N − n blocks left, when
#
#     a_n[c*] · (1 − p_n)^d  >  a_n[c'] + p_n · d
#
# It assumes the worst: that every remaining block keeps `h = 1` and votes entirely for the
# runner-up c'. To pass, `p_n` must be small compared with the margin `a_n[c*] − a_n[c']`,
# and the smaller the more blocks remain. Here is the largest `p_n` the test accepts, for a
# two-class answer `a_n = (a*, 1 − a*)`, found by asking `can_halt` itself on a fine grid:

# %%
grid = torch.linspace(0, 1, 100_001)  # candidate values of p_n, step 1e-5
print("largest p_n that lets an example stop, a_n = (a*, 1 − a*):")
print("   a*   " + "".join(f"  d = {d:<5}" for d in (1, 2, 3, 5)))
for a_top in (0.6, 0.8, 0.95, 0.99):
    a_n = torch.tensor([[a_top, 1 - a_top]]).expand(len(grid), K)  # the same answer for every p_n
    row = [grid[can_halt(a_n, grid, d)].max().item() for d in (1, 2, 3, 5)]
    print(f"  {a_top:.2f}  " + "".join(f"  {v:<9.4f}" for v in row))

# %% [markdown]
# Even a 99%-sure answer with 5 blocks to go needs `p_n` below about 0.1, a 60%-sure one
# below about 0.03: the product of halting values so far, `h_1 ⋯ h_n`, must have fallen
# that far. Fresh DACT
# modules start at `h ≈ sigmoid(3) ≈ 0.95` (`HALT_BIAS`, tutorial 3): after one block
# `p_1 ≈ 0.95`, after six still `0.95^6 ≈ 0.74`. Nothing stops until training pushes `h`
# down, and only the ponder cost pushes it down on purpose.
#
# **The ponder cost's pull.** Since `p_n = h_1 ⋯ h_n`, the ponder term's gradient on `h_k` is
#
#     ∂(τ Σ_n p_n) / ∂h_k = τ · (p_k + p_{k+1} + … + p_N) / h_k
#
# so `h_k` is pulled down in proportion to the weight that still flows through the blocks
# after it. The pull is strong while `p` is near 1 and fades as `p` shrinks: once `p ≈ 0.1`
# each block adds only `τ · 0.1` to the loss, while the test above wants `p` at a few
# hundredths when several blocks remain and the answer is not very sure. The task term
# pulls the other way whenever later blocks improve the answer. τ sets the balance.

# %% [markdown]
# ## 6. The training loop
#
# For each τ: a DACT-BERT on the same frozen backbone with **fresh** DACT modules
# (`DACTBert(backbone, K)` builds them as `tinydact train` does for a new model: PyTorch's
# default initialisation, halting bias 3.0), then plain mini-batch training of the modules
# alone on the cached states: `forward_heads` gives `a_N` and `p`, `dact_loss` gives L,
# Adam steps. The modules are in `.train()` mode (their dropout on) while they learn, and in
# `.eval()` mode to be measured. The same seed for every τ, so that τ is the only
# difference between the runs.

# %%
TAUS = [0.0, 0.05, 0.2, 0.5]
STEPS = 150 if FAST else 400
BATCH = 64


def train_heads(tau, steps=STEPS, lr=1e-3, seed=0):
    torch.manual_seed(seed)
    student = DACTBert(backbone, K)  # the frozen backbone, fresh DACT modules
    optimizer = torch.optim.Adam(student.heads.parameters(), lr=lr)
    student.train()
    for step in range(steps):
        idx = torch.randint(len(train_cls), (BATCH,))  # a random mini-batch of cached sentences
        a_N, p, _, _ = student.forward_heads(train_cls[idx])  # (B, K), (B, N)
        loss = dact_loss(a_N, train_y[idx], p, tau)  # CE(a_N) + τ · Σ_n p_n, batch mean
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return student.eval()


fresh = DACTBert(backbone, K).eval()
print(f"before training: h_n ≈ {torch.sigmoid(torch.tensor(HALT_BIAS)):.3f}, "
      f"average blocks {exits(fresh, held_cls)[1].float().mean():.2f} (nothing can stop)")  # fmt: skip

runs = {}
for tau in TAUS:
    t0 = time.perf_counter()
    student = train_heads(tau)
    pred, exit_n = exits(student, held_cls)
    with torch.no_grad():
        p = student.forward_heads(held_cls)[1]  # (B, N)
    runs[tau] = dict(model=student, accuracy=(pred == held_y).float().mean().item(),
                     blocks=exit_n.float().mean().item(), exits=exit_n, p=p.median(0).values)  # fmt: skip
    print(f"τ = {tau:<4}: held-out accuracy {runs[tau]['accuracy']:.3f}, "
          f"average blocks {runs[tau]['blocks']:.2f} of {N}  ({time.perf_counter() - t0:.1f} s)")  # fmt: skip

# %% [markdown]
# ## 7. What τ did
#
# The number of held-out sentences that stopped after each block, and the median `p_n`
# over the held-out sentences (half of them have a smaller one):

# %%
print("        exits after block 1..N            median p_n after block 1..N")
for tau, r in runs.items():
    hist = torch.bincount(r["exits"], minlength=N + 1)[1:].tolist()
    print(f"τ = {tau:<4}  {str(hist):<32}  " + " ".join(f"{v:.3f}" for v in r["p"].tolist()))

# %% [markdown]
# Read it with section 5 in mind (the exact numbers depend on the data and the run):
#
# - **τ = 0**: nothing rewards a small `p`; the task term alone sets `h`, and `p` stays far
#   above the test's threshold, so every sentence runs all N blocks. (In our runs it even
#   pushes `p` towards 1: on this backbone the last block answers best, and with `p ≈ 1`
#   each block's answer replaces the one before, so `a_N ≈ y_N`. `p_N` stays where it
#   started: `h_N` only ever enters the ponder cost, tutorial 3.) Without a ponder cost,
#   DACT learns a mixture of the blocks' answers, not an early exit.
# - **Small τ**: `p` comes down where the early blocks' answers are good enough, and
#   sentences start to stop, mostly the easy ones; accuracy changes little.
# - **Larger τ**: more sentences stop, earlier. At some τ the ponder cost can win
#   outright: `p` collapses after the first block, the model becomes a classifier on the
#   first block's state alone, and accuracy falls with it. Where that cliff lies depends on
#   the data and on how long the modules train: in our runs the fast setting (300
#   sentences, 150 steps) went over it at τ = 0.5, ending near chance, while the full one
#   (2000 sentences, 400 steps) still used about 4 blocks at τ = 0.5 with its accuracy
#   intact. Finding the τ worth paying for is what a τ sweep (`benchmarks/tau_sweep.py`)
#   is for.
#
# The test is exact, so it is conservative: it must hold against the worst the remaining
# blocks could do, not against what they will actually do. A sentence may run blocks whose
# answers end up changing nothing. That is the price of the guarantee that early exit
# never changes a prediction: accuracy under halting *is* the model's full-depth accuracy,
# and only τ, at training time, trades accuracy for blocks.
#
# The picture (`tau_tradeoff.png`, saved in the folder the script runs in, when matplotlib
# is installed): held-out accuracy against average blocks, one point per τ, and the median
# `p_n` per block on a log scale, with the region where a 95%-sure answer may stop.

# %%
try:
    import matplotlib

    if "__file__" in globals():  # run as a script: draw into files, no window (a notebook keeps its own backend)
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
    print("matplotlib is not installed: no picture")

if plt is not None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot([r["blocks"] for r in runs.values()], [r["accuracy"] for r in runs.values()], "o-")
    for i, (tau, r) in enumerate(runs.items()):  # labels alternately above and below their point
        left.annotate(f"τ = {tau}", (r["blocks"], r["accuracy"]), textcoords="offset points",
                      xytext=(-10, 8 if i % 2 else -14))  # fmt: skip
    left.set(xlabel="average blocks run (exact halting)", ylabel="held-out accuracy", xlim=(0.5, N + 0.5),
             title="what τ trades")  # fmt: skip
    blocks_axis = range(1, N + 1)
    for tau, r in runs.items():
        right.semilogy(blocks_axis, r["p"].clamp(min=1e-6).numpy(), "o-", label=f"τ = {tau}")  # 0 drawn at 1e-6
    # the largest p_n a 95%-sure two-class answer may have to stop after block n (section 5)
    a95 = torch.tensor([[0.95, 0.05]]).expand(len(grid), K)
    limit = [grid[can_halt(a95, grid, N - n)].max().item() for n in range(1, N)]
    right.fill_between(range(1, N), 1e-6, limit, color="green", alpha=0.15, label="a 95%-sure answer may stop")
    right.set(xlabel="block n", ylabel="median $p_n$ (held-out)", xticks=list(blocks_axis), ylim=(1e-6, 2),
              title="the ponder cost pulls $p_n$ down")  # fmt: skip
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig("tau_tradeoff.png", dpi=100)
    print("saved", Path("tau_tradeoff.png").resolve())

# %% [markdown]
# ## The check
#
# Two numbers.
#
# 1. **The average number of blocks should not grow with τ.** A larger ponder penalty
#    never makes the model cheaper to keep going; with short training and few sentences the
#    curve is noisy, so a rise of up to 0.1 of a block between neighbouring τ is tolerated.
# 2. **The exits read off the cached trajectories are the ones `model.predict` takes.**
#    `predict` runs the real thing: blocks one at a time on the held-out sentences, the
#    exact test after each, rows that stop dropped from the batch (tutorial 5 looks inside).
#    For every τ its predictions and blocks run must equal the cached ones on every
#    sentence: an agreement rate of exactly 1.

# %%
blocks = [runs[tau]["blocks"] for tau in TAUS]
worst_rise = max(later - earlier for earlier, later in zip(blocks, blocks[1:]))

agree = total = 0
for tau, r in runs.items():
    pred_cached, exit_cached = exits(r["model"], held_cls)
    for start in range(0, len(held_texts), 64):
        rows = slice(start, start + 64)
        pred_run, _, blocks_run = r["model"].predict(*tok(held_texts[rows]))  # halts, rule "paper"
        same = (pred_run == pred_cached[rows]) & (blocks_run == exit_cached[rows])
        agree += int(same.sum())
        total += len(same)
agreement = agree / total

print("average blocks by τ:", {tau: round(b, 2) for tau, b in zip(TAUS, blocks)})
print(f"largest rise of the average blocks from one τ to the next: {worst_rise:+.2f} (allowed: +0.10)")
print(f"agreement of model.predict with the cached exits: {agreement:.3f} ({agree} of {total} sentence-runs)")
print(f"(tutorial ran in {time.perf_counter() - START:.0f} s)")
assert worst_rise <= 0.1, "more ponder penalty gave more blocks"
assert agreement == 1.0, "model.predict disagrees with the exits computed on the cached states"
