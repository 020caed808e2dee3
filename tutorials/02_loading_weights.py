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
# # Tutorial 2: loading pretrained weights (optional)
#
# *This one is about loading details. Nothing later depends on it: skip to tutorial 3 for
# DACT itself, and come back when a checkpoint refuses to load.*
#
# A pretrained BERT is a file of named tensors. Loading it means reading the file, mapping
# each name to one of our parameters, copying, and, the part that is easy to skip,
# **accounting for every key**. A tensor that silently fails to load leaves its parameter
# at its random initial value: the model still runs, it just computes nonsense, and nothing
# says so. So in `tinydact/bert.py` a missing key, an unexpected key or a wrong shape is an
# error that names the key.
#
# This tutorial opens a `model.safetensors` file by hand, looks at the names that
# checkpoints use (they come in several layouts), walks through the rename table that maps
# them all to ours, triggers each loading error on purpose, and ends by loading a copy
# rewritten in another layout: the largest difference to the original must be exactly 0.
#
# **The model.** As in tutorial 1, `tinydact.home.locate` looks for
# `models/all-MiniLM-L6-v2` in `$TINYDACT_HOME`, then in `~/.cache/tinydact` (where
# `tinydact download sentence-transformers/all-MiniLM-L6-v2` writes it), and prints one
# line saying what it found. Without it, the tutorial opens the DACT-BERT checkpoint shipped
# in `weights/`, and without that, a small random BERT that this script writes to a
# temporary folder.

# %%
import json
import struct
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tinydact.bert import (IGNORED_KEYS, IGNORED_PREFIXES, LAYERNORM_RENAMES, PREFIX, Bert, BertConfig,
                           bert_state_for_hf, canonical_name, hf_names, load_bert_weights, read_config)  # fmt: skip
from tinydact.checkpoint import HEAD_PREFIX
from tinydact.errors import TinydactError
from tinydact.home import locate, shipped_model

torch.set_grad_enabled(False)

WORK = tempfile.TemporaryDirectory(prefix="tinydact-tutorial-")  # scratch files; deleted at exit

try:
    SHIPPED = shipped_model()  # weights/: a DACT-BERT checkpoint (a BERT plus its DACT modules)
except TinydactError:
    SHIPPED = None
MODEL_DIR, line = locate("models/all-MiniLM-L6-v2", SHIPPED,
                         f"the DACT-BERT checkpoint in {SHIPPED}" if SHIPPED else "a small random BERT saved here")
print(line)
if MODEL_DIR is None:  # a stand-in: a random BERT saved the way Hugging Face saves a BertModel
    MODEL_DIR = Path(WORK.name) / "random-bert"
    MODEL_DIR.mkdir()
    small = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=40)  # fmt: skip
    torch.manual_seed(0)
    save_file(bert_state_for_hf(Bert(small)), str(MODEL_DIR / "model.safetensors"), metadata={"format": "pt"})
    (MODEL_DIR / "config.json").write_text(json.dumps(small.to_dict()))
    print("the random BERT is saved in", MODEL_DIR)
cfg = BertConfig.from_dict(read_config(MODEL_DIR))  # config.json, the keys our encoder uses
print(f"N = {cfg.num_hidden_layers} blocks, H = {cfg.hidden_size}")

# %% [markdown]
# ## 1. Inside a safetensors file
#
# The format is deliberately simple:
#
#     8 bytes     N, the header's length, an unsigned 64-bit little-endian integer
#     N bytes     the header: JSON, {name: {"dtype", "shape", "data_offsets": [begin, end]}}
#                 plus an optional "__metadata__" entry of strings
#     the rest    every tensor's raw bytes, row-major; a tensor lies at [begin, end)
#                 counted from the end of the header
#
# Reading it runs no code, unlike the older `pytorch_model.bin`, which is a Python pickle
# (`read_checkpoint` opens those with `torch.load(weights_only=True)`, which refuses
# pickled code). We read the header ourselves:

# %%
path = MODEL_DIR / "model.safetensors"
with open(path, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))  # '<Q': little-endian unsigned 64-bit
    header = json.loads(f.read(n))
metadata = header.pop("__metadata__", {})
print(f"{path.stat().st_size:,} bytes: 8 + a {n:,}-byte header + the data")
print("metadata:", metadata)
print(len(header), "tensors; dtypes:", dict(Counter(e["dtype"] for e in header.values())))
print()
for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"])[:6]:
    print(f"{name:50} {e['dtype']:4} {str(e['shape']):14} bytes {e['data_offsets']}")
print("...")

# %% [markdown]
# The data of one tensor is then just `end − begin` bytes at `8 + N + begin`. Here we
# decode a LayerNorm weight with NumPy and compare it with what the `safetensors` library
# reads (`load_file`, which `read_checkpoint` calls).

# %%
NUMPY_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8"}  # (BF16 has no NumPy type)
name = next(k for k in sorted(header) if "LayerNorm" in k and header[k]["dtype"] in NUMPY_DTYPES)
e = header[name]
begin, end = e["data_offsets"]
with open(path, "rb") as f:
    f.seek(8 + n + begin)
    by_hand = np.frombuffer(f.read(end - begin), dtype=NUMPY_DTYPES[e["dtype"]]).reshape(e["shape"])
tensors = load_file(path)  # {name: tensor}, every tensor in the file
print(name, by_hand.shape, by_hand[:4])
print("max difference to safetensors.load_file:", np.abs(by_hand - tensors[name].numpy()).max())

# %% [markdown]
# ## 2. Their names and ours
#
# The file uses Hugging Face `BertModel` names, which follow the original TensorFlow
# code's scopes: `encoder.layer.3.attention.self.query.weight`. Our modules are named for
# reading (`blocks.3.attn.query.weight`), and two short tables in `bert.py` map one to the
# other: `TOP_NAMES` for the embeddings and the pooler, `BLOCK_NAMES` for what repeats in
# every block. `hf_names(cfg)` expands them into the full map. Block 0 and the top level:

# %%
names = hf_names(cfg)  # HF name -> our name
for hf, ours in names.items():  # the .weight names; each has a .bias beside it, except the embedding tables
    if hf.endswith(".weight") and (not hf.startswith("encoder.layer.") or hf.startswith("encoder.layer.0.")):
        print(f"{hf:52} -> {ours}")
ours_all = set(Bert(cfg).state_dict())
print(f"\n{len(names)} names, one for each of our {len(ours_all)} parameters:", set(names.values()) == ours_all)

# %% [markdown]
# The file may hold keys that are not in that map. In this one:

# %%
extra = sorted(k for k in tensors if k not in names)
print(extra[:5] or "none", f"and {len(extra) - 5} more" if len(extra) > 5 else "")

# %% [markdown]
# ## 3. Other layouts of the same weights
#
# BERT checkpoints in the wild differ from `BertModel`'s layout in a few written-down ways,
# and `canonical_name` undoes them before the lookup:
#
# - **a `bert.` prefix** (`PREFIX`): a checkpoint saved from a model with heads on top
#   (pre-training, or a classifier) keeps the encoder under `bert.`. Google's
#   `bert-base-uncased` on the hub is such a file.
# - **`gamma` / `beta`** (`LAYERNORM_RENAMES`): TensorFlow-era names of the LayerNorm's
#   scale and shift, i.e. `weight` and `bias`.
#
# And some keys are not part of the encoder at all; they are skipped by name, not by
# pattern-guessing:
#
# - **`cls.*`** (`IGNORED_PREFIXES`): the masked-LM and next-sentence heads used in
#   pre-training;
# - **`embeddings.position_ids`** (`IGNORED_KEYS`): a buffer holding 0, 1, …, 511, saved by
#   older `transformers` versions; `Embeddings.forward` recomputes it.
#
# A DACT-BERT checkpoint (`tinydact/model.py`) keeps the backbone under `BertModel` names
# and adds its DACT modules under `dact_heads.`: those belong to `DACTBert.heads`, not to
# the encoder, and `load_checkpoint` sets them aside before calling `load_bert_weights`.

# %%
print("PREFIX =", repr(PREFIX))
print("LAYERNORM_RENAMES =", LAYERNORM_RENAMES)
print("IGNORED_PREFIXES =", IGNORED_PREFIXES, " IGNORED_KEYS =", IGNORED_KEYS)
print()
for key in ["bert.embeddings.LayerNorm.gamma", "bert.encoder.layer.0.output.LayerNorm.beta",
            "bert.pooler.dense.weight", "cls.predictions.transform.dense.weight", "bert.embeddings.position_ids",
            "encoder.layer.0.attention.self.query.weight"]:  # fmt: skip
    hf = canonical_name(key)
    fate = "ignored" if hf in IGNORED_KEYS or hf.startswith(IGNORED_PREFIXES) else names.get(hf, "unexpected")
    print(f"{key:44} -> {hf:42} -> {fate}")

# %% [markdown]
# ## 4. Strict accounting
#
# `load_bert_weights(model, tensors)` copies each tensor into its parameter, after checking
# that (a) every key is either mapped or ignored by name, (b) no parameter is given twice,
# (c) every shape matches, and (d) every parameter received a tensor. The backbone's
# tensors load without complaint:

# %%
backbone = {k: v for k, v in tensors.items() if not k.startswith(HEAD_PREFIX)}  # set DACT modules aside
print(f"{len(tensors) - len(backbone)} dact_heads.* tensors set aside, {len(backbone)} left")
model = Bert(cfg).eval()
load_bert_weights(model, backbone, source="original")
print("loaded")
# The encoder's tensors under plain `BertModel` names, whatever layout the file had:
plain = {canonical_name(k): v for k, v in backbone.items() if canonical_name(k) in names}

# %% [markdown]
# Now each kind of mistake, made on purpose on a copy of the dict. Each error names the key.

# %%
last = cfg.num_hidden_layers - 1


def try_loading(what, tensors):
    try:
        load_bert_weights(Bert(cfg), tensors, source="model.safetensors")
        print(f"{what:>40}: loaded")
    except TinydactError as e:
        print(f"{what:>40}: TinydactError: {e}")


mistakes = {
    "a key removed": {k: v for k, v in plain.items() if k != f"encoder.layer.{last}.output.LayerNorm.bias"},
    "a misspelt key": {**plain, "encoder.layer.0.attention.self.querry.weight": torch.zeros(1)},
    # TensorFlow stores a dense layer's kernel as (in, out), PyTorch's Linear as (out, in)
    "a weight left transposed": {**plain, "encoder.layer.0.intermediate.dense.weight":
                                 plain["encoder.layer.0.intermediate.dense.weight"].T},  # fmt: skip
    "one tensor under two layouts' names": {**plain, "bert.pooler.dense.weight": plain["pooler.dense.weight"]},
    "a DACT module's key": {**plain, "dact_heads.0.dense.weight": torch.zeros(cfg.hidden_size, cfg.hidden_size)},
}
for what, broken in mistakes.items():
    try_loading(what, broken)

# %% [markdown]
# Compare PyTorch's own `load_state_dict(strict=False)`, the usual way to get past "key
# mismatch" errors: it loads what it can and *returns* the problems, which are easy to
# ignore. Here it is handed the `BertModel` names without our rename table: it loads
# nothing at all, and no error is raised.

# %%
result = Bert(cfg).load_state_dict(plain, strict=False)
print(f"no error; {len(result.missing_keys)} parameters missing (left random), "
      f"{len(result.unexpected_keys)} tensors unused")  # fmt: skip

# %% [markdown]
# ## The check: the same weights in Google's layout
#
# We rewrite the checkpoint the way Google's `bert-base-uncased` is laid out: every key
# under `bert.`, LayerNorm `gamma`/`beta`, plus the keys that must be ignored (a
# `position_ids` buffer and two `cls.*` pre-training tensors). It goes through the whole
# public path, `Bert.from_pretrained` on a directory. The parameters and the outputs must
# equal the original's exactly: loading only renames, it never changes a number.

# %%
to_tf_era = {new: old for old, new in LAYERNORM_RENAMES.items()}  # "LayerNorm.weight" -> "LayerNorm.gamma"


def google_name(key):
    for new, old in to_tf_era.items():
        if key.endswith(new):
            key = key[: -len(new)] + old
    return PREFIX + key


google = {google_name(k): v for k, v in plain.items()}
google["bert.embeddings.position_ids"] = torch.arange(cfg.max_position_embeddings)[None]  # (1, 512) buffer
google["cls.predictions.bias"] = torch.zeros(cfg.vocab_size)  # pre-training heads
google["cls.seq_relationship.weight"] = torch.zeros(2, cfg.hidden_size)
copy_dir = Path(WORK.name) / "google-layout"
copy_dir.mkdir()
save_file(google, str(copy_dir / "model.safetensors"))
(copy_dir / "config.json").write_text(json.dumps(cfg.to_dict()))
print(len(google), "keys, e.g.", [k for k in sorted(google) if "LayerNorm" in k][:2])

copy = Bert.from_pretrained(copy_dir)  # read_checkpoint + load_bert_weights, in eval mode

param_diff = max((p - q).abs().max().item() for p, q in zip(model.state_dict().values(), copy.state_dict().values()))
ids = torch.randint(0, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))  # (B, T)
output_diff = (model(ids) - copy(ids)).abs().max().item()
print(f"max |original - Google-layout copy|: parameters {param_diff}, outputs {output_diff}")
assert param_diff == 0 and output_diff == 0, "loading a renamed copy changed the weights"
print("all checks passed")
