"""The DACT math (docs/dact.md §1–3): gradients, the NumPy reference, the test vectors,
the special cases of the recursion, and numerics at the edges.

Run with -s to see the measured gradient errors."""

import json

import numpy as np
import pytest
import torch
from torch.func import functional_call

from tinydact import reference
from tinydact.dact import (
    A_MIN,
    HALT_BIAS,
    DACTHead,
    can_halt,
    dact_forward,
    dact_loss,
    dact_update,
    halting_bounds,
    mixture_weights,
    ponder_cost,
)
from tinydact.errors import TinydactError

from conftest import VECTORS, load_vector_script, same_content

F64 = torch.float64


def max_rel_error(got, want) -> float:
    """max |got − want| / max |want|: the largest error relative to the gradient's scale."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def random_inputs(seed, B, N, K, dtype=F64):
    """y (B, N, K) rows of probabilities, h (B, N) in (0.05, 0.95), labels (B,)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.softmax(2 * torch.randn(B, N, K, generator=g, dtype=dtype), dim=-1)
    h = 0.05 + 0.9 * torch.rand(B, N, generator=g, dtype=dtype)
    labels = torch.randint(0, K, (B,), generator=g)
    return y, h, labels


def full_loss(y, h, labels, tau):
    """All N steps, then the loss: what training computes."""
    a, p = dact_forward(y, h)
    return dact_loss(a[:, -1], labels, p, tau)


def torch_central_differences(f, inputs, eps=1e-6):
    """∂f/∂x for a scalar f of a tuple of float64 tensors, by central differences."""
    grads = []
    for i, x in enumerate(inputs):
        g = torch.zeros_like(x)
        for j in range(x.numel()):
            shifted = []
            for sign in (+1, -1):
                xs = [t.detach().clone() for t in inputs]
                xs[i].view(-1)[j] += sign * eps
                shifted.append(f(*xs).item())
            g.view(-1)[j] = (shifted[0] - shifted[1]) / (2 * eps)
        grads.append(g)
    return grads


def numpy_central_differences(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for j in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[j] += eps
        xm[j] -= eps
        g[j] = (f(xp) - f(xm)) / (2 * eps)
    return g


def load_make_vectors():
    return load_vector_script("make_vectors")


def load_vectors():
    return json.loads((VECTORS / "dact.json").read_text())


# ----------------------------------------------------------------------------------------
# Gradients of the recursion + loss, in float64
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.0, 0.05])
def test_autograd_matches_finite_differences_wrt_raw_y_and_h(tau):
    # raw y: any positive numbers, not normalised; the recursion does not need it
    g = torch.Generator().manual_seed(0)
    B, N, K = 3, 5, 3
    y = (0.05 + torch.rand(B, N, K, generator=g, dtype=F64)).requires_grad_()
    h = (0.05 + 0.9 * torch.rand(B, N, generator=g, dtype=F64)).requires_grad_()
    labels = torch.tensor([0, 2, 1])

    def f(y, h):
        return full_loss(y, h, labels, tau)

    assert torch.autograd.gradcheck(f, (y, h), eps=1e-6, atol=1e-8, rtol=1e-6)
    dy, dh = torch.autograd.grad(f(y, h), (y, h))
    fd_y, fd_h = torch_central_differences(f, (y, h))
    err = max(max_rel_error(dy, fd_y), max_rel_error(dh, fd_h))
    print(f"\nrecursion + loss, raw y and h, tau={tau}: autograd vs central differences, max rel error {err:.2e}")
    assert err < 1e-6


def test_autograd_matches_finite_differences_through_softmax_and_sigmoid():
    g = torch.Generator().manual_seed(1)
    B, N, K = 2, 4, 4
    logits = torch.randn(B, N, K, generator=g, dtype=F64).requires_grad_()
    halt_logits = torch.randn(B, N, generator=g, dtype=F64).requires_grad_()
    labels = torch.tensor([3, 0])

    def f(logits, halt_logits):
        return full_loss(torch.softmax(logits, -1), torch.sigmoid(halt_logits), labels, 0.01)

    assert torch.autograd.gradcheck(f, (logits, halt_logits), eps=1e-6, atol=1e-8, rtol=1e-6)
    grads = torch.autograd.grad(f(logits, halt_logits), (logits, halt_logits))
    fds = torch_central_differences(f, (logits, halt_logits))
    err = max(max_rel_error(a, b) for a, b in zip(grads, fds))
    print(f"\nrecursion + loss through softmax/sigmoid: max rel error {err:.2e}")
    assert err < 1e-6


def test_autograd_matches_finite_differences_wrt_dact_head_parameters():
    torch.manual_seed(2)
    B, N, H, K = 3, 3, 4, 3
    # halt_bias 1.0: h ≈ 0.73, away from saturation, so the halting unit gets a sizeable gradient
    head = DACTHead(H, K, hidden_dropout=0.1, halt_bias=1.0).to(F64).eval()  # eval: dropout off
    x = torch.randn(B * N, H, dtype=F64)  # the [CLS] state of every (example, step)
    labels = torch.tensor([0, 1, 2])
    names = [name for name, _ in head.named_parameters()]
    params = tuple(t.detach().clone().requires_grad_() for _, t in head.named_parameters())

    def f(*params):
        y, h = functional_call(head, dict(zip(names, params)), (x,))  # (B·N, K), (B·N,)
        return full_loss(y.view(B, N, K), h.view(B, N), labels, 0.01)

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-8, rtol=1e-6)
    grads = torch.autograd.grad(f(*params), params)
    fds = torch_central_differences(f, params)
    err = max(max_rel_error(a, b) for a, b in zip(grads, fds))
    print(f"\nDACTHead parameters ({', '.join(names)}): max rel error {err:.2e}")
    assert err < 1e-6


# ----------------------------------------------------------------------------------------
# The NumPy reference: hand-written backward, forward agreement
# ----------------------------------------------------------------------------------------


def reference_cases():
    """(y, h, label, tau) examples for the NumPy reference, h including exact 0 and 1."""
    rng = np.random.default_rng(3)
    cases = []
    for N, K in [(1, 2), (3, 2), (5, 3), (8, 5), (12, 2)]:
        y = rng.dirichlet(np.ones(K), size=N)
        h = rng.uniform(0.0, 1.0, size=N)
        cases.append((y, h, int(rng.integers(K)), 0.05))
    y = rng.dirichlet(np.ones(3), size=6)
    cases.append((y, np.array([0.9, 1.0, 0.7, 0.0, 0.5, 0.3]), 1, 0.1))  # h = 1 and h = 0
    cases.append((y, np.array([0.0, 0.5, 0.5, 0.5, 0.5, 0.5]), 2, 0.0))  # h_1 = 0
    return cases


def test_numpy_backward_matches_central_differences():
    errors = []
    for y, h, label, tau in reference_cases():
        dy, dh = reference.backward(y, h, label, tau)
        fd_y = numpy_central_differences(lambda y_: reference.loss(y_, h, label, tau), y)
        fd_h = numpy_central_differences(lambda h_: reference.loss(y, h_, label, tau), h)
        errors += [max_rel_error(dy, fd_y), max_rel_error(dh, fd_h)]
    print(f"\nNumPy hand-written backward vs central differences: max rel error {max(errors):.2e}")
    assert max(errors) < 1e-6


def torch_grads(y, h, label, tau):
    """Loss and (dy, dh) by torch autograd, for one NumPy example."""
    y_t = torch.tensor(y, dtype=F64).unsqueeze(0).requires_grad_()  # (1, N, K)
    h_t = torch.tensor(h, dtype=F64).unsqueeze(0).requires_grad_()  # (1, N)
    L = full_loss(y_t, h_t, torch.tensor([label]), tau)
    dy, dh = torch.autograd.grad(L, (y_t, h_t))
    return L.item(), dy[0].numpy(), dh[0].numpy()


def test_numpy_backward_matches_torch_autograd():
    errors = []
    for y, h, label, tau in reference_cases():
        _, dy_t, dh_t = torch_grads(y, h, label, tau)
        dy, dh = reference.backward(y, h, label, tau)
        errors += [max_rel_error(dy, dy_t), max_rel_error(dh, dh_t)]
    print(f"\nNumPy hand-written backward vs torch autograd: max rel error {max(errors):.2e}")
    assert max(errors) < 1e-12


def test_clamp_blocks_the_task_gradient_in_numpy_and_torch():
    # label 0 gets probability 0 in every step: a_N[0] = 0 < 1e-8, the clamp is active
    y = np.array([[0.0, 0.6, 0.4], [0.0, 0.1, 0.9], [0.0, 0.5, 0.5]])
    h = np.array([0.5, 0.4, 0.3])
    tau = 0.1
    loss_t, dy_t, dh_t = torch_grads(y, h, 0, tau)
    dy, dh = reference.backward(y, h, 0, tau)
    a, p = reference.forward(y, h)
    assert reference.loss(y, h, 0, tau) == pytest.approx(-np.log(A_MIN) + tau * p.sum(), rel=1e-15)
    assert loss_t == pytest.approx(reference.loss(y, h, 0, tau), rel=1e-15)
    assert np.all(dy == 0) and np.all(dy_t == 0)  # only the ponder term is left, and it ignores y
    np.testing.assert_allclose(dh, dh_t, rtol=1e-14, atol=0)
    # at exactly a_N[label] = 1e-8 torch.clamp passes the gradient, and so does the reference
    y = np.array([[A_MIN, 1 - A_MIN]])
    dy, _ = reference.backward(y, np.array([0.5]), 0, 0.0)
    _, dy_t, _ = torch_grads(y, np.array([0.5]), 0, 0.0)
    assert dy[0, 0] == dy_t[0, 0] == pytest.approx(-1 / A_MIN)


def test_torch_and_numpy_forward_and_loss_agree():
    y, h, labels = random_inputs(4, B=16, N=7, K=4)
    h[0, 2], h[1, 0], h[2, :] = 0.0, 0.0, 1.0  # exact 0 and 1 as well
    a, p = dact_forward(y, h)
    for i in range(16):
        a_ref, p_ref = reference.forward(y[i].numpy(), h[i].numpy())
        np.testing.assert_allclose(a[i].numpy(), a_ref, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(p[i].numpy(), p_ref, rtol=1e-14, atol=1e-15)
        L = dact_loss(a[i : i + 1, -1], labels[i : i + 1], p[i : i + 1], 0.05).item()
        assert L == pytest.approx(reference.loss(y[i].numpy(), h[i].numpy(), int(labels[i]), 0.05), rel=1e-14)
    # the batch loss is the mean of the per-example losses
    losses = [reference.loss(y[i].numpy(), h[i].numpy(), int(labels[i]), 0.05) for i in range(16)]
    assert dact_loss(a[:, -1], labels, p, 0.05).item() == pytest.approx(np.mean(losses), rel=1e-14)


# ----------------------------------------------------------------------------------------
# The test vectors for ports
# ----------------------------------------------------------------------------------------


def test_reference_reproduces_the_test_vectors():
    for case in load_vectors()["cases"]:
        y, h = np.array(case["y"]), np.array(case["h"])
        a, p = reference.forward(y, h)
        dy, dh = reference.backward(y, h, case["label"], case["tau"])
        np.testing.assert_allclose(a, case["a"], rtol=1e-12, atol=1e-15, err_msg=case["name"])
        np.testing.assert_allclose(p, case["p"], rtol=1e-12, atol=1e-15, err_msg=case["name"])
        assert reference.loss(y, h, case["label"], case["tau"]) == pytest.approx(case["loss"], rel=1e-12)
        np.testing.assert_allclose(dy, case["dy"], rtol=1e-12, atol=1e-15, err_msg=case["name"])
        np.testing.assert_allclose(dh, case["dh"], rtol=1e-12, atol=1e-15, err_msg=case["name"])
        for rule in ("paper", "tight"):
            assert reference.halting_step(y, h, rule) == case["halting_step"][rule], (case["name"], rule)


def test_torch_reproduces_the_test_vectors():
    for case in load_vectors()["cases"]:
        y = torch.tensor(case["y"], dtype=F64).unsqueeze(0).requires_grad_()  # (1, N, K)
        h = torch.tensor(case["h"], dtype=F64).unsqueeze(0).requires_grad_()  # (1, N)
        N = case["N"]
        a_n, p_n = y.new_zeros(1, case["K"]), h.new_ones(1)  # a_0 = 0, p_0 = 1
        a, p, halted = [], [], {}
        for n in range(1, N + 1):
            a_n, p_n = dact_update(a_n, p_n, y[:, n - 1], h[:, n - 1])
            a.append(a_n)
            p.append(p_n)
            for rule in ("paper", "tight"):
                if rule not in halted and can_halt(a_n, p_n, N - n, rule)[0]:
                    halted[rule] = n
        p = torch.stack(p, 1)  # (1, N)
        L = dact_loss(a_n, torch.tensor([case["label"]]), p, case["tau"])
        dy, dh = torch.autograd.grad(L, (y, h))
        name = case["name"]
        np.testing.assert_allclose(torch.cat(a).detach().numpy(), case["a"], rtol=1e-12, atol=1e-15, err_msg=name)
        np.testing.assert_allclose(p[0].detach().numpy(), case["p"], rtol=1e-12, atol=1e-15, err_msg=name)
        assert L.item() == pytest.approx(case["loss"], rel=1e-12), name
        np.testing.assert_allclose(dy[0].numpy(), case["dy"], rtol=1e-12, atol=1e-15, err_msg=name)
        np.testing.assert_allclose(dh[0].numpy(), case["dh"], rtol=1e-12, atol=1e-15, err_msg=name)
        assert halted == case["halting_step"], name


def test_vector_file_is_up_to_date_and_deterministic():
    make_vectors = load_make_vectors()
    text = make_vectors.to_json_text(make_vectors.build_vectors())
    assert text == make_vectors.to_json_text(make_vectors.build_vectors())  # deterministic
    same_content(json.loads(text), load_vectors(), rel=1e-12, abs=1e-300)  # log's last digits may differ between platforms


def test_vector_file_covers_the_edge_cases():
    cases = load_vectors()["cases"]
    assert len(cases) >= 30
    assert any(c["N"] == 1 for c in cases)
    assert any(c["K"] >= 3 for c in cases)
    assert any(0.0 in c["h"] for c in cases) and any(1.0 in c["h"] for c in cases)
    assert any(max(row) == sorted(row)[-2] for c in cases for row in c["y"])  # a tie at the top
    assert any(c["loss"] > -np.log(A_MIN) for c in cases)  # the clamp is active
    assert any(c["halting_step"]["tight"] < c["halting_step"]["paper"] for c in cases)
    assert any(c["halting_step"]["paper"] < c["N"] for c in cases)


# ----------------------------------------------------------------------------------------
# Special cases of docs/dact.md §1
# ----------------------------------------------------------------------------------------


def test_first_step_gives_a1_equal_y1_and_p1_equal_h1():
    y, h, _ = random_inputs(5, B=4, N=3, K=3)
    a, p = dact_forward(y, h)
    assert torch.equal(a[:, 0], y[:, 0]) and torch.equal(p[:, 0], h[:, 0])


def test_h_all_one_gives_the_last_answer():
    y, _, _ = random_inputs(6, B=4, N=6, K=3)
    a, p = dact_forward(y, torch.ones(4, 6, dtype=F64))
    assert torch.equal(p, torch.ones_like(p))
    assert torch.equal(a, y)  # a_n = y_n for every n, so a_N = y_N


def test_h1_zero_freezes_the_first_answer():
    y, h, _ = random_inputs(7, B=4, N=6, K=3)
    h[:, 0] = 0.0
    a, p = dact_forward(y, h)
    assert torch.equal(p, torch.zeros_like(p))
    assert torch.equal(a, y[:, :1].expand_as(a))  # a_n = y_1 for every n


def test_mixture_weights_are_convex_and_reproduce_a_N():
    y, h, _ = random_inputs(8, B=64, N=9, K=4)
    h[::5, 3], h[::7, 6] = 0.0, 1.0  # exact 0 and 1 too
    w = mixture_weights(h)  # (B, N)
    assert torch.all(w >= 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(64, dtype=F64), rtol=0, atol=1e-14)
    a, _ = dact_forward(y, h)
    torch.testing.assert_close((w.unsqueeze(-1) * y).sum(1), a[:, -1], rtol=0, atol=1e-14)


def test_mixture_weights_at_the_initial_halting_bias_favour_the_last_blocks():
    h0 = torch.sigmoid(torch.tensor(HALT_BIAS, dtype=F64))
    w = mixture_weights(h0.expand(12))
    assert w[-1] > 0.5 and w[:6].sum() < 0.01
    w_half = mixture_weights(torch.full((12,), 0.5, dtype=F64))
    assert w_half[-4:].sum() < 0.01  # h = 0.5: the top blocks get almost no say


def test_ponder_cost_sums_p1_to_pN():
    p = torch.tensor([[0.9, 0.5, 0.1], [1.0, 1.0, 1.0]], dtype=F64)
    torch.testing.assert_close(ponder_cost(p), torch.tensor([1.5, 3.0], dtype=F64))


# ----------------------------------------------------------------------------------------
# Numerics at the edges
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_loss_and_gradients_are_finite_at_h_and_y_exactly_0_or_1(dtype):
    B, N, K = 4, 5, 3
    y = torch.zeros(B, N, K, dtype=dtype)
    y[:, :, 1] = 1.0  # one-hot on class 1 everywhere: a_N[0] = 0, the clamp is active for label 0
    h = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 1.0, 1.0], [0.0] * 5], dtype=dtype)
    y.requires_grad_()
    h.requires_grad_()
    labels = torch.tensor([0, 1, 0, 1])
    L = full_loss(y, h, labels, 0.01)
    L.backward()
    assert torch.isfinite(L) and torch.isfinite(y.grad).all() and torch.isfinite(h.grad).all()
    assert y.grad.dtype == dtype and h.grad.dtype == dtype
    # examples 0 and 2 have a_N[label] = 0: task term −log(1e-8) ≈ 18.42, not inf
    a, p = dact_forward(y.detach(), h.detach())
    per_example = [dact_loss(a[i : i + 1, -1], labels[i : i + 1], p[i : i + 1], 0.0).item() for i in range(B)]
    assert per_example[0] == pytest.approx(-np.log(A_MIN), rel=1e-6)
    assert per_example[1] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_loss_is_finite_and_close_to_float64(dtype):
    y, h, labels = random_inputs(9, B=8, N=6, K=3)
    y[0, :, labels[0]] = 0.0  # a clamp case: float16 cannot even hold 1e-8
    L64 = full_loss(y, h, labels, 0.01)
    L = full_loss(y.to(dtype), h.to(dtype), labels, 0.01)
    assert torch.isfinite(L) and L.dtype == torch.float32
    assert L.item() == pytest.approx(L64.item(), rel=2e-2)


def head_loss(dtype, scale):
    """A DACTHead in `dtype` on inputs of size `scale`, one step of the recursion, the loss."""
    torch.manual_seed(10)
    head = DACTHead(8, 3).to(dtype).eval()
    x = scale * torch.randn(6, 8, dtype=dtype)
    y_n, h_n = head(x)
    assert y_n.dtype == h_n.dtype == dtype and h_n.shape == (6,)
    a_n, p_n = dact_update(torch.zeros_like(y_n), torch.ones_like(h_n), y_n, h_n)  # a_0 = 0, p_0 = 1
    return head, y_n, dact_loss(a_n, torch.tensor([0, 1, 2, 0, 1, 2]), p_n.unsqueeze(1), 0.01)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dact_head_loss_is_finite_in_half_precision_when_softmax_saturates(dtype):
    _, y_n, L = head_loss(dtype, scale=300.0)  # huge inputs: some y_n entries are exactly 0
    assert (y_n == 0).any()
    assert torch.isfinite(L)


@pytest.mark.parametrize("dtype, scale", [(torch.bfloat16, 30.0), (torch.float16, 1.0)])
def test_dact_head_gradients_are_finite_in_half_precision(dtype, scale):
    # float16 only at moderate inputs: its largest number is 65504, so the gradient
    # −1 / (B · a_N[label]) itself overflows once a_N[label] < ~1e-5 (see dact_loss)
    head, _, L = head_loss(dtype, scale)
    L.backward()
    assert all(torch.isfinite(t.grad).all() for t in head.parameters())


# ----------------------------------------------------------------------------------------
# can_halt and DACTHead surface
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["paper", "tight"])
def test_can_halt_is_always_true_when_no_step_remains(rule):
    a_n = torch.tensor([[0.5, 0.5], [0.2, 0.8], [1 / 3, 2 / 3]], dtype=F64)  # incl. an exact tie
    p_n = torch.tensor([1.0, 1.0, 0.5], dtype=F64)
    assert can_halt(a_n, p_n, 0, rule).all()
    assert not can_halt(a_n, p_n, 1, rule).any()  # p_n large: with a step left nobody stops


@pytest.mark.parametrize("rule", ["paper", "tight"])
def test_can_halt_never_stops_an_exact_tie_before_the_last_step(rule):
    # p_n = 0: the answer is frozen, only the tie is left to decide
    for a_n in ([[0.4, 0.4, 0.2], [0.45, 0.45, 0.1]], [[0.5, 0.5]], [[0.1] * 10]):
        a_n = torch.tensor(a_n, dtype=F64)
        p_n = torch.zeros(len(a_n), dtype=F64)
        for d in (1, 2, 11):
            assert not can_halt(a_n, p_n, d, rule).any()
            assert not reference.can_halt(a_n[0].numpy(), 0.0, d, rule)
    # why the tight rule is computed as (a_n[c*] − a_n[c'])(1 − p_n)^d > 1 − (1 − p_n)^d:
    # written literally, a tie at 0.1 would stop, as 1 − (1 − 0.1) rounds below 0.1
    assert 0.1 * 1.0 > 1 - (1 - 0.1) * 1.0


def test_can_halt_rules_on_a_hand_example():
    # a_n = (0.9, 0.1), p_n = 0.05, d = 2: (1 − p)^d = 0.9025
    a_n, p_n = torch.tensor([[0.9, 0.1]], dtype=F64), torch.tensor([0.05], dtype=F64)
    # paper: 0.9 · 0.9025 = 0.81225 > 0.1 + 0.1 = 0.2
    assert can_halt(a_n, p_n, 2, "paper")
    # p_n = 0.4: paper 0.9 · 0.36 = 0.324 > 0.1 + 0.8 = 0.9? no; tight 0.8 · 0.36 = 0.288 > 0.64? no
    p_n = torch.tensor([0.4], dtype=F64)
    assert not can_halt(a_n, p_n, 2, "paper") and not can_halt(a_n, p_n, 2, "tight")
    # p_n = 0.3, d = 1: paper 0.9 · 0.7 = 0.63 > 0.4 (yes); p_n = 0.45, d = 1: paper
    # 0.495 > 0.55 no, tight 0.8 · 0.55 = 0.44 > 0.45 no; p_n = 0.44: paper 0.504 > 0.54 no,
    # tight 0.448 > 0.44 yes: the tight rule stops where the paper rule does not
    assert can_halt(a_n, torch.tensor([0.3], dtype=F64), 1, "paper")
    p_n = torch.tensor([0.44], dtype=F64)
    assert not can_halt(a_n, p_n, 1, "paper") and can_halt(a_n, p_n, 1, "tight")


def test_can_halt_with_one_class_is_always_true_and_unknown_rule_is_an_error():
    assert can_halt(torch.ones(3, 1), torch.ones(3), 5).all()
    assert reference.can_halt(np.ones(1), 1.0, 5)
    for check in (can_halt, halting_bounds):  # the library's own error, naming the rules
        with pytest.raises(TinydactError, match="halting rule must be one of paper, tight, got 'loose'"):
            check(torch.ones(2, 2) / 2, torch.ones(2), 0, rule="loose")
    with pytest.raises(ValueError, match="unknown halting rule"):
        reference.halting_step(np.ones((2, 2)) / 2, np.ones(2), rule="loose")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_can_halt_accepts_half_precision(dtype):
    a_n = torch.tensor([[0.97, 0.03], [0.5, 0.5]], dtype=dtype)
    p_n = torch.tensor([0.001, 0.001], dtype=dtype)
    for rule in ("paper", "tight"):
        assert can_halt(a_n, p_n, 3, rule).tolist() == [True, False]


def test_dact_head_surface_and_halting_bias():
    head = DACTHead(16, 3)
    assert [name for name, _ in head.named_children()] == ["dropout", "dense", "answer", "halt"]
    assert isinstance(head.dropout, torch.nn.Dropout) and head.dropout.p == 0.1
    assert head.dense.weight.shape == (16, 16) and head.answer.weight.shape == (3, 16) and head.halt.weight.shape == (1, 16)
    assert torch.all(head.halt.bias == HALT_BIAS)
    assert 0.9 < torch.sigmoid(torch.tensor(HALT_BIAS)) < 0.99
    head.eval()
    x = torch.randn(5, 16)
    y_n, h_n = head(x)
    assert y_n.shape == (5, 3) and h_n.shape == (5,)
    torch.testing.assert_close(y_n, torch.softmax(head.logits(x), -1))  # one z for both
    torch.testing.assert_close(y_n.sum(-1), torch.ones(5))
    assert torch.all((h_n > 0) & (h_n < 1))
    assert DACTHead(16, 3, halt_bias=0.5).halt.bias.item() == 0.5
