"""The ablation options of DACT's training: each block's own cross-entropy kept beside the DACT
loss (`--deep-supervision λ`, ours) and one answer classifier shared by every block's head
(`--shared-classifier`, as in the authors' code). The loss term against a hand computation,
λ = 0 as today's loss bit for bit, the heads really sharing in training, and checkpoints that
every reader loads as before (one classifier per head, equal copies)."""

import json

import pytest
import torch
from conftest import TINY_TSV, TINY_VOCAB, assert_clean, assert_error, invoke, make_tiny_checkpoint, save_plain_bert, tiny_config

from tinydact.bert import Bert, read_checkpoint
from tinydact.checkpoint import HEAD_PREFIX, load_checkpoint, save_checkpoint
from tinydact.dact import dact_loss, deep_supervision_loss
from tinydact.errors import TinydactError
from tinydact.model import DACTBert
from tinydact.tokenizer import Tokenizer
from tinydact.train import BatchLoss, TrainConfig, adamw, parameter_groups, recipe

TEXTS = ["a great movie", "the plot was dull and the acting was bad", "good film", "not good ."]


def tiny_model(shared=False, seed=0, blocks=4):
    torch.manual_seed(seed)
    return DACTBert(Bert(tiny_config(blocks)), 3, halt_bias=0.0, shared_classifier=shared)


def batch(seed=1):
    torch.manual_seed(seed)
    return torch.randn(5, 4, 32), torch.tensor([0, 1, 2, 0, 1])  # head inputs (B, N, H), labels (B,)


def heads_phase(**options):
    return TrainConfig(phase=2, freeze_backbone=True, **options)


# ----------------------------------------------------------------------------------------
# --deep-supervision
# ----------------------------------------------------------------------------------------


def test_the_block_term_is_the_mean_of_each_blocks_clamped_nll():
    y = torch.softmax(torch.randn(3, 4, 5), -1)  # (B, N, K)
    y[2, 1] = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])  # y_2[label] = 0 for example 3: clamped at 1e-8
    labels = torch.tensor([4, 0, 2])
    by_hand = 0.0
    for b in range(3):
        for n in range(4):
            by_hand += -torch.log(max(y[b, n, labels[b]], torch.tensor(1e-8))).item()
    assert deep_supervision_loss(y, labels).item() == pytest.approx(by_hand / 12, rel=1e-6)


def test_the_phase_2_loss_adds_lambda_times_the_block_term():
    model = tiny_model().eval()  # no dropout: the two forwards are the same
    xs, labels = batch()
    a, p, y, _ = model.forward_heads(xs)
    expected = dact_loss(a[:, -1], labels, p, 0.1) + 0.5 * deep_supervision_loss(y, labels)
    loss = BatchLoss(model, heads_phase(deep_supervision=0.5))(xs, labels, 0.1)[0]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() > dact_loss(a[:, -1], labels, p, 0.1).item() + 0.1  # the term is there


def test_lambda_0_is_todays_loss_bit_for_bit():
    model = tiny_model().eval()
    xs, labels = batch()
    a, p, _, _ = model.forward_heads(xs)
    a_N = a[:, -1]
    # the DACT loss as it was written before the task term became `answer_nll`
    before = (-torch.log(torch.clamp(a_N.gather(-1, labels.unsqueeze(-1)).squeeze(-1), min=1e-8)) + 0.1 * p.sum(-1)).mean()
    assert torch.equal(dact_loss(a_N, labels, p, 0.1), before)
    assert torch.equal(BatchLoss(model, heads_phase())(xs, labels, 0.1)[0], before)


# ----------------------------------------------------------------------------------------
# --shared-classifier
# ----------------------------------------------------------------------------------------


def test_a_step_moves_every_heads_shared_classifier_alike():
    for shared in (True, False):
        model = tiny_model(shared).train()
        cfg = heads_phase(shared_classifier=shared, deep_supervision=0.5)
        groups = parameter_groups(model, cfg)
        params = [p for g in groups for p in g["params"]]
        assert len({id(p) for p in params}) == len(params), "a shared parameter is listed once"
        before = [h.answer.weight.detach().clone() for h in model.heads]
        optimizer = adamw(groups)
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"]
        xs, labels = batch()
        BatchLoss(model, cfg)(xs, labels, 0.1)[0].backward()
        optimizer.step()
        after = [h.answer.weight.detach() for h in model.heads]
        assert all(not torch.equal(b, a) for b, a in zip(before, after))
        same = all(torch.equal(after[0], a) for a in after[1:])
        assert same == shared, "shared: every head's answer weights equal after the step; else they differ"
        assert not torch.equal(model.heads[0].halt.weight, model.heads[1].halt.weight), "the halting units stay per block"


def test_a_shared_classifier_is_saved_as_equal_copies_and_tied_again_on_load(tmp_path):
    model = tiny_model(shared=True).eval()
    save_checkpoint(model, Tokenizer(TINY_VOCAB), tmp_path / "m", ["a", "b", "c"], "plain")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["dact"]["shared_classifier"] is True
    tensors = read_checkpoint(tmp_path / "m")
    for n in range(4):  # every head's keys, as a reader of one classifier per head expects
        assert torch.equal(tensors[f"{HEAD_PREFIX}{n}.answer.weight"], model.heads[0].answer.weight)
    loaded, _ = load_checkpoint(tmp_path / "m")
    assert loaded.shared_classifier and all(h.answer is loaded.heads[0].answer for h in loaded.heads)
    save_checkpoint(tiny_model(shared=False), Tokenizer(TINY_VOCAB), tmp_path / "plain", ["a", "b", "c"], "plain")
    assert "shared_classifier" not in json.loads((tmp_path / "plain" / "config.json").read_text())["dact"]
    assert not load_checkpoint(tmp_path / "plain")[0].shared_classifier


def test_copies_that_differ_are_refused(tmp_path):
    from safetensors.torch import save_file

    save_checkpoint(tiny_model(shared=True), Tokenizer(TINY_VOCAB), tmp_path / "m", ["a", "b", "c"], "plain")
    tensors = read_checkpoint(tmp_path / "m")
    tensors[f"{HEAD_PREFIX}2.answer.bias"] = tensors[f"{HEAD_PREFIX}2.answer.bias"] + 1
    save_file(tensors, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(TinydactError, match=r"share one classifier, but 'dact_heads\.2\.answer\.bias' differs"):
        load_checkpoint(tmp_path / "m")


def test_a_recipe_with_a_shared_classifier_keeps_it_shared_and_answers_as_untied(tmp_path):
    import tinydact

    data = tmp_path / "t.tsv"
    data.write_text(TINY_TSV)
    bert = save_plain_bert(tiny_model(blocks=6).bert, tmp_path / "bert", Tokenizer(TINY_VOCAB, max_length=64))
    cfg = TrainConfig(model=str(bert), train=str(data), dev=str(data), out=str(tmp_path / "run"), task="sst2", batch_size=4,
                      max_length=16, max_steps=3, shared_classifier=True, deep_supervision=0.5, tau=0.05)
    recipe(cfg, torch.device("cpu"), quiet=True)
    final = tmp_path / "run" / "final"
    tied, meta = load_checkpoint(final)  # refuses copies that differ: every phase kept them one
    assert meta["shared_classifier"] is True and meta["trained"]["deep_supervision"] == 0.5
    untied = DACTBert(Bert(tied.bert.config), 2).eval()  # one classifier per head, as older readers build it
    untied.load_state_dict(tied.state_dict())
    enc = Tokenizer.from_pretrained(final)(TEXTS)
    assert torch.equal(tied(*enc)[0], untied(*enc)[0])
    assert torch.equal(tied.predict(*enc)[1], untied.predict(*enc)[1])
    api = tinydact.load(final)(TEXTS)
    assert [r["label"] for r in api] == [meta["labels"][i] for i in untied.predict(*enc)[0].tolist()]


# ----------------------------------------------------------------------------------------
# The command line: each option where a run uses it, an error elsewhere
# ----------------------------------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path):
    data = tmp_path / "t.tsv"
    data.write_text(TINY_TSV)
    make_tiny_checkpoint(tmp_path / "dact")
    bert = save_plain_bert(tiny_model().bert, tmp_path / "bert", Tokenizer(TINY_VOCAB, max_length=64))
    return tmp_path / "dact", bert, data


@pytest.mark.parametrize("model, extra, fragment", [
    ("dact", ["--phase", "1", "--deep-supervision", "0.5"], "--deep-supervision applies to the DACT loss: phase 2 or the recipe"),
    ("dact", ["--phase", "2", "--shared-classifier"], "already has heads that read 'cls': leave it out"),
    ("bert", ["--phase", "1", "--blocks", "last", "--shared-classifier"], "this run is --phase 1 --blocks last: leave it out"),
    ("bert", ["--method", "pabee", "--shared-classifier"], "--shared-classifier applies to new DACT heads"),
])
def test_the_options_are_refused_where_a_run_does_not_use_them(inputs, tmp_path, model, extra, fragment):
    dact, bert, data = inputs
    args = ["train", "--model", dact if model == "dact" else bert, "--train", data, "--out", tmp_path / "run", "--task", "sst2",
            "--max-steps", "1", "--batch-size", "4", "--max-length", "16", "--quiet"]
    assert_error(invoke(*args, *extra), fragment)
    assert not (tmp_path / "run").exists()


def test_the_options_are_accepted_where_a_run_uses_them(inputs, tmp_path):
    dact, bert, data = inputs
    args = ["train", "--train", data, "--task", "sst2", "--max-steps", "1", "--batch-size", "4", "--max-length", "16", "--quiet"]
    for model, out, extra in ((dact, "p2", ["--phase", "2", "--deep-supervision", "0.5"]),
                              (bert, "p1", ["--phase", "1", "--shared-classifier"])):
        assert_clean(invoke(*args, "--model", model, "--out", tmp_path / out, *extra))
    assert load_checkpoint(tmp_path / "p1" / "final")[0].shared_classifier
