"""Training in two CPU processes (torchrun, gloo) is training in one: the same global batch
gives the same weights, rank 0 alone writes the run folder, and a run continues with
`--resume` under torchrun from a state.pt written by one process."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ctrl_c_on_call

import tinydact.train as train_module
from tinydact.errors import TinydactError
from tinydact.checkpoint import load_checkpoint
from tinydact.train import TrainConfig, train

pytestmark = pytest.mark.slow  # each test launches torchrun: ~15 s

# 12 examples in batches of 11 and 1: the 11 rows split 6 / 5 over two ranks (uneven), and
# the batch of 1 leaves rank 1 without rows (it must still take part in the step).
SETTINGS = dict(task="sst2", phase=2, batch_size=11, max_length=16, lr=1e-3, head_lr=1e-2, warmup=0.0, eval_every=2, save_every=2,
                epochs=3)


def torchrun(*args, procs=2):
    """`tinydact train` under torchrun, in `procs` CPU processes; returns its stdout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}",
           "-m", "tinydact", "train", "--device", "cpu", "--quiet", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def flags(cfg: TrainConfig):
    """The command-line flags that give `cfg` (those that differ from the defaults: an option
    the run does not use is refused on the command line)."""
    args = []
    for k, v in vars(cfg).items():
        name = "--" + k.replace("_", "-")
        if v == getattr(TrainConfig, k):
            continue
        args += [name] if isinstance(v, bool) else [name, str(v)]
    return args


def assert_same_weights(a_dir, b_dir, lr):
    """Equal within 1e-5, except the attention key biases: their exact gradient is zero (the
    softmax ignores a constant added to every score), so what they get is rounding noise,
    which Adam scales to steps of up to lr: they may only differ by that much."""
    a, _ = load_checkpoint(a_dir)
    b, _ = load_checkpoint(b_dir)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(v, w, rtol=0, atol=3 * lr if k.endswith("attn.key.bias") else 1e-5), (k, (v - w).abs().max())


def run_files(out):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*"))


def test_two_processes_train_to_the_weights_of_one(tiny_model_dir, tiny_tsv, tmp_path):
    one = TrainConfig(model=str(tiny_model_dir), train=str(tiny_tsv), dev=str(tiny_tsv), out=str(tmp_path / "one"), **SETTINGS)
    best = train(one, torch.device("cpu"), quiet=True)
    two = TrainConfig(**{**vars(one), "out": str(tmp_path / "two")})
    printed = torchrun(*flags(two))

    assert_same_weights(tmp_path / "one" / "final", tmp_path / "two" / "final", one.lr)
    # every rank returns rank 0's best dev metrics
    reported = [json.loads(line)["best"] for line in printed.splitlines() if line.startswith("{")]
    assert len(reported) == 2 and all(r["accuracy"] == best["accuracy"] and r["step"] == best["step"] for r in reported)
    # rank 0 alone writes: the same files as one process (no partial .tmp files), one log line per evaluation,
    # and the logged training loss is the whole batch's, not rank 0's rows'
    assert run_files(tmp_path / "two") == run_files(tmp_path / "one")
    log1, log2 = ([json.loads(line) for line in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in ("one", "two"))
    assert [r["step"] for r in log2] == [r["step"] for r in log1] == [2, 4, 6]
    for r1, r2 in zip(log1, log2):
        assert r2["train_loss"] == pytest.approx(r1["train_loss"], rel=1e-5)
        assert r2["train_acc"] == pytest.approx(r1["train_acc"], rel=1e-5)
        assert r2["dev"]["accuracy"] == r1["dev"]["accuracy"]


def test_a_run_resumes_under_torchrun(tiny_model_dir, tiny_tsv, tmp_path, monkeypatch):
    # phase 1 on the last block only: the other blocks' answers and all halting units get no
    # gradient (DDP must leave them alone), in batches of 5 (5, 5, 2 rows: splits 3/2, 3/2, 1/1)
    settings = dict(model=str(tiny_model_dir), train=str(tiny_tsv), dev=str(tiny_tsv),
                    **{**SETTINGS, "batch_size": 5, "phase": 1, "blocks": "last"})
    train(TrainConfig(out=str(tmp_path / "straight"), **settings), torch.device("cpu"), quiet=True)

    # in epoch 2: after 3 training batches and the dev evaluation at step 2 (which encodes its
    # batches in evaluate.py: the 4th call here is step 4's batch)
    ctrl_c_on_call(monkeypatch, train_module, "encode_batch", 4)
    with pytest.raises(TinydactError, match=r"interrupted at step 3/9"):
        train(TrainConfig(out=str(tmp_path / "cut"), **settings), torch.device("cpu"), quiet=True)
    torchrun("--resume", "--out", str(tmp_path / "cut"))

    assert_same_weights(tmp_path / "straight" / "final", tmp_path / "cut" / "final", settings["lr"])
    start, _ = load_checkpoint(tiny_model_dir)
    after, _ = load_checkpoint(tmp_path / "cut" / "final")
    unused = [k for k in start.state_dict() if k.startswith(("bert.pooler", "heads.0", "heads.1", "heads.2")) or ".halt." in k]
    assert unused and all(torch.equal(start.state_dict()[k], after.state_dict()[k]) for k in unused)
    assert torch.load(tmp_path / "cut" / "state.pt", weights_only=True)["step"] == 9
