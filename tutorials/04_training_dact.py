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
# 3. **write the DACT module** ourselves, ten lines, and check it against the library's
#    `tinydact.dact.DACTHead`;
# 4. read the **exits** off a whole trajectory of cached states, and see what it takes to
#    stop;
# 5. train **fresh DACT modules** (ours) on those states with the DACT loss, in a short
#    loop, for several values of the ponder penalty τ;
# 6. watch how **τ moves accuracy and the number of blocks** used on held-out sentences;
# 7. check that the exits we read off the cached states are the ones `model.predict`, which
#    really stops running blocks, takes on the same sentences.
#
# The last cell checks four things: our module computes what `DACTHead` computes; τ has an
# effect (the largest τ runs at least one block fewer on average than τ = 0); the smallest
# τ keeps its accuracy; and `model.predict` takes exactly the exits read off the cache.
#
# **What it needs.** The DACT-BERT shipped with the repository in `weights/` (fine-tuned on
# SST-2 from `all-MiniLM-L6-v2`: N = 6 blocks of width H = 384). The sentences are SST-2's,
# found by `tinydact.home.locate` as `data/glue/SST-2` in `$TINYDACT_HOME` or in
# `~/.cache/tinydact` (`tinydact download glue SST-2` puts it there); without it, 60
# sentences written into this script. `TINYDACT_FAST=1` (set by the tests) uses fewer
# sentences and shorter training.

# %%
import os
import random
import time
from pathlib import Path

import torch
from torch import nn

import tinydact
from tinydact.checkpoint import load_checkpoint
from tinydact.dact import HALT_BIAS, DACTHead, can_halt, dact_loss
from tinydact.data import read_examples
from tinydact.evaluate import block_accuracies, evaluate_states
from tinydact.home import locate, shipped_model
from tinydact.model import DACTBert
from tinydact.tokenizer import Tokenizer

FAST = os.environ.get("TINYDACT_FAST") == "1"
START = time.perf_counter()
# The repository is the folder that holds the tinydact package (not the working directory):
# the picture is written next to the tutorials, from a script or a notebook alike.
PICTURES = Path(tinydact.__file__).resolve().parent.parent / "tutorials"

# %% [markdown]
# ## 1. The recipe, in words
#
# A DACT-BERT is a BERT whose every block n is followed by a small DACT module: it reads the
# block's `[CLS]` state and emits an answer `y_n` and a halting value `h_n` (tutorial 3's
# diagram). Training them all from scratch at once asks a lot of the fresh modules: at the
# start their answers are random, so the mixture `a_N` is random, and the halting values
# get gradients that mean nothing. So the recipe has two phases (ours, modelled on what the
# DACT authors did for their visual-reasoning model; `docs/dact.md#4-dact-bert`, "Training
# recipe"):
#
# **Phase 1: cross-entropy on every block's answer.** Fine-tune the backbone together with
# the answer part of every module, with the mean over blocks of `CE(y_n, label)`. Every
# block learns to answer on its own, early blocks included; the halting units are not used.
# (`tinydact train --phase 1 --blocks all`; `--blocks last` trains a plain classifier on
# the last block only.)
#
# **Phase 2: the DACT loss** (`docs/dact.md#2-the-training-loss`). Now train with the loss
# of tutorial 3,
#
#     L = −log a_N[label] + τ · Σ_n p_n      (dact.dact_loss)
#
# where `a_N` is the mixture of all the blocks' answers and `Σ_n p_n` the ponder cost. All N
# blocks run for every example: nothing halts during training, everything is smooth and
# every `h_n` gets a gradient. Either the whole model trains (`tinydact train --phase 2`), or
# only the DACT modules, with the backbone frozen (`--freeze-backbone`). Frozen, a sentence's
# `[CLS]` states never change, so they can be computed once and reused every epoch: an
# epoch of phase 2 then costs a few small matrix products per sentence instead of a whole
# BERT, which makes it cheap to try several τ. (`tinydact train` without `--phase` runs the
# whole recipe: phase 1, then phase 2 on the frozen backbone, then phase 2 jointly.)
#
# That frozen phase 2 is what we run here, in miniature: the backbone of the shipped model
# (already through both phases), fresh DACT modules, and our own short loop.

# %% [markdown]
# ## 2. The model and the sentences
#
# `tinydact.home.shipped_model()` is the folder of the model shipped in `weights/`;
# `load_checkpoint` reads it (backbone and DACT modules) in `.eval()` mode (dropout off).
# We keep its backbone, `model.bert`, and freeze it.

# %%
WEIGHTS = shipped_model()  # weights/ of the repository (an error that says so if it is missing)
model, meta = load_checkpoint(WEIGHTS)
tok = Tokenizer.from_pretrained(WEIGHTS)
backbone = model.bert.requires_grad_(False)  # frozen: no gradient will reach it
LABELS = meta["labels"]
N, H, K = model.num_blocks, backbone.config.hidden_size, model.num_labels
DROPOUT = backbone.config.hidden_dropout_prob
print(f"model: the DACT-BERT shipped in {WEIGHTS}: N = {N} blocks, H = {H}, labels {LABELS}")
print(f"it was trained with {meta.get('trained')}")

# %% [markdown]
# The sentences: training sentences (the DACT modules learn on them) and held-out ones (we
# measure on them). From SST-2 we take a random few hundred of its training sentences and,
# held out, sentences of its dev set. One caveat: the shipped backbone was fine-tuned on
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

SST2, line = locate("data/glue/SST-2", None, "the 60 sentences written into this script")
print(line)
if SST2 is not None:
    train_ex = read_examples(SST2 / "train.tsv")[0]
    train_ex = random.Random(0).sample(train_ex, 300 if FAST else 2000)
    held_ex = read_examples(SST2 / "dev.tsv")[0]
    held_ex = held_ex[:200] if FAST else held_ex  # the whole dev set (872) in full mode
    train_texts, train_y = [e.text_a for e in train_ex], [e.label for e in train_ex]
    held_texts, held_y = [e.text_a for e in held_ex], [e.label for e in held_ex]
else:
    builtin = [(s, 1) for s in POSITIVE] + [(s, 0) for s in NEGATIVE]  # label 1 = positive, as in SST-2
    train_texts = [s for i, (s, _) in enumerate(builtin) if i % 3 != 2]
    train_y = [y for i, (_, y) in enumerate(builtin) if i % 3 != 2]
    held_texts = [s for i, (s, _) in enumerate(builtin) if i % 3 == 2]  # every third one is held out
    held_y = [y for i, (_, y) in enumerate(builtin) if i % 3 == 2]
train_y, held_y = torch.tensor(train_y), torch.tensor(held_y)
print(f"{len(train_texts)} sentences to train on, {len(held_texts)} held out")
print("e.g.", repr(train_texts[0]), "->", LABELS[train_y[0]])

# %% [markdown]
# ## 3. Every block's [CLS] state, computed once
#
# `model.head_inputs` runs the backbone and returns what the N DACT modules read, here
# (the default `head_input`) the `[CLS]` row after every block: `(B, N, H)`. We run it once
# per sentence, in batches of similar lengths (little padding), and keep the result. This is
# the expensive part, a whole BERT per sentence; everything after it is cheap.

# %%
@torch.no_grad()
def head_inputs_of(texts, batch_size=64):
    """The frozen backbone's [CLS] state after every block, (len(texts), N, H)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together
    out = torch.empty(len(texts), N, H)
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        out[idx] = model.head_inputs(*tok([texts[i] for i in idx]))  # (b, N, H)
    return out


t0 = time.perf_counter()
train_cls, held_cls = head_inputs_of(train_texts), head_inputs_of(held_texts)
print(f"cached states: train {tuple(train_cls.shape)}, held-out {tuple(held_cls.shape)} "
      f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip

# %% [markdown]
# ## 4. The DACT module, written by us
#
# After block n the module reads `x_n`, the `[CLS]` state, and computes
# (`docs/dact.md#4-dact-bert`)
#
#     z   = ReLU(W1 · dropout(x_n) + b1)      (H)    one hidden layer as wide as the block
#     y_n = softmax(W_y · z + b_y)            (K)    the block's own answer
#     h_n = sigmoid(w_h · z + b_h)            (1)    its halting value
#
# The weights keep PyTorch's default initialisation, except the halting bias `b_h`, which
# starts at `HALT_BIAS = 3.0`: every fresh module then says `h ≈ sigmoid(3) ≈ 0.95`, "keep
# going", and the model starts close to a last-block classifier (tutorial 3, section 2).
# Written as a PyTorch module, with the parameters named as in the library (so that the
# two can swap weights):

# %%
class MyDACTHead(nn.Module):
    """x_n (B, H) -> (y_n (B, K), h_n (B,))."""

    def __init__(self, hidden_size, num_labels, dropout=0.1, halt_bias=HALT_BIAS):
        super().__init__()
        self.dropout = nn.Dropout(dropout)  # BERT's hidden dropout, on x_n
        self.dense = nn.Linear(hidden_size, hidden_size)  # W1, b1
        self.answer = nn.Linear(hidden_size, num_labels)  # W_y, b_y
        self.halt = nn.Linear(hidden_size, 1)  # w_h, b_h
        nn.init.constant_(self.halt.bias, halt_bias)  # h_n ≈ sigmoid(3) ≈ 0.95 at the start

    def forward(self, x):
        z = torch.relu(self.dense(self.dropout(x)))  # (B, H)
        y = torch.softmax(self.answer(z), dim=-1)  # (B, K)
        h = torch.sigmoid(self.halt(z)).squeeze(-1)  # (B, 1) -> (B,)
        return y, h


# %% [markdown]
# Two comparisons with `tinydact.dact.DACTHead`. **Fresh**: built from the same random seed,
# the two must start from the same numbers (this catches a forgotten halting bias).
# **Trained**: given the weights of the shipped model's module after block 3, ours must
# compute the same `y_n` and `h_n` on the cached states (`.eval()`: dropout off).

# %%
torch.manual_seed(0)
mine = MyDACTHead(H, K, DROPOUT)
torch.manual_seed(0)
theirs = DACTHead(H, K, DROPOUT)
same_start = mine.state_dict().keys() == theirs.state_dict().keys() and all(
    torch.equal(v, theirs.state_dict()[k]) for k, v in mine.state_dict().items())  # fmt: skip
print(f"fresh: same parameters as DACTHead from the same seed: {same_start}; "
      f"halting bias {mine.halt.bias.item()}, h_n ≈ {torch.sigmoid(mine.halt.bias).item():.3f}")  # fmt: skip

trained = model.heads[2]  # the shipped model's module after block 3
mine.load_state_dict(trained.state_dict())  # strict: every name must match
mine.eval()
with torch.no_grad():
    (y_mine, h_mine), (y_lib, h_lib) = mine(held_cls[:, 2]), trained(held_cls[:, 2])
head_diff = max((y_mine - y_lib).abs().max().item(), (h_mine - h_lib).abs().max().item())
print(f"trained, on {len(held_cls)} held-out states: max |ours − DACTHead| = {head_diff:.2e}")

# %% [markdown]
# ## 5. Exits read off a trajectory
#
# With all N blocks' states at hand, the DACT modules give the whole trajectory at once:
# `model.forward_heads(cls)` runs the N modules and the recursion and returns
# `(a, p, y, h)`, every `a_n`, `p_n`, `y_n`, `h_n` for n = 1..N; the model's answer is
# `a[:, -1]`, i.e. `a_N`. The exit of an example is the first block n where the exact test
# `can_halt(a_n, p_n, N − n)` holds (the paper's rule; at n = N it always holds). Its
# prediction is `argmax a_N`, which by tutorial 3 is also `argmax a_n` at the exit.
#
# This is what `model.predict` decides too, but without running the blocks after the exit;
# the last cell checks that they agree. The library's `evaluate_states` (what
# `tinydact train` reports during a frozen phase 2) does the same on cached states and
# returns averages; ours must agree with it.

# %%
@torch.no_grad()
def exits(dact_model, cls):
    """Predictions (B,) and exit blocks (B,) of `dact_model` on cached states cls (B, N, H)."""
    a, p, _, _ = dact_model.forward_heads(cls)  # (B, N, K), (B, N): a_1..a_N and p_1..p_N
    exit_n = torch.full((len(cls),), N)
    for n in range(N - 1, 0, -1):  # from the back, so the earliest block that passes wins
        exit_n[can_halt(a[:, n - 1], p[:, n - 1], N - n)] = n
    return a[:, -1].argmax(-1), exit_n


def check_against_library(dact_model, cls, labels):
    """Our accuracy and average blocks, after checking them against evaluate_states."""
    pred, exit_n = exits(dact_model, cls)
    accuracy, blocks = (pred == labels).float().mean().item(), exit_n.float().mean().item()
    lib = evaluate_states(dact_model, cls, labels, "paper", "cpu")
    assert abs(lib["accuracy"] - accuracy) < 1e-6 and abs(lib["avg_blocks"] - blocks) < 1e-6, (lib, accuracy, blocks)
    return accuracy, blocks


accuracy, blocks = check_against_library(model, held_cls, held_y)
print(f"the shipped model's own modules: held-out accuracy {accuracy:.3f}, average blocks {blocks:.2f} of {N} "
      "(evaluate_states agrees)")  # fmt: skip
per_block = block_accuracies(model, held_cls, held_y, "cpu")  # y_n's accuracy, n = 1..N
print("accuracy of each block's own answer y_n:", [round(v, 3) for v in per_block])

# %% [markdown]
# The last line is the accuracy of every block's answer on its own: early blocks know less,
# which is why stopping early has a price when it happens on the wrong sentences.
#
# ## 6. What it takes to stop
#
# Before training, a look at the target. The exact test (tutorial 3,
# `docs/dact.md#3-halting-exactly-at-inference`) stops after block n, with d = N − n blocks
# left, when
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
# that far. Fresh DACT modules start at `h ≈ 0.95`: after one block `p_1 ≈ 0.95`, after six
# still `0.95^6 ≈ 0.74`. Nothing stops until training pushes `h` down, and only the ponder
# cost pushes it down on purpose.
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
# ## 7. The training loop
#
# For each τ: a DACT-BERT on the same frozen backbone whose N modules are **fresh** copies
# of our `MyDACTHead`, then plain mini-batch training of the modules alone on the cached
# states: `forward_heads` gives the trajectory, `dact_loss(a_N, labels, p, τ)` the loss,
# Adam steps. The modules are in `.train()` mode (their dropout on) while they learn, and in
# `.eval()` mode to be measured. The same seed for every τ, so that τ is the only
# difference between the runs.

# %%
TAUS = [0.0, 0.05, 0.1, 0.2, 0.5]
STEPS = 150 if FAST else 400
BATCH = 64


def train_heads(tau, steps=STEPS, lr=1e-3, seed=0):
    torch.manual_seed(seed)
    student = DACTBert(backbone, K)  # the frozen backbone ...
    student.heads = nn.ModuleList(MyDACTHead(H, K, DROPOUT) for _ in range(N))  # ... and our fresh modules
    optimizer = torch.optim.Adam(student.heads.parameters(), lr=lr)
    student.train()
    for step in range(steps):
        idx = torch.randint(len(train_cls), (BATCH,))  # a random mini-batch of cached sentences
        a, p, _, _ = student.forward_heads(train_cls[idx])  # (B, N, K), (B, N)
        loss = dact_loss(a[:, -1], train_y[idx], p, tau)  # −log a_N[label] + τ · Σ_n p_n, batch mean
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return student.eval()


torch.manual_seed(0)
fresh = DACTBert(backbone, K).eval()
print(f"before training: h_n ≈ {torch.sigmoid(torch.tensor(HALT_BIAS)):.3f}, "
      f"average blocks {exits(fresh, held_cls)[1].float().mean():.2f} (nothing can stop)")  # fmt: skip

runs = {}
for tau in TAUS:
    t0 = time.perf_counter()
    student = train_heads(tau)
    accuracy, blocks = check_against_library(student, held_cls, held_y)
    with torch.no_grad():
        p = student.forward_heads(held_cls)[1]  # (B, N)
    runs[tau] = dict(model=student, accuracy=accuracy, blocks=blocks, exits=exits(student, held_cls)[1],
                     p=p.median(0).values)  # fmt: skip
    print(f"τ = {tau:<4g}: held-out accuracy {accuracy:.3f}, average blocks {blocks:.2f} of {N}  "
          f"({time.perf_counter() - t0:.1f} s)")  # fmt: skip

# %% [markdown]
# ## 8. What τ did
#
# The number of held-out sentences that stopped after each block, and the median `p_n`
# over the held-out sentences (half of them have a smaller one):

# %%
print("          exits after block 1..N            median p_n after block 1..N")
for tau, r in runs.items():
    hist = torch.bincount(r["exits"], minlength=N + 1)[1:].tolist()
    print(f"τ = {tau:<4g}  {str(hist):<32}  " + " ".join(f"{v:.3f}" for v in r["p"].tolist()))

# %% [markdown]
# What to look for (`docs/dact.md#2-the-training-loss` reports the same pattern on the full
# SST-2 training set):
#
# - **τ = 0**: nothing rewards a small `p`; the task term alone sets `h`, and `p` stays far
#   above the test's threshold, so sentences run all N blocks. (Typically the task term even
#   pushes `p` towards 1: on this backbone the last block answers best, and with `p ≈ 1`
#   each block's answer replaces the one before, so `a_N ≈ y_N`. `p_N` barely moves: `h_N`
#   only ever enters the ponder cost, tutorial 3.) Without a ponder cost, DACT learns a
#   mixture of the blocks' answers, not an early exit.
# - **Growing τ**: `p` comes down, first where the early blocks' answers are good enough,
#   and sentences start to stop, the easy ones first.
# - **Large τ**: the ponder cost can win outright: `p` collapses after the first block, the
#   model becomes a classifier on the first block's state alone, and accuracy falls towards
#   what the first block can do on its own (section 5 printed each block's accuracy). On
#   this backbone, trained on all of SST-2, the useful range is roughly τ ≈ 0.1–0.2, and
#   from τ ≈ 0.3 upwards `p` collapses after the first block.
#
# Where exactly each τ lands depends on the sentences and on how long the modules train.
# This run, in words (the sentences below are computed from the numbers above):

# %%
base = runs[TAUS[0]]


def in_words(tau, r):
    saved = 1 - r["blocks"] / base["blocks"]
    change = 100 * (r["accuracy"] - base["accuracy"])
    first = int((r["exits"] == 1).sum())
    if r["blocks"] == N:
        where = f"every sentence ran all {N} blocks"
    elif first >= 0.9 * len(r["exits"]):
        nearly = "" if first == len(r["exits"]) else "nearly "
        where = (f"{first} of {len(r['exits'])} sentences stopped after block 1 ({r['blocks']:.2f} blocks on "
                 f"average): p collapsed after the first block, the model is {nearly}a first-block classifier")
    else:
        where = f"{r['blocks']:.2f} blocks on average, {saved:.0%} fewer than τ = {TAUS[0]:g}"
    return f"τ = {tau:g}: {where}; accuracy {r['accuracy']:.1%} ({change:+.1f} points against τ = {TAUS[0]:g})"


for tau, r in runs.items():
    print(in_words(tau, r))
within = [tau for tau, r in runs.items() if r["accuracy"] >= base["accuracy"] - 0.01 - 1e-9]
cheapest = min(within, key=lambda tau: runs[tau]["blocks"])
print(f"the cheapest τ whose accuracy stayed within 1 point of τ = {TAUS[0]:g}: τ = {cheapest:g}, "
      f"{runs[cheapest]['blocks']:.2f} blocks of {N}")  # fmt: skip

# %% [markdown]
# The test is exact, so it is conservative: it must hold against the worst the remaining
# blocks could do, not against what they will actually do. A sentence may run blocks whose
# answers end up changing nothing. That is the price of the guarantee that early exit
# never changes a prediction: accuracy under halting *is* the model's full-depth accuracy,
# and only τ, at training time, trades accuracy for blocks. Finding the τ worth paying for
# on real data is what a τ sweep (`benchmarks/tasks.py --taus`) is for.
#
# The picture (`tutorials/tau_tradeoff.png`, when matplotlib is installed): held-out
# accuracy against average blocks, one point per τ, and the median `p_n` per block on a log
# scale, with the region where a 95%-sure answer may stop.

# %%
try:
    import matplotlib.pyplot as plt  # without a display, matplotlib draws into files only
except ImportError:
    plt = None
    print("matplotlib is not installed: no picture")

if plt is not None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot([r["blocks"] for r in runs.values()], [r["accuracy"] for r in runs.values()], "o-")
    for i, (tau, r) in enumerate(runs.items()):  # labels alternately above and below their point
        left.annotate(f"τ = {tau:g}", (r["blocks"], r["accuracy"]), textcoords="offset points",
                      xytext=(-10, 8 if i % 2 else -14))  # fmt: skip
    left.set(xlabel="average blocks run (exact halting)", ylabel="held-out accuracy", xlim=(0.5, N + 0.5),
             title="what τ trades")  # fmt: skip
    blocks_axis = range(1, N + 1)
    for tau, r in runs.items():
        right.semilogy(blocks_axis, r["p"].clamp(min=1e-6).numpy(), "o-", label=f"τ = {tau:g}")  # 0 drawn at 1e-6
    # the largest p_n a 95%-sure two-class answer may have to stop after block n (section 6)
    a95 = torch.tensor([[0.95, 0.05]]).expand(len(grid), K)
    limit = [grid[can_halt(a95, grid, N - n)].max().item() for n in range(1, N)]
    right.fill_between(range(1, N), 1e-6, limit, color="green", alpha=0.15, label="a 95%-sure answer may stop")
    right.set(xlabel="block n", ylabel="median $p_n$ (held-out)", xticks=list(blocks_axis), ylim=(1e-6, 2),
              title="the ponder cost pulls $p_n$ down")  # fmt: skip
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PICTURES / "tau_tradeoff.png", dpi=100)
    print("saved", PICTURES / "tau_tradeoff.png")

# %% [markdown]
# ## The check
#
# 1. **Our module is the library's.** On the same weights, `MyDACTHead` and `DACTHead`
#    give the same `y_n` and `h_n` (max difference below 1e-6), and from the same seed they
#    start from the same parameters.
# 2. **τ has an effect.** With the largest τ the sentences run, on average, at least one
#    block fewer than with τ = 0. (Were τ ignored by the loss, every τ would train the same
#    modules and give the same blocks.)
# 3. **A small τ keeps the accuracy.** With the smallest positive τ, held-out accuracy is
#    at least 80%, and no more than 3 points below τ = 0's (or one sentence, when the
#    held-out set is so small that one sentence is worth more than 3 points). (Were the loss wrong, e.g. the
#    task term on the wrong class or the mixture broken, accuracy would collapse.)
# 4. **The exits read off the cached trajectories are the ones `model.predict` takes.**
#    `predict` runs the real thing: blocks one at a time on the held-out sentences, the
#    exact test after each, rows that stop dropped from the batch (tutorial 5 looks inside).
#    For every τ its predictions and blocks run must equal the cached ones on every
#    sentence: an agreement rate of exactly 1.

# %%
blocks_drop = runs[TAUS[0]]["blocks"] - runs[TAUS[-1]]["blocks"]
small = min(tau for tau in TAUS if tau > 0)
small_accuracy, accuracy_drop = runs[small]["accuracy"], runs[TAUS[0]]["accuracy"] - runs[small]["accuracy"]
allowed_drop = max(0.03, 1 / len(held_texts)) + 1e-9  # 3 points, or one sentence of a tiny held-out set

agree = total = 0
checked = held_texts[:64] if FAST else held_texts  # predict runs the backbone: fewer sentences in fast mode
for tau, r in runs.items():
    pred_cached, exit_cached = exits(r["model"], held_cls)
    for start in range(0, len(checked), 64):
        rows = slice(start, start + 64)
        pred_run, _, blocks_run = r["model"].predict(*tok(checked[rows]))  # halts, rule "paper"
        same = (pred_run == pred_cached[rows]) & (blocks_run == exit_cached[rows])
        agree += int(same.sum())
        total += len(same)
agreement = agree / total

print(f"1. max |MyDACTHead − DACTHead| on the same weights: {head_diff:.2e} (must be < 1e-6); same start: {same_start}")
print(f"2. average blocks: τ = {TAUS[0]:g} {runs[TAUS[0]]['blocks']:.2f}, "
      f"τ = {TAUS[-1]:g} {runs[TAUS[-1]]['blocks']:.2f}: {blocks_drop:.2f} fewer (must be ≥ 1)")  # fmt: skip
print(f"3. held-out accuracy at τ = {small:g}: {small_accuracy:.3f} (must be ≥ 0.80), {-100 * accuracy_drop:+.1f} "
      f"points against τ = {TAUS[0]:g} (must be ≥ −{100 * allowed_drop:.1f})")  # fmt: skip
print(f"4. agreement of model.predict with the cached exits: {agreement:.3f} ({agree} of {total} sentence-runs)")
print(f"(tutorial ran in {time.perf_counter() - START:.0f} s)")
assert head_diff < 1e-6 and same_start, "MyDACTHead does not compute what DACTHead computes"
assert blocks_drop >= 1, "the largest τ saved less than one block: does the loss see τ?"
assert small_accuracy >= 0.80 and accuracy_drop <= allowed_drop, "a small τ lost accuracy"
assert agreement == 1.0, "model.predict disagrees with the exits computed on the cached states"
print("all checks passed")
