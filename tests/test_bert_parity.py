"""tinydact's encoder computes what `transformers.BertModel` computes, on the same weights.

Real weights, compared to 1e-5 in fp32: the backbone of the shipped model (weights/, fp16,
in every clone), block by block on real sentences, and the original MiniLM checkpoint
(../shared, beside the dev checkout only). A tiny random model, written in every layout we
claim to read, needs no files at all."""

import json
from dataclasses import asdict

import pytest
import torch
import transformers
from conftest import MINILM, needs_minilm, shipped_weights
from conftest import TINY_BERT as TINY  # the name the tests below use
from safetensors.torch import load_file, save_file

from tinydact.bert import Bert, BertConfig, bert_state_for_hf, key_mask
from tinydact.checkpoint import HEAD_PREFIX, load_checkpoint
from tinydact.tokenizer import Tokenizer

TOL = 1e-5


def max_error(ours_hidden, hf_hidden, attention_mask):
    """Largest difference over real-token positions only (padded positions are garbage in both)."""
    return (ours_hidden - hf_hidden)[attention_mask.bool()].abs().max().item()


def padded_batch(vocab_size, lengths, seed=0):
    """[CLS] w w ... [SEP] [PAD] ..., one row per length, with real word ids."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(5, vocab_size, (n,), generator=g)
        ids[row, 0], ids[row, n - 1] = 2, 3  # [CLS], [SEP] in the tiny vocabularies
        mask[row, :n] = 1
    return ids, mask


# ---------------------------------------------------------------------------------------------
# The shipped model's backbone (weights/): in every clone
# ---------------------------------------------------------------------------------------------

SENTENCES = ["a gripping, beautiful film", "no.",
             "the plot was dull, the acting worse, and yet the music (by Ennio Morricone!) is lovely",
             "Café naïve 東京 — don't stop"]  # fmt: skip
PAIRS = [("the cat sat on the mat", "it was tired"), ("good", "a much longer second sentence than the first one")]


@pytest.fixture(scope="module")
def shipped():
    """The shipped backbone twice: in `transformers.BertModel` (config from weights/config.json,
    the fp16 tensors upcast to float32, the DACT modules' `dact_heads.*` left out) and in
    tinydact's Bert through load_checkpoint, for each attention path; and the shipped tokenizer."""
    path = shipped_weights()
    config = json.loads((path / "config.json").read_text())
    del config["dact"]
    tensors = load_file(path / "model.safetensors")
    assert {t.dtype for t in tensors.values()} == {torch.float16}
    hf = transformers.BertModel(transformers.BertConfig(**config)).eval()
    hf.load_state_dict({k: t.float() for k, t in tensors.items() if not k.startswith(HEAD_PREFIX)}, strict=True)
    ours = {a: load_checkpoint(path, attention=a)[0].bert for a in ("sdpa", "plain")}
    assert all(p.dtype == torch.float32 for p in ours["sdpa"].parameters())
    return ours, hf, Tokenizer.from_pretrained(path)


def block_outputs(bert, ids, mask, types):
    """The embeddings and every block's output, (N + 1) x (B, T, H), as transformers' hidden_states."""
    x = bert.embed(ids, types)
    outputs = [x]
    for block in bert.blocks:
        x = block(x, key_mask(mask))
        outputs.append(x)
    return outputs


@pytest.mark.parametrize("attention", ["sdpa", "plain"])
@pytest.mark.parametrize("pairs", [False, True], ids=["sentences", "pairs"])
def test_shipped_backbone_matches_transformers_block_by_block(shipped, attention, pairs):
    ours, hf, tokenizer = shipped
    texts, seconds = zip(*PAIRS) if pairs else (SENTENCES, None)
    ids, mask, types = tokenizer(list(texts), seconds and list(seconds))
    assert (mask == 0).any() and (types == 1).any() == pairs  # padded rows; segment B for pairs
    bert = ours[attention]
    with torch.inference_mode():
        hidden, pooled = bert(ids, mask, types), bert.pool(bert(ids, mask, types))
        mine = block_outputs(bert, ids, mask, types)
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    assert len(mine) == len(ref.hidden_states) == 7
    for n, (x, y) in enumerate(zip(mine, ref.hidden_states)):
        assert max_error(x, y, mask) < TOL, f"after block {n} (0: the embeddings): {max_error(x, y, mask)}"
    assert max_error(hidden, ref.last_hidden_state, mask) < TOL
    assert (pooled - ref.pooler_output).abs().max() < TOL


# ---------------------------------------------------------------------------------------------
# The original MiniLM checkpoint (../shared)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    hf = transformers.BertModel.from_pretrained(str(MINILM)).eval()
    return {a: Bert.from_pretrained(MINILM, attention=a) for a in ("sdpa", "plain")}, hf


def compare(ours, hf, ids, mask, types):
    with torch.inference_mode():
        hidden = ours(ids, mask, types)
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        return max_error(hidden, ref.last_hidden_state, mask), (ours.pool(hidden) - ref.pooler_output).abs().max().item()


@needs_minilm
@pytest.mark.parametrize("attention", ["sdpa", "plain"])
def test_minilm_matches_transformers_on_a_padded_batch(minilm, attention):
    ours, hf = minilm
    ids, mask = padded_batch(30522, [17, 5, 11, 2])
    ids[ids == 2], ids[ids == 3] = 101, 102  # MiniLM's [CLS], [SEP]
    hidden_err, pooled_err = compare(ours[attention], hf, ids, mask, torch.zeros_like(ids))
    assert hidden_err < TOL and pooled_err < TOL, (hidden_err, pooled_err)


@needs_minilm
@pytest.mark.parametrize("attention", ["sdpa", "plain"])
def test_minilm_matches_transformers_on_a_sentence_pair(minilm, attention):
    ours, hf = minilm
    # [CLS] the cat sat [SEP] it was tired [SEP], and a padded shorter pair beside it
    ids = torch.tensor([[101, 1996, 4937, 2938, 102, 2009, 2001, 5458, 102], [101, 7592, 102, 2088, 102, 0, 0, 0, 0]])
    types = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    hidden_err, pooled_err = compare(ours[attention], hf, ids, mask, types)
    assert hidden_err < TOL and pooled_err < TOL, (hidden_err, pooled_err)


# ---------------------------------------------------------------------------------------------
# A tiny random model, in each checkpoint layout
# ---------------------------------------------------------------------------------------------


def random_hf_model(cls=None, seed=0):
    """A transformers model on the TINY config with every parameter random (LayerNorms too, so
    a swapped or misnamed tensor cannot hide behind weight 1 / bias 0)."""
    torch.manual_seed(seed)
    model = (cls or transformers.BertModel)(transformers.BertConfig(**TINY)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def write_checkpoint(path, tensors, filename="model.safetensors"):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(transformers.BertConfig(**TINY).to_json_string())
    tensors = {k: v.clone().contiguous() for k, v in tensors.items()}  # untie shared storage
    if filename == "model.safetensors":
        save_file(tensors, path / filename)
    else:
        torch.save(tensors, path / filename)
    return path


def pretraining_layout(model):
    """BertForPreTraining's state dict the way Google's checkpoints store it: `bert.` prefix,
    LayerNorm gamma/beta, the `cls.*` heads, and the `position_ids` buffer."""
    renames = {"LayerNorm.weight": "LayerNorm.gamma", "LayerNorm.bias": "LayerNorm.beta"}
    state = {}
    for key, value in model.state_dict().items():
        for old, new in renames.items():
            key = key[: -len(old)] + new if key.endswith(old) else key
        state[key] = value
    state["bert.embeddings.position_ids"] = torch.arange(TINY["max_position_embeddings"])[None]
    assert any(k.startswith("cls.") for k in state) and any(k.startswith("bert.") for k in state)
    return state


def assert_matches(ours, hf_bert):
    ids, mask = padded_batch(TINY["vocab_size"], [12, 7, 3])
    types = torch.zeros_like(ids)
    types[0, 6:] = 1
    with torch.no_grad():
        hidden = ours(ids, mask, types)
        ref = hf_bert(input_ids=ids, attention_mask=mask, token_type_ids=types)
    assert max_error(hidden, ref.last_hidden_state, mask) < TOL
    assert (ours.pool(hidden) - ref.pooler_output).abs().max() < TOL


@pytest.mark.parametrize("filename", ["model.safetensors", "pytorch_model.bin"])
def test_pretraining_layout_checkpoint_loads_and_matches(tmp_path, filename):
    hf = random_hf_model(transformers.BertForPreTraining)
    path = write_checkpoint(tmp_path / "ckpt", pretraining_layout(hf), filename)
    assert_matches(Bert.from_pretrained(path), hf.bert)


def test_fp16_stored_weights_load_into_fp32(tmp_path):
    hf = random_hf_model()
    half = {k: v.half() for k, v in hf.state_dict().items()}
    ours = Bert.from_pretrained(write_checkpoint(tmp_path / "ckpt", half))
    assert all(p.dtype == torch.float32 for p in ours.parameters())
    hf.load_state_dict({k: v.float() for k, v in half.items()})  # the reference, rounded the same way
    assert_matches(ours, hf)


def test_config_defaults_are_transformers_bert_defaults():
    ours, theirs = asdict(BertConfig()), transformers.BertConfig()  # bert-base-uncased's
    assert ours == {k: getattr(theirs, k) for k in ours}  # LayerNorm eps 1e-12 among them


def test_bert_state_for_hf_loads_strictly_into_transformers():
    ours = random_tiny_bert()
    hf = transformers.BertModel(transformers.BertConfig.from_dict(ours.config.to_dict())).eval()
    hf.load_state_dict(bert_state_for_hf(ours), strict=True)
    assert_matches(ours, hf)


# ---------------------------------------------------------------------------------------------
# Properties of our own model
# ---------------------------------------------------------------------------------------------


def random_tiny_bert(attention="sdpa"):
    torch.manual_seed(0)
    model = Bert(BertConfig.from_dict(TINY), attention).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def test_plain_and_sdpa_attention_agree():
    sdpa, plain = random_tiny_bert("sdpa"), random_tiny_bert("plain")
    ids, mask = padded_batch(TINY["vocab_size"], [9, 4, 2])
    with torch.no_grad():
        assert max_error(sdpa(ids, mask), plain(ids, mask), mask) < TOL
        assert (sdpa(ids) - plain(ids)).abs().max() < TOL  # no mask at all


def test_inference_speed_path_equals_the_autograd_path():
    # without autograd a block runs Block.forward_inference, which writes into fresh buffers
    # in place; with autograd it runs the plain equations: the very same numbers
    model = random_tiny_bert("sdpa")
    ids, mask = padded_batch(TINY["vocab_size"], [9, 4, 2])
    with torch.no_grad():
        fast = model(ids, mask)
    slow = model(ids, mask)  # grad enabled: a graph is recorded, no in-place op
    assert slow.requires_grad and torch.equal(fast, slow.detach())
    slow[:, 0].sum().backward()  # would raise if an op had overwritten a tensor the graph needs
    assert model.blocks[0].mlp.fc.weight.grad.abs().sum() > 0
    x, keys = model.embed(ids).detach(), key_mask(mask)
    for block in model.blocks:  # block by block, and the input is left as it was
        given = x.clone()
        fast = block.forward_inference(x, keys)
        assert torch.equal(x, given) and not fast.requires_grad
        x = block(x, keys)
        assert torch.equal(fast, x.detach())


def test_plain_attention_map_is_a_distribution_that_ignores_padding():
    model = random_tiny_bert("plain")
    ids, mask = padded_batch(TINY["vocab_size"], [6, 3])
    with torch.no_grad():
        att = model.blocks[0].attn.attention_map(model.embed(ids), key_mask(mask))  # (B, nh, T, T)
    assert torch.allclose(att.sum(-1), torch.ones(2, 4, 6))
    assert (att[1, :, :, 3:] == 0).all()


@pytest.mark.parametrize("attention", ["sdpa", "plain"])
def test_padding_does_not_change_the_real_positions(attention):
    model = random_tiny_bert(attention)
    lengths = [10, 3, 7]
    ids, mask = padded_batch(TINY["vocab_size"], lengths)
    with torch.no_grad():
        batched = model(ids, mask)
        for row, n in enumerate(lengths):
            alone = model(ids[row : row + 1, :n])  # no padding, no mask
            assert (batched[row, :n] - alone[0]).abs().max() < TOL


def test_key_mask_takes_a_zero_one_mask_and_padding_keys_do_not_leak():
    model = random_tiny_bert()
    ids, mask = padded_batch(TINY["vocab_size"], [5, 8])
    assert torch.equal(key_mask(mask), key_mask(mask.float())) and key_mask(torch.ones_like(mask)) is None
    x = model.embed(ids)
    noisy = x.clone()
    noisy[0, 5:] += 100  # change only the padded positions of row 0
    with torch.no_grad():
        out, out_noisy = model.blocks[0](x, key_mask(mask)), model.blocks[0](noisy, key_mask(mask.float()))
    assert (out[0, :5] - out_noisy[0, :5]).abs().max() < TOL
