"""BERT (and MPNet, BERT plus a relative-position bias), the whole encoder, from scratch, in one file.

References
- Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers", 2018 (arXiv 1810.04805).
- google-research/bert `modeling.py` (the original), Hugging Face `BertModel` (the checkpoint
  layout we load, and the reference the tests compare against to 1e-5).
- Song et al., "MPNet: Masked and Permuted Pre-training for Language Understanding", 2020
  (arXiv 2004.09297); Hugging Face `MPNetModel` (its layout, and the reference of tests/test_mpnet.py).

Dimension legend (used in the shape comments beside every line that changes a shape)
    B   batch size                      T   sequence length (tokens, padded to the longest)
    H   hidden size (768 in BERT-base)  nh  number of attention heads (12)
    hs  head size = H / nh (64)         I   intermediate (MLP) size = 4H (3072)
    V   vocabulary size (30,522)        N   number of blocks (12)

Three details break parity with the official weights when missed, and are marked below:
1. BERT is *post*-LayerNorm: x = LN(x + attn(x)), then x = LN(x + mlp(x)).
2. GELU is the exact erf form, not the tanh approximation.
3. LayerNorm eps is 1e-12, not PyTorch's default 1e-5.

MPNet (config `model_type: "mpnet"`, e.g. sentence-transformers/all-mpnet-base-v2) is the same
post-LN encoder with three differences, each a few lines below, marked [MPNet]:
- a learned relative-position bias b[bucket(j - i), head] added to every block's attention
  logits Q Kᵀ / √hs, one table of 32 buckets x nh shared by all blocks (`relative_position_bucket`,
  `Bert.mask`: computed once per forward and handed to the blocks as an additive mask);
- RoBERTa-style positions: real tokens count from pad_token_id + 1, padding sits at
  pad_token_id (so 514 position embeddings hold 512 tokens);
- no token types (`type_vocab_size` 0). Its LayerNorm eps (1e-5) and pad id (1) come from its config.

Model code never picks a device or dtype and never downloads: tensors follow their inputs.
"""

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import TinydactError


# ----------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------


@dataclass
class BertConfig:
    """Hyper-parameters; the defaults are bert-base-uncased's."""

    vocab_size: int = 30522
    hidden_size: int = 768  # H
    num_hidden_layers: int = 12  # N, the blocks DACT attaches a module after
    num_attention_heads: int = 12  # nh
    intermediate_size: int = 3072  # I, the MLP's inner width (4H)
    max_position_embeddings: int = 512  # longest input, [CLS] and [SEP] included
    type_vocab_size: int = 2  # token types: 0 = first sentence, 1 = second
    layer_norm_eps: float = 1e-12  # (3) not PyTorch's 1e-5
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0
    model_type: str = "bert"  # or "mpnet" (see the module docstring)

    @classmethod
    def from_dict(cls, d: dict) -> "BertConfig":
        """Build from a Hugging Face style dict; keys this encoder does not use are ignored,
        but a variant it does not implement is rejected rather than silently run wrong."""
        act = d.get("hidden_act", "gelu")
        if act != "gelu":  # HF's "gelu" is the exact erf form; "gelu_new" etc. are not
            raise TinydactError(f"unsupported hidden_act {act!r}: tinydact implements BERT's exact 'gelu'")
        pos = d.get("position_embedding_type", "absolute")
        if pos != "absolute":
            raise TinydactError(f"unsupported position_embedding_type {pos!r}: only 'absolute' is implemented")
        model_type = d.get("model_type", "bert")
        if model_type not in MODEL_TYPES:
            raise TinydactError(f"unsupported model_type {model_type!r}: tinydact implements {' and '.join(MODEL_TYPES)}")
        if model_type == "mpnet":  # `transformers`' MPNetConfig defaults; MPNet has no token types
            d = {"pad_token_id": 1, "max_position_embeddings": 514, **d, "type_vocab_size": 0}
            if d.get("relative_attention_num_buckets", BUCKETS) != BUCKETS:  # `transformers` buckets by 32 whatever it says
                raise TinydactError(f"relative_attention_num_buckets must be {BUCKETS} in an MPNet config, got {d['relative_attention_num_buckets']!r}")
        known = {f.name: f.type for f in fields(cls) if f.type is not str}
        for k, kind in known.items():  # a string "384" or a bool would crash deep inside, or run wrong
            if k not in d:
                continue
            v = d[k]
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
            if not ok or (kind is int and v != int(v)):
                raise TinydactError(f"config field {k!r} must be a non-negative {'number' if kind is float else 'integer'}, got {v!r}")
        cfg = cls(model_type=model_type, **{k: (v if known[k] is float else int(v)) for k, v in d.items() if k in known})
        if min(cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size,
               cfg.max_position_embeddings, cfg.type_vocab_size if model_type == "bert" else 1) < 1:
            raise TinydactError("config sizes (vocab_size, hidden_size, num_hidden_layers, ...) must be at least 1")
        if cfg.hidden_size % cfg.num_attention_heads:
            raise TinydactError(
                f"hidden_size {cfg.hidden_size} is not divisible by num_attention_heads {cfg.num_attention_heads}"
            )
        return cfg

    def to_dict(self) -> dict:
        """The Hugging Face keys, so a saved config.json also loads in `transformers`."""
        d = {"model_type": self.model_type, "hidden_act": "gelu", "position_embedding_type": "absolute", **asdict(self)}
        if self.model_type == "mpnet":  # no token types; the bias table's size
            del d["type_vocab_size"]
            d["relative_attention_num_buckets"] = BUCKETS
        return d


MODEL_TYPES = ("bert", "mpnet")  # config.json's model_type; MPNet is BERT plus a relative-position bias
BUCKETS = 32  # [MPNet] rows of the relative-position bias table (relative_attention_num_buckets)


def read_config(path) -> dict:
    """The config.json of a model directory (or of a model name, see `home.model_dir`) as a
    dict: the one reader of config files, for the encoder and for DACT-BERT checkpoints."""
    from .home import model_dir

    file = model_dir(path) / "config.json"
    try:
        d = json.loads(file.read_text())
    except FileNotFoundError:
        raise TinydactError(f"config file not found: {file}") from None
    except OSError as e:  # a directory, no permission, ...
        raise TinydactError(f"cannot read config file {file} ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TinydactError(f"config file is not valid JSON: {file} ({e})") from None
    if not isinstance(d, dict):
        raise TinydactError(f"config file does not hold a JSON object: {file}")
    return d


# ----------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Multi-head self-attention: softmax(Q Kᵀ / √hs + mask) · V, then an output projection.

    Two paths compute the same thing: `plain` writes the softmax out (and so can return
    the attention map), `sdpa` calls F.scaled_dot_product_attention (fused, faster)."""

    def __init__(self, cfg: BertConfig, attention: str = "sdpa"):
        super().__init__()
        if attention not in ("sdpa", "plain"):
            raise ValueError(f"attention must be 'sdpa' or 'plain', not {attention!r}")
        self.attention = attention
        self.n_head = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout_p = cfg.attention_probs_dropout_prob

    def split_heads(self, x, linear):
        """linear(x) (B, T, H) cut into nh attention heads of size hs."""
        B, T, H = x.shape
        return linear(x).view(B, T, self.n_head, H // self.n_head).transpose(1, 2)  # (B, nh, T, hs)

    def attention_map(self, x, mask=None):
        """The attention probabilities softmax(Q Kᵀ / √hs + mask), (B, nh, T, T)."""
        q, k = self.split_heads(x, self.query), self.split_heads(x, self.key)  # (B, nh, T, hs) each
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, nh, T, T)
        if mask is not None and mask.dtype == torch.bool:  # padded keys get probability exactly 0
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        elif mask is not None:  # [MPNet] the position bias, padded keys already at the float minimum
            scores = scores + mask
        return scores.softmax(dim=-1)

    def forward(self, x, mask=None):
        # x (B, T, H); mask None, bool (B, 1, 1, T) True where a key is a real token (`key_mask`),
        # or float (B or 1, nh, T, T) added to the logits ([MPNet] `Bert.mask`); sdpa takes either
        B, T, H = x.shape
        v = self.split_heads(x, self.value)  # (B, nh, T, hs)
        if self.attention == "plain":
            att = F.dropout(self.attention_map(x, mask), self.dropout_p, self.training)  # (B, nh, T, T)
            y = att @ v  # (B, nh, T, hs)
        else:
            q, k = self.split_heads(x, self.query), self.split_heads(x, self.key)  # (B, nh, T, hs) each
            p = self.dropout_p if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, H)  # (B, T, H): the attention heads side by side again
        return self.out(y)


class MLP(nn.Module):
    """Position-wise feed-forward: H -> I -> H with GELU between."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x):
        h = self.fc(x)  # (B, T, I)
        # (2) exact GELU, x·Φ(x) with the erf-based Φ (F.gelu's default, approximate="none"),
        # not the tanh approximation
        return self.proj(F.gelu(h))  # (B, T, H)


def key_mask(attention_mask):
    """(B, T) with 1 for tokens and 0 for padding -> bool (B, 1, 1, T), True where a key is a
    real token (broadcast over attention heads and queries). None when nothing is padded:
    attention then skips masking altogether, which is faster (`transformers` does the same)."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)


def relative_position_bucket(T: int, num_buckets: int = 32, max_distance: int = 128, device=None):
    """[MPNet] (as T5) the bucket of the distance from query i to key j, (T, T) int64. Half the
    buckets are for keys before the query, half for keys after it; within a half, distances
    below 8 get a bucket each, longer ones logarithmically wider buckets up to max_distance,
    and every distance beyond shares the last one. (`transformers`' MPNet, op for op.)"""
    i = torch.arange(T, device=device)[:, None]  # (T, 1) query positions
    j = torch.arange(T, device=device)[None, :]  # (1, T) key positions
    n = i - j  # (T, T): > 0 where the key comes before the query
    half = num_buckets // 2  # 16
    exact = half // 2  # 8 distances with a bucket each
    side = (n < 0).long() * half  # keys after the query: the upper half
    n = n.abs()
    far = exact + (torch.log(n.float() / exact) / math.log(max_distance / exact) * (half - exact)).long()
    far = torch.minimum(far, torch.full_like(far, half - 1))
    return side + torch.where(n < exact, n, far)  # (T, T)


class Block(nn.Module):
    """One Transformer block. (1) Post-LayerNorm: the LayerNorm comes *after* each residual sum."""

    def __init__(self, cfg: BertConfig, attention: str = "sdpa"):
        super().__init__()
        self.attn = SelfAttention(cfg, attention)
        self.ln1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)
        self.ln2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x, mask=None):
        # x (B, T, H); mask None or bool (B, 1, 1, T) from `key_mask`, True where a key is a token
        if not torch.is_grad_enabled():  # inference: the same numbers, faster (see below)
            return self.forward_inference(x, mask)
        # (1) post-LayerNorm: the residual sum first, then the LayerNorm
        x = self.ln1(x + self.dropout(self.attn(x, mask)))  # (B, T, H)
        x = self.ln2(x + self.dropout(self.mlp(x)))  # (B, T, H)
        return x

    # -- The inference speed path: nothing here is needed to understand BERT. ----------------
    @torch.no_grad()
    def forward_inference(self, x, mask=None):
        """`forward` without autograd, the very same numbers bit for bit (tests/test_bert_parity.py),
        faster: each op writes into the fresh tensor the op before it returned instead of
        allocating another (a graph for gradients would need the originals). This is what keeps
        the encoder below `transformers`' time at 32 x 64 tokens (benchmarks/encoder_speed.py).
        `forward` takes this path whenever autograd is off (forward hooks on the block still run)."""
        y = self.dropout(self.attn(x, mask))  # (B, T, H), a fresh tensor
        x = self.ln1(y.add_(x))  # x + y, summed into y
        h = self.mlp.fc(x)  # (B, T, I), the block's widest tensor
        y = self.dropout(self.mlp.proj(torch.ops.aten.gelu_(h)))  # exact GELU, overwriting h; (B, T, H)
        return self.ln2(y.add_(x))  # (B, T, H)


class Embeddings(nn.Module):
    """Token + position + token-type embeddings, summed, then LayerNorm and dropout."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size) if cfg.type_vocab_size else None
        self.ln = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.first_position = cfg.pad_token_id + 1 if cfg.model_type == "mpnet" else 0  # [MPNet] pad + 1

    def forward(self, input_ids, token_type_ids=None):
        B, T = input_ids.shape
        if T > self.position.num_embeddings - self.first_position:
            raise TinydactError(f"input has {T} tokens; this model takes at most {self.position.num_embeddings - self.first_position}")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if self.first_position:  # [MPNet] RoBERTa positions: tokens count from pad + 1, padding gets pad
            real = input_ids.ne(self.word.padding_idx).long()  # (B, T)
            positions = real.cumsum(1) * real + self.word.padding_idx  # (B, T)
        else:
            positions = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.word(input_ids) + self.position(positions)  # (B, T, H)
        if self.token_type is not None:  # [MPNet] has no token types
            x = x + self.token_type(token_type_ids)  # (B, T, H)
        return self.dropout(self.ln(x))


class Bert(nn.Module):
    """The encoder: embeddings, N blocks, and the pooler (tanh(W h_[CLS] + b))."""

    def __init__(self, cfg: BertConfig, attention: str = "sdpa"):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.blocks = nn.ModuleList([Block(cfg, attention) for _ in range(cfg.num_hidden_layers)])
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        # [MPNet] b[bucket, head]: one relative-position bias table shared by all blocks
        self.position_bias = nn.Embedding(BUCKETS, cfg.num_attention_heads) if cfg.model_type == "mpnet" else None

    def embed(self, input_ids, token_type_ids=None):
        return self.embeddings(input_ids, token_type_ids)  # (B, T, H)

    def mask(self, attention_mask, T: int):
        """What every block's attention takes as its mask, made once per forward. BERT: the key
        mask (`key_mask`), bool (B, 1, 1, T) or None. [MPNet]: the relative-position bias
        b[bucket(j - i)] as a float (1, nh, T, T), padded keys set to the float minimum (B, nh, T, T)."""
        keys = key_mask(attention_mask)  # (B, 1, 1, T) or None
        if self.position_bias is None:
            return keys
        buckets = relative_position_bucket(T, self.position_bias.num_embeddings, device=self.position_bias.weight.device)
        bias = self.position_bias(buckets).permute(2, 0, 1)[None]  # (T, T, nh) -> (1, nh, T, T)
        return bias if keys is None else bias.masked_fill(~keys, torch.finfo(bias.dtype).min)  # (B, nh, T, T)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        x = self.embed(input_ids, token_type_ids)  # (B, T, H)
        mask = self.mask(attention_mask, x.size(1))  # once for all blocks
        for block in self.blocks:
            x = block(x, mask)  # (B, T, H)
        return x  # (B, T, H): the last hidden state

    def pool(self, hidden):
        return torch.tanh(self.pooler(hidden[:, 0]))  # (B, H): from the [CLS] position

    @classmethod
    def from_pretrained(cls, path, attention: str = "sdpa") -> "Bert":
        """A directory (or a downloaded model's name) with `config.json` and `model.safetensors`
        (Hugging Face layout).
        Returns the model in eval mode, float32, on the CPU."""
        from .home import model_dir

        path = model_dir(path)
        model = cls(BertConfig.from_dict(read_config(path)), attention)
        load_bert_weights(model, read_checkpoint(path), source=str(path))
        return model.eval()


# ----------------------------------------------------------------------------------------
# Loading official weights
# ----------------------------------------------------------------------------------------

# Hugging Face `BertModel` names -> ours. Per block, after "encoder.layer.{i}." / "blocks.{i}.":
BLOCK_NAMES = {
    "attention.self.query": "attn.query",
    "attention.self.key": "attn.key",
    "attention.self.value": "attn.value",
    "attention.output.dense": "attn.out",
    "attention.output.LayerNorm": "ln1",
    "intermediate.dense": "mlp.fc",
    "output.dense": "mlp.proj",
    "output.LayerNorm": "ln2",
}
TOP_NAMES = {
    "embeddings.word_embeddings": "embeddings.word",
    "embeddings.position_embeddings": "embeddings.position",
    "embeddings.token_type_embeddings": "embeddings.token_type",
    "embeddings.LayerNorm": "embeddings.ln",
    "pooler.dense": "pooler",
}
# [MPNet] Hugging Face `MPNetModel` names: its attention is q, k, v, o; no token types; the bias table
MPNET_BLOCK_NAMES = {
    "attention.attn.q": "attn.query",
    "attention.attn.k": "attn.key",
    "attention.attn.v": "attn.value",
    "attention.attn.o": "attn.out",
    "attention.LayerNorm": "ln1",
    **{hf: ours for hf, ours in BLOCK_NAMES.items() if not hf.startswith("attention.")},  # the MLP: as BERT's
}
MPNET_TOP_NAMES = {
    **{hf: ours for hf, ours in TOP_NAMES.items() if hf != "embeddings.token_type_embeddings"},
    "encoder.relative_attention_bias": "position_bias",
}
WEIGHT_ONLY = ("_embeddings", "relative_attention_bias")  # embedding tables: a weight, no bias
# Other official layouts differ from `BertModel`'s (`MPNetModel`'s) only by these (applied before the lookup):
PREFIX = "bert."  # checkpoints saved from a pre-training / task model (Google's bert-base-uncased)
MPNET_PREFIX = "mpnet."  # [MPNet] the same, from MPNetForMaskedLM (microsoft/mpnet-base) and the like
LAYERNORM_RENAMES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}  # TF-era names
IGNORED_PREFIXES = ("cls.", "lm_head.")  # the masked-LM / next-sentence pre-training heads: not part of the encoder
IGNORED_KEYS = ("embeddings.position_ids",)  # a buffer 0..T-1, recomputed in Embeddings.forward


def hf_names(cfg: BertConfig) -> dict:
    """Every Hugging Face `BertModel` (or `MPNetModel`) tensor name mapped to our parameter name."""
    top, block = (TOP_NAMES, BLOCK_NAMES) if cfg.model_type == "bert" else (MPNET_TOP_NAMES, MPNET_BLOCK_NAMES)
    modules = dict(top)
    for i in range(cfg.num_hidden_layers):
        modules.update({f"encoder.layer.{i}.{hf}": f"blocks.{i}.{ours}" for hf, ours in block.items()})
    names = {f"{hf}.weight": f"{ours}.weight" for hf, ours in modules.items()}
    names.update({f"{hf}.bias": f"{ours}.bias" for hf, ours in modules.items() if not hf.endswith(WEIGHT_ONLY)})
    return names


def canonical_name(key: str) -> str:
    """A key of any official layout -> the plain `BertModel` (`MPNetModel`) name."""
    key = key.removeprefix(PREFIX).removeprefix(MPNET_PREFIX)
    for old, new in LAYERNORM_RENAMES.items():
        if key.endswith(old):
            key = key[: -len(old)] + new
    return key


def read_checkpoint(path) -> dict:
    """The tensors of a model directory: `model.safetensors`, or else `pytorch_model.bin`
    read with torch.load(weights_only=True), which refuses to run pickled code."""
    path = Path(path)
    st, pt = path / "model.safetensors", path / "pytorch_model.bin"
    if st.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(st)
        except Exception as e:  # safetensors raises its own error types for a corrupt header
            raise TinydactError(f"not a valid safetensors file: {st} ({e})") from None
    if pt.is_file():
        try:
            tensors = torch.load(pt, map_location="cpu", weights_only=True)
        except Exception as e:  # torch's message runs over many lines: keep its type only
            raise TinydactError(
                f"could not read {pt} with torch.load(weights_only=True) ({type(e).__name__}): "
                "not a PyTorch weights file, or it holds pickled objects other than tensors"
            ) from None
        if not isinstance(tensors, dict):
            raise TinydactError(f"{pt} holds a {type(tensors).__name__}, not a dict of named tensors")
        return tensors
    raise TinydactError(f"no model.safetensors (or pytorch_model.bin) in {path}")


def load_bert_weights(model: Bert, tensors: dict, source: str = "checkpoint") -> None:
    """Copy a checkpoint's tensors into `model`, accounting for every key: a missing key, an
    unexpected key or a wrong shape is an error that names it."""
    names = hf_names(model.config)  # HF name -> our name
    by_ours, shown = {}, {ours: hf for hf, ours in names.items()}  # shown: the name errors use
    for key, tensor in tensors.items():
        hf = canonical_name(key)
        if hf in IGNORED_KEYS or hf.startswith(IGNORED_PREFIXES):
            continue
        if hf not in names:
            hint = "a DACT-BERT checkpoint: load it with tinydact.checkpoint.load_checkpoint" if hf.startswith("dact_heads.") else "not part of a BERT encoder"
            raise TinydactError(f"{source}: unexpected key {key!r} ({hint})")
        ours = names[hf]
        if ours in by_ours:  # e.g. both `bert.pooler.dense.weight` and `pooler.dense.weight`
            raise TinydactError(f"{source}: key {key!r} appears twice (under two official names)")
        by_ours[ours], shown[ours] = tensor, key
    copy_exactly(model, by_ours, source, shown.get)


def copy_exactly(module: nn.Module, tensors: dict, source: str, shown=lambda name: name) -> None:
    """Copy `tensors` into `module`'s parameters by name, after checking that they fit
    exactly: an unexpected key, a wrong shape, integers where the model has floats or a
    missing key is an error naming the key as `shown(name)` (the name the checkpoint file uses)."""
    params = module.state_dict()
    for name, tensor in tensors.items():
        key = shown(name)
        if name not in params:
            raise TinydactError(f"{source}: unexpected key {key!r}")
        if tuple(tensor.shape) != tuple(params[name].shape):
            raise TinydactError(f"{source}: key {key!r} has shape {tuple(tensor.shape)}, the model expects {tuple(params[name].shape)}")
        if params[name].is_floating_point() and not tensor.is_floating_point():  # copy_ would cast int8 silently
            raise TinydactError(f"{source}: key {key!r} holds {str(tensor.dtype).removeprefix('torch.')} values, the model's "
                                "weights are floating-point (a quantized checkpoint? save it in float32, float16 or bfloat16)")
    missing = [shown(name) for name in params if name not in tensors]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise TinydactError(f"{source}: missing key {missing[0]!r}{more}")
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)  # casts, e.g. fp16 storage -> fp32 parameters


def bert_state_for_hf(model: Bert) -> dict:
    """Our parameters under Hugging Face `BertModel` names (for saving checkpoints that
    `transformers` can also load)."""
    params = model.state_dict()
    return {hf: params[ours] for hf, ours in hf_names(model.config).items()}
