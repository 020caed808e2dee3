"""DACT-BERT: a BERT backbone with one DACT module after every block (docs/dact.md §4),
per-example early exit with batch compaction (§5), and checkpoints.

Training (`forward`): all N blocks run for every example; the answers y_n and halting values
h_n of every block are mixed by the DACT recursion into a_N, smoothly, so every h_n gets a
gradient. Inference (`predict`): after block n an example stops as soon as `can_halt` proves
the remaining blocks cannot change its prediction; its later blocks are never run, and in a
batch its row is removed before the next block.
"""

import json
from pathlib import Path

import torch
from torch import nn

from .bert import Bert, BertConfig, bert_state_for_hf, copy_exactly, key_mask, load_bert_weights, read_checkpoint, read_config
from .dact import HALT_BIAS, HEAD_INPUTS, DACTHead, can_halt, dact_forward, dact_update, halting_bounds
from .errors import TinydactError
from .home import model_dir
from .runfolder import replace_folder

HEAD_PREFIX = "dact_heads."  # checkpoint keys of the DACT modules; the backbone keeps HF names


class DACTBert(nn.Module):
    """BERT (`bert`) plus one `DACTHead` per block (`heads`), for K = `num_labels` classes;
    `head_input` (one of `HEAD_INPUTS`) is what the modules read after each block."""

    def __init__(self, bert: Bert, num_labels: int, halt_bias: float = HALT_BIAS, head_input: str = "cls"):
        super().__init__()
        if head_input not in HEAD_INPUTS:
            raise TinydactError(f"unknown head input {head_input!r}, expected one of {', '.join(HEAD_INPUTS)}")
        cfg = bert.config
        self.bert, self.head_input = bert, head_input
        self.heads = nn.ModuleList(
            DACTHead(cfg.hidden_size, num_labels, cfg.hidden_dropout_prob, halt_bias, norm=head_input == "cls-norm")
            for _ in range(cfg.num_hidden_layers)
        )
        self.num_labels = num_labels

    @property
    def num_blocks(self) -> int:
        return len(self.bert.blocks)

    def read(self, x, mask):
        """What the DACT modules read of a block's output x (b, T, H), mask (b, T) or None:
        the [CLS] state x[:, 0], or the mean of the token states (`head_input`), (b, H)."""
        if self.head_input != "mean":
            return x[:, 0]
        if mask is None:
            return x.mean(1)
        m = mask.unsqueeze(-1).to(x.dtype)  # (b, T, 1)
        return (x * m).sum(1) / m.sum(1)

    def cls_states(self, input_ids, attention_mask=None, token_type_ids=None):
        """What the DACT modules read after every block, (B, N, H): the [CLS] state (or the
        token mean, see `read`). Runs the early-exit loop with a rule that never stops early."""

        def collect(n, cls, states):  # states: the [CLS] states of blocks 1..n-1, each (B, H)
            states = states + (cls,)
            done = torch.zeros(cls.size(0), dtype=torch.bool, device=cls.device)  # the loop ends every row at N
            return states, torch.stack(states, 1) if n == self.num_blocks else None, done

        return run_with_early_exit(self.bert, input_ids, attention_mask, token_type_ids, collect, (), self.read)[0]

    def forward_heads(self, cls):
        """The DACT modules and the recursion over [CLS] states cls (B, N, H), every block:
        returns (a (B, N, K), p (B, N), y (B, N, K), h (B, N)) holding a_n, p_n, y_n, h_n for
        n = 1..N; the model's answer a_N is a[:, -1]. Used directly when the backbone is
        frozen and its states are cached."""
        ys, hs = zip(*(head(cls[:, n]) for n, head in enumerate(self.heads)))  # N × ((B, K), (B,))
        y, h = torch.stack(ys, 1).float(), torch.stack(hs, 1).float()  # (B, N, K), (B, N); float32 under autocast too
        a, p = dact_forward(y, h)  # (B, N, K), (B, N)
        return a, p, y, h

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """Training forward, all N blocks: `forward_heads` of `cls_states`."""
        return self.forward_heads(self.cls_states(input_ids, attention_mask, token_type_ids))

    @torch.no_grad()
    def predict(self, input_ids, attention_mask=None, token_type_ids=None, halt: bool = True, rule: str = "paper", trace=None):
        """Labels (B,), probabilities a_n at the exit (B, K), blocks executed (B,).

        With `halt`, each example stops after the first block n where
        `can_halt(a_n, p_n, N - n, rule)` holds; the prediction equals the full-depth one.
        `trace`, when a list, receives B lists (input order), one dict per block the example
        ran: n, d = N − n, y_n, h_n, p_n, a_n, both sides of the halting test
        (`halting_bounds`), whether it passes, and whether the example stopped there."""
        B, N = input_ids.size(0), self.num_blocks

        def step(n, cls, state):
            a_prev, p_prev, rows = state  # rows: input index of each live row
            y_n, h_n = self.heads[n - 1](cls)  # (b, K), (b,)
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
    """The one loop over blocks (training runs it too, with a rule that never stops early).

    After block n call `step(n, read(x, mask), state) -> (state, out, done)` on the live rows
    (`read` gives what the heads read, by default the [CLS] state, (b, H); state a tuple of
    (b, ...) tensors; `out` may be None when no row is done). Rows
    whose `done` is True are finished: their `out` is kept, and they are dropped from the
    hidden states, the mask and the state before the next block (batch compaction). After
    the last block every row is finished. Returns (out (B, ...), blocks executed (B,)) in
    input order."""
    B, N = input_ids.size(0), len(bert.blocks)
    x = bert.embed(input_ids, token_type_ids)  # (B, T, H)
    mask = attention_mask  # (B, T) or None
    keys = key_mask(mask)  # (B, 1, 1, T) or None: made again only when rows are dropped
    rows = torch.arange(B, device=input_ids.device)  # input row of each live row
    out, blocks = None, torch.full((B,), N, device=input_ids.device)
    for n, block in enumerate(bert.blocks, start=1):
        x = block(x, keys)  # (b, T, H), b = live rows
        # the steps (DACT modules, recursion, halting test) run in float32 whatever the backbone's dtype
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
            keys = key_mask(mask)
    return out, blocks


# ----------------------------------------------------------------------------------------
# Cost accounting
# ----------------------------------------------------------------------------------------


def estimate_flops(cfg: BertConfig, seq_len: int, blocks: int, num_labels: int) -> int:
    """Floating-point operations (a multiply-add = 2) for one example of `seq_len` tokens
    that runs `blocks` blocks and their DACT modules. Embedding look-ups are free; the
    embedding LayerNorm and the softmaxes are small and counted roughly."""
    T, H, I, K = seq_len, cfg.hidden_size, cfg.intermediate_size, num_labels
    embed = 8 * T * H  # three-way sum + LayerNorm
    block = (
        2 * T * H * 3 * H  # Q, K, V projections
        + 2 * T * T * H * 2  # Q Kᵀ and att · V, all heads together
        + 5 * T * T * cfg.num_attention_heads  # softmax
        + 2 * T * H * H  # output projection
        + 2 * T * H * I * 2  # MLP, two matrices
        + 8 * T * I  # GELU
        + 16 * T * H  # two residual sums + two LayerNorms
    )
    head = 2 * (H * H + H * K + H) + 8 * K  # dense, answer, halt; recursion + halting test
    return embed + blocks * (block + head)


# ----------------------------------------------------------------------------------------
# Checkpoints: config.json + model.safetensors + vocab.txt (+ tokenizer_config.json)
# ----------------------------------------------------------------------------------------


def save_checkpoint(model: DACTBert, tokenizer, path, labels, task: str, dtype=torch.float32, extra: dict | None = None):
    """Save a model directory. Backbone tensors keep Hugging Face `BertModel` names (so the
    backbone also loads in `transformers`); the DACT modules live under `dact_heads.`."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = dict(bert_state_for_hf(model.bert))
    tensors.update({HEAD_PREFIX + k: v for k, v in model.heads.state_dict().items()})
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in tensors.items()}
    config = model.bert.config.to_dict()
    config["dact"] = {"num_labels": model.num_labels, "labels": list(labels), "task": task, **(extra or {})}
    if model.head_input != "cls":  # checkpoints without the key read the [CLS] state
        config["dact"]["head_input"] = model.head_input

    def write(folder: Path):
        folder.mkdir(parents=True)
        tokenizer.save(folder)
        save_file(tensors, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    replace_folder(path, write)


def read_dact_config(path) -> dict:
    """The `dact` section of a checkpoint's config.json ({} for a plain BERT directory)."""
    return read_config(path).get("dact", {})


def load_checkpoint(path, attention: str = "sdpa"):
    """Load a DACT-BERT directory written by `save_checkpoint`. Returns (model, meta) with meta
    the config's `dact` section. Every tensor is accounted for, as in the encoder loader."""
    path = model_dir(path)
    config = read_config(path)
    meta = config.get("dact", {})
    if not meta:
        raise TinydactError(f"{path} is a plain BERT checkpoint, not a DACT-BERT one (no 'dact' section in config.json)")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if (not isinstance(labels, list) or len(labels) != meta.get("num_labels") or len(labels) < 2
            or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels)):
        raise TinydactError(f"{path / 'config.json'}: the 'dact' section needs num_labels >= 2 and as many distinct label names")
    if not isinstance(meta.get("task"), (str, type(None))):
        raise TinydactError(f"{path / 'config.json'}: the 'dact' section's task must be a string")
    if meta.get("head_input", "cls") not in HEAD_INPUTS:
        raise TinydactError(f"{path / 'config.json'}: unknown head_input {meta['head_input']!r}, expected one of {', '.join(HEAD_INPUTS)}")
    model = DACTBert(Bert(BertConfig.from_dict(config), attention), len(labels), head_input=meta.get("head_input", "cls"))
    tensors = read_checkpoint(path)
    source = str(path / "model.safetensors")
    broken = next((k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if broken is not None:
        raise TinydactError(f"{source}: tensor {broken!r} holds values that are not finite numbers (a diverged training?)")
    heads = {k[len(HEAD_PREFIX) :]: v for k, v in tensors.items() if k.startswith(HEAD_PREFIX)}
    load_bert_weights(model.bert, {k: v for k, v in tensors.items() if not k.startswith(HEAD_PREFIX)}, source)
    copy_exactly(model.heads, heads, source, shown=lambda name: HEAD_PREFIX + name)
    return model.eval(), meta


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def backbone_dtype(name: str, device: torch.device) -> torch.dtype:
    """The dtype the backbone computes in at inference: float32, bfloat16 (fast where the CPU
    has AVX512-BF16 or AMX, and on GPUs), or float16 (CUDA only)."""
    if name not in DTYPES:
        raise TinydactError(f"unknown dtype {name!r}: expected one of {', '.join(DTYPES)}")
    if name == "float16" and device.type != "cuda":
        raise TinydactError("float16 runs on CUDA only; on a CPU use bfloat16 (or float32)")
    return DTYPES[name]


def new_from_bert(path, num_labels: int, halt_bias: float = HALT_BIAS, attention: str = "sdpa", head_input: str = "cls") -> DACTBert:
    """A DACT-BERT whose backbone is a pretrained BERT directory and whose heads are new."""
    return DACTBert(Bert.from_pretrained(path, attention), num_labels, halt_bias, head_input)
