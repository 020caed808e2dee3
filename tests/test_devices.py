"""The device paths: every test here runs on the CPU and, where `torch.cuda.is_available()`,
on CUDA too (skipped, and said so, where there is no GPU). Exactness of early exit on the
device, classify / eval / train through the command line, a model trained on the device
saved and loaded back, and the device's outputs against the CPU's.
`benchmarks/gpu_check.sh` runs these with a short real training on a GPU machine."""

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_TSV, make_tiny_checkpoint

from tinydact.cli import cli
from tinydact.checkpoint import load_checkpoint
from tinydact.tokenizer import Tokenizer

TEXTS = ["a great movie", "the plot was dull", "good film", "awful acting and a bad story", "it is fun but not very good",
         "not good .", "the film is not fun", "great story"]


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    return torch.device(request.param)


@pytest.fixture(scope="module")
def early_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("dev") / "model"
    make_tiny_checkpoint(path, seed=1, layers=6, halt_bias=-3.0)
    return path


def run(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    return r.output


@pytest.mark.parametrize("rule", ["paper", "tight"])
def test_early_exit_on_the_device_equals_full_depth(early_model, device, rule):
    model, _ = load_checkpoint(early_model)
    model.to(device)
    enc = [t.to(device) for t in Tokenizer.from_pretrained(early_model)(TEXTS)]
    labels, probs, blocks = model.predict(*enc, rule=rule)
    full_labels, _, full_blocks = model.predict(*enc, halt=False)
    assert torch.equal(labels, full_labels) and (full_blocks == 6).all()
    assert blocks.min() < 6, "some texts should stop early"
    for i in range(len(TEXTS)):  # one at a time: batch compaction changes nothing
        one = [t[i : i + 1, : int(enc[1][i].sum())] for t in enc]
        l1, p1, b1 = model.predict(*one, rule=rule)
        assert (l1.item(), b1.item()) == (labels[i].item(), blocks[i].item())
        assert torch.allclose(p1[0], probs[i], atol=1e-5)


def test_device_outputs_match_the_cpu(early_model, device):
    model, _ = load_checkpoint(early_model)
    enc = Tokenizer.from_pretrained(early_model)(TEXTS)
    a_cpu = model(*enc)[0]
    a_dev = model.to(device)(*(t.to(device) for t in enc))[0].cpu()
    assert (a_cpu - a_dev).abs().max() < 1e-4


def test_classify_and_eval_on_the_device(early_model, device, tmp_path):
    rows = [json.loads(line) for line in run("classify", *TEXTS, "--model", early_model, "--device", device.type, "--json").splitlines()]
    cpu = [json.loads(line) for line in run("classify", *TEXTS, "--model", early_model, "--device", "cpu", "--json").splitlines()]
    assert [(r["label"], r["blocks"]) for r in rows] == [(r["label"], r["blocks"]) for r in cpu]
    data = tmp_path / "dev.tsv"
    data.write_text(TINY_TSV)
    r = json.loads(run("eval", "--model", early_model, "--data", data, "--device", device.type, "--json"))
    assert r["device"] == device.type and r["examples"] == 12


def test_a_model_trained_on_the_device_saves_and_loads(early_model, device, tmp_path):
    data = tmp_path / "train.tsv"
    data.write_text(TINY_TSV)
    out = tmp_path / "run"
    run("train", "--model", early_model, "--train", data, "--dev", data, "--out", out, "--task", "sst2", "--batch-size", 4,
        "--max-length", 16, "--max-steps", 3, "--quiet", "--device", device.type)
    model, _ = load_checkpoint(out / "final")  # on the CPU
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    rows = [json.loads(line) for line in run("classify", *TEXTS, "--model", out / "final", "--device", device.type, "--json").splitlines()]
    assert len(rows) == len(TEXTS)
