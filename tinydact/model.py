"""DACT-BERT: a BERT backbone with one DACT head after every block (docs/dact.md §4), and
per-example early exit with batch compaction (§5).

Training (`forward`): all N blocks run for every example, a plain loop (`head_inputs`); the
answers y_n and halting values h_n of every block are mixed by the DACT recursion into a_N,
smoothly, so every h_n gets a gradient. Inference (`predict`): after block n an example stops
as soon as `can_halt` proves the remaining blocks cannot change its prediction; its later
blocks are never run, and in a batch its row is removed before the next block
(`run_with_early_exit`). Checkpoints are read and written by checkpoint.py.
"""


import torch
from torch import nn

from .bert import Bert
from .dact import HALT_BIAS, DACTHead, can_halt, dact_forward, dact_update, halting_bounds
from .options import check_head_input


class DACTBert(nn.Module):
    """BERT (`bert`) plus one `DACTHead` per block (`heads`), for K = `num_labels` classes;
    `head_input` (one of options.HEAD_INPUTS) is what the heads read after each block. With
    `shared_classifier` (as in the authors' DACT code) every head's `answer` is one module, the
    first head's: W_y, b_y are shared, z and the halting unit stay per block."""

    def __init__(self, bert: Bert, num_labels: int, halt_bias: float = HALT_BIAS, head_input: str = "cls",
                 shared_classifier: bool = False):
        super().__init__()
        cfg = bert.config
        self.bert, self.head_input = bert, check_head_input(head_input)
        self.heads = nn.ModuleList(
            DACTHead(cfg.hidden_size, num_labels, cfg.hidden_dropout_prob, halt_bias, norm=head_input == "cls-norm")
            for _ in range(cfg.num_hidden_layers)
        )
        self.shared_classifier = shared_classifier
        for head in self.heads[1:] if shared_classifier else ():
            head.answer = self.heads[0].answer  # one module: its gradient sums every block's
        self.num_labels = num_labels

    @property
    def num_blocks(self) -> int:
        return len(self.bert.blocks)

    def read(self, x, mask):
        """x_n, what the DACT heads read of a block's output x (b, T, H), mask (b, T) or None:
        the [CLS] state x[:, 0], or the mean of the token states (`head_input`), (b, H)."""
        if self.head_input != "mean":
            return x[:, 0]
        if mask is None:
            return x.mean(1)
        m = mask.unsqueeze(-1).to(x.dtype)  # (b, T, 1)
        return (x * m).sum(1) / m.sum(1)

    def head_inputs(self, input_ids, attention_mask=None, token_type_ids=None):
        """x_1..x_N, what each block's DACT head reads (see `read`), (B, N, H): every block runs."""
        x = self.bert.embed(input_ids, token_type_ids)  # (B, T, H)
        keys = self.bert.mask(attention_mask, x.size(1))  # once for all blocks (`Bert.mask`)
        xs = []
        for block in self.bert.blocks:
            x = block(x, keys)  # (B, T, H)
            xs.append(self.read(x, attention_mask).float())  # x_n (B, H); the heads run in float32
        return torch.stack(xs, 1)  # (B, N, H)

    def forward_heads(self, xs):
        """The DACT heads and the recursion over the head inputs xs (B, N, H), every block:
        returns (a (B, N, K), p (B, N), y (B, N, K), h (B, N)) holding a_n, p_n, y_n, h_n for
        n = 1..N; the model's answer a_N is a[:, -1]. Used directly when the backbone is
        frozen and its head inputs are cached."""
        ys, hs = zip(*(head(xs[:, n]) for n, head in enumerate(self.heads)))  # N × ((B, K), (B,))
        y, h = torch.stack(ys, 1).float(), torch.stack(hs, 1).float()  # (B, N, K), (B, N); float32 under autocast too
        a, p = dact_forward(y, h)  # (B, N, K), (B, N)
        return a, p, y, h

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """Training forward, all N blocks: `forward_heads` of `head_inputs`."""
        return self.forward_heads(self.head_inputs(input_ids, attention_mask, token_type_ids))

    @torch.no_grad()
    def predict(self, input_ids, attention_mask=None, token_type_ids=None, halt: bool = True, rule: str = "paper", trace=None):
        """Labels (B,), probabilities a_n at the exit (B, K), blocks executed (B,).

        With `halt`, each example stops after the first block n where
        `can_halt(a_n, p_n, N - n, rule)` holds; the prediction equals the full-depth one.
        `trace`, when a list, receives B lists (input order), one dict per block the example
        ran: n, d = N − n, y_n, h_n, p_n, a_n, both sides of the halting test
        (`halting_bounds`), whether it passes, and whether the example stopped there."""
        B, N = input_ids.size(0), self.num_blocks

        def step(n, x_n, state):  # x_n (b, H): what block n's head reads, for the live rows
            a_prev, p_prev, rows = state  # rows: input index of each live row
            y_n, h_n = self.heads[n - 1](x_n)  # (b, K), (b,)
            a_n, p_n = dact_update(a_prev, p_prev, y_n, h_n)  # (b, K), (b,)
            done = can_halt(a_n, p_n, N - n, rule) if halt else torch.full_like(p_n, n == N, dtype=torch.bool)
            if trace is not None:
                record(trace, n, N - n, rows, y_n, h_n, p_n, a_n, halting_bounds(a_n, p_n, N - n, rule), done)
            return (a_n, p_n, rows), a_n, done

        if trace is not None:
            trace[:] = [[] for _ in range(B)]
        ref = self.heads[0].answer.weight
        rows = torch.arange(B, device=input_ids.device)
        state = (ref.new_zeros(B, self.num_labels), ref.new_ones(B), rows)  # a_0 = 0, p_0 = 1
        probs, blocks = run_with_early_exit(self.bert, input_ids, attention_mask, token_type_ids, step, state, self.read)
        return probs.argmax(-1), probs, blocks


def record(trace, n, d, rows, y_n, h_n, p_n, a_n, bounds, done):
    """Append block n's values to each live example's list in `trace` (see `predict`)."""
    lower, upper, passes = bounds
    for j, i in enumerate(rows.tolist()):
        trace[i].append(dict(n=n, d=d, y_n=y_n[j].tolist(), h_n=h_n[j].item(), p_n=p_n[j].item(), a_n=a_n[j].tolist(),
                             top_lower_bound=lower[j].item(), runner_up_upper_bound=upper[j].item(),
                             passes_test=bool(passes[j]), stop=bool(done[j]) or d == 0))


def run_with_early_exit(bert: Bert, input_ids, attention_mask, token_type_ids, step, state, read=lambda x, mask: x[:, 0]):
    """The early-exit loop over blocks, for inference: `DACTBert.predict` and the baselines'
    exit rules (`baselines.predict_exit`). Training runs every block (`DACTBert.head_inputs`).

    After block n call `step(n, x_n, state) -> (state, out, done)` on the live rows, with
    x_n = read(x, mask) what the heads read (by default the [CLS] state), (b, H); state a
    tuple of (b, ...) tensors; `out` may be None when no row is done. Rows whose `done` is
    True are finished: their `out` is kept, and they are dropped from the hidden states, the
    mask and the state before the next block (batch compaction). After the last block every
    row is finished. Returns (out (B, ...), blocks executed (B,)) in input order."""
    B, N = input_ids.size(0), len(bert.blocks)
    x = bert.embed(input_ids, token_type_ids)  # (B, T, H)
    mask = attention_mask  # (B, T) or None
    keys = bert.mask(mask, x.size(1))  # (`Bert.mask`) made again only when rows are dropped
    rows = torch.arange(B, device=input_ids.device)  # input row of each live row
    out, blocks = None, torch.full((B,), N, device=input_ids.device)
    for n, block in enumerate(bert.blocks, start=1):
        x = block(x, keys)  # (b, T, H), b = live rows
        # the steps (DACT heads, recursion, halting test) run in float32 whatever the backbone's dtype
        state, probs, done = step(n, read(x, mask).float(), state)
        if n == N:
            done = torch.ones_like(done)
        if not done.any():
            continue
        if out is None:
            out = probs.new_zeros(B, *probs.shape[1:])
        out[rows[done]] = probs[done]
        blocks[rows[done]] = n
        keep = ~done
        if not keep.any():
            break
        x, rows, state = x[keep], rows[keep], tuple(s[keep] for s in state)  # (b', T, H)
        if mask is not None:
            mask = mask[keep]  # (b', T)
            T = int(mask.sum(1).max())  # right padding: drop columns no live row uses
            x, mask = x[:, :T], mask[:, :T]
            keys = bert.mask(mask, T)
    return out, blocks
