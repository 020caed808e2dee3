"""DACT in plain NumPy, one example at a time: the reference to port from (see PORTING.md).

No torch, no batch, no autograd: the forward recursion, the loss, the halting step, and
the gradient of the loss written out by hand. Symbols are those of docs/dact.md; for the
batched PyTorch version see dact.py. This is a second, independent implementation on
purpose (the tests hold the two against each other), so the halting test is written again
here rather than imported.

Shapes, for one example: N steps, K classes.
    y  (N, K)  row n − 1 holds y_n, the answer of step n (a probability vector)
    h  (N,)    entry n − 1 holds h_n, the halting value of step n, in [0, 1]
Internally the state arrays carry an extra row 0 for the start values a_0 = 0, p_0 = 1, so
that a[n] is a_n and p[n] is p_n exactly as written in the spec.
"""

import numpy as np

A_MIN = 1e-8  # the task term clamps a_N[label] from below at 1e-8 (the authors' code)
RULES = ("paper", "tight")


def _states(y, h):
    """a (N + 1, K) and p (N + 1,) with row n holding a_n and p_n, n = 0..N."""
    N, K = y.shape
    a = np.zeros((N + 1, K), dtype=y.dtype)  # a_0 = 0
    p = np.ones(N + 1, dtype=h.dtype)  # p_0 = 1
    for n in range(1, N + 1):
        y_n, h_n = y[n - 1], h[n - 1]
        # a_n = p_{n-1} · y_n + (1 − p_{n-1}) · a_{n-1}
        a[n] = p[n - 1] * y_n + (1 - p[n - 1]) * a[n - 1]
        # p_n = h_n · p_{n-1}
        p[n] = h_n * p[n - 1]
    return a, p


def forward(y, h):
    """y (N, K), h (N,) -> (a (N, K) holding a_1..a_N, p (N,) holding p_1..p_N)."""
    a, p = _states(y, h)
    return a[1:], p[1:]


def loss(y, h, label, tau):
    """L = −log(max(a_N[label], 1e-8)) + τ · Σ_{n=1..N} p_n, a float."""
    a, p = _states(y, h)
    N = len(h)
    # task term: −log(max(a_N[label], 1e-8))
    task = -np.log(max(a[N, label], A_MIN))
    # ponder term: τ · Σ_{n=1..N} p_n   (p_0 = 1 is not counted)
    ponder = tau * np.sum(p[1:])
    return float(task + ponder)


def backward(y, h, label, tau):
    """The gradient of `loss` w.r.t. y and h, by reverse mode through the recursion.
    Returns (dy (N, K), dh (N,)) with dy[n − 1] = ∂L/∂y_n and dh[n − 1] = ∂L/∂h_n.

    ga[n] = ∂L/∂a_n (K,) and gp[n] = ∂L/∂p_n accumulate every path from a_n and p_n to L;
    step n is undone only after step n + 1, when both are complete."""
    a, p = _states(y, h)
    N, K = y.shape
    ga = np.zeros_like(a)  # ga[n] = ∂L/∂a_n, n = 0..N
    gp = np.zeros_like(p)  # gp[n] = ∂L/∂p_n, n = 0..N
    dy = np.zeros_like(y)
    dh = np.zeros_like(h)

    # Task term T = −log(max(a_N[label], 1e-8)):
    #   ∂T/∂a_N[label] = −1 / a_N[label] where a_N[label] ≥ 1e-8, and 0 where the clamp is
    #   active (a_N[label] < 1e-8). torch.clamp passes the gradient at equality: so do we.
    if a[N, label] >= A_MIN:
        ga[N, label] = -1.0 / a[N, label]
    # Ponder term P = τ · Σ_{n=1..N} p_n:  ∂P/∂p_n = τ for n = 1..N (p_0 = 1 is a constant).
    gp[1:] = tau

    for n in range(N, 0, -1):
        # Undo a_n = p_{n-1} · y_n + (1 − p_{n-1}) · a_{n-1}:
        #   ∂a_n[k]/∂y_n[k] = p_{n-1}                =>  ∂L/∂y_n = p_{n-1} · ga_n
        dy[n - 1] = p[n - 1] * ga[n]
        #   ∂a_n[k]/∂a_{n-1}[k] = 1 − p_{n-1}        =>  ga_{n-1} += (1 − p_{n-1}) · ga_n
        ga[n - 1] += (1 - p[n - 1]) * ga[n]
        #   ∂a_n[k]/∂p_{n-1} = y_n[k] − a_{n-1}[k]   =>  gp_{n-1} += Σ_k ga_n[k] · (y_n[k] − a_{n-1}[k])
        gp[n - 1] += np.dot(ga[n], y[n - 1] - a[n - 1])
        # Undo p_n = h_n · p_{n-1}  (gp_n is complete here: its last paths, through
        # a_{n+1} and p_{n+1}, were added while undoing step n + 1):
        #   ∂p_n/∂h_n = p_{n-1}                      =>  ∂L/∂h_n = p_{n-1} · gp_n
        dh[n - 1] = p[n - 1] * gp[n]
        #   ∂p_n/∂p_{n-1} = h_n                      =>  gp_{n-1} += h_n · gp_n
        gp[n - 1] += h[n - 1] * gp[n]
    # ga[0] and gp[0] are gradients w.r.t. the constants a_0 and p_0: unused.
    return dy, dh


def halting_test(a_n, p_n, d, rule="paper"):
    """The two sides (left, right) of the halting inequality after step n, d = N − n steps
    left; the example may stop when left > right (or when d = 0). a_n (K,) with K ≥ 2.
    c* is the top class of a_n, c' the runner-up.
      paper:  a_n[c*] · (1 − p_n)^d  >  a_n[c'] + p_n · d
      tight:  (a_n[c*] − a_n[c']) · (1 − p_n)^d  >  1 − (1 − p_n)^d
    The tight form is a_n[c*](1 − p_n)^d > 1 − (1 − a_n[c'])(1 − p_n)^d with the
    (1 − a_n[c'])(1 − p_n)^d term moved left, so that an exact tie gives 0 on the left."""
    if rule not in RULES:
        raise ValueError(f"unknown halting rule {rule!r}, expected one of {RULES}")
    a_second, a_top = np.sort(a_n)[-2:]  # a_n[c'], a_n[c*]
    # (1 − p_n)^d, d an integer
    shrink = (1 - p_n) ** d
    if rule == "paper":
        return a_top * shrink, a_second + p_n * d
    return (a_top - a_second) * shrink, 1 - shrink


def can_halt(a_n, p_n, d, rule="paper"):
    """May the example stop after step n (d = N − n steps left)? Always at d = 0, and
    always when K = 1 (there is nothing to decide)."""
    if rule not in RULES:
        raise ValueError(f"unknown halting rule {rule!r}, expected one of {RULES}")
    if d == 0 or len(a_n) == 1:
        return True
    left, right = halting_test(a_n, p_n, d, rule)
    return bool(left > right)


def halting_step(y, h, rule="paper"):
    """The step n (1-based) after which inference stops; its prediction is argmax a_n, and
    it equals argmax a_N."""
    a, p = forward(y, h)
    N = len(h)
    for n in range(1, N + 1):
        if can_halt(a[n - 1], p[n - 1], N - n, rule):
            return n
    raise AssertionError("unreachable: every example stops at n = N")
