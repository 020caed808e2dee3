"""MPNet in the from-scratch encoder: the same numbers as `transformers.MPNetModel` on the same
weights (tiny random configs in every clone; sentence-transformers/all-mpnet-base-v2 where it
is present), the same token ids as `transformers`' MPNet tokenizer, strict loading, and a
DACT-BERT on an MPNet backbone that trains, saves, reloads and exits early exactly.

all-mpnet-base-v2 is looked for in $TINYDACT_MPNET, else under models/ of the search path
(`tinydact download sentence-transformers/all-mpnet-base-v2`); without it those tests skip."""

import json
import os
from pathlib import Path

import pytest
import test_download
import torch
import transformers
from conftest import TINY_WORDS, assert_clean, assert_error, edit_json, edit_tensors, invoke
from test_tokenizer import SECONDS, TRICKY

import tinydact.bert
from tinydact.bert import Bert, bert_state_for_hf, relative_position_bucket
from tinydact.checkpoint import load_checkpoint
from tinydact.errors import TinydactError
from tinydact.home import find
from tinydact.tokenizer import Tokenizer

MPNET_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # as all-mpnet-base-v2's vocab.txt begins
TINY_MPNET_VOCAB = MPNET_SPECIALS + TINY_WORDS + ["<mask>"]
TINY_MPNET_TOKENIZER = {"tokenizer_class": "MPNetTokenizer", "do_lower_case": True, "bos_token": "<s>", "eos_token": "</s>",
                        "cls_token": "<s>", "sep_token": "</s>", "pad_token": "<pad>", "unk_token": "[UNK]", "mask_token": "<mask>"}  # fmt: skip
# long enough that relative distances reach the logarithmic buckets (>= 8) and pass max_distance (128)
LONGEST = 150
fake_hub = test_download.fake_hub  # the fixture: a Hugging Face Hub serving folders of tmp_path


def real_mpnet() -> Path | None:
    path = os.environ.get("TINYDACT_MPNET")
    path = Path(path) if path else find("models/all-mpnet-base-v2")
    return path if path is not None and (path / "model.safetensors").is_file() else None


needs_real_mpnet = pytest.mark.skipif(real_mpnet() is None, reason="all-mpnet-base-v2 is absent ($TINYDACT_MPNET or "
                                      "models/all-mpnet-base-v2 under $TINYDACT_HOME; tinydact download sentence-transformers/all-mpnet-base-v2)")  # fmt: skip


def tiny_hf_mpnet(seed=0, vocab_size=len(TINY_MPNET_VOCAB), layers=2):
    """A random tiny `transformers.MPNetModel` (width 32, 4 attention heads), no dropout, with a
    relative-position bias table and position embeddings large enough to matter."""
    torch.manual_seed(seed)
    cfg = transformers.MPNetConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=LONGEST + 2, hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0, layer_norm_eps=1e-5)  # fmt: skip
    model = transformers.MPNetModel(cfg).eval()
    with torch.no_grad():
        model.encoder.relative_attention_bias.weight.normal_(0, 1.0)  # HF's init (std 0.02) would hide a wrong bucket
        model.embeddings.position_embeddings.weight.normal_(0, 0.5)
    return model


def save_hf(model, path, vocab=TINY_MPNET_VOCAB) -> Path:
    """`model` as a Hugging Face folder (config.json, model.safetensors) with the tiny MPNet tokenizer files."""
    model.save_pretrained(path, safe_serialization=True)
    (path / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    (path / "tokenizer_config.json").write_text(json.dumps(TINY_MPNET_TOKENIZER))
    return path


@pytest.fixture(scope="module")
def tiny_mpnet_dir(tmp_path_factory):
    return save_hf(tiny_hf_mpnet(), tmp_path_factory.mktemp("mpnet") / "tiny-mpnet")


def padded_batch(vocab_size, pad=1, lengths=(LONGEST, 5, 130, 1), seed=0):
    """Rows of random real token ids (never the pad id) right-padded with `pad`, (B, T), and the mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), max(lengths)), pad)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(pad + 1, vocab_size, (n,), generator=g)
    return ids, (ids != pad).long()


def max_error(ours: Bert, hf, ids, mask) -> float:
    """The largest difference of the last hidden states (real tokens) and the pooled outputs."""
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask)
        x = ours(ids, mask)
        real = mask.bool()[..., None]
        return max(((x - theirs.last_hidden_state) * real).abs().max().item(),
                   (ours.pool(x) - theirs.pooler_output).abs().max().item())  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The encoder: parity with transformers.MPNetModel
# ---------------------------------------------------------------------------------------------


def test_bucket_function_is_transformers_on_every_distance():
    T = 400  # distances up to 399: exact, logarithmic and capped buckets, both directions
    i = torch.arange(T)
    theirs = transformers.models.mpnet.modeling_mpnet.MPNetEncoder.relative_position_bucket(i[None, :] - i[:, None])
    ours = relative_position_bucket(T)
    assert torch.equal(ours, theirs)
    assert set(ours.unique().tolist()) == set(range(32)) - {16}  # all but 16 (distance 0, in the upper half: never)


@pytest.mark.parametrize("attention", ["plain", "sdpa"])
def test_tiny_random_mpnet_matches_transformers(tiny_mpnet_dir, attention):
    ours = Bert.from_pretrained(tiny_mpnet_dir, attention)
    hf = transformers.MPNetModel.from_pretrained(tiny_mpnet_dir).eval()
    assert ours.config.model_type == "mpnet" and ours.embeddings.token_type is None
    ids, mask = padded_batch(ours.config.vocab_size)
    assert max_error(ours, hf, ids, mask) < 1e-5
    assert max_error(ours, hf, ids[2:3, :130], mask[2:3, :130]) < 1e-5  # no padding: no key mask at all


def test_parity_needs_the_exact_bucket_of_each_distance(tiny_mpnet_dir, monkeypatch):
    """The check above can fail: one bucket off for the distances that share a logarithmic
    bucket, and the hidden states move far beyond 1e-5."""
    ours, hf = Bert.from_pretrained(tiny_mpnet_dir), transformers.MPNetModel.from_pretrained(tiny_mpnet_dir).eval()
    ids, mask = padded_batch(ours.config.vocab_size)
    real = relative_position_bucket

    def off_by_one(T, *args, **kw):
        b = real(T, *args, **kw)
        return torch.where((b % 16) >= 8, (b + 1).clamp(max=31), b)  # every log bucket one further

    monkeypatch.setattr(tinydact.bert, "relative_position_bucket", off_by_one)
    assert max_error(ours, hf, ids, mask) > 1e-3


def test_positions_count_from_the_pad_id_plus_one_and_padding_sits_at_it():
    ids = torch.tensor([[0, 7, 8, 2, 1, 1], [0, 7, 8, 9, 10, 2]])
    theirs = transformers.models.mpnet.modeling_mpnet.create_position_ids_from_input_ids(ids, 1)
    assert theirs.tolist() == [[2, 3, 4, 5, 1, 1], [2, 3, 4, 5, 6, 7]]
    bert, seen = Bert(tinydact.bert.BertConfig.from_dict(tiny_hf_mpnet().config.to_dict())), {}
    bert.embeddings.position.register_forward_hook(lambda m, inp, out: seen.update(positions=inp[0]))  # what it looks up
    bert.embed(ids)
    assert torch.equal(seen["positions"], theirs)


def test_inference_path_is_bit_identical_to_forward_with_the_bias(tiny_mpnet_dir):
    for attention in ("plain", "sdpa"):
        model = Bert.from_pretrained(tiny_mpnet_dir, attention)
        ids, mask = padded_batch(model.config.vocab_size)
        x, keys = model.embed(ids), model.mask(mask, ids.size(1))
        assert keys.dtype == torch.float32 and keys.shape == (4, 4, LONGEST, LONGEST)
        for block in model.blocks:
            with torch.enable_grad():
                y = block(x, keys)  # the autograd path
            assert torch.equal(block.forward_inference(x, keys), y)
            x = y.detach()


def test_attention_paths_agree_and_padded_keys_get_no_weight(tiny_mpnet_dir):
    model = Bert.from_pretrained(tiny_mpnet_dir, "plain")
    ids, mask = padded_batch(model.config.vocab_size)
    with torch.no_grad():
        att = model.blocks[0].attn.attention_map(model.embed(ids), model.mask(mask, ids.size(1)))  # (B, nh, T, T)
    assert (att * (1 - mask)[:, None, None, :]).abs().max() == 0
    assert torch.allclose(att.sum(-1), torch.ones(()), atol=1e-6)


def test_state_for_hf_loads_strictly_into_transformers_and_config_round_trips(tiny_mpnet_dir):
    ours = Bert.from_pretrained(tiny_mpnet_dir)
    config = ours.config.to_dict()
    assert config["model_type"] == "mpnet" and "type_vocab_size" not in config and config["relative_attention_num_buckets"] == 32
    hf = transformers.MPNetModel(transformers.MPNetConfig.from_dict(config)).eval()
    hf.load_state_dict(bert_state_for_hf(ours), strict=True)
    ids, mask = padded_batch(ours.config.vocab_size)
    assert max_error(ours, hf, ids, mask) < 1e-5
    assert tinydact.bert.BertConfig.from_dict(config) == ours.config


# ---------------------------------------------------------------------------------------------
# Strict loading
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("edit, fragment", [
    (lambda t: t.pop("encoder.relative_attention_bias.weight"), "missing key 'encoder.relative_attention_bias.weight'"),
    (lambda t: t.update({"encoder.relative_attention_bias.weight": torch.zeros(16, 4)}),
     "'encoder.relative_attention_bias.weight' has shape (16, 4), the model expects (32, 4)"),
    (lambda t: t.pop("encoder.layer.1.attention.attn.o.bias"), "missing key 'encoder.layer.1.attention.attn.o.bias'"),
    (lambda t: t.update({"embeddings.token_type_embeddings.weight": torch.zeros(2, 32)}),
     "unexpected key 'embeddings.token_type_embeddings.weight'"),
], ids=["no bias table", "bias table shape", "a missing projection", "token types"])  # fmt: skip
def test_loading_accounts_for_every_mpnet_key(tiny_mpnet_dir, tmp_path, edit, fragment):
    import shutil

    path = tmp_path / "broken"
    shutil.copytree(tiny_mpnet_dir, path)
    edit_tensors(path, edit)
    with pytest.raises(TinydactError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        Bert.from_pretrained(path)


def test_a_masked_lm_checkpoint_loads_the_same(tiny_mpnet_dir, tmp_path):
    """MPNetForMaskedLM's layout (microsoft/mpnet-base): an `mpnet.` prefix, and the `lm_head.` left out."""
    import shutil

    path = tmp_path / "mlm"
    shutil.copytree(tiny_mpnet_dir, path)
    edit_tensors(path, lambda t: t.update({**{"mpnet." + k: t.pop(k) for k in list(t)}, "lm_head.dense.weight": torch.zeros(32, 32)}))
    plain, mlm = Bert.from_pretrained(tiny_mpnet_dir), Bert.from_pretrained(path)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), mlm.state_dict().values()))


def test_mpnet_config_errors_name_the_field(tiny_mpnet_dir, tmp_path):
    import shutil

    for field, value, fragment in [("relative_attention_num_buckets", 64, "relative_attention_num_buckets must be 32"),
                                   ("model_type", "roberta", "unsupported model_type 'roberta'")]:  # fmt: skip
        path = tmp_path / field
        shutil.copytree(tiny_mpnet_dir, path)
        edit_json(path / "config.json", **{field: value})
        with pytest.raises(TinydactError, match=fragment):
            Bert.from_pretrained(path)


def test_a_bert_config_is_unchanged():
    cfg = tinydact.bert.BertConfig()
    assert cfg.model_type == "bert" and "relative_attention_num_buckets" not in cfg.to_dict()
    assert Bert(tinydact.bert.BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=16)).position_bias is None  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The tokenizer: MPNet's special tokens and pair format
# ---------------------------------------------------------------------------------------------


def assert_same_ids(ours, theirs, texts, pairs=None, max_length=None):
    encoded = ours(texts, pairs, max_length)
    ref = theirs(texts, pairs, padding=True, truncation=max_length is not None, max_length=max_length,
                 return_token_type_ids=True, return_attention_mask=True)  # fmt: skip
    for field in encoded._fields:
        assert getattr(encoded, field).tolist() == ref[field], field


def test_tiny_mpnet_tokenizer_matches_transformers(tiny_mpnet_dir):
    ours, theirs = Tokenizer.from_pretrained(tiny_mpnet_dir), transformers.AutoTokenizer.from_pretrained(tiny_mpnet_dir)
    texts = ["good film", "the plot was dull <mask> [MASK] <s>", "zz"]
    assert_same_ids(ours, theirs, texts, ["a story", "", "bad"])
    assert [TINY_MPNET_VOCAB[i] for i in ours(["good film"], ["bad"]).input_ids[0]] == ["<s>", "good", "film", "</s>", "</s>", "bad", "</s>"]
    ours.check_fits(len(TINY_MPNET_VOCAB), 1, "tiny")
    with pytest.raises(TinydactError, match="<pad> is token 1 in vocab.txt, the config says 0"):
        ours.check_fits(len(TINY_MPNET_VOCAB), 0, "tiny")


def test_a_saved_mpnet_tokenizer_reloads_the_same(tiny_mpnet_dir, tmp_path):
    ours = Tokenizer.from_pretrained(tiny_mpnet_dir)
    ours.save(tmp_path / "saved")
    again, theirs = Tokenizer.from_pretrained(tmp_path / "saved"), transformers.AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert (again.specials, again.mpnet) == (ours.specials, True)
    assert_same_ids(again, theirs, ["good film", "a story"], ["bad", "the plot"])


# ---------------------------------------------------------------------------------------------
# A DACT-BERT on a tiny MPNet backbone, through the command line
# ---------------------------------------------------------------------------------------------


def test_dact_on_an_mpnet_backbone_trains_saves_reloads_and_exits_early_exactly(tiny_mpnet_dir, tiny_tsv, tmp_path):
    out = tmp_path / "run"
    assert_clean(invoke("train", "--model", tiny_mpnet_dir, "--train", tiny_tsv, "--dev", tiny_tsv, "--out", out, "--phase", "1",
                        "--max-steps", "3", "--batch-size", "4", "--max-length", "16", "--quiet", "--device", "cpu"))  # fmt: skip
    final = out / "final"
    config = json.loads((final / "config.json").read_text())
    assert config["model_type"] == "mpnet" and config["pad_token_id"] == 1
    model, _ = load_checkpoint(final)
    tok = Tokenizer.from_pretrained(final)
    assert tok.mpnet and tok.specials["pad_token"] == "<pad>"
    enc = tok(["good film", "the plot was dull and the acting awful", "fun"])
    labels, probs, blocks = model.predict(*enc)
    full_labels, full_probs, full_blocks = model.predict(*enc, halt=False)
    assert torch.equal(labels, full_labels) and (full_blocks == model.num_blocks).all()
    # the backbone loads in transformers under MPNet's names, with the same numbers
    hf = transformers.MPNetModel.from_pretrained(final).eval()
    assert max_error(model.bert, hf, enc.input_ids, enc.attention_mask) < 1e-5
    out_text, _ = assert_clean(invoke("classify", "good film", "--model", final))
    assert "blocks" in out_text


def test_a_tokenizer_that_does_not_fit_an_mpnet_backbone_is_an_error(tiny_mpnet_dir, tiny_tsv, tmp_path):
    import shutil

    path = tmp_path / "bert-vocab"
    shutil.copytree(tiny_mpnet_dir, path)
    (path / "tokenizer_config.json").unlink()  # BERT's [PAD] (token 4) against the config's pad id 1
    assert_error(invoke("train", "--model", path, "--train", tiny_tsv, "--out", tmp_path / "run", "--phase", "1",
                        "--max-steps", "1", "--quiet"), "[PAD] is token 4 in vocab.txt, the config says 1")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The real all-mpnet-base-v2, where present
# ---------------------------------------------------------------------------------------------


@needs_real_mpnet
def test_all_mpnet_base_v2_matches_transformers():
    path = real_mpnet()
    hf = transformers.MPNetModel.from_pretrained(path).eval()
    tok = Tokenizer.from_pretrained(path)
    ids, mask, _ = tok(["A short sentence.", "a much longer sentence, to pass the first buckets " * 14, "?"])
    assert ids.size(1) > 130
    for attention in ("plain", "sdpa"):
        assert max_error(Bert.from_pretrained(path, attention), hf, ids, mask) <= 1e-5


@needs_real_mpnet
def test_all_mpnet_base_v2_token_ids_match_transformers():
    path = real_mpnet()
    ours, theirs = Tokenizer.from_pretrained(path), transformers.AutoTokenizer.from_pretrained(path)
    assert (ours.vocab_size, ours.max_length, ours.mpnet) == (30527, 512, True)
    for text in TRICKY + ["hi <mask> there <s> x </s> [PAD] <pad> [UNK] [CLS]"]:
        assert_same_ids(ours, theirs, [text])
    assert_same_ids(ours, theirs, TRICKY, SECONDS)
    for max_length in (3, 5, 8, 16):
        assert_same_ids(ours, theirs, TRICKY, None, max_length)
        if max_length > 4:  # a pair needs <s>, 3 x </s> and at least one token
            assert_same_ids(ours, theirs, TRICKY, SECONDS, max_length)


# ---------------------------------------------------------------------------------------------
# tinydact download, on a fake Hub (no network): an MPNet repository as sentence-transformers has it
# ---------------------------------------------------------------------------------------------

def test_download_of_an_mpnet_repository(fake_hub, tiny_mpnet_dir, tmp_path):
    import shutil

    repo = fake_hub.root / "sentence-transformers" / "all-mpnet-base-v2"
    shutil.copytree(tiny_mpnet_dir, repo)
    (repo / "special_tokens_map.json").write_text(json.dumps({"pad_token": "<pad>", "mask_token": {"content": "<mask>", "lstrip": True}}))
    (repo / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MPNetTokenizer", "cls_token": "<s>", "sep_token": "</s>",
                                                            "unk_token": "[UNK]"}))  # fmt: skip
    out, _ = assert_clean(invoke("download", "sentence-transformers/all-mpnet-base-v2", "--to", tmp_path / "out"))
    assert "2 blocks, hidden size 32" in out
    assert Bert.from_pretrained(tmp_path / "out").config.model_type == "mpnet"
    tok = Tokenizer.from_pretrained(tmp_path / "out")  # special tokens from both files
    assert tok.specials == {"pad_token": "<pad>", "unk_token": "[UNK]", "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"}
    tok.check_fits(len(TINY_MPNET_VOCAB), 1, "downloaded")
