"""Reduced precision: a backbone in bfloat16 with the DACT modules, the recursion and the
halting test in float32. Exactness holds relative to the model that is run (halting and
full depth give the same predictions at the same dtype); an fp16 checkpoint loads into any
dtype; bfloat16 autocast training follows float32 training closely."""

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import GLUE, TINY_TSV, make_tiny_checkpoint

import tinydact
from tinydact.checkpoint import load_checkpoint
from tinydact.cli import cli
from tinydact.data import read_examples
from tinydact.errors import TinydactError
from tinydact.train import TrainConfig, train

TEXTS = ["a great movie", "the plot was dull", "good film", "awful acting and a bad story", "it is fun but not very good",
         "not good .", "the film is not fun", "great story", "bad film", "fun , fun and fun"]


@pytest.fixture(scope="module")
def early_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("bf16") / "model"
    make_tiny_checkpoint(path, seed=1, layers=6, halt_bias=-3.0)
    return path


@pytest.mark.parametrize("rule", ["paper", "tight"])
def test_bfloat16_halting_equals_bfloat16_full_depth(early_model, rule):
    clf = tinydact.load(early_model, dtype="bfloat16")
    assert clf.model.bert.embeddings.word.weight.dtype == torch.bfloat16
    assert clf.model.heads[0].answer.weight.dtype == torch.float32  # the DACT modules stay float32
    halted, full = clf(TEXTS, rule=rule), clf(TEXTS, rule=rule, halt=False)
    assert [r["label"] for r in halted] == [r["label"] for r in full]
    assert min(r["blocks"] for r in halted) < 6 and all(r["blocks"] == 6 for r in full)
    one_by_one = [clf([t], rule=rule)[0] for t in TEXTS]  # no batch compaction
    assert [(r["label"], r["blocks"]) for r in one_by_one] == [(r["label"], r["blocks"]) for r in halted]


def test_bfloat16_stays_close_to_float32(early_model):
    f32, b16 = tinydact.load(early_model), tinydact.load(early_model, dtype="bfloat16")
    for a, b in zip(f32(TEXTS, halt=False), b16(TEXTS, halt=False)):
        assert max(abs(a["probs"][k] - b["probs"][k]) for k in a["probs"]) < 0.05


def test_float16_is_for_cuda_only_and_other_dtypes_are_an_error(early_model):
    with pytest.raises(TinydactError, match="the dtype must be one of float32, bfloat16, float16, got 'float64'"):
        tinydact.load(early_model, dtype="float64")
    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    with pytest.raises(TinydactError, match="float16 runs on CUDA only"):
        tinydact.load(early_model, dtype="float16")
    r = CliRunner().invoke(cli, ["classify", "good film", "--model", str(early_model), "--dtype", "float16"])
    assert r.exit_code == 1 and "Error: float16 runs on CUDA only" in r.output


def test_the_shipped_fp16_checkpoint_runs_in_every_cpu_dtype():
    sentences = ["a gripping, beautiful film", "a dull, boring and badly acted mess"]
    for dtype in ("float32", "bfloat16"):
        assert [r["label"] for r in tinydact.load(dtype=dtype)(sentences)] == ["positive", "negative"]


def test_shipped_model_on_sst2_dev_in_bfloat16():
    """The real model and the 872 dev sentences: halting and full depth agree in bfloat16,
    and bfloat16 changes few predictions against float32."""
    if not (GLUE / "SST-2" / "dev.tsv").is_file():
        pytest.skip("SST-2 dev is not here")
    texts = [e.text_a for e in read_examples(GLUE / "SST-2" / "dev.tsv")[0]]
    b16 = tinydact.load(dtype="bfloat16")
    halted, full = b16(texts, batch_size=64), b16(texts, batch_size=64, halt=False)
    assert [r["label"] for r in halted] == [r["label"] for r in full]
    f32 = [r["label"] for r in tinydact.load()(texts, batch_size=64)]
    assert sum(a != r["label"] for a, r in zip(f32, halted)) <= 9  # at most 1% of the sentences


def test_cli_dtype(early_model, tmp_path):
    r = CliRunner().invoke(cli, ["classify", *TEXTS[:3], "--model", str(early_model), "--dtype", "bfloat16", "--json"])
    assert r.exit_code == 0 and len(r.output.splitlines()) == 3
    data = tmp_path / "dev.tsv"
    data.write_text(TINY_TSV)
    r = CliRunner().invoke(cli, ["eval", "--model", str(early_model), "--data", str(data), "--dtype", "bfloat16", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["dtype"] == "bfloat16"


@pytest.mark.parametrize("phase", [1, 2])
def test_bfloat16_autocast_training_follows_float32(early_model, tmp_path, phase):
    """A few steps under bfloat16 autocast: float32 weights, a float32 loss, and losses within
    0.05 of the float32 run's at every step (bfloat16 keeps 8 bits of mantissa)."""
    data = tmp_path / "train.tsv"
    data.write_text(TINY_TSV)
    losses = {}
    for dtype in ("float32", "bfloat16"):
        cfg = TrainConfig(model=str(early_model), train=str(data), dev=str(data), out=str(tmp_path / dtype), task="sst2",
                          phase=phase, dtype=dtype, batch_size=4, max_length=16, lr=1e-3, head_lr=1e-2, warmup=0.0,
                          eval_every=1, epochs=2, tau=0.05)
        train(cfg, torch.device("cpu"), quiet=True)
        losses[dtype] = [json.loads(line)["train_loss"] for line in (tmp_path / dtype / "log.jsonl").read_text().splitlines()]
        model, _ = load_checkpoint(tmp_path / dtype / "final")
        assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in model.state_dict().values())
    assert len(losses["float32"]) == 6
    assert max(abs(a - b) for a, b in zip(losses["float32"], losses["bfloat16"])) < 0.05, losses
    assert losses["float32"] != losses["bfloat16"]  # autocast did run in bfloat16
