"""The device paths: every test here runs on the CPU and, where `torch.cuda.is_available()`,
on CUDA too (skipped, and said so, where there is no GPU). Exactness of early exit on the
device, classify / eval / train through the command line, a model trained on the device
saved and loaded back, and the device's outputs against the CPU's.
`benchmarks/gpu_check.sh` runs these with a short real training on a GPU machine."""

import json

import pytest
import torch
from conftest import TINY_TSV, assert_clean, assert_rows_alone_exit_the_same, invoke

from tinydact.checkpoint import load_checkpoint
from tinydact.tokenizer import Tokenizer

TEXTS = ["a great movie", "the plot was dull", "good film", "awful acting and a bad story", "it is fun but not very good",
         "not good .", "the film is not fun", "great story"]


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    return torch.device(request.param)


def run(*args):
    return assert_clean(invoke(*args))[0]


@pytest.mark.parametrize("rule", ["paper", "tight"])
def test_early_exit_on_the_device_equals_full_depth(early_model_dir, device, rule):
    model, _ = load_checkpoint(early_model_dir)
    model.to(device)
    enc = [t.to(device) for t in Tokenizer.from_pretrained(early_model_dir)(TEXTS)]
    labels, probs, blocks = model.predict(*enc, rule=rule)
    full_labels, _, full_blocks = model.predict(*enc, halt=False)
    assert torch.equal(labels, full_labels) and (full_blocks == 6).all()
    assert blocks.min() < 6, "some texts should stop early"
    assert_rows_alone_exit_the_same(model, enc, labels, probs, blocks, rule, atol=1e-5)


def test_device_outputs_match_the_cpu(early_model_dir, device):
    model, _ = load_checkpoint(early_model_dir)
    enc = Tokenizer.from_pretrained(early_model_dir)(TEXTS)
    a_cpu = model(*enc)[0]
    a_dev = model.to(device)(*(t.to(device) for t in enc))[0].cpu()
    assert (a_cpu - a_dev).abs().max() < 1e-4


def test_classify_and_eval_on_the_device(early_model_dir, device, tmp_path):
    rows = [json.loads(line) for line in run("classify", *TEXTS, "--model", early_model_dir, "--device", device.type, "--json").splitlines()]
    cpu = [json.loads(line) for line in run("classify", *TEXTS, "--model", early_model_dir, "--device", "cpu", "--json").splitlines()]
    assert [(r["label"], r["blocks"]) for r in rows] == [(r["label"], r["blocks"]) for r in cpu]
    data = tmp_path / "dev.tsv"
    data.write_text(TINY_TSV)
    r = json.loads(run("eval", "--model", early_model_dir, "--data", data, "--device", device.type, "--json"))
    assert r["device"] == device.type and r["examples"] == 12


def test_a_model_trained_on_the_device_saves_and_loads(early_model_dir, device, tmp_path):
    data = tmp_path / "train.tsv"
    data.write_text(TINY_TSV)
    out = tmp_path / "run"
    run("train", "--model", early_model_dir, "--train", data, "--dev", data, "--out", out, "--task", "sst2", "--batch-size", 4,
        "--max-length", 16, "--max-steps", 3, "--quiet", "--device", device.type)
    model, _ = load_checkpoint(out / "final")  # on the CPU
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    rows = [json.loads(line) for line in run("classify", *TEXTS, "--model", out / "final", "--device", device.type, "--json").splitlines()]
    assert len(rows) == len(TEXTS)
