"""A run folder is always resumable, or refused with the command that fixes it: kill -9 and
SIGTERM at every point of a run (before the first resume state, in the middle of each save,
while the heads phase caches), then a plain rerun, `--resume` or `--overwrite`; bad input;
`--overwrite` over a run of the other kind; a folder that mixes both kinds; the log of a
resumed run; options a run would not use; paths of an unknown user's home."""

import json
import shutil
import signal
from pathlib import Path

import pytest
import torch
from conftest import assert_clean, assert_error, edit_tensors, invoke, make_tiny_checkpoint, run_signalled

from tinydact.checkpoint import load_checkpoint

ONE_PHASE = ["--phase", "2", "--task", "sst2", "--batch-size", "4", "--max-length", "16", "--eval-every", "2",
             "--save-every", "3", "--epochs", "3", "--quiet", "--device", "cpu"]  # 9 steps; states at 3, 6, 9
RECIPE = ["--task", "sst2", "--batch-size", "4", "--max-length", "16", "--save-every", "2", "--phase-epochs", "1,1,1",
          "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """(a tiny model, a tiny TSV, and the final/ of each kind of run, uninterrupted)."""
    from conftest import TINY_TSV

    root = tmp_path_factory.mktemp("runs")
    model, data = root / "model", root / "train.tsv"
    make_tiny_checkpoint(model, seed=3)
    data.write_text(TINY_TSV)
    for kind, settings in (("one", ONE_PHASE), ("recipe", RECIPE)):
        assert_clean(invoke("train", "--model", model, "--train", data, "--dev", data, "--out", root / kind, *settings))
    return model, data, {"one": root / "one" / "final", "recipe": root / "recipe" / "final"}


def command(inputs, kind, out):
    model, data, _ = inputs
    return ["train", "--model", model, "--train", data, "--dev", data, "--out", out, *(ONE_PHASE if kind == "one" else RECIPE)]


def assert_same_model(a, b):
    ma, mb = load_checkpoint(a)[0].state_dict(), load_checkpoint(b)[0].state_dict()
    assert list(ma) == list(mb)
    for k in ma:
        assert torch.equal(ma[k], mb[k]), k


def settle(inputs, kind, out, first) -> list:
    """Run `first` ("plain", "resume" or "overwrite") on `out`, then whatever command each
    refusal names, until a run finishes (at most three commands); returns what ran."""
    args = {"plain": command(inputs, kind, out), "resume": ["train", "--resume", "--out", out, "--quiet"],
            "overwrite": [*command(inputs, kind, out), "--overwrite"]}
    ran, how = [], first
    for _ in range(3):
        ran.append(how)
        r = invoke(*args[how])
        if r.code == 0:
            assert_clean(r)
            return ran
        line = assert_error(r)
        how = ("resume" if "--resume" in line and "without --resume" not in line and how != "resume" else
               "plain" if "without --resume" in line or "same command" in line else
               "overwrite" if "--overwrite" in line else None)
        assert how is not None, f"the refusal names no command that fixes it: {line}"
    raise AssertionError(f"no run finished after {ran}")


# (kind of run, where the signal arrives: (module, attribute, what its arguments hold), which call)
POINTS = {
    "before the first state": ("one", ("tinydact.train", "Batches.get", ""), 3),  # log.jsonl and best/ of step 2
    "after a state, before the next": ("one", ("tinydact.train", "Batches.get", ""), 5),  # state 3, log of steps 2 and 4
    "during the first best/ save": ("one", ("tinydact.checkpoint", "replace_folder", "/best"), 1),
    "during the first state save": ("one", ("tinydact.runfolder", "atomic_write", "state.pt"), 1),
    "during the final/ save": ("one", ("tinydact.checkpoint", "replace_folder", "/final"), 1),
    "recipe: during phase1's first best/ save": ("recipe", ("tinydact.checkpoint", "replace_folder", "phase1/best"), 1),
    "recipe: while the heads phase caches": ("recipe", ("tinydact.train", "cache_head_inputs", "caching train"), 1),
    "recipe: during the final copy": ("recipe", ("tinydact.train", "replace_folder", ""), 1),
}


@pytest.mark.slow  # a process per point and signal, then three runs to the end: ~5-8 s each
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "SIGTERM"])
@pytest.mark.parametrize("point", POINTS)
def test_a_signal_at_any_point_leaves_a_folder_that_resumes_or_says_how(inputs, tmp_path, point, sig):
    kind, where, n = POINTS[point]
    cut = tmp_path / "cut"
    r = run_signalled(where, n, sig, *command(inputs, kind, cut))
    finishes = sig == signal.SIGTERM and point == "recipe: during the final copy"  # seconds of copying: the recipe finishes
    assert (r.returncode == 0) == finishes and "Traceback" not in r.stderr, r.stderr
    if finishes:
        assert_same_model(inputs[2][kind], cut / "final")
    elif sig == signal.SIGTERM:  # one line naming the command that continues, or that starts again
        errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "interrupted" in errors[0] and ("--resume" in errors[0] or "same command" in errors[0]), r.stderr
    for first in ("plain", "resume", "overwrite"):
        out = tmp_path / first
        shutil.copytree(cut, out, symlinks=True)
        settle(inputs, kind, out, first)
        assert_same_model(inputs[2][kind], out / "final")
        log = [json.loads(line)["step"] for line in (out / ("log.jsonl" if kind == "one" else "joint/log.jsonl")).read_text().splitlines()]
        assert log == sorted(set(log)), f"steps logged twice: {log}"
        assert not [p.name for p in out.rglob("*") if ".tmp" in p.name or ".old" in p.name]


@pytest.mark.slow  # a process, then a resumed run: ~5 s
def test_a_resumed_run_logs_each_evaluation_once(inputs, tmp_path):
    out = tmp_path / "run"
    run_signalled(("tinydact.train", "Batches.get", ""), 5, signal.SIGKILL, *command(inputs, "one", out))
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [2, 4]  # state: step 3
    with open(out / "log.jsonl", "a") as f:
        f.write('{"step": 6, "dev"')  # half a line, as a kill in the middle of a write leaves
    assert_clean(invoke("train", "--resume", "--out", out, "--quiet"))
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [2, 4, 6, 8, 9]


# ----------------------------------------------------------------------------------------
# Bad input leaves nothing to refuse
# ----------------------------------------------------------------------------------------


def nan_weights(d):
    edit_tensors(d, lambda t: t["dact_heads.0.answer.weight"][0, 0].fill_(float("nan")))


BAD_INPUT = {  # what is broken: (the option it replaces, how to write it, a fragment of the error)
    "training data": ("--train", lambda p: p.write_text("sentence\tlabel\ngood\t7\n"), "label '7' is not one of"),
    "dev data": ("--dev", lambda p: p.write_text("sentence\tlabel\ngood\tfilm\t1\n"), "expected 2 tab-separated columns"),
    "model config": ("--model", lambda p: (p / "config.json").write_text("{oops"), "not valid JSON"),
    "model weights": ("--model", nan_weights, "not finite"),
}


@pytest.mark.parametrize("kind", ["one", "recipe"])
@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_leaves_a_folder_the_fixed_command_runs_in(inputs, tmp_path, case, kind):
    option, breaking, fragment = BAD_INPUT[case]
    out, args = tmp_path / "run", command(inputs, kind, tmp_path / "run")
    good = Path(args[args.index(option) + 1])
    bad = tmp_path / "bad"
    shutil.copytree(good, bad) if good.is_dir() else shutil.copy(good, bad)
    breaking(bad)
    bad_args = [str(bad) if a == good else a for a in args]
    assert_error(invoke(*bad_args), fragment)
    assert not (out / "recipe.json").exists() or case == "model weights"  # the weights are read when the phase loads them
    if kind == "recipe":  # a fixed file in place: --resume with the saved settings works too
        assert_error(invoke("train", "--resume", "--out", out), "nothing to resume" if case != "model weights" else fragment)
    assert_clean(invoke(*args, "--max-steps", "1"))


# ----------------------------------------------------------------------------------------
# --overwrite removes a run of either kind; --resume never mixes them
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("first, then", [("one", "recipe"), ("recipe", "one")])
def test_overwrite_removes_everything_a_run_of_the_other_kind_left(inputs, tmp_path, first, then):
    out = tmp_path / "run"
    assert_clean(invoke(*command(inputs, first, out), "--max-steps", "1", *(["--keep-states"] if first == "recipe" else [])))
    assert_error(invoke(*command(inputs, then, out), "--max-steps", "1"), "already holds a run")
    assert_clean(invoke(*command(inputs, then, out), "--max-steps", "1", "--overwrite"))
    left = sorted(p.name for p in out.iterdir())
    assert left == (["best", "final", "log.jsonl", "state.pt"] if then == "one" else ["final", "heads", "joint", "phase1", "recipe.json"])
    assert_clean(invoke("train", "--resume", "--out", out, "--quiet")) if then == "one" else \
        assert_error(invoke("train", "--resume", "--out", out), "is finished")


@pytest.mark.parametrize("stray", ["recipe.json", "phase1"])
def test_resume_refuses_a_folder_with_files_of_both_kinds(inputs, tmp_path, stray):
    out = tmp_path / "run"
    assert_clean(invoke(*command(inputs, "one", out), "--max-steps", "1"))
    (out / stray).mkdir() if stray == "phase1" else (out / stray).write_text("{}")
    before = sorted(p.name for p in out.iterdir())
    assert_error(invoke("train", "--resume", "--out", out), "files of the whole recipe", "start again with --overwrite")
    assert sorted(p.name for p in out.iterdir()) == before
    assert_clean(invoke(*command(inputs, "one", out), "--max-steps", "1", "--overwrite"))
    assert stray not in [p.name for p in out.iterdir()]


def test_resume_without_a_state_names_the_command_that_starts_again(inputs, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text('{"step": 2}\n')
    assert_error(invoke("train", "--resume", "--out", out), "stopped before its first resume save (log.jsonl)", "without --resume")
    assert_clean(invoke(*command(inputs, "one", out), "--max-steps", "1"))  # what it left is removed, the run starts
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1]


# ----------------------------------------------------------------------------------------
# Options that a run would not use, through the command line
# ----------------------------------------------------------------------------------------


def test_resume_with_settings_is_an_error(inputs, tmp_path):
    out = tmp_path / "run"
    assert_clean(invoke(*command(inputs, "one", out), "--max-steps", "1"))
    for extra, flag in ((["--max-steps", "50", "--tau", "0.9", "--dtype", "bfloat16"], "--dtype"), (["--method", "dact"], "--method")):
        assert_error(invoke("train", "--resume", "--out", out, *extra), f"leave out {flag}")


@pytest.mark.parametrize("extra, fragment", [
    (["--phase", "2", "--distill", "0.5"], "--distill applies to phase 1 with --blocks other than last"),
    (["--phase", "1", "--blocks", "last", "--distill", "0.5"], "this run is --phase 1 --blocks last"),
    (["--phase", "1", "--eval-every", "2", "--dev", None], "--eval-every applies to runs with --dev"),
    (["--phase", "2", "--rule", "tight", "--dev", None], "--rule applies to dev evaluation"),
    (["--head-input", "cls"], "already has heads that read 'mean'"),
])
def test_an_option_the_run_would_not_use_is_an_error(inputs, tmp_path, extra, fragment):
    from tinydact.checkpoint import load_checkpoint as load, save_checkpoint
    from tinydact.model import DACTBert
    from tinydact.tokenizer import Tokenizer

    model_path, data, _ = inputs
    model = tmp_path / "mean"
    old, _ = load(model_path)
    save_checkpoint(DACTBert(old.bert, 2, head_input="mean"), Tokenizer.from_pretrained(model_path), model, ["negative", "positive"], "sst2")
    args = ["train", "--model", model, "--train", data, "--out", tmp_path / "run", "--task", "sst2", "--max-steps", "1", "--quiet"]
    extra = [a for a in extra if a is not None and a != "--dev"]
    assert_error(invoke(*args, *extra), fragment)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------
# Paths in the home folder of a user who does not exist
# ----------------------------------------------------------------------------------------


def test_a_path_in_an_unknown_users_home_is_one_error_line(inputs, tmp_path, monkeypatch):
    model, data, _ = inputs
    nobody = "~no-such-user-of-tinydact/x"
    assert_error(invoke("classify", "good film", "--model", nobody), "cannot find the home folder of ~no-such-user-of-tinydact")
    assert_error(invoke("eval", "--model", nobody, "--data", data), "cannot find the home folder")
    assert_error(invoke("train", "--model", nobody, "--train", data, "--out", tmp_path / "r", "--phase", "1"), "cannot find the home folder")
    assert_error(invoke("eval", "--model", model, "--data", nobody), "data file not found: ~no-such-user")  # taken as written
    assert_error(invoke("train", "--model", model, "--train", nobody, "--out", tmp_path / "r", "--phase", "1"), "data file not found")
    assert_error(invoke("train", "--model", model, "--train", data, "--dev", nobody, "--out", tmp_path / "r", "--phase", "1"),
                 "data file not found")
    monkeypatch.setenv("TINYDACT_HOME", "~no-such-user-of-tinydact")
    assert_error(invoke("classify", "good film", "--model", "some-name"), "cannot find the home folder")
