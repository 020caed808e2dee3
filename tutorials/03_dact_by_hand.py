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
# # Tutorial 3: DACT by hand
#
# DACT (Differentiable Adaptive Computation Time) lets a model cut into N steps decide,
# per example, how many steps to run, while staying smooth enough to train with plain
# gradient descent. This tutorial works through its arithmetic on a toy with N = 4 steps
# and K = 3 classes whose numbers are picked by hand. No network, no BERT: just NumPy and
# the method document, `docs/dact.md`, whose sections each part below points to.
#
# After step n (for DACT-BERT: after Transformer block n) a small head emits two things:
#
# - `y_n`, a probability vector over the K classes: the step's own answer;
# - `h_n` in (0, 1), a *halting value*: how much the later steps should still count.
#
# In DACT-BERT (`docs/dact.md#4-dact-bert`) the steps are the blocks of tutorial 1, and the
# head after block n, its *DACT module*, reads the block's `[CLS]` state:
#
#     tokens
#       |
#       v
#     +------------+
#     | embeddings |
#     +------------+
#       |
#       v
#     +---------+ [CLS] +---------------+ y_1, h_1 +-------------------------------+
#     | block 1 |------>| DACT module 1 |--------->| p_1 = h_1 · p_0      (p_0 = 1) |
#     +---------+       +---------------+          | a_1 = p_0·y_1 + (1−p_0)·a_0   |
#       |                                          +-------------------------------+
#       |                                                 |
#       |                                                 v    d = N − 1 blocks left
#       |                                          exit test: a_1[c*]·(1−p_1)^d > a_1[c'] + p_1·d ?
#       |                                             yes: stop, answer argmax a_1
#       |  the rows that go on                        no:  go on with p_1, a_1
#       v                                                 |
#     +---------+ [CLS] +---------------+ y_2, h_2 +-------------------------------+
#     | block 2 |------>| DACT module 2 |--------->| p_2 = h_2 · p_1               |
#     +---------+       +---------------+          | a_2 = p_1·y_2 + (1−p_1)·a_1   |
#       |                                          +-------------------------------+
#       |                                                 |
#       |                                                 v    d = N − 2
#       |                                          exit test on (a_2, p_2) -> stop, or go on
#       :                                                 :
#       v                                                 v
#     +---------+ [CLS] +---------------+ y_N, h_N +-------------------------------+
#     | block N |------>| DACT module N |--------->| p_N, a_N                      |
#     +---------+       +---------------+          +-------------------------------+
#                                                         |
#                                                         v    d = 0
#                                                  always stop: answer argmax a_N
#
# During training nothing stops: every example runs all N blocks and the exit tests are
# skipped. Here we do the arithmetic of the right-hand column by hand. We will (1) run the
# recursion that mixes the answers, (2) see the mixture weights it implies, (3) add the
# ponder cost to the loss, (4) derive the test that stops inference early without
# changing the prediction, with both halting rules, (5) draw it, including the two bounds
# of the test closing in step by step, and (6) check the hand-written gradient of
# `tinydact/reference.py` against finite differences. The last cell prints the gradient's
# largest error and fails if it is above 1e-8.

# %%
import os
from pathlib import Path

import numpy as np
import torch

import tinydact
from tinydact import dact, reference

# The repository is the folder that holds the tinydact package (not the working directory):
# pictures are written next to the tutorials, from a script or a notebook alike.
PICTURES = Path(tinydact.__file__).resolve().parent.parent / "tutorials"

FAST = os.environ.get("TINYDACT_FAST") == "1"  # set by the tests: fewer random trials
np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## The toy
#
# Row n − 1 of `y` is `y_n`. Step 1 leans to class 1; steps 2 and 3 are fairly sure of
# class 0; step 4 disagrees (it prefers class 1 again). The halting values say: keep going
# after step 1 (`h_1 = 0.9`), mostly stop after step 2 (`h_2 = 0.2`).

# %%
y = np.array([
    [0.2, 0.5, 0.3],  # y_1
    [0.8, 0.1, 0.1],  # y_2
    [0.6, 0.3, 0.1],  # y_3
    [0.1, 0.8, 0.1],  # y_4
])  # fmt: skip
h = np.array([0.9, 0.2, 0.5, 0.5])  # h_1..h_4
N, K = y.shape
label = 0  # the true class, for the loss
print(f"N = {N} steps, K = {K} classes; each y_n sums to 1: {np.allclose(y.sum(1), 1)}")

# %% [markdown]
# ## 1. The recursion
#
# (`docs/dact.md#1-the-recursion`) Two running quantities start at `p_0 = 1` and `a_0 = 0` (the zero vector):
#
#     p_n = h_n · p_{n−1}                              so p_n = h_1 · h_2 ⋯ h_n
#     a_n = p_{n−1} · y_n + (1 − p_{n−1}) · a_{n−1}
#
# `a_n` is the answer accumulated so far: a blend of the old answer and the new step's
# answer, in which the new step gets weight `p_{n−1}`. `p_n` is the weight that the steps
# after n can still get, and it only shrinks: once a small `h` has brought it near 0, later
# steps barely move `a`. Note `a_1 = y_1` (because `p_0 = 1`). The model's answer is `a_N`.

# %%
a_n, p_n = np.zeros(K), 1.0  # a_0, p_0
a_hand, p_hand = [], []
for n in range(1, N + 1):
    y_n, h_n = y[n - 1], h[n - 1]
    a_n = p_n * y_n + (1 - p_n) * a_n  # uses p_{n-1}: p_n is updated on the next line
    p_n = h_n * p_n
    a_hand.append(a_n)
    p_hand.append(p_n)
    print(f"n = {n}: h_n = {h_n:.2f}  p_n = {p_n:.4f}  a_n = {a_n}  (top class {a_n.argmax()})")
a_hand, p_hand = np.array(a_hand), np.array(p_hand)

a, p = reference.forward(y, h)  # (N, K) holding a_1..a_N, (N,) holding p_1..p_N
print("max difference to reference.forward:", max(np.abs(a - a_hand).max(), np.abs(p - p_hand).max()))

# %% [markdown]
# The last step voted for class 1 with 0.8, yet `a_4` still says class 0: after step 3
# only `p_3 = 0.09` of the weight was left for it. And `h_4` played no part in `a_4`: the
# last halting value only enters `p_4`, i.e. the ponder cost below.
#
# Two special cases fix the meaning of h: `h ≡ 1` never shrinks p, so each step replaces
# the answer and `a_N = y_N` (a plain last-layer classifier); `h_1 = 0` freezes the answer
# at `y_1`.

# %%
print("h = 1 everywhere: a_N =", reference.forward(y, np.ones(N))[0][-1], " y_N =", y[-1])
print("h_1 = 0:          a_N =", reference.forward(y, np.r_[0.0, h[1:]])[0][-1], " y_1 =", y[0])

# %% [markdown]
# ## 2. The mixture weights
#
# Unrolling the recursion (`docs/dact.md#1-the-recursion`, "The answer is a learned convex
# mixture"), `a_N` is a weighted average of the steps' answers,
#
#     a_N = Σ_n w_n · y_n,     w_n = p_{n−1} · (1 − p_n)(1 − p_{n+1}) ⋯ (1 − p_{N−1})
#
# (for n = N the product is empty: `w_N = p_{N−1}`). Step n enters with weight `p_{n−1}`,
# then every later step keeps a fraction `1 − p_j` of it. The weights are ≥ 0 and sum to 1:
# DACT is an ensemble of the per-step classifiers whose mixing weights the model learns
# through h.

# %%
p_prev = np.r_[1.0, p[:-1]]  # p_0..p_{N-1}
w = np.array([p_prev[n - 1] * np.prod(1 - p[n - 1 : N - 1]) for n in range(1, N + 1)])  # p[n-1] is p_n
print("w =", w, " sum", w.sum())
print("max |Σ w_n y_n − a_N|:", np.abs(w @ y - a[-1]).max())
w_lib = dact.mixture_weights(torch.from_numpy(h)).numpy()  # the batched PyTorch version
print("max difference to dact.mixture_weights:", np.abs(w - w_lib).max())

# %% [markdown]
# The weights explain a choice in `dact.py` (`docs/dact.md#4-dact-bert`): the halting bias
# starts at 3.0, so that
# `h ≈ sigmoid(3) ≈ 0.95` for every block of a fresh model. With `h = 0.5` and BERT-base's
# N = 12 blocks, the top blocks would get almost no weight, throwing away the pretrained
# depth; with 0.95 the model starts close to a last-layer classifier.

# %%
for h0 in (0.5, 1 / (1 + np.exp(-dact.HALT_BIAS))):
    w12 = dact.mixture_weights(torch.full((12,), h0, dtype=torch.float64)).numpy()
    print(f"h = {h0:.3f}, N = 12: w =", w12.round(2))

# %% [markdown]
# ## 3. The loss: task term plus ponder cost
#
#     L = −log a_N[label] + τ · Σ_{n=1..N} p_n
#
# (`docs/dact.md#2-the-training-loss`) The task term is the negative log-likelihood of the
# *mixture* (not a sum of per-step losses). The ponder cost `Σ p_n` is a smooth stand-in for "how many steps were used":
# each p_n is the weight later steps may still get, so small p early means little left to
# compute. τ trades accuracy for computation (the authors' default is 1e-3). During
# training all N steps always run and nothing halts: every h_n gets a gradient.

# %%
tau = 0.01
ponder = p.sum()
L = -np.log(a[-1, label]) + tau * ponder
print(f"ponder cost Σ p_n = {ponder:.4f}; task term {-np.log(a[-1, label]):.4f}; L = {L:.6f}")
print("difference to reference.loss:", abs(L - reference.loss(y, h, label, tau)))
L_lib = dact.dact_loss(torch.from_numpy(a[-1:]), torch.tensor([label]), torch.from_numpy(p[None]), tau).item()
print("difference to dact.dact_loss:", abs(L - L_lib))

# %% [markdown]
# ## 4. Halting at inference, exactly
#
# (`docs/dact.md#3-halting-exactly-at-inference`, where the proofs are written out.) At
# inference we want to stop after step n if the remaining `d = N − n` steps can no
# longer change the top class. Let `c*` be the top class of `a_n` and `c'` the runner-up.
# Each later step i + 1 (i ≥ n) moves the answer by `a_{i+1} = p_i y_{i+1} + (1 − p_i) a_i`,
# with `p_i ≤ p_n` and every entry of `y_{i+1}` in [0, 1]. Whatever the later heads say:
#
# - **the top class keeps at least** `a_{i+1}[c*] ≥ (1 − p_n) · a_i[c*]`, so after d steps
#   `a_N[c*] ≥ a_n[c*] · (1 − p_n)^d`;
# - **the runner-up gains at most** `p_n` per step: `a_N[c'] ≤ a_n[c'] + p_n · d`
#   (the paper's bound). A tighter bound comes from applying the first argument to
#   `1 − a`: `1 − a_N[c'] ≥ (1 − a_n[c'])(1 − p_n)^d`, i.e.
#   `a_N[c'] ≤ 1 − (1 − a_n[c'])(1 − p_n)^d` (derived, never larger than the paper's).
#
# (Any other class starts no higher than c', so the same bounds cover it.) If the top
# class's floor is strictly above the runner-up's ceiling, nothing can overtake it: stop
# and output `a_n`, whose argmax equals that of `a_N`. At n = N (d = 0) always stop.
#
#     paper rule:  a_n[c*] · (1 − p_n)^d  >  a_n[c'] + p_n · d
#     tight rule:  a_n[c*] · (1 − p_n)^d  >  1 − (1 − a_n[c'])(1 − p_n)^d
#
# `dact.halting_bounds(a_n, p_n, d, rule)` is the one place the library computes both sides
# of the test, `(lower, upper, passes)`, for a batch; `can_halt` reads its verdict. Step by
# step on the toy, by hand and against the library:

# %%
def stop_step(rule):
    """The first step n where `rule` allows stopping (the library's can_halt)."""
    return next(n for n in range(1, N + 1) if reference.can_halt(a[n - 1], p[n - 1], N - n, rule))


print(" n  d   a*     a'     floor  | paper ceiling stop | tight ceiling stop")
for n in range(1, N + 1):
    a_n, p_n, d = a[n - 1], p[n - 1], N - n
    a_second, a_top = np.sort(a_n)[-2:]  # a_n[c'], a_n[c*]
    floor = a_top * (1 - p_n) ** d
    paper = a_second + p_n * d
    tight = 1 - (1 - a_second) * (1 - p_n) ** d
    stop_paper, stop_tight = d == 0 or floor > paper, d == 0 or floor > tight
    assert (stop_paper, stop_tight) == tuple(reference.can_halt(a_n, p_n, d, r) for r in ("paper", "tight"))
    for rule, ceiling in (("paper", paper), ("tight", tight)):  # the library's bounds, on a batch of one
        lower, upper, _ = dact.halting_bounds(torch.from_numpy(a_n[None]), torch.tensor([p_n]), d, rule)
        assert abs(lower.item() - floor) < 1e-12 and abs(upper.item() - ceiling) < 1e-12, (n, rule)
    print(f" {n}  {d}  {a_top:.4f} {a_second:.4f} {floor:.4f} | {paper:.4f}        {stop_paper!s:5} |"
          f" {tight:.4f}        {stop_tight}")  # fmt: skip
halt_paper, halt_tight = stop_step("paper"), stop_step("tight")
print(f"paper rule stops after step {halt_paper}, tight rule after step {halt_tight}; predictions "
      f"{a[halt_paper - 1].argmax()} and {a[halt_tight - 1].argmax()}; full depth {a[-1].argmax()}")  # fmt: skip

# %% [markdown]
# After step 2 the paper rule is 0.0024 short (0.4976 against 0.5000), while the tight
# rule already proves class 0 safe. The tight bounds are in fact reached: a worst-case
# future keeps `h = 1` (so p stays at `p_n`) and puts all its vote on the runner-up.
# Running that adversary after step 2 lands exactly on the floor and the tight ceiling, and
# class 0 still wins; after step 1 the same adversary overturns the answer, which is why
# neither rule may stop there.

# %%
for n in (1, 2):
    c_top, c_second = np.argsort(a[n - 1])[::-1][:2]
    y_adv = np.r_[y[:n], np.tile(np.eye(K)[c_second], (N - n, 1))]  # later steps: all on c'
    h_adv = np.r_[h[:n], np.ones(N - n)]  # and never shrink p
    a_N = reference.forward(y_adv, h_adv)[0][-1]
    d, p_n = N - n, p[n - 1]
    print(f"after step {n}: worst case a_N[c*] = {a_N[c_top]:.4f} (floor {a[n - 1, c_top] * (1 - p_n) ** d:.4f}),"
          f" a_N[c'] = {a_N[c_second]:.4f} (tight ceiling {1 - (1 - a[n - 1, c_second]) * (1 - p_n) ** d:.4f})"
          f" -> top class {a_N.argmax()}")  # fmt: skip

# %% [markdown]
# The claim to check: **early exit never changes the prediction**. On random trajectories
# (random answers and halting values, N = 12, K = 3), the prediction at the exit step
# agrees with the full-depth `argmax a_N` every time, for both rules, and the tight rule
# stops no later than the paper rule.

# %%
rng = np.random.default_rng(0)
trials = 300 if FAST else 3000
agree = {"paper": 0, "tight": 0}
steps = {"paper": [], "tight": []}
for _ in range(trials):
    y_r = rng.dirichlet(np.ones(3) * 0.5, size=12)  # (12, 3), rows on the simplex
    h_r = rng.uniform(0, 1, size=12)
    a_r = reference.forward(y_r, h_r)[0]
    for rule in agree:
        n = reference.halting_step(y_r, h_r, rule)
        agree[rule] += a_r[n - 1].argmax() == a_r[-1].argmax()
        steps[rule].append(n)
assert all(t <= q for t, q in zip(steps["tight"], steps["paper"]))
for rule in agree:
    n = np.array(steps[rule])
    print(f"{rule:>5} rule: agreement with full depth {agree[rule] / trials:.3f}, "
          f"average steps {n.mean():.2f} of 12, stopped before step 12: {np.mean(n < 12):.1%}")  # fmt: skip
assert agree["paper"] == agree["tight"] == trials

# %% [markdown]
# ## 5. The pictures
#
# First the toy: `p_n` (with `p_0 = 1`) and the three entries of `a_n` over the steps, with
# the steps where each rule stops. Saved as `tutorials/dact_toy.png`, when matplotlib is
# installed.

# %%
try:
    import matplotlib.pyplot as plt  # without a display, matplotlib draws into files only
except ImportError:
    plt = None
    print("matplotlib is not installed: no pictures")

if plt is not None:
    steps_axis = np.arange(N + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(steps_axis, np.r_[1.0, p], "o-", label="$p_n$")
    left.bar(steps_axis[1:], h, alpha=0.3, label="$h_n$")
    left.set(xlabel="step n", title="halting: $p_n = h_n p_{n-1}$", xticks=steps_axis, ylim=(0, 1.05))
    left.legend()
    for c in range(K):
        right.plot(steps_axis, np.r_[0.0, a[:, c]], "o-", label=f"$a_n$[{c}]")
    for rule, n, style in (("tight", halt_tight, ":"), ("paper", halt_paper, "--")):
        right.axvline(n, color="gray", linestyle=style, label=f"{rule} rule stops")
    right.set(xlabel="step n", title="accumulated answer $a_n$", xticks=steps_axis, ylim=(0, 1.05))
    right.legend()
    fig.tight_layout()
    fig.savefig(PICTURES / "dact_toy.png", dpi=100)
    print("saved", PICTURES / "dact_toy.png")

# %% [markdown]
# ### The two bounds closing in
#
# The test compares two numbers after every step: the **floor** of the top class,
# `a_n[c*] · (1 − p_n)^d`, and the **ceiling** of every other class, `a_n[c'] + p_n · d`
# (paper) or `1 − (1 − a_n[c'])(1 − p_n)^d` (tight). Early on, p is large and many steps
# remain, so the floor is near 0 and the ceilings near (or above) 1: anything could still
# happen. As p shrinks and d counts down, the floor rises towards `a_n[c*]` and the ceilings
# fall towards `a_n[c']`; the first step where the floor is above the ceiling is where the
# example stops.
#
# A longer trajectory shows it better than the 4-step toy: N = 12 steps whose answers
# grow more confident in class 0 over the first six steps, with halting values that fall
# from 0.9; from step 7 on, the steps vote for class 1, too late to change anything. All
# the bounds come from `dact.halting_bounds`.

# %%
y12 = np.array([[0.40, 0.35, 0.25], [0.55, 0.30, 0.15], [0.60, 0.30, 0.10], [0.70, 0.20, 0.10],
                [0.75, 0.15, 0.10], [0.80, 0.15, 0.05]] + [[0.30, 0.60, 0.10]] * 6)  # fmt: skip
h12 = np.array([0.9, 0.8, 0.7, 0.6, 0.45, 0.4] + [0.5] * 6)
N12 = len(y12)
a12, p12 = (torch.from_numpy(t) for t in reference.forward(y12, h12))  # (12, 3), (12,)
bounds = {}  # rule -> (lower, upper, passes), each an array over the steps n = 1..12
for rule in ("paper", "tight"):
    per_step = [dact.halting_bounds(a12[n - 1 : n], p12[n - 1 : n], N12 - n, rule) for n in range(1, N12 + 1)]
    bounds[rule] = [np.array([float(b[i]) for b in per_step]) for i in range(3)]
lower = bounds["paper"][0]  # the floor is the same for both rules
stops = {rule: int(np.argmax(bounds[rule][2])) + 1 for rule in bounds}  # the first step whose test passes
print(" n   p_n     floor   paper ceiling  tight ceiling")
for n in range(1, N12 + 1):
    print(f"{n:2}  {p12[n - 1]:.4f}  {lower[n - 1]:.4f}  {bounds['paper'][1][n - 1]:13.4f}  "
          f"{bounds['tight'][1][n - 1]:13.4f}")  # fmt: skip
top_class = {rule: int(a12[n - 1].argmax()) for rule, n in stops.items()}  # the prediction at each exit
print(f"the floor first passes the tight ceiling after step {stops['tight']}, the paper ceiling after step "
      f"{stops['paper']}; top class there {top_class['tight']} and {top_class['paper']}, "
      f"after all 12 steps {int(a12[-1].argmax())}")  # fmt: skip
assert stops == {rule: reference.halting_step(y12, h12, rule) for rule in stops}
assert top_class["tight"] == top_class["paper"] == int(a12[-1].argmax())

# %% [markdown]
# Drawn (`tutorials/halting_bounds.png`): the two ceilings come down, the floor goes up, and
# the dots mark where the floor first rises above each ceiling, i.e. where each rule stops.
# The tight ceiling is never above the paper one, so the tight rule never stops later. The
# paper ceiling starts far above 1 (`p_n · d` can be as large as d) and enters the picture
# only after a few steps.

# %%
if plt is not None:
    steps12 = np.arange(1, N12 + 1)
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.plot(steps12, a12.max(1).values, color="gray", alpha=0.4, label="$a_n[c^*]$, $a_n[c']$")
    ax.plot(steps12, a12.topk(2, 1).values[:, 1], color="gray", alpha=0.4)
    ax.plot(steps12, lower, "o-", color="C2", label="floor $a_n[c^*](1-p_n)^d$")
    ax.plot(steps12, bounds["paper"][1], "s--", color="C3", label="paper ceiling $a_n[c'] + p_n d$")
    ax.plot(steps12, bounds["tight"][1], "^:", color="C1", label="tight ceiling $1-(1-a_n[c'])(1-p_n)^d$")
    for rule, color in (("paper", "C3"), ("tight", "C1")):
        n = stops[rule]
        ax.scatter([n], [lower[n - 1]], s=160, facecolors="none", edgecolors=color, linewidths=2, zorder=3)
        ax.annotate(f"{rule} rule stops\nafter step {n}", (n, lower[n - 1]), textcoords="offset points",
                    xytext=(14, -40) if rule == "paper" else (-100, -34), color=color)  # fmt: skip
    ax.set(xlabel="step n  (d = 12 − n steps left)", ylabel="probability", xticks=steps12, ylim=(0, 1.05),
           title="the halting test: floor against ceilings")  # fmt: skip
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    fig.tight_layout()
    fig.savefig(PICTURES / "halting_bounds.png", dpi=100)
    print("saved", PICTURES / "halting_bounds.png")

# %% [markdown]
# ## 6. The gradient, by hand, checked by finite differences
#
# Training needs `∂L/∂y_n` and `∂L/∂h_n` (autograd then carries them into the heads and the
# backbone). `reference.backward` computes them by reverse mode through the recursion,
# written out: it walks n = N..1, undoing `a_n = p_{n−1} y_n + (1 − p_{n−1}) a_{n−1}` and
# `p_n = h_n p_{n−1}` with the chain rule (read its comments next to this cell).
#
# A finite difference checks it without any calculus: nudge one input by ±ε and watch
# the loss, `∂L/∂x ≈ (L(x + ε) − L(x − ε)) / 2ε`, with an error of order ε² plus
# rounding of order 1e-16/ε. In float64 with ε = 1e-6 both are around 1e-10.

# %%
def finite_differences(y, h, label, tau, eps=1e-6):
    dy, dh = np.zeros_like(y), np.zeros_like(h)
    for x, grad in ((y, dy), (h, dh)):
        for i in np.ndindex(x.shape):
            old = x[i]
            x[i] = old + eps
            plus = reference.loss(y, h, label, tau)
            x[i] = old - eps
            minus = reference.loss(y, h, label, tau)
            x[i] = old
            grad[i] = (plus - minus) / (2 * eps)
    return dy, dh


dy, dh = reference.backward(y, h, label, tau)
dy_fd, dh_fd = finite_differences(y.copy(), h.copy(), label, tau)
print("∂L/∂h_n:", dh)
print("∂L/∂y_n[label]:", dy[:, label])

# %% [markdown]
# Read `∂L/∂h` as "which way should each halting value move" (gradient descent goes
# against its sign). Negative for `h_1`: raising it gives step 2 (0.8 on the true class 0)
# more weight against step 1, which prefers class 1. Positive for `h_2` and `h_3`: lowering
# them freezes the answer after step 2, whose 0.74 on class 0 is better than what steps 3
# and 4 would mix in (and shrinks the ponder cost too). `∂L/∂h_4 = τ · p_3`: the last
# halting value only pays the ponder cost.
#
# ## The check
#
# The largest difference between the hand-written gradient and finite differences, on
# the toy and on random examples (N = 12, K = 3, random label, τ = 0.01).

# %%
errors = [max(np.abs(dy - dy_fd).max(), np.abs(dh - dh_fd).max())]
for _ in range(3 if FAST else 20):
    y_r, h_r = rng.dirichlet(np.ones(3), size=12), rng.uniform(0.05, 0.95, size=12)
    lab = int(rng.integers(3))
    g, g_fd = reference.backward(y_r, h_r, lab, tau), finite_differences(y_r, h_r, lab, tau)
    errors.append(max(np.abs(g[0] - g_fd[0]).max(), np.abs(g[1] - g_fd[1]).max()))
max_error = max(errors)
print(f"max |reference.backward − finite differences| = {max_error:.2e} over {len(errors)} examples")
assert max_error < 1e-8, "the hand-written gradient disagrees with finite differences"
print("all checks passed")
