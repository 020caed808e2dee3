"""Exactness of early exit (docs/dact.md §3), on random trajectories.

The invariant: stopping after the first step n where `can_halt(a_n, p_n, N − n, rule)`
holds gives the same prediction as running all N steps, argmax a_n = argmax a_N, under both
rules. Predictions are argmax with the first maximum winning (torch.argmax, np.argmax).
Ties need no special case: an exact tie between the top two classes never passes the strict
test while a step remains (d > 0), so a tie is only ever decided at n = N, where the
early-exit prediction and the full-depth one are the same argmax of the same a_N.

Trajectories (y, h) are drawn, not produced by a model: the bounds hold for any answers and
any halting values, and random ones reach corners that trained models rarely do. Run with
-s to see the average halting step of both rules.
"""

import numpy as np
import pytest
import torch

from tinydact import reference
from tinydact.dact import can_halt, dact_update

F64 = torch.float64
ROWS_PER_SHAPE = 1100  # × 24 values of N × 4 values of K = 105,600 trajectories
ANSWERS = ("random", "sharp", "flat", "consistent", "tie", "one-hot")
HALTING = ("uniform", "near 1", "near 0", "collapse", "exact 0/1")


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are small: one thread is faster than several, and on a busy machine
    several threads fighting other jobs for cores can be ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_trajectories(g, B, N, K):
    """y (B, N, K) and h (B, N) for B examples, each with its own answer profile (ANSWERS)
    and halting profile (HALTING), drawn at random."""
    noise = torch.randn(B, N, K, generator=g, dtype=F64)
    base = 3 * torch.randn(B, 1, K, generator=g, dtype=F64)  # one favourite class per example
    tied = noise.clone()
    tied[..., 1] = tied[..., 0]  # classes 0 and 1 get identical logits...
    tied[..., :2] += 3 * torch.rand(B, N, 1, generator=g, dtype=F64)  # ...usually at the top
    one_hot = torch.nn.functional.one_hot((base + noise).argmax(-1), K).to(F64)  # exact 0 and 1
    y_by_profile = torch.stack(
        [
            torch.softmax(2 * noise, -1),  # random
            torch.softmax(20 * noise, -1),  # sharp: nearly one-hot, a different class each step
            torch.softmax(0.05 * noise, -1),  # flat: nearly uniform
            torch.softmax(base + 0.5 * noise, -1),  # consistent: the same class wins most steps
            torch.softmax(tied, -1),  # an exact tie between classes 0 and 1 in every step
            one_hot,
        ]
    )  # (len(ANSWERS), B, N, K)

    u = torch.rand(B, N, generator=g, dtype=F64)
    zero_or_one = (torch.rand(B, N, generator=g) < 0.5).to(F64)
    near_1 = torch.where(u < 0.1, 1.0, 1 - 0.05 * u)  # some exactly 1
    near_0 = torch.where(u < 0.1, 0.0, 0.05 * u)  # some exactly 0
    m = torch.randint(0, N, (B, 1), generator=g)  # the block where h collapses
    n = torch.arange(N).expand(B, N)
    collapse = torch.where(n < m, near_1, torch.where(n == m, 1e-3 * u * zero_or_one, u))
    h_by_profile = torch.stack([u, near_1, near_0, collapse, zero_or_one])  # (len(HALTING), B, N)

    rows = torch.arange(B)
    y = y_by_profile[torch.randint(0, len(ANSWERS), (B,), generator=g), rows]  # (B, N, K)
    h = h_by_profile[torch.randint(0, len(HALTING), (B,), generator=g), rows]  # (B, N)
    return y, h


def run_with_halting(y, h):
    """Run all N steps, recording for each rule the first step where `can_halt` holds and
    argmax a_n there; also check the per-step facts. Returns (steps, predictions, counts):
    dicts by rule of (B,) tensors, and a dict of how often the special situations occurred."""
    B, N, K = y.shape
    a_n, p_n = y.new_zeros(B, K), h.new_ones(B)  # a_0 = 0, p_0 = 1
    steps = {rule: torch.zeros(B, dtype=torch.long) for rule in ("paper", "tight")}
    predictions = {rule: torch.full((B,), -1) for rule in ("paper", "tight")}
    counts = dict(ties_before_last_step=0)
    for n in range(1, N + 1):
        a_n, p_n = dact_update(a_n, p_n, y[:, n - 1], h[:, n - 1])
        halt = {rule: can_halt(a_n, p_n, N - n, rule) for rule in ("paper", "tight")}
        # the tight rule stops wherever the paper rule does
        assert not (halt["paper"] & ~halt["tight"]).any()
        # an exact tie at the top never stops while a step remains
        top2 = torch.topk(a_n, 2, dim=-1).values
        tie = top2[:, 0] == top2[:, 1]
        if n < N:
            assert not (tie & (halt["paper"] | halt["tight"])).any()
            counts["ties_before_last_step"] += int(tie.sum())
        prediction = a_n.argmax(-1)  # (B,)
        for rule in ("paper", "tight"):
            # once stopped, no later step changes the answer (not only the last one)
            stopped = steps[rule] > 0
            assert torch.equal(prediction[stopped], predictions[rule][stopped])
            first = halt[rule] & ~stopped
            steps[rule][first] = n
            predictions[rule][first] = prediction[first]
    assert all((s > 0).all() for s in steps.values())  # everyone stops at n = N at the latest
    return steps, predictions, a_n.argmax(-1), counts


def test_early_exit_prediction_equals_full_depth_argmax_on_random_trajectories():
    g = torch.Generator().manual_seed(0)
    stats = dict(trajectories=0, steps_paper=0, steps_tight=0, frac_paper=0.0, frac_tight=0.0)
    stats.update(early_paper=0, early_tight=0, tight_earlier=0, ties_before_last_step=0)
    for N in range(1, 25):
        for K in range(2, 6):
            y, h = random_trajectories(g, ROWS_PER_SHAPE, N, K)
            steps, predictions, full_depth, counts = run_with_halting(y, h)
            for rule in ("paper", "tight"):
                assert torch.equal(predictions[rule], full_depth), (N, K, rule)
                stats[f"steps_{rule}"] += int(steps[rule].sum())
                stats[f"frac_{rule}"] += float((steps[rule] / N).sum())
                stats[f"early_{rule}"] += int((steps[rule] < N).sum())
            # the tight rule never halts later than the paper rule
            assert (steps["tight"] <= steps["paper"]).all()
            stats["tight_earlier"] += int((steps["tight"] < steps["paper"]).sum())
            stats["ties_before_last_step"] += counts["ties_before_last_step"]
            stats["trajectories"] += ROWS_PER_SHAPE

    T = stats["trajectories"]
    assert T >= 100_000
    # the test is not vacuous: many examples stop early, ties occur, the rules differ
    assert stats["early_paper"] > 0.2 * T and stats["ties_before_last_step"] > 1000 and stats["tight_earlier"] > 0
    saved = 1 - stats["steps_tight"] / stats["steps_paper"]
    print(
        f"\n{T} random trajectories, N in 1..24, K in 2..5:"
        f"\n  paper rule: average halting step {stats['steps_paper'] / T:.3f} "
        f"({stats['frac_paper'] / T:.1%} of N on average), stopped before N: {stats['early_paper'] / T:.1%}"
        f"\n  tight rule: average halting step {stats['steps_tight'] / T:.3f} "
        f"({stats['frac_tight'] / T:.1%} of N on average), stopped before N: {stats['early_tight'] / T:.1%}"
        f"\n  tight stopped earlier than paper on {stats['tight_earlier'] / T:.2%} of trajectories; "
        f"{saved:.2%} fewer steps in total"
        f"\n  exact ties at the top before the last step: {stats['ties_before_last_step']} (none stopped)"
    )


def test_batched_can_halt_agrees_with_the_numpy_reference_halting_step():
    g = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(1)
    checked = 0
    for N in (1, 2, 3, 5, 8, 13, 24):
        for K in (2, 3, 5):
            y, h = random_trajectories(g, 400, N, K)
            steps, _, _, _ = run_with_halting(y, h)
            for i in rng.choice(400, size=30, replace=False):
                for rule in ("paper", "tight"):
                    assert reference.halting_step(y[i].numpy(), h[i].numpy(), rule) == steps[rule][i], (N, K, i, rule)
                checked += 1
    assert checked == 7 * 3 * 30
