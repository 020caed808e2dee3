"""DACT: Differentiable Adaptive Computation Time, read next to docs/dact.md.

A model is cut into N ordered steps (for DACT-BERT: the N Transformer blocks). After step
n = 1..N a small head (`DACTHead`) reads the step's state and emits

    y_n  (B, K)  the step's own answer, a probability vector over the K classes
    h_n  (B,)    a "halting value" in (0, 1)

and two running quantities are updated (`dact_update`, docs/dact.md §1):

    p_n = h_n · p_{n-1}                              p_0 = 1   (p_n = ∏_{i≤n} h_i)
    a_n = p_{n-1} · y_n + (1 − p_{n-1}) · a_{n-1}    a_0 = 0   (accumulated answer)

The model's answer is a_N, a convex mixture Σ_n w_n y_n of the per-step answers
(`mixture_weights`). p_n is how much the steps after n may still change it.

Training (§2): all N steps always run; everything is smooth, every h_n gets a
gradient. The loss (`dact_loss`) is the negative log-likelihood of the mixture a_N plus
τ times the ponder cost Σ_n p_n (`ponder_cost`). Nothing halts during training.

Inference (§3): after step n, with d = N − n steps left, `can_halt` tests whether
the remaining steps can still change the top class of a_n; if not, the example stops and
outputs a_n. This is exact: the prediction after early exit is the argmax of a_N from
running all N steps. Early exit changes cost, never the prediction (in real arithmetic; in
floating point a decision can only be wrong when the top two classes of a_n are a few
rounding errors apart, and an exact tie never stops early).

Dimension legend: B batch, K classes (num_labels), N steps (blocks), H hidden size.
Tensors follow their inputs' device and dtype; float16/bfloat16 inputs are promoted to
float32 inside the loss and the halting test (see `_at_least_float32`).
"""

import torch
from torch import nn

from .options import check_rule

# Halting-bias initialisation (docs/dact.md §4, our choice): sigmoid(3.0) ≈ 0.953, inside the
# method's h ≈ 0.9–0.99. Why not h = 0.5: then p_n = 0.5^n collapses fast and with N = 12 the
# mixture weights are ≈ (0.29, 0.29, 0.19, 0.11, 0.06, 0.03, …, 0.00): the top blocks get
# almost no say, which throws away the pretrained depth. With h ≈ 0.953 and N = 12 the
# weights are ≈ (0, …, 0.04, 0.10, 0.26, 0.59): the model starts as (nearly) a last-block
# classifier and learns to lower h where earlier blocks suffice.
from .options import HALT_BIAS  # noqa: E402 (defined beside the training options, torch-free)

# The task term clamps a_N[label] from below at 1e-8, as the authors' code does.
A_MIN = 1e-8


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32, other dtypes unchanged. 1e-8 is below float16's smallest
    positive number (≈6e-8, it rounds to 0 and log(0) = −inf), and half precision is too
    coarse for a halting test that compares quantities a few ulps apart."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


# ----------------------------------------------------------------------------------------
# The recursion (docs/dact.md §1)
# ----------------------------------------------------------------------------------------


def dact_update(a_prev: torch.Tensor, p_prev: torch.Tensor, y_n: torch.Tensor, h_n: torch.Tensor):
    """One step of the recursion. a_prev = a_{n-1} (B, K), p_prev = p_{n-1} (B,),
    y_n (B, K), h_n (B,). Returns (a_n (B, K), p_n (B,)).
    Start from a_0 = zeros (B, K) and p_0 = ones (B,); then a_1 = y_1 and p_1 = h_1."""
    # a_n = p_{n-1} · y_n + (1 − p_{n-1}) · a_{n-1}
    a_n = p_prev.unsqueeze(-1) * y_n + (1 - p_prev.unsqueeze(-1)) * a_prev  # (B, K)
    # p_n = h_n · p_{n-1}
    p_n = h_n * p_prev  # (B,)
    return a_n, p_n


def dact_forward(y: torch.Tensor, h: torch.Tensor):
    """The whole recursion over N steps, y (B, N, K), h (B, N) -> (a (B, N, K), p (B, N))
    holding a_1..a_N and p_1..p_N: the batched twin of `reference.forward`. (The model
    calls `dact_update` itself, one block at a time.)"""
    B, N, K = y.shape
    a_n = y.new_zeros(B, K)  # a_0 = 0
    p_n = h.new_ones(B)  # p_0 = 1
    a, p = [], []
    for n in range(N):  # row n holds step n + 1
        a_n, p_n = dact_update(a_n, p_n, y[:, n], h[:, n])
        a.append(a_n)
        p.append(p_n)
    return torch.stack(a, 1), torch.stack(p, 1)  # (B, N, K), (B, N)


def mixture_weights(h: torch.Tensor) -> torch.Tensor:
    """Closed form of a_N as a mixture: a_N = Σ_n w_n y_n with
    w_n = p_{n-1} · ∏_{j=n..N-1} (1 − p_j)   (empty product = 1).
    h (..., N) -> w (..., N); the weights are ≥ 0 and sum to 1. For tests and tutorials."""
    p = torch.cumprod(h, dim=-1)  # p_1..p_N, (..., N)
    one = torch.ones_like(p[..., :1])
    p_prev = torch.cat([one, p[..., :-1]], dim=-1)  # p_0..p_{N-1}, (..., N)
    # keep_n = 1 − p_n for n = 1..N-1, then 1 for the empty product at n = N
    keep = torch.cat([1 - p[..., :-1], one], dim=-1)  # (..., N)
    # tail_n = ∏_{j=n..N-1} (1 − p_j): a cumulative product read from the end
    tail = torch.flip(torch.cumprod(torch.flip(keep, [-1]), dim=-1), [-1])  # (..., N)
    # w_n = p_{n-1} · ∏_{j=n..N-1} (1 − p_j)
    return p_prev * tail


# ----------------------------------------------------------------------------------------
# Training loss (docs/dact.md §2)
# ----------------------------------------------------------------------------------------


def ponder_cost(p: torch.Tensor) -> torch.Tensor:
    """Σ_{n=1..N} p_n, for p (B, N) holding p_1..p_N (not p_0 = 1). Returns (B,)."""
    return p.sum(dim=-1)


def answer_nll(q: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """−log max(q[label], A_MIN) of probability vectors q (B, K) or (B, N, K), labels (B,):
    (B,) or (B, N). Below A_MIN the term is constant and passes no gradient (torch.clamp)."""
    q = _at_least_float32(q)
    index = labels.view(-1, *(1,) * (q.dim() - 1)).expand(*q.shape[:-1], 1)  # (B, 1) or (B, N, 1)
    return -torch.log(torch.clamp(q.gather(-1, index).squeeze(-1), min=A_MIN))


def dact_loss(a_N: torch.Tensor, labels: torch.Tensor, p: torch.Tensor, tau: float) -> torch.Tensor:
    """L = −log a_N[label] + τ · Σ_n p_n, averaged over the batch.

    a_N (B, K) the mixture after all N steps, labels (B,) int64, p (B, N) holding p_1..p_N,
    tau the ponder penalty τ. a_N[label] is clamped at A_MIN = 1e-8: where it is smaller the
    task term is constant (−log 1e-8 ≈ 18.42) and, as with torch.clamp, passes no gradient.
    The task term is the NLL of the mixture, not a sum of per-step losses nor a loss on
    logits. Half-precision inputs are computed in float32 and the loss is float32. (In
    float16 the gradient −1 / (B · a_N[label]) that flows back into the recursion
    overflows float16's largest number, 65504, once a_N[label] < ~1e-5: run the recursion in
    float32 or bfloat16 to train.)"""
    # task term: −log(max(a_N[label], 1e-8))
    task = answer_nll(a_N, labels)  # (B,)
    p = _at_least_float32(p)
    # ponder term: τ · Σ_n p_n
    ponder = tau * ponder_cost(p)  # (B,)
    return (task + ponder).mean()


def deep_supervision_loss(y: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(1/N) Σ_n −log y_n[label], averaged over the batch: each block's own answer y_n (B, N, K)
    against the label, clamped like the task term (our option, `--deep-supervision λ` adds
    λ times it to `dact_loss`). The mixture's NLL alone gives block n's answer a gradient only
    in proportion to its weight w_n, near 0 for early blocks when h starts near 1: this term
    keeps every answer learning, as phase 1's cross-entropy did."""
    return answer_nll(y, labels).mean()


# ----------------------------------------------------------------------------------------
# Inference: halting exactly (docs/dact.md §3)
# ----------------------------------------------------------------------------------------


def halting_bounds(a_n: torch.Tensor, p_n: torch.Tensor, remaining: int, rule: str = "paper"):
    """Both sides of the halting test after step n, and its verdict: the one place they are
    computed (`can_halt`, `classify --explain` and `tinydact.load(...)(explain=True)` read it).

    a_n (B, K), p_n (B,), remaining = d = N − n (an int ≥ 0). Let c* be the top class of a_n
    and c' the runner-up. Whatever the d remaining steps output,
      a_N[c*] ≥ a_n[c*] · (1 − p_n)^d                                          `lower`, and
      a_N[c]  ≤ a_n[c'] + p_n · d                  for c ≠ c* (rule="paper")   `upper`, or
      a_N[c]  ≤ 1 − (1 − a_n[c']) · (1 − p_n)^d    (rule="tight", never larger),
    proofs in docs/dact.md §3. Returns (lower (B,), upper (B,), passes (B,) bool) where
    `passes` is lower > upper: the top class can no longer be overtaken. Needs K ≥ 2."""
    check_rule(rule)  # one of options.RULES
    a_n, p_n = _at_least_float32(a_n), _at_least_float32(p_n)
    d = remaining
    top2 = torch.topk(a_n, 2, dim=-1).values  # (B, 2), sorted: a_n[c*], a_n[c']
    a_top, a_second = top2[:, 0], top2[:, 1]  # (B,), (B,)
    # (1 − p_n)^d: how much of a_n survives the d remaining steps at least
    shrink = (1 - p_n) ** d  # (B,)
    # a_n[c*] · (1 − p_n)^d
    lower = a_top * shrink
    if rule == "paper":
        # a_n[c'] + p_n · d
        upper = a_second + p_n * d
        return lower, upper, lower > upper
    # 1 − (1 − a_n[c']) · (1 − p_n)^d
    upper = 1 - (1 - a_second) * shrink
    # The verdict lower > upper is computed with (1 − a_n[c']) · (1 − p_n)^d moved left:
    #     (a_n[c*] − a_n[c']) · (1 − p_n)^d > 1 − (1 − p_n)^d
    # (the same inequality; this form keeps an exact tie at 0 > something ≥ 0, whereas
    # rounding in 1 − (1 − a_n[c']) could make a tie look separated when p_n = 0)
    return lower, upper, (a_top - a_second) * shrink > 1 - shrink


def can_halt(a_n: torch.Tensor, p_n: torch.Tensor, remaining: int, rule: str = "paper") -> torch.Tensor:
    """May each example stop after step n? a_n (B, K), p_n (B,), remaining = d = N − n (an
    int ≥ 0, the same for the whole batch). Returns (B,) bool.

    Stop when the lowest the top class can fall to is strictly above the highest any other
    class can rise to (`halting_bounds`): then argmax a_n = argmax a_N. An exact tie
    (a_n[c*] = a_n[c']) never stops before the last step. When d = 0 every example stops.
    With K = 1 there is nothing to decide: every example may stop (all True)."""
    check_rule(rule)
    B, K = a_n.shape
    if remaining == 0 or K == 1:
        return torch.ones(B, dtype=torch.bool, device=a_n.device)
    return halting_bounds(a_n, p_n, remaining, rule)[2]


# ----------------------------------------------------------------------------------------
# The DACT module after each block (docs/dact.md §4)
# ----------------------------------------------------------------------------------------


class DACTHead(nn.Module):
    """Reads x_n, block n's state (B, H): its [CLS] state, or the mean of its token states
    (options.HEAD_INPUTS), and emits (y_n (B, K), h_n (B,)):

        z   = ReLU(W1 · dropout(x_n) + b1)     (B, H)   `dense`
        y_n = softmax(W_y · z + b_y)           (B, K)   `answer`
        h_n = sigmoid(w_h · z + b_h)           (B,)     `halt`, b_h = halt_bias

    With `norm` (our option, "cls-norm"), x_n first goes through a LayerNorm of its own.
    Weights keep PyTorch's default init; only the halting bias is set (see HALT_BIAS)."""

    def __init__(self, hidden_size: int, num_labels: int, hidden_dropout: float = 0.1, halt_bias: float = HALT_BIAS,
                 norm: bool = False):
        super().__init__()
        if norm:
            self.norm = nn.LayerNorm(hidden_size)  # (B, H): the [CLS] states of a block differ little between sentences
        self.dropout = nn.Dropout(hidden_dropout)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.answer = nn.Linear(hidden_size, num_labels)
        self.halt = nn.Linear(hidden_size, 1)
        nn.init.constant_(self.halt.bias, halt_bias)  # h_n ≈ sigmoid(halt_bias) at the start

    def _z(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "norm"):
            x = self.norm(x)
        # z = ReLU(W1 · x_n + b1), with BERT's hidden dropout on x_n
        return torch.relu(self.dense(self.dropout(x)))  # (B, H)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """W_y · z + b_y before the softmax, (B, K): for a per-block cross-entropy."""
        return self.answer(self._z(x))  # (B, K)

    def forward(self, x: torch.Tensor):
        z = self._z(x)  # (B, H)
        # y_n = softmax(W_y · z + b_y)
        y_n = torch.softmax(self.answer(z), dim=-1)  # (B, K)
        # h_n = sigmoid(w_h · z + b_h)
        h_n = torch.sigmoid(self.halt(z)).squeeze(-1)  # (B, 1) -> (B,)
        return y_n, h_n
