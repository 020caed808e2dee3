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
# # Tutorial 1: BERT from scratch
#
# DACT-BERT puts a small module after every block of a BERT encoder, so before DACT we need
# the encoder itself. This tutorial computes a real BERT's output by hand, from its weights,
# with nothing but matrix products, `exp`, `erf` and square roots:
#
# 1. the **embeddings** of a sentence;
# 2. **one attention head** (head 0 of block 1), and its attention map as a picture;
# 3. **all the heads** of a block together;
# 4. the **post-LayerNorm block**: attention, MLP, two residual sums, two LayerNorms;
# 5. the **whole encoder**: embeddings, then the N blocks one after the other.
#
# At every step the result is compared with the library (`tinydact/bert.py`); at the end,
# the whole encoder is also compared with Hugging Face `transformers`. The last cell prints
# the largest difference and fails if it is above 1e-5.
#
# **Dimension legend** (the same as in `bert.py`): `T` tokens in the sentence, `H` hidden
# size, `nh` attention heads, `hs = H / nh` the size of one head, `I` the MLP's inner width,
# `N` blocks. Shapes are printed as we go.
#
# **The model.** We use the real `all-MiniLM-L6-v2` (a BERT with N = 6, H = 384, nh = 12).
# Like every tutorial, this one finds models and data with `tinydact.home.locate`, which
# looks for `models/all-MiniLM-L6-v2` in the folder named by the environment variable
# `TINYDACT_HOME`, then in `~/.cache/tinydact`, and prints one line saying what it found.
# `tinydact download sentence-transformers/all-MiniLM-L6-v2` puts the model there (in
# `$TINYDACT_HOME/models/`, or `~/.cache/tinydact/models/` when the variable is not set).
# Without it, the tutorial uses the backbone of the DACT-BERT shipped with the repository
# in `weights/` (also a MiniLM, fine-tuned), and without that, a small random BERT built
# here: every check still holds, only the attention picture is meaningless.

# %%
import math
from pathlib import Path

import torch

import tinydact
from tinydact.bert import Bert, BertConfig, bert_state_for_hf, key_mask
from tinydact.checkpoint import load_checkpoint, read_dact_config
from tinydact.errors import TinydactError
from tinydact.home import locate, shipped_model
from tinydact.tokenizer import Tokenizer

torch.set_grad_enabled(False)  # no training here: nothing needs a gradient

# The repository is the folder that holds the tinydact package: found from the package, not
# from the working directory, so a notebook started anywhere behaves like the script.
ROOT = Path(tinydact.__file__).resolve().parent.parent
PICTURES = ROOT / "tutorials"  # pictures are written next to the tutorials

try:
    SHIPPED = shipped_model()  # weights/, a DACT-BERT checkpoint: its backbone is a BERT
except TinydactError:
    SHIPPED = None
MODEL_DIR, line = locate("models/all-MiniLM-L6-v2", SHIPPED,
                         f"the backbone of the DACT-BERT in {SHIPPED}" if SHIPPED else "a small random BERT built here")
print(line)

# %% [markdown]
# ## The model and its tokenizer
#
# `Bert.from_pretrained` reads `config.json` and `model.safetensors` (tutorial 2 is about
# how). A DACT-BERT checkpoint holds a whole DACT-BERT; we keep its backbone, `.bert`. The
# random fallback gets a tiny vocabulary that covers our sentence. `.eval()` turns dropout
# off: with dropout on, two runs of the same sentence would differ.

# %%
SENTENCE = "The movie was not good, but the acting was great."

if MODEL_DIR is None:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += ["the", "movie", "was", "not", "good", ",", "but", "acting", "great", "."]
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=256, max_position_embeddings=64)  # fmt: skip
    torch.manual_seed(0)
    model = Bert(cfg).eval()
    tok = Tokenizer(vocab, max_length=64)
elif read_dact_config(MODEL_DIR):  # a DACT-BERT checkpoint: keep the backbone
    model = load_checkpoint(MODEL_DIR)[0].bert
    tok = Tokenizer.from_pretrained(MODEL_DIR)
else:
    model = Bert.from_pretrained(MODEL_DIR)
    tok = Tokenizer.from_pretrained(MODEL_DIR)

cfg = model.config
N, H, nh = cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads
hs, I = H // nh, cfg.intermediate_size
eps = cfg.layer_norm_eps
print(f"N = {N} blocks, H = {H}, nh = {nh} heads of hs = {hs}, I = {I}, vocabulary {cfg.vocab_size}, eps {eps}")

# %% [markdown]
# The tokenizer turns the sentence into ids: WordPiece pieces between `[CLS]` and `[SEP]`.
# `token_type_ids` say which sentence a token belongs to (all 0 here: one sentence).

# %%
ids, mask, types = tok(SENTENCE)  # (1, T) each: a batch of one
tokens = [tok.vocab[i] for i in ids[0].tolist()]
T = len(tokens)
print(tokens)
print("input_ids", tuple(ids.shape), ids[0].tolist())

# %% [markdown]
# ## 1. Embeddings
#
# Each token starts as the sum of three learned vectors, looked up in three tables: its
# word (`V × H`), its position 0..T−1 (`512 × H`: BERT has no other sense of order), and
# its token type (`2 × H`). The sum goes through a LayerNorm: subtract the mean over the H
# features, divide by the standard deviation, then scale and shift by learned `weight` and
# `bias` (γ and β):
#
#     LN(x) = (x − mean(x)) / sqrt(var(x) + eps) · weight + bias
#
# BERT's eps is 1e-12, not PyTorch's default 1e-5: one of three details that break parity
# when missed. (Dropout would come next; it is off in eval mode.)
#
# From here on everything is computed for one sentence, without the batch dimension:
# `x` is `(T, H)`.

# %%
def layer_norm(x, ln, eps=eps):
    mean = x.mean(-1, keepdim=True)  # (T, 1)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # (T, 1), the biased variance
    return (x - mean) / torch.sqrt(var + eps) * ln.weight + ln.bias  # (T, H)


def linear(x, layer):
    """nn.Linear stores its weight as (out, in): y = x Wᵀ + b."""
    return x @ layer.weight.T + layer.bias


def embeddings(ids, types):
    E = model.embeddings
    T = len(ids)
    x = E.word.weight[ids] + E.position.weight[:T] + E.token_type.weight[types]  # (T, H)
    return layer_norm(x, E.ln)


x0 = embeddings(ids[0], types[0])
print("word table", tuple(model.embeddings.word.weight.shape), "-> x0", tuple(x0.shape))
print("max difference to the library's embeddings:", (x0 - model.embed(ids, types)[0]).abs().max().item())

# %% [markdown]
# ## 2. One attention head, by hand
#
# Attention lets every token read from every other token. Head h projects each token to a
# query `q`, a key `k` and a value `v`, each of size hs. Token i's attention to token j is
# a softmax over j of the scaled dot product of their query and key, and token i's output
# is the attention-weighted average of the values:
#
#     A = softmax(Q Kᵀ / √hs)        (T, T), each row sums to 1
#     head = A V                      (T, hs)
#
# The checkpoint stores the projections of all heads stacked in one `H × H` matrix per Q,
# K and V; head 0 owns output rows 0..hs−1. So head 0's query projection is the first hs
# rows of `query.weight` and the first hs entries of `query.bias`. The softmax is written
# out: subtracting the row maximum first changes nothing mathematically but keeps `exp`
# from overflowing.

# %%
attn = model.blocks[0].attn
rows = slice(0, hs)  # head 0's rows in the stacked projections
q = x0 @ attn.query.weight[rows].T + attn.query.bias[rows]  # (T, hs)
k = x0 @ attn.key.weight[rows].T + attn.key.bias[rows]  # (T, hs)
v = x0 @ attn.value.weight[rows].T + attn.value.bias[rows]  # (T, hs)
scores = q @ k.T / math.sqrt(hs)  # (T, T): scores[i, j] = how well query i matches key j
e = torch.exp(scores - scores.max(-1, keepdim=True).values)  # (T, T)
A = e / e.sum(-1, keepdim=True)  # (T, T), the attention map; each row sums to 1
head0 = A @ v  # (T, hs)
print("q, k, v", tuple(q.shape), "A", tuple(A.shape), "head 0", tuple(head0.shape))
print("rows of A sum to 1:", torch.allclose(A.sum(-1), torch.ones(T)))
library_map = attn.attention_map(x0[None])  # (1, nh, T, T): every head at once
print("max difference to the library's map of head 0:", (A - library_map[0, 0]).abs().max().item())

# %% [markdown]
# Row i of A is where token i looks. Drawn as a picture (saved as
# `tutorials/attention_map.png`, when matplotlib is installed):

# %%
try:
    import matplotlib.pyplot as plt  # without a display, matplotlib draws into files only
except ImportError:
    plt = None
    print("matplotlib is not installed: no picture")

if plt is not None:
    fig, ax = plt.subplots(figsize=(6, 5.5))
    im = ax.imshow(A.numpy(), cmap="viridis", vmin=0)
    ax.set_xticks(range(T), tokens, rotation=90)
    ax.set_yticks(range(T), tokens)
    ax.set_xlabel("key j (attended to)")
    ax.set_ylabel("query i (attending)")
    ax.set_title("block 1, head 0: attention A[i, j]")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(PICTURES / "attention_map.png", dpi=100)
    print("saved", PICTURES / "attention_map.png")

# %% [markdown]
# ## 3. All heads at once
#
# The nh heads are independent and identical in form, so instead of slicing rows one head
# at a time we project with the whole `H × H` matrix and reshape `(T, H)` into
# `(nh, T, hs)`: head h's features are columns h·hs..(h+1)·hs−1. After attention the heads
# are put side by side again, `(T, H)`, and a final `H × H` projection (`attn.out`, the
# checkpoint's `attention.output.dense`) mixes them.
#
# A padding mask would enter here: in a padded batch, the scores of padding keys are set to
# −∞ before the softmax, so no real token attends to padding. Our single sentence has no
# padding.

# %%
def attention(x, attn):
    """Multi-head self-attention of x (T, H); returns the output (T, H) and the maps (nh, T, T)."""
    T = len(x)
    q = linear(x, attn.query).view(T, nh, hs).transpose(0, 1)  # (T, H) -> (T, nh, hs) -> (nh, T, hs)
    k = linear(x, attn.key).view(T, nh, hs).transpose(0, 1)  # (nh, T, hs)
    v = linear(x, attn.value).view(T, nh, hs).transpose(0, 1)  # (nh, T, hs)
    A = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hs), dim=-1)  # (nh, T, T), the two lines above
    y = (A @ v).transpose(0, 1).reshape(T, H)  # (nh, T, hs) -> (T, nh, hs) -> (T, H): heads side by side
    return linear(y, attn.out), A  # (T, H), (nh, T, T)


att_out, maps = attention(x0, attn)
print("attention output", tuple(att_out.shape), "maps", tuple(maps.shape))
print("head 0's map, reshape vs slices:", (maps[0] - A).abs().max().item())
print("max difference to the library's attention:", (att_out - attn(x0[None])[0]).abs().max().item())


# %% [markdown]
# ## 4. The block: post-LayerNorm
#
# A block is attention, then a position-wise MLP (`H -> I -> H`, applied to every token
# alone), each wrapped in a residual sum **followed** by a LayerNorm:
#
#     x = LN1(x + attention(x))
#     x = LN2(x + MLP(x))          MLP(x) = W2 · GELU(W1 x + b1) + b2
#
# Two more of the three parity details live here. BERT is *post*-LN: the LayerNorm comes
# after the residual sum (GPT-2 and most modern models are pre-LN: `x + attention(LN(x))`).
# And GELU is the exact form `x · Φ(x)`, with Φ the standard normal CDF written with erf,
# not the tanh approximation.

# %%
def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))  # x · Φ(x), exact


def block(x, b):
    x = layer_norm(x + attention(x, b.attn)[0], b.ln1)  # (T, H)
    hidden = gelu(linear(x, b.mlp.fc))  # (T, I)
    return layer_norm(x + linear(hidden, b.mlp.proj), b.ln2)  # (T, H)


x1 = block(x0, model.blocks[0])
print("MLP inner width", tuple(linear(x0, model.blocks[0].mlp.fc).shape), "-> block output", tuple(x1.shape))
keys = key_mask(mask)  # the library's blocks take a key mask (next cell); None here: nothing is padded
print("key mask of our one sentence:", keys)
print("max difference to the library's block:", (x1 - model.blocks[0](x0[None], keys)[0]).abs().max().item())

# %% [markdown]
# ### Padding: the key mask
#
# A batch pads its sentences to the longest one, and the tokenizer's `attention_mask`
# `(B, T)` holds 1 for a real token and 0 for padding. Attention must not read padding, so
# the library's `Block.forward(x, mask)` takes a **key mask**: `key_mask(attention_mask)`
# turns the `(B, T)` mask into a boolean `(B, 1, 1, T)`, True where a key is a real token,
# which broadcasts over the heads and the queries (section 3: those scores become −∞
# before the softmax). `Bert.forward` computes it once and hands the same one to every
# block. When nothing is padded it is `None` and attention skips the masking altogether.
#
# A short sentence padded beside our long one must come out exactly as it does alone, on
# its real tokens (the padding positions get values too, which nothing should read).
# Without the key mask its tokens attend to padding, and the result changes:

# %%
SHORT = "the acting was great."  # every word is in the random fallback's vocabulary too
batch = tok([SENTENCE, SHORT])  # (2, T), the short one padded
alone = tok([SHORT])  # (1, t), no padding
t = alone.input_ids.shape[1]
batch_keys = key_mask(batch.attention_mask)
print("attention mask", tuple(batch.attention_mask.shape), "-> key mask", tuple(batch_keys.shape), batch_keys.dtype)


def run_blocks(x, keys):
    for b in model.blocks:
        x = b(x, keys)  # (B, T, H)
    return x


x_alone = run_blocks(model.embed(alone.input_ids, alone.token_type_ids), None)[0]  # (t, H)
x_batch = model.embed(batch.input_ids, batch.token_type_ids)  # (2, T, H)
padding_error = (run_blocks(x_batch, batch_keys)[1, :t] - x_alone).abs().max().item()
unmasked_error = (run_blocks(x_batch, None)[1, :t] - x_alone).abs().max().item()
print(f"short sentence, padded in a batch vs alone: max difference {padding_error:.2e} with the key mask, "
      f"{unmasked_error:.2e} without")  # fmt: skip
assert padding_error < 1e-5 < unmasked_error, "the key mask should make padding invisible, and only the key mask"

# %% [markdown]
# ## 5. The whole encoder
#
# Embeddings, then the N blocks in order. The result is one H-vector per token: the last
# hidden state. (BERT also has a *pooler*, `tanh(W h_[CLS] + b)`; DACT-BERT does not use
# it.) DACT-BERT reads the `[CLS]` row, position 0, after every block: tutorial 3 draws
# where its DACT modules sit, and `docs/dact.md#4-dact-bert` describes them.

# %%
def encoder(ids, types):
    x = embeddings(ids, types)  # (T, H)
    for b in model.blocks:
        x = block(x, b)  # (T, H)
    return x


hidden = encoder(ids[0], types[0])
print("last hidden state", tuple(hidden.shape), "; [CLS] row, first 5 features:", hidden[0, :5].tolist())

# %% [markdown]
# How much do the three details matter? The same encoder with each one done the common
# (wrong) way, measured against the right one:

# %%
def encoder_variant(tanh_gelu=False, ln_eps=eps, pre_ln=False):
    act = (lambda x: torch.nn.functional.gelu(x, approximate="tanh")) if tanh_gelu else gelu
    E = model.embeddings
    x = layer_norm(E.word.weight[ids[0]] + E.position.weight[:T] + E.token_type.weight[types[0]], E.ln, ln_eps)
    for b in model.blocks:
        def mlp(x):
            return linear(act(linear(x, b.mlp.fc)), b.mlp.proj)

        if pre_ln:  # x + f(LN(x)): the LayerNorm before, the residual sum untouched
            x = x + attention(layer_norm(x, b.ln1, ln_eps), b.attn)[0]
            x = x + mlp(layer_norm(x, b.ln2, ln_eps))
        else:  # LN(x + f(x)): BERT
            x = layer_norm(x + attention(x, b.attn)[0], b.ln1, ln_eps)
            x = layer_norm(x + mlp(x), b.ln2, ln_eps)
    return x


for name, kw in [("tanh GELU", dict(tanh_gelu=True)), ("LayerNorm eps 1e-5", dict(ln_eps=1e-5)),
                 ("pre-LN", dict(pre_ln=True))]:  # fmt: skip
    print(f"{name:>20}: max difference {(encoder_variant(**kw) - hidden).abs().max().item():.2e}")


# %% [markdown]
# ## The check
#
# The by-hand encoder against the library's `Bert.forward` (which uses the fused
# `scaled_dot_product_attention`) and, when `transformers` is installed, against its
# `BertModel` loaded with the same tensors (`bert_state_for_hf` gives our parameters under
# Hugging Face's names). float32 sums in a different order differ by a few units in the
# last place, so "equal" means a max difference below 1e-5: well under the smallest error
# the mistakes above make.

# %%
TOL = 1e-5
errors = {"tinydact.bert": (hidden - model(ids, mask, types)[0]).abs().max().item()}
try:
    import transformers
except ImportError:
    print("transformers is not installed: compared with tinydact.bert only")
else:
    transformers.logging.set_verbosity_error()
    hf = transformers.BertModel(transformers.BertConfig(**cfg.to_dict())).eval()
    hf.load_state_dict(bert_state_for_hf(model))  # strict: every tensor must fit
    hf_hidden = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state[0]
    errors["transformers"] = (hidden - hf_hidden).abs().max().item()

for name, err in errors.items():
    print(f"max |by hand - {name}| = {err:.2e}")
assert max(errors.values()) < TOL, f"the by-hand encoder differs by more than {TOL}"
print("all checks passed")
