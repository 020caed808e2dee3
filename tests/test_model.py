"""DACT-BERT end to end on a tiny random model: early exit is exact per example, halted rows
really skip their later blocks, batch compaction keeps input order, checkpoints round-trip."""

import json

import pytest
import torch
import transformers
from conftest import TINY_VOCAB, edit_tensors, make_tiny_checkpoint, tiny_config

from tinydact.bert import Bert
from tinydact.checkpoint import load_checkpoint, save_checkpoint
from tinydact.errors import TinydactError
from tinydact.evaluate import estimate_flops
from tinydact.model import DACTBert
from tinydact.tokenizer import Tokenizer


def random_batch(n, seed=0, max_len=20):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, max_len, (n,), generator=g)
    T = int(lengths.max())
    ids = torch.randint(5, len(TINY_VOCAB), (n, T), generator=g)
    ids[:, 0] = 2  # [CLS]
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    ids = ids * mask
    return ids, mask, torch.zeros_like(ids)


def halting_model(seed=0, blocks=6):
    """A random tiny model whose examples stop at varied blocks: large random weights make the
    [CLS] states depend on the input, sharper answers and halting units make exits provable."""
    torch.manual_seed(seed)
    model = DACTBert(Bert(tiny_config(blocks)), 3, halt_bias=0.0).eval()
    with torch.no_grad():
        for p in model.bert.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.3)
        for head in model.heads:
            head.answer.weight.mul_(4.0)
            head.halt.weight.mul_(4.0)
    return model


@pytest.mark.parametrize("rule", ["paper", "tight"])
def test_prediction_with_halting_equals_full_depth_per_example(rule):
    model = halting_model()
    ids, mask, types = random_batch(200)
    labels, probs, layers = model.predict(ids, mask, types, rule=rule)
    full_labels, full_probs, full_layers = model.predict(ids, mask, types, halt=False)
    a_N = model(ids, mask, types)[0][:, -1]
    assert torch.equal(full_labels, a_N.argmax(-1))
    assert torch.allclose(full_probs, a_N, atol=1e-6)
    assert (full_layers == model.num_blocks).all()
    assert torch.equal(labels, full_labels)
    # the test means something only if some examples stop early and some do not
    assert (layers < model.num_blocks).sum() > 20 and (layers == model.num_blocks).sum() > 0


def test_batch_compaction_keeps_input_order():
    model = halting_model(seed=1)
    ids, mask, types = random_batch(64, seed=3)
    labels, probs, layers = model.predict(ids, mask, types)
    for i in range(ids.size(0)):
        T = int(mask[i].sum())
        l1, p1, n1 = model.predict(ids[i : i + 1, :T], mask[i : i + 1, :T], types[i : i + 1, :T])
        assert l1.item() == labels[i].item() and n1.item() == layers[i].item()
        assert torch.allclose(p1[0], probs[i], atol=1e-5)
    assert len(set(layers.tolist())) > 1


def test_halted_examples_do_not_run_later_blocks():
    model = halting_model(seed=2)
    ids, mask, types = random_batch(50, seed=5)
    rows_per_block = []
    hooks = [b.register_forward_hook(lambda m, inp, out: rows_per_block.append(inp[0].size(0))) for b in model.bert.blocks]
    _, _, layers = model.predict(ids, mask, types)
    for h in hooks:
        h.remove()
    assert sum(rows_per_block) == int(layers.sum())  # one block call per live row, no more
    assert rows_per_block == [int((layers >= n).sum()) for n in range(1, len(rows_per_block) + 1)]
    assert sum(rows_per_block) < 50 * model.num_blocks


def test_training_forward_returns_mixture_and_trajectories():
    model = halting_model()
    ids, mask, types = random_batch(5)
    a, p, y, h = model(ids, mask, types)
    a_N = a[:, -1]
    assert a.shape == (5, 6, 3) and p.shape == (5, 6) and y.shape == (5, 6, 3) and h.shape == (5, 6)
    assert torch.allclose(a_N.sum(-1), torch.ones(5), atol=1e-6)
    assert torch.allclose(p, torch.cumprod(h, 1))


def test_save_load_round_trips_exactly(tmp_path):
    model = make_tiny_checkpoint(tmp_path / "ck", seed=4)
    loaded, meta = load_checkpoint(tmp_path / "ck")
    assert meta["labels"] == ["negative", "positive"] and meta["task"] == "sst2"
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    ids, mask, types = random_batch(8)
    assert torch.equal(model(ids, mask, types)[0], loaded(ids, mask, types)[0])


def test_float16_checkpoint_loads_and_computes_in_float32(tmp_path):
    model = make_tiny_checkpoint(tmp_path / "a")
    save_checkpoint(model, Tokenizer(TINY_VOCAB), tmp_path / "b", ["negative", "positive"], "sst2", dtype=torch.float16)
    loaded, _ = load_checkpoint(tmp_path / "b")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    ids, mask, types = random_batch(8)
    assert torch.allclose(model(ids, mask, types)[0], loaded(ids, mask, types)[0], atol=1e-2)


def test_saved_backbone_loads_in_transformers(tmp_path):
    model = make_tiny_checkpoint(tmp_path / "ck")
    hf = transformers.BertModel.from_pretrained(tmp_path / "ck", add_pooling_layer=True).eval()
    ids, mask, types = random_batch(4)
    with torch.no_grad():
        ours = model.bert(ids, mask, types)
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    real = mask.bool()
    assert (ours - theirs)[real].abs().max() < 1e-5


def test_bad_checkpoints_give_clear_errors(tmp_path):
    make_tiny_checkpoint(tmp_path / "ck")
    with pytest.raises(TinydactError, match="not found"):
        load_checkpoint(tmp_path / "nowhere")
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    (tmp_path / "ck" / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "dact"}))
    with pytest.raises(TinydactError, match="plain BERT checkpoint"):
        load_checkpoint(tmp_path / "ck")
    cfg["dact"]["num_labels"] = 3
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TinydactError, match="num_labels"):
        load_checkpoint(tmp_path / "ck")
    cfg["dact"].update(num_labels=2, head_input="pooler")
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TinydactError, match=r"config\.json: the head input must be one of cls, cls-norm, mean, got 'pooler'"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(TinydactError, match="the head input must be one of"):
        DACTBert(Bert(tiny_config()), 2, head_input="pooler")
    # a head tensor of the wrong shape, named in the message
    make_tiny_checkpoint(tmp_path / "ck2")
    edit_tensors(tmp_path / "ck2", lambda t: t.update({"dact_heads.0.answer.weight": torch.zeros(5, 32)}))
    with pytest.raises(TinydactError, match=r"dact_heads\.0\.answer\.weight.*\(5, 32\).*\(2, 32\)"):
        load_checkpoint(tmp_path / "ck2")
    edit_tensors(tmp_path / "ck2", lambda t: t.pop("dact_heads.0.answer.weight"))
    with pytest.raises(TinydactError, match=r"missing key 'dact_heads\.0\.answer\.weight'"):
        load_checkpoint(tmp_path / "ck2")
    # the key back, and a seventh head the model lacks
    edit_tensors(tmp_path / "ck2", lambda t: t.update({"dact_heads.0.answer.weight": torch.zeros(2, 32),
                                                       "dact_heads.9.answer.weight": torch.zeros(2, 32)}))
    with pytest.raises(TinydactError, match=r"unexpected key 'dact_heads\.9\.answer\.weight'"):
        load_checkpoint(tmp_path / "ck2")
    (tmp_path / "ck2" / "model.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(TinydactError, match="not a valid safetensors file"):
        load_checkpoint(tmp_path / "ck2")


def test_flops_estimate_scales_with_blocks_run():
    cfg = tiny_config()
    one, full = estimate_flops(cfg, 16, 1, 2), estimate_flops(cfg, 16, 4, 2)
    assert one < full < 4.5 * one
    # BERT-base, 128 tokens, 12 blocks: about 22 GFLOPs (the usual 2 x params x tokens + attention)
    from tinydact.bert import BertConfig

    assert 20e9 < estimate_flops(BertConfig(), 128, 12, 2) < 25e9
