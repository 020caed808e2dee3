"""Our options on the DACT modules: what they read after each block (`--head-input cls |
cls-norm | mean`) and self-distillation in phase 1 (`--distill`). Exactness of early exit
holds whatever the modules read or how they were trained; checkpoints record the choice, and
checkpoints without it load as they always did."""

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_TSV, TINY_VOCAB, assert_rows_alone_exit_the_same, make_tiny_checkpoint, save_plain_bert, tiny_config

from tinydact.bert import Bert, key_mask
from tinydact.checkpoint import load_checkpoint, save_checkpoint
from tinydact.errors import TinydactError
from tinydact.model import DACTBert
from tinydact.tokenizer import Tokenizer
from tinydact.train import TrainConfig, phase1_loss, recipe

TEXTS = ["a great movie", "the plot was dull and the acting was bad", "good film", "awful acting and a bad story , not fun",
         "it is fun but not very good", "not good .", "the film is not fun", "great story"]


def model_reading(head_input, seed=0):
    torch.manual_seed(seed)
    return DACTBert(Bert(tiny_config(6)), 3, halt_bias=-3.0, head_input=head_input).eval()


def test_mean_reads_the_masked_mean_of_the_token_states():
    model = model_reading("mean")
    ids, mask, types = Tokenizer(TINY_VOCAB)(TEXTS[:2])
    states = model.head_inputs(ids, mask, types)  # (B, N, H)
    x = model.bert.embed(ids, types)
    for n, block in enumerate(model.bert.blocks):
        x = block(x, key_mask(mask))
        for i in range(2):
            T = int(mask[i].sum())
            assert torch.allclose(states[i, n], x[i, :T].mean(0), atol=1e-6)


@pytest.mark.parametrize("head_input", ["cls", "cls-norm", "mean"])
@pytest.mark.parametrize("rule", ["paper", "tight"])
def test_halting_equals_full_depth_whatever_the_heads_read(head_input, rule):
    model = model_reading(head_input, seed=3)
    enc = Tokenizer(TINY_VOCAB)(TEXTS)
    labels, probs, blocks = model.predict(*enc, rule=rule)
    full_labels, full_probs, _ = model.predict(*enc, halt=False)
    a = model(*enc)[0][:, -1]
    assert torch.equal(labels, full_labels) and torch.equal(full_labels, a.argmax(-1))
    assert blocks.min() < 6, "some texts should stop early"
    assert_rows_alone_exit_the_same(model, enc, labels, probs, blocks, rule, atol=1e-6)


@pytest.mark.parametrize("head_input", ["cls-norm", "mean"])
def test_checkpoints_record_what_the_heads_read(tmp_path, head_input):
    model = model_reading(head_input)
    save_checkpoint(model, Tokenizer(TINY_VOCAB), tmp_path / "m", ["a", "b", "c"], "plain")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["dact"]["head_input"] == head_input
    loaded, _ = load_checkpoint(tmp_path / "m")
    assert loaded.head_input == head_input
    enc = Tokenizer(TINY_VOCAB)(TEXTS)
    assert torch.equal(model(*enc)[0], loaded(*enc)[0])


def test_a_checkpoint_without_the_key_reads_cls(tmp_path):
    make_tiny_checkpoint(tmp_path / "old")
    assert "head_input" not in json.loads((tmp_path / "old" / "config.json").read_text())["dact"]
    assert load_checkpoint(tmp_path / "old")[0].head_input == "cls"


def test_distillation_off_is_the_plain_loss_and_on_is_the_formula():
    model = model_reading("cls").train()
    torch.manual_seed(1)
    cls, labels = torch.randn(5, 6, 32), torch.tensor([0, 1, 2, 0, 1])
    torch.manual_seed(2)
    plain = phase1_loss(model.eval(), cls, labels, "all")
    assert phase1_loss(model, cls, labels, "all", distill=0.0).item() == plain.item()
    g, T = 0.9, 3.0
    u = [model.heads[j].logits(cls[:, j]) for j in range(6)]
    teacher = F.softmax(u[5] / T, -1)
    expected = sum((1 - g) * F.cross_entropy(u[j], labels)
                   + g * T * T * (teacher * (teacher.log() - F.log_softmax(u[j] / T, -1))).sum(-1).mean() for j in range(5))
    expected = (expected + F.cross_entropy(u[5], labels)) / 6
    assert phase1_loss(model, cls, labels, "all", distill=g, T=T).item() == pytest.approx(expected.item(), rel=1e-5)


def test_distillation_does_not_pull_the_last_block_towards_the_others():
    """stop-gradient: the KL terms give the last module no gradient; with γ = 1 the last
    block's gradient is that of its own cross-entropy alone."""
    cls, labels = torch.randn(5, 6, 32), torch.tensor([0, 1, 2, 0, 1])
    grads = []
    for distill in (0.0, 1.0):
        model = model_reading("cls")
        loss = phase1_loss(model, cls, labels, "all", distill=distill)
        loss.backward()
        grads.append(model.heads[5].answer.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-7)


def plain_bert(src, dst):
    """A plain BERT directory (no `dact` section) from a tiny DACT-BERT's backbone."""
    save_plain_bert(load_checkpoint(src)[0].bert, dst)
    shutil.copy(src / "vocab.txt", dst / "vocab.txt")
    return dst


def test_the_recipe_with_both_options_keeps_the_guarantee(tmp_path):
    data = tmp_path / "t.tsv"
    data.write_text(TINY_TSV)
    make_tiny_checkpoint(tmp_path / "dact", blocks=6)
    cfg = TrainConfig(model=str(tmp_path / "dact"), train=str(data), dev=str(data), out=str(tmp_path / "run"), task="sst2",
                      batch_size=4, max_length=16, max_steps=4, head_input="mean", distill=0.9, tau=0.05)
    with pytest.raises(TinydactError, match="already has heads that read 'cls'"):
        recipe(cfg, torch.device("cpu"), quiet=True)
    cfg.model = str(plain_bert(tmp_path / "dact", tmp_path / "bert"))  # new heads: they read the token mean
    recipe(cfg, torch.device("cpu"), quiet=True, overwrite=True)
    final, meta = load_checkpoint(tmp_path / "run" / "final")
    assert final.head_input == "mean" and meta["head_input"] == "mean"
    enc = Tokenizer.from_pretrained(tmp_path / "run" / "final")(TEXTS)
    assert torch.equal(final.predict(*enc)[0], final.predict(*enc, halt=False)[0])
    assert math.isfinite(final(*enc)[0].sum().item())
