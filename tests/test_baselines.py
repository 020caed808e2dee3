"""The baselines of baselines.py on tiny random models: each exit rule stops where its
definition says (checked against the rule applied by hand to the full per-block
trajectory), static truncation runs exactly k blocks (counted with hooks on the blocks),
batch compaction changes nothing, PABEE's weighted loss is Σ_j j·L_j / Σ_j j, and
`tinydact train --method` / `tinydact eval --method` do what their help says."""

import json
import math

import pytest
import torch
from conftest import TINY_VOCAB, assert_clean, assert_error, invoke, tiny_config

from tinydact.baselines import check_knob, entropy, predict_exit, training_settings
from tinydact.bert import Bert
from tinydact.checkpoint import load_checkpoint
from tinydact.errors import TinydactError
from tinydact.model import DACTBert
from tinydact.tokenizer import Tokenizer
from tinydact.train import phase1_loss

TEXTS = ["a great movie", "the plot was dull", "good film", "awful acting and a bad story",
         "it is fun but not very good", "bad", "the film is not fun , not fun at all", "great story"]
N = 6


@pytest.fixture(scope="module")
def tiny():
    """A 6-block random model with sharp per-block answers (scaled classifier weights), so
    the entropies spread over (0, log 2) and consecutive blocks sometimes agree."""
    torch.manual_seed(3)
    model = DACTBert(Bert(tiny_config(N)), 2).eval()
    with torch.no_grad():
        for head in model.heads:
            head.answer.weight.mul_(8.0)
    return model, Tokenizer(TINY_VOCAB, max_length=64)(TEXTS)


def per_block_answers(model, enc):
    """y_n for every block n, (B, N, K), by running all blocks."""
    with torch.no_grad():
        xs = model.head_inputs(*enc)  # (B, N, H)
        return torch.stack([head(xs[:, n])[0] for n, head in enumerate(model.heads)], 1)


def expected_exit(method, knob, y):
    """The exit block of each example by the rule's definition, on the full trajectory y (B, N, K)."""
    B, N, _ = y.shape
    out = []
    for b in range(B):
        c = y[b].argmax(-1).tolist()
        for n in range(1, N + 1):
            if method == "static":
                stop = n == knob
            elif method == "deebert":
                stop = entropy(y[b, n - 1 : n]).item() < knob
            else:  # pabee: the t answers y_{n-t+1}..y_n exist and agree
                stop = n >= knob and len(set(c[n - knob : n])) == 1
            if stop or n == N:
                out.append(n)
                break
    return out


KNOBS = [("static", k) for k in range(1, N + 1)] + [("deebert", s) for s in (0.0, 0.05, 0.2, 0.4, 0.6, 10.0)] + \
        [("pabee", t) for t in range(1, N + 1)]


@pytest.mark.parametrize("method,knob", KNOBS)
def test_exit_rule_stops_where_its_definition_says(tiny, method, knob):
    model, enc = tiny
    y = per_block_answers(model, enc)
    labels, probs, layers = predict_exit(model, *enc, method=method, knob=knob)
    assert layers.tolist() == expected_exit(method, knob, y)
    exit_answers = y[torch.arange(len(TEXTS)), layers - 1]  # y_n at each example's exit block
    assert torch.allclose(probs, exit_answers, atol=1e-6)
    assert torch.equal(labels, probs.argmax(-1))


def test_the_knobs_cover_full_depth_and_one_block(tiny):
    model, enc = tiny
    y = per_block_answers(model, enc)
    layers = lambda method, knob: predict_exit(model, *enc, method=method, knob=knob)[2].tolist()  # noqa: E731
    assert layers("deebert", 0.0) == [N] * len(TEXTS)  # entropy is never < 0: full depth
    assert layers("deebert", 10.0) == [1] * len(TEXTS)  # every entropy (≤ log 2) is below: block 1
    assert layers("pabee", 1) == [1] * len(TEXTS)
    for t in range(1, N + 1):  # never before block t
        assert min(layers("pabee", t)) >= t
    assert layers("pabee", N) == [N] * len(TEXTS)
    spread = entropy(y.reshape(-1, 2))
    assert spread.min() < 0.2 < 0.4 < spread.max()  # the fixture does exercise the thresholds in KNOBS
    assert 1 < sum(layers("pabee", 2)) / len(TEXTS) < N


def test_deebert_threshold_zero_runs_full_depth_even_when_certain(tiny):
    """A one-hot answer has entropy exactly 0, and 0 < 0 is false: S = 0 never exits early."""
    model, enc = tiny
    certain = DACTBert(Bert(tiny_config(N)), 2).eval()
    certain.load_state_dict(model.state_dict())
    with torch.no_grad():
        for head in certain.heads:
            head.answer.weight.zero_(), head.answer.bias.copy_(torch.tensor([200.0, 0.0]))
    assert entropy(per_block_answers(certain, enc).reshape(-1, 2)).max() == 0
    assert predict_exit(certain, *enc, method="deebert", knob=0.0)[2].tolist() == [N] * len(TEXTS)
    assert predict_exit(certain, *enc, method="deebert", knob=1e-9)[2].tolist() == [1] * len(TEXTS)


@pytest.mark.parametrize("k", range(1, N + 1))
def test_static_k_runs_exactly_k_blocks(tiny, k):
    model, enc = tiny
    rows = [0] * N
    hooks = [block.register_forward_hook(lambda m, i, o, n=n: rows.__setitem__(n, rows[n] + o.size(0)))
             for n, block in enumerate(model.bert.blocks)]
    try:
        _, _, layers = predict_exit(model, *enc, method="static", knob=k)
    finally:
        for h in hooks:
            h.remove()
    assert rows == [len(TEXTS)] * k + [0] * (N - k)
    assert layers.tolist() == [k] * len(TEXTS)


@pytest.mark.parametrize("method,knob", [("static", 3), ("deebert", 0.2), ("deebert", 0.4), ("pabee", 2), ("pabee", 3), ("dact", None)])
def test_batch_compaction_changes_nothing(tiny, method, knob):
    model, enc = tiny
    tok = Tokenizer(TINY_VOCAB, max_length=64)
    labels, probs, layers = predict_exit(model, *enc, method=method, knob=knob)
    for i, text in enumerate(TEXTS):  # one example at a time: no padding, no compaction
        l1, p1, n1 = predict_exit(model, *tok([text]), method=method, knob=knob)
        assert (l1.item(), n1.item()) == (labels[i].item(), layers[i].item())
        assert torch.allclose(p1[0], probs[i], atol=1e-5)


def test_dact_method_is_predict(tiny):
    model, enc = tiny
    for a, b in zip(predict_exit(model, *enc), model.predict(*enc)):
        assert torch.equal(a, b)


def test_weighted_loss_is_depth_weighted_mean_of_block_losses():
    """Hand-made: heads whose answer ignores the input (z = 0) and has logits (0, log j) at
    block j, so with label 0, L_j = −log(1 / (1 + j)) = log(1 + j)."""
    model = DACTBert(Bert(tiny_config(3)), 2)
    with torch.no_grad():
        for j, head in enumerate(model.heads, start=1):
            head.dense.weight.zero_(), head.dense.bias.zero_(), head.answer.weight.zero_()
            head.answer.bias.copy_(torch.tensor([0.0, math.log(j)]))
    cls, labels = torch.randn(5, 3, 32), torch.zeros(5, dtype=torch.long)
    L = [math.log(2), math.log(3), math.log(4)]
    assert phase1_loss(model, cls, labels, "weighted").item() == pytest.approx((1 * L[0] + 2 * L[1] + 3 * L[2]) / 6)
    assert phase1_loss(model, cls, labels, "all").item() == pytest.approx(sum(L) / 3)
    assert phase1_loss(model, cls, labels, "last").item() == pytest.approx(L[2])
    assert phase1_loss(model, cls, labels, "all-but-last").item() == pytest.approx((L[0] + L[1]) / 2)


def test_knob_errors():
    assert check_knob("pabee", 2.0, N) == 2 and isinstance(check_knob("pabee", 2.0, N), int)
    for method, knob, fragment in [("static", None, "needs --knob"), ("static", 7, "1 to 6"), ("pabee", 1.5, "integer"),
                                   ("deebert", -0.1, ">= 0"), ("dact", 0.3, "no exit knob"),
                                   ("early", 1, "method must be one of dact, static, deebert, pabee, got 'early'")]:
        with pytest.raises(TinydactError, match=fragment):
            check_knob(method, knob, N)


# ----------------------------------------------------------------------------------------
# The command line: train --method, eval --method
# ----------------------------------------------------------------------------------------


def test_training_settings_table():
    assert training_settings("pabee", None) == {"phase": 1, "blocks": "weighted"}
    assert training_settings("deebert", 2) == {"phase": 1, "blocks": "all-but-last", "freeze_backbone": True}
    with pytest.raises(TinydactError, match="two steps"):
        training_settings("deebert", None)
    with pytest.raises(TinydactError, match="one step"):
        training_settings("static", 2)


def test_train_method_maps_to_the_phases(tiny_model_dir, tiny_tsv, tmp_path):
    common = ["--train", tiny_tsv, "--dev", tiny_tsv, "--task", "sst2", "--batch-size", 4, "--max-length", 16,
              "--max-steps", 3, "--quiet", "--device", "cpu"]
    trained = lambda out: json.loads((out / "final" / "config.json").read_text())["dact"]["trained"]  # noqa: E731

    assert_clean(invoke("train", "--method", "pabee", "--model", tiny_model_dir, "--out", tmp_path / "pabee", *common))
    assert trained(tmp_path / "pabee") | {"step": 0} == {"phase": 1, "blocks": "weighted", "method": "pabee", "step": 0}

    # DeeBERT stage 2 from a (here random) stage 1: only the classifiers of blocks 1..N-1 change
    assert_clean(invoke("train", "--method", "deebert", "--phase", 2, "--model", tiny_model_dir,
                        "--out", tmp_path / "deebert", "--cache", tmp_path / "cls.pt", "--head-lr", 0.05, *common))
    assert trained(tmp_path / "deebert")["blocks"] == "all-but-last"
    before, _ = load_checkpoint(tiny_model_dir)
    after, _ = load_checkpoint(tmp_path / "deebert" / "final")
    assert (tmp_path / "cls.pt").is_file()  # the frozen backbone's states were cached
    assert all(torch.equal(v, w) for v, w in zip(before.bert.state_dict().values(), after.bert.state_dict().values()))
    assert all(torch.equal(v, w) for v, w in zip(before.heads[-1].state_dict().values(), after.heads[-1].state_dict().values()))
    assert not torch.equal(before.heads[0].answer.weight, after.heads[0].answer.weight)

    assert_error(invoke("train", "--method", "deebert", "--model", tiny_model_dir, "--out", tmp_path / "x", *common), "two steps")
    assert_error(invoke("train", "--method", "static", "--blocks", "last", "--model", tiny_model_dir, "--out", tmp_path / "y", *common),
                 "--method static sets --blocks all")


def test_eval_method_and_knob(tiny_model_dir, tiny_tsv):
    base = ["eval", "--model", tiny_model_dir, "--data", tiny_tsv, "--task", "sst2", "--device", "cpu", "--json"]
    out, _ = assert_clean(invoke(*base, "--method", "static", "--knob", 2))
    r = json.loads(out)
    assert r["avg_blocks"] == 2 and r["histogram"] == [0, 12, 0, 0] and r["method"] == "static" and r["knob"] == 2
    assert r["flops_ratio"] < 0.6
    out, _ = assert_clean(invoke(*base, "--method", "deebert", "--knob", 0))
    assert json.loads(out)["avg_blocks"] == 4
    out, _ = assert_clean(invoke(*base[:-1], "--method", "pabee", "--knob", 2))
    assert "pabee exit, knob 2" in out
    assert_error(invoke(*base, "--method", "pabee"), "needs --knob")
