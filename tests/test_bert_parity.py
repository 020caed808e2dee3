"""tinydact's encoder computes what `transformers.BertModel` computes, on the same weights.

The real MiniLM checkpoint (../shared) is compared to 1e-5 in fp32; a tiny random model,
written in every layout we claim to read, needs no shared files."""

from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tinydact.bert import Bert, BertConfig, bert_state_for_hf, key_mask

transformers = pytest.importorskip("transformers")

MINILM = Path(__file__).resolve().parents[1] / ".." / "shared" / "models" / "all-MiniLM-L6-v2"
needs_minilm = pytest.mark.skipif(not MINILM.is_dir(), reason="../shared/models/all-MiniLM-L6-v2 is absent")
TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=40)  # fmt: skip
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
# The real checkpoint
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
    torch.manual_seed(0)
    ours = Bert(BertConfig.from_dict(TINY)).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.3)
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
