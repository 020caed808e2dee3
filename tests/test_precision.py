"""Reduced precision: a backbone in bfloat16 with the DACT modules, the recursion and the
halting test in float32. In float32, halting gives exactly the full-depth predictions. In
bfloat16 the backbone's rounding depends on the batch's shape, which batch compaction
changes, so halting and full depth can differ, but only on a near-tie of a_N (within twice
`BF16_SHAPE_ROUNDING`). An fp16 checkpoint loads into any dtype; bfloat16 autocast training
follows float32 training closely."""

import json

import pytest
import torch
from conftest import GLUE, TINY_TSV, assert_clean, assert_error, invoke

import tinydact
from tinydact.checkpoint import load_checkpoint
from tinydact.data import read_examples
from tinydact.errors import TinydactError
from tinydact.train import TrainConfig, train

TEXTS = ["a great movie", "the plot was dull", "good film", "awful acting and a bad story", "it is fun but not very good",
         "not good .", "the film is not fun", "great story", "bad film", "fun , fun and fun"]


@pytest.mark.parametrize("rule", ["paper", "tight"])
def test_bfloat16_halting_equals_bfloat16_full_depth(early_model_dir, rule):
    clf = tinydact.load(early_model_dir, dtype="bfloat16")
    assert clf.model.bert.embeddings.word.weight.dtype == torch.bfloat16
    assert clf.model.heads[0].answer.weight.dtype == torch.float32  # the DACT modules stay float32
    halted, full = clf(TEXTS, rule=rule), clf(TEXTS, rule=rule, halt=False)
    assert [r["label"] for r in halted] == [r["label"] for r in full]
    assert min(r["blocks"] for r in halted) < 6 and all(r["blocks"] == 6 for r in full)
    one_by_one = [clf([t], rule=rule)[0] for t in TEXTS]  # no batch compaction
    assert [(r["label"], r["blocks"]) for r in one_by_one] == [(r["label"], r["blocks"]) for r in halted]


def test_bfloat16_stays_close_to_float32(early_model_dir):
    f32, b16 = tinydact.load(early_model_dir), tinydact.load(early_model_dir, dtype="bfloat16")
    for a, b in zip(f32(TEXTS, halt=False), b16(TEXTS, halt=False)):
        assert max(abs(a["probs"][k] - b["probs"][k]) for k in a["probs"]) < 0.05


def test_float16_is_for_cuda_only_and_other_dtypes_are_an_error(early_model_dir):
    with pytest.raises(TinydactError, match="the dtype must be one of float32, bfloat16, float16, got 'float64'"):
        tinydact.load(early_model_dir, dtype="float64")
    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    with pytest.raises(TinydactError, match="float16 runs on CUDA only"):
        tinydact.load(early_model_dir, dtype="float16")
    assert_error(invoke("classify", "good film", "--model", early_model_dir, "--dtype", "float16"), "Error: float16 runs on CUDA only")


def test_the_shipped_fp16_checkpoint_runs_in_every_cpu_dtype():
    sentences = ["a gripping, beautiful film", "a dull, boring and badly acted mess"]
    for dtype in ("float32", "bfloat16"):
        assert [r["label"] for r in tinydact.load(dtype=dtype)(sentences)] == ["positive", "negative"]


# How far the backbone's bfloat16 rounding moves a_N when only the batch's shape changes
# (rows and padded length: what batch compaction changes between a halting and a --no-halt
# run). Measured on the shipped model: at most 0.0097 over SST-2 dev and 3,000 training
# sentences, batches of 64 against batches of 17; in float32 the same is below 1.3e-6.
BF16_SHAPE_ROUNDING = 0.02

# Sentences of every length and mood, mixed ones included (near-ties are where bfloat16 bites).
REVIEWS = ["a gripping, beautiful film", "a dull, boring and badly acted mess", "not bad at all", "it is not good",
           "the acting is fine but the story goes nowhere", "i expected more, yet i was not disappointed",
           "a film that is as clever as it is tedious", "an uneven but often charming comedy",
           "the first hour is wonderful ; the last thirty minutes are a chore", "ok", "meh .",
           "it's a movie , with actors , and a plot of sorts", "beautifully shot , emotionally empty",
           "the kind of film that critics love and audiences forget",
           "there are moments of genuine grace in this otherwise clumsy drama about two brothers who "
           "return to the farm where they grew up", "funny in places , though never as funny as it thinks it is",
           "a modest pleasure", "too long , too loud , and yet strangely moving", "worth seeing once",
           "the director has made better films , and worse ones", "a triumph", "an utter failure",
           "neither the best nor the worst of the series", "it made me laugh and then it made me wince"]


def halting_against_full_depth(clf, texts):
    """Halting against --no-halt on the same texts: [(text, margin)] for every prediction that
    differs, with margin |a_N[c1] − a_N[c2]| the top-two gap of the full run's a_N, and the
    largest change of a_N between two batchings of the full run (batch shapes only)."""
    halted, full = clf(texts, batch_size=64), clf(texts, batch_size=64, halt=False)
    other = clf(texts, batch_size=7, halt=False)  # other rows and padded lengths per batch
    shape_change = max(abs(r["probs"][k] - o["probs"][k]) for r, o in zip(full, other) for k in r["probs"])

    def margin(r):
        top, second = sorted(r["probs"].values())[-1:-3:-1]
        return top - second

    return [(t, margin(f)) for t, h, f in zip(texts, halted, full) if h["label"] != f["label"]], shape_change


def check_bfloat16_halting(texts):
    """In bfloat16 a row's x_n depends (by rounding) on the batch's shape, so halting and full
    depth may differ, but only on a near-tie of a_N; in float32 they never differ."""
    differ, shape_change = halting_against_full_depth(tinydact.load(dtype="bfloat16"), texts)
    assert 0 < shape_change <= BF16_SHAPE_ROUNDING  # the effect is real, and no larger than stated
    near_tie = 2 * BF16_SHAPE_ROUNDING  # the two runs' a_N differ by at most the rounding: a flip needs a gap below twice it
    assert all(margin < near_tie for _, margin in differ), differ
    differ, shape_change = halting_against_full_depth(tinydact.load(), texts)
    assert differ == [] and shape_change < 1e-5


def test_bfloat16_halting_differs_from_full_depth_only_on_near_ties():
    check_bfloat16_halting(REVIEWS)


@pytest.mark.slow
def test_shipped_model_on_sst2_dev_in_bfloat16():
    """The real model and the 872 dev sentences: halting and full depth differ at most on
    near-ties in bfloat16, never in float32, and bfloat16 changes few predictions against float32."""
    if not (GLUE / "SST-2" / "dev.tsv").is_file():
        pytest.skip("SST-2 dev is not here")
    texts = [e.text_a for e in read_examples(GLUE / "SST-2" / "dev.tsv")[0]]
    check_bfloat16_halting(texts)
    f32 = [r["label"] for r in tinydact.load()(texts, batch_size=64)]
    b16 = [r["label"] for r in tinydact.load(dtype="bfloat16")(texts, batch_size=64)]
    assert sum(a != b for a, b in zip(f32, b16)) <= 9  # at most 1% of the sentences


def test_cli_dtype(early_model_dir, tmp_path):
    out, err = assert_clean(invoke("classify", *TEXTS[:3], "--model", early_model_dir, "--dtype", "bfloat16", "--json"))
    assert err == "" and len(out.splitlines()) == 3
    data = tmp_path / "dev.tsv"
    data.write_text(TINY_TSV)
    out, err = assert_clean(invoke("eval", "--model", early_model_dir, "--data", data, "--dtype", "bfloat16", "--json"))
    assert err == "" and json.loads(out)["dtype"] == "bfloat16"


@pytest.mark.parametrize("phase", [1, 2])
def test_bfloat16_autocast_training_follows_float32(early_model_dir, tmp_path, phase):
    """A few steps under bfloat16 autocast: float32 weights, a float32 loss, and losses within
    0.05 of the float32 run's at every step (bfloat16 keeps 8 bits of mantissa)."""
    data = tmp_path / "train.tsv"
    data.write_text(TINY_TSV)
    losses = {}
    for dtype in ("float32", "bfloat16"):
        cfg = TrainConfig(model=str(early_model_dir), train=str(data), dev=str(data), out=str(tmp_path / dtype), task="sst2",
                          phase=phase, dtype=dtype, batch_size=4, max_length=16, lr=1e-3, head_lr=1e-2, warmup=0.0,
                          eval_every=1, epochs=2, tau=0.05)
        train(cfg, torch.device("cpu"), quiet=True)
        losses[dtype] = [json.loads(line)["train_loss"] for line in (tmp_path / dtype / "log.jsonl").read_text().splitlines()]
        model, _ = load_checkpoint(tmp_path / dtype / "final")
        assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in model.state_dict().values())
    assert len(losses["float32"]) == 6
    assert max(abs(a - b) for a, b in zip(losses["float32"], losses["bfloat16"])) < 0.05, losses
    assert losses["float32"] != losses["bfloat16"]  # autocast did run in bfloat16
