"""Misuse, tried as a careful user would: bad inputs, bad checkpoints, bad options, interrupts
and concurrent runs, through the command line. For every case: a non-zero exit with exactly
one `Error:` line and no traceback, or a documented clean outcome; never `NaN` in the output;
and a run folder whose `best/`, `final/` and `state.pt` stay consistent and loadable."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_TSV, assert_clean, assert_error, broken_copy, edit_json, edit_tensors, invoke, make_tiny_checkpoint

import tinydact.checkpoint as checkpoint_module
from tinydact.checkpoint import load_checkpoint


def strict_json(line):
    def reject(constant):
        raise AssertionError(f"{constant} in JSON output")

    return json.loads(line, parse_constant=reject)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "model"
    make_tiny_checkpoint(path, seed=2)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults-data") / "train.tsv"
    path.write_text(TINY_TSV)
    return path


def editing(name, **changes):
    """An edit of the model folder's JSON file `name` (conftest's edit_json), for `broken`."""
    return lambda d: edit_json(d / name, **changes)


def edit_vocab(change):
    def edit(d):
        lines = (d / "vocab.txt").read_text().splitlines()
        (d / "vocab.txt").write_text("\n".join(change(lines)) + "\n")

    return edit


def nan_weights(d):
    edit_tensors(d, lambda t: t["dact_heads.0.answer.weight"][0, 0].fill_(float("nan")))


# ----------------------------------------------------------------------------------------
# classify: text input
# ----------------------------------------------------------------------------------------

TEXT_CASES = {
    "no text": ([], None, "no text given"),
    "empty text": ([""], None, "text 1 is empty"),
    "spaces only": (["good film", "   "], None, "text 2 is empty"),
    "zero-width only": (["\u200b\u200d\ufeff"], None, "text 1 is empty"),
    "replacement characters only": (["\ufffd\ufffd"], None, "text 1 is empty"),
    "control characters only": (["\x01\x02\x7f"], None, "text 1 is empty"),
    "empty --pair": (["good film", "--pair", " "], None, "--pair is empty"),
    "--pair with two texts": (["good film", "bad film", "--pair", "x"], None, "exactly one TEXT"),
    "- with other texts": (["-", "good film"], None, "must be the only TEXT"),
    "--pair with stdin": (["-", "--pair", "x"], "good film\n", "TAB separates"),
    "stdin empty": (["-"], "", "no text on standard input"),
    "stdin blank lines only": (["-"], "\n  \n\t\n", "no text"),
    "stdin two TABs": (["-"], "a\tb\tc\n", "line 1 of standard input has more than one TAB"),
    "stdin empty pair side": (["-"], "good film\t \n", "line 1 of standard input has an empty sentence"),
    "stdin zero-width line": (["-"], "good film\n\u200b\n", "line 2 of standard input has nothing to read"),
    "stdin not UTF-8": (["-"], b"good film\nbad \xff film\n", "line 2 of standard input is not UTF-8"),
    "stdin Latin-1": (["-"], "caf\xe9\n".encode("latin-1"), "line 1 of standard input is not UTF-8"),
}


@pytest.mark.parametrize("case", TEXT_CASES)
def test_bad_text_input_is_one_error_line(model_dir, case):
    args, stdin, fragment = TEXT_CASES[case]
    assert_error(invoke("classify", *args, "--model", model_dir, input=stdin), fragment)


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\x0b"])
def test_a_line_is_cut_at_newlines_only(model_dir, separator):
    out, _ = assert_clean(invoke("classify", "-", "--model", model_dir, "--json", input=f"good{separator}film\nbad film\n"))
    rows = [strict_json(line) for line in out.rstrip("\n").split("\n")]  # JSON lines: records end at \n
    assert [r["text"] for r in rows] == [f"good{separator}film", "bad film"]


def test_crlf_line_endings_read_like_lf(model_dir):
    lf = assert_clean(invoke("classify", "-", "--model", model_dir, "--json", input="good film\nbad film\n"))[0]
    crlf = assert_clean(invoke("classify", "-", "--model", model_dir, "--json", input="good film\r\nbad film\r\n"))[0]
    assert lf == crlf


@pytest.mark.slow  # a process that imports torch: ~2-3 s
def test_undecodable_argv_is_one_error_line(model_dir):
    r = subprocess.run([sys.executable, "-m", "tinydact", "classify", b"caf\xe9 film", "--model", str(model_dir)],
                       capture_output=True, timeout=120)
    err = r.stderr.decode()
    assert r.returncode != 0 and err.splitlines() == ["Error: text 1 is not valid UTF-8 text"], err


# ----------------------------------------------------------------------------------------
# Checkpoints that do not fit
# ----------------------------------------------------------------------------------------

CHECKPOINT_CASES = {
    "missing folder": (lambda d: shutil.rmtree(d), "model directory not found"),
    "a file, not a folder": (lambda d: (shutil.rmtree(d), d.write_text("x")), "is a file"),
    "no config.json": (lambda d: (d / "config.json").unlink(), "no config.json"),
    "config not JSON": (lambda d: (d / "config.json").write_text("{oops"), "not valid JSON"),
    "config a list": (lambda d: (d / "config.json").write_text("[1, 2]"), "does not hold a JSON object"),
    "dact section a string": (editing("config.json", dact="yes"), "the 'dact' section needs"),
    "labels repeated": (editing("config.json", **{"dact.labels": ["a", "a"]}), "distinct label names"),
    "labels not strings": (editing("config.json", **{"dact.labels": [0, 1]}), "distinct label names"),
    "task a number": (editing("config.json", **{"dact.task": 3}), "task must be a string"),
    "hidden_size a string": (editing("config.json", hidden_size="wide"), "'hidden_size' must be a non-negative integer"),
    "num_hidden_layers a bool": (editing("config.json", num_hidden_layers=True), "'num_hidden_layers'"),
    "layer_norm_eps negative": (editing("config.json", layer_norm_eps=-1), "'layer_norm_eps'"),
    "vocab_size zero": (editing("config.json", vocab_size=0), "at least 1"),
    "vocab.txt a line short": (edit_vocab(lambda v: v[:-1]), "vocab.txt has 28 tokens, the model's embedding 29"),
    "vocab.txt a line long": (edit_vocab(lambda v: v + ["extra"]), "vocab.txt has 30 tokens"),
    "vocab.txt shifted by one line": (edit_vocab(lambda v: ["[unused0]"] + v[:-1]), "[PAD] is token 1"),
    "vocab.txt without [CLS]": (edit_vocab(lambda v: [t for t in v if t != "[CLS]"] + ["x"]), "special token [CLS]"),
    "vocab.txt not UTF-8": (lambda d: (d / "vocab.txt").write_bytes(b"\xff\xfe"), "not UTF-8"),
    "model_max_length a string": (editing("tokenizer_config.json", model_max_length="abc"), "model_max_length must be"),
    "do_lower_case a string": (editing("tokenizer_config.json", do_lower_case="yes"), "do_lower_case must be"),
    "weights empty": (lambda d: (d / "model.safetensors").write_bytes(b""), "not a valid safetensors file"),
    "weights garbage": (lambda d: (d / "model.safetensors").write_bytes(os.urandom(256)), "not a valid safetensors file"),
    "weights truncated": (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:5000]),
                          "not a valid safetensors file"),
    "weights with NaN": (nan_weights, "holds values that are not finite numbers"),
    "no weights": (lambda d: (d / "model.safetensors").unlink(), "has no model.safetensors"),
}


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
@pytest.mark.parametrize("command", ["classify", "eval"])
def test_a_checkpoint_that_does_not_fit_is_one_error_line(model_dir, data, tmp_path, case, command):
    edit, fragment = CHECKPOINT_CASES[case]
    bad = broken_copy(model_dir, tmp_path / "broken", edit)
    args = ["classify", "good film"] if command == "classify" else ["eval", "--data", data]
    assert_error(invoke(*args, "--model", bad), fragment)


# ----------------------------------------------------------------------------------------
# Options and data files of classify and eval
# ----------------------------------------------------------------------------------------


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


EVAL_CASES = {
    "--batch-size -1": (["--batch-size", "-1"], None, "--batch-size"),
    "--batch-size 0": (["--batch-size", "0"], None, "--batch-size"),
    "--max-length 1": (["--max-length", "1"], None, "--max-length"),
    "--rule bogus": (["--rule", "bogus"], None, "--rule"),
    "--device gpu": (["--device", "gpu"], None, "--device"),
    "--knob inf": (["--method", "pabee", "--knob", "inf"], None, "finite"),
    "--knob nan": (["--method", "deebert", "--knob", "nan"], None, "finite"),
    "--knob missing": (["--method", "static"], None, "needs --knob"),
    "--knob beyond the blocks": (["--method", "static", "--knob", "9"], None, "from 1 to 4"),
    "--knob with dact": (["--knob", "2"], None, "no exit knob"),
    "--task bogus": (["--task", "sts"], None, "unknown task"),
    "data missing": ([], "missing", "data file not found"),
    "data a folder": ([], "folder", "cannot read data file"),
    "data empty": ([], ("e.tsv", ""), "the file is empty"),
    "data not UTF-8": ([], ("u.tsv", b"sentence\tlabel\ngood\t1\nbad \xff\t0\n"), "line 3 of"),
    "a TAB inside a text": ([], ("t.tsv", "sentence\tlabel\ngood\tfilm\t1\n"), "t.tsv:2: expected 2 tab-separated columns"),
    "a label the model does not know": ([], ("l.tsv", "sentence\tlabel\ngood\t7\n"), "label '7' is not one of"),
    "no examples": ([], ("n.tsv", "sentence\tlabel\n\n"), "no examples"),
}


@pytest.mark.parametrize("case", EVAL_CASES)
def test_eval_rejects_bad_options_and_data(model_dir, data, tmp_path, case):
    args, file, fragment = EVAL_CASES[case]
    if file == "missing":
        data = tmp_path / "missing.tsv"
    elif file == "folder":
        data = tmp_path
    elif file is not None:
        data = write(tmp_path, *file)
    assert_error(invoke("eval", "--model", model_dir, "--data", data, *args), fragment)


# The exit rule eval runs by default is the one the checkpoint was trained for (its config's
# dact.trained: `method`, or for older checkpoints phase and blocks); a rule whose modules were
# never trained, or an option that the rule does not use, is an error.
EVAL_METHOD_CASES = {
    "a pabee checkpoint without --knob": ({"phase": 1, "blocks": "weighted"}, [], "was trained for pabee exits: give its knob, --knob t"),
    "a static checkpoint with --method dact": ({"phase": 1, "blocks": "all"}, ["--method", "dact"],
                                               "a static baseline (phase 1 only): its halting units were never trained"),
    "a recorded deebert checkpoint with --method dact": ({"phase": 1, "blocks": "all-but-last", "method": "deebert"},
                                                         ["--method", "dact"], "evaluate it with --method deebert --knob S"),
    "a plain checkpoint (DeeBERT's stage 1)": ({"phase": 1, "blocks": "last"}, [], "evaluate it with --method static --knob 4"),
    "--rule with deebert": ({}, ["--method", "deebert", "--knob", "0.5", "--rule", "tight"], "deebert exits by its --knob: leave out --rule"),
    "--rule with --no-halt": ({}, ["--no-halt", "--rule", "tight"], "--no-halt runs every block: leave out --rule"),
}


@pytest.mark.parametrize("case", EVAL_METHOD_CASES)
def test_eval_refuses_an_exit_rule_the_checkpoint_was_not_trained_for(model_dir, data, tmp_path, case):
    trained, args, fragment = EVAL_METHOD_CASES[case]
    model = broken_copy(model_dir, tmp_path / "broken", editing("config.json", **{"dact.trained": trained}))
    assert_error(invoke("eval", "--model", model, "--data", data, *args), fragment)


def test_eval_runs_the_checkpoints_own_method_by_default(model_dir, data, tmp_path):
    model = broken_copy(model_dir, tmp_path / "broken", editing("config.json", **{"dact.trained": {"phase": 1, "blocks": "weighted"}}))
    out, _ = assert_clean(invoke("eval", "--model", model, "--data", data, "--knob", "2", "--json"))
    assert strict_json(out)["method"] == "pabee" and strict_json(out)["knob"] == 2


def test_plain_labels_unknown_to_the_model_are_an_error(tmp_path):
    """A model trained on labels '1'/'2' and a dev file labelled 0/1: '0' is no class of the
    model (it used to be read as class id 0)."""
    path = tmp_path / "model"
    make_tiny_checkpoint(path, labels=("1", "2"))
    edit_json(path / "config.json", **{"dact.task": "plain"})
    dev = write(tmp_path, "dev.tsv", "good film\t1\nbad film\t0\n")
    assert_error(invoke("eval", "--model", path, "--data", dev), "dev.tsv:2: label '0' is not one of ['1', '2']")


def test_eval_json_is_strict(model_dir, data):
    out, _ = assert_clean(invoke("eval", "--model", model_dir, "--data", data, "--json"))
    r = strict_json(out)
    assert r["avg_blocks"] >= 1 and r["num_blocks"] == 4


def test_classify_json_is_strict(model_dir):
    out, _ = assert_clean(invoke("classify", "good film", "bad film", "--model", model_dir, "--json", "--explain"))
    for line in out.splitlines():
        r = strict_json(line)
        assert sum(r["probs"].values()) == pytest.approx(1, abs=1e-5) and len(r["steps"]) == r["blocks"]


@pytest.mark.parametrize("args, fragment", [(["--device", "cuda"], "CUDA is not available"), (["--batch-size", "0"], "--batch-size"),
                                            (["--rule", "bogus"], "--rule")])
def test_classify_rejects_bad_options(model_dir, args, fragment):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert_error(invoke("classify", "good film", "--model", model_dir, *args), fragment)


# ----------------------------------------------------------------------------------------
# train: options validated before any work
# ----------------------------------------------------------------------------------------


def train_args(model_dir, data, out, *more):
    return ["train", "--model", model_dir, "--train", data, "--dev", data, "--out", out, "--task", "sst2", "--phase", "2",
            "--batch-size", "4", "--max-length", "16", "--eval-every", "2", "--save-every", "2", "--max-steps", "6",
            "--quiet", "--device", "cpu", *more]


TRAIN_OPTION_CASES = {
    "--batch-size 0": (["--batch-size", "0"], "--batch-size"),
    "--save-every 0": (["--save-every", "0"], "--save-every"),
    "--max-steps -5": (["--max-steps", "-5"], "--max-steps"),
    "--epochs 0": (["--epochs", "0"], "--epochs"),
    "--epochs -3": (["--epochs", "-3"], "--epochs"),
    "--rule bogus": (["--rule", "bogus"], "--rule"),
    "--save-dtype bogus": (["--save-dtype", "bogus"], "--save-dtype"),
    "--save-dtype int8": (["--save-dtype", "int8"], "--save-dtype"),
    "--blocks bogus": (["--blocks", "bogus"], "--blocks"),
    "--phase 3": (["--phase", "3"], "--phase"),
    "--head-lr nan": (["--head-lr", "nan"], "--head-lr"),
    "--lr -1": (["--lr", "-1"], "--lr"),
    "--tau inf": (["--tau", "inf"], "--tau must be a finite number"),
    "--tau-end -1": (["--tau-end", "-1"], "--tau-end"),
    "--warmup 2": (["--warmup", "2"], "--warmup"),
    "--clip 0": (["--clip", "0"], "--clip"),
    "--max-length 1": (["--max-length", "1"], "--max-length"),
    "--eval-every -1": (["--eval-every", "-1"], "--eval-every"),
    "--resume with --overwrite": (["--resume", "--overwrite"], "give one of them"),
    "--device gpu": (["--device", "gpu"], "--device"),
    "--method with a clashing option": (["--method", "pabee", "--blocks", "all"], "--method pabee"),
}


# Options that the chosen run would not use (options.APPLIES): one Error line, before any work.
NOT_APPLYING = {
    "--tau in phase 1": (["--phase", "1", "--tau", "0.2"], "--tau applies to the DACT loss: phase 2 or the recipe"),
    "--tau-end in phase 1": (["--phase", "1", "--tau-end", "0.2"], "--tau-end applies to the DACT loss"),
    "--halt-lr in phase 1": (["--phase", "1", "--halt-lr", "0.1"], "--halt-lr applies to the DACT loss"),
    "--deep-supervision in phase 1": (["--phase", "1", "--deep-supervision", "0.5"], "--deep-supervision applies to the DACT loss"),
    "--freeze-backbone in phase 1": (["--phase", "1", "--freeze-backbone"], "--freeze-backbone applies to phase 2, or phase 1 with"),
    "--rule in phase 1": (["--phase", "1", "--rule", "tight"], "--rule applies to dev evaluation with halting"),
    "--blocks in phase 2": (["--blocks", "last"], "--blocks applies to phase 1 (the recipe sets it itself); this run is --phase 2: leave it out"),
    "--distill in phase 2": (["--distill", "0.5"], "--distill applies to phase 1 with --blocks other than last"),
    "--distill-temperature in phase 2": (["--distill-temperature", "2"], "--distill-temperature applies to --distill"),
    "--distill with --blocks last": (["--phase", "1", "--blocks", "last", "--distill", "0.5"], "this run is --phase 1 --blocks last"),
    "--halt-bias on a model with heads": (["--halt-bias", "1"], "already has heads that read 'cls'"),
    "--head-input on a model with heads": (["--head-input", "mean"], "--head-input applies to new DACT heads"),
    "--shared-classifier on a model with heads": (["--shared-classifier"], "--shared-classifier applies to new DACT heads"),
    "--cache without --freeze-backbone": (["--cache", "c.pt"], "--cache applies to --freeze-backbone"),
    "--lr with --freeze-backbone": (["--freeze-backbone", "--lr", "1e-4"], "this run is --phase 2 with --freeze-backbone"),
    "--phase-epochs with --phase": (["--phase-epochs", "1,1,1"], "--phase-epochs applies to the recipe"),
    "--keep-states with --phase": (["--keep-states"], "--keep-states applies to the recipe"),
    "--tau with the phase --method sets": (["--method", "deebert", "--tau", "0.2"], "this run is --phase 1 --blocks all-but-last"),
    "a setting with --resume": (["--resume", "--lr", "1e-4"], "--resume continues with the run's saved settings: leave out --"),
}


@pytest.mark.parametrize("case", NOT_APPLYING)
def test_an_option_the_run_does_not_use_is_an_error(model_dir, data, tmp_path, case):
    args, fragment = NOT_APPLYING[case]
    assert_error(invoke(*train_args(model_dir, data, tmp_path / "run", *args)), fragment)
    assert not (tmp_path / "run").exists()


def test_the_options_a_run_uses_are_accepted(model_dir, data, tmp_path):
    assert_clean(invoke(*train_args(model_dir, data, tmp_path / "p2", "--tau", "0.2", "--tau-end", "0.3", "--halt-lr", "0.01", "--deep-supervision", "0.5",
                                    "--rule", "tight", "--max-steps", "1")))
    assert_clean(invoke(*train_args(model_dir, data, tmp_path / "p1", "--phase", "1", "--blocks", "all-but-last",
                                    "--freeze-backbone", "--cache", tmp_path / "c.pt", "--distill", "0.5", "--max-steps", "1")))


@pytest.mark.parametrize("case", TRAIN_OPTION_CASES)
def test_train_rejects_bad_options_before_any_work(model_dir, data, tmp_path, case):
    args, fragment = TRAIN_OPTION_CASES[case]
    assert_error(invoke(*train_args(model_dir, data, tmp_path / "run", *args)), fragment)
    assert not (tmp_path / "run" / "state.pt").exists() and not (tmp_path / "run" / "final").exists()


def test_recipe_options_are_checked_too(model_dir, data, tmp_path):
    base = ["train", "--model", model_dir, "--train", data, "--out", tmp_path / "r", "--quiet", "--max-steps", "1"]
    assert_error(invoke(*base, "--phase-epochs", "1,0,1"), "--phase-epochs takes 3 positive numbers")
    assert_error(invoke(*base, "--phase-epochs", "a,b,c"), "--phase-epochs")
    assert_error(invoke(*base, "--epochs", "2"), "--epochs applies to one phase (the recipe: --phase-epochs); this run is the recipe")
    assert_error(invoke(*base, "--tau", "inf"), "--tau must be a finite number")


TRAIN_DATA_CASES = {
    "a TAB inside a plain text": ("p.tsv", "good film\t1\nbad\tfilm\t0\n", "p.tsv:2: expected 2 tab-separated columns (task plain), found 3"),
    "not UTF-8": ("u.tsv", b"good film\t1\n\xff\t0\n", "line 2 of"),
    "empty file": ("e.tsv", "", "the file is empty"),
    "a zero-width text": ("z.tsv", "good film\t1\n\u200b\t0\n", "z.tsv:2: empty text"),
    "form feed inside a text": ("f.tsv", "good\x0cfilm\t1\nbad film\t0\n", None),  # one row, not two
}


@pytest.mark.parametrize("case", TRAIN_DATA_CASES)
def test_training_data_rows_are_read_as_written(model_dir, tmp_path, case):
    from tinydact.data import read_examples

    name, content, fragment = TRAIN_DATA_CASES[case]
    path = write(tmp_path, name, content)
    if fragment is None:
        examples, _, labels = read_examples(path, "plain")
        assert [e.text_a for e in examples] == ["good\x0cfilm", "bad film"] and labels == ["0", "1"]
        return
    args = ["train", "--model", model_dir, "--train", path, "--out", tmp_path / "run", "--task", "plain", "--phase", "1", "--quiet"]
    assert_error(invoke(*args), fragment)


# ----------------------------------------------------------------------------------------
# train: the run folder is never lost
# ----------------------------------------------------------------------------------------


def assert_consistent(out: Path):
    """state.pt, best/ and final/ load; the best the state names is the model in best/."""
    state = torch.load(out / "state.pt", weights_only=True)
    if state["best"] is not None:
        trained = json.loads((out / "best" / "config.json").read_text())["dact"]["trained"]
        assert trained["step"] == state["best"]["step"]
        load_checkpoint(out / "best")
    if (out / "final").exists():
        load_checkpoint(out / "final")
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name or ".old" in p.name], "temporary files left behind"
    for line in (out / "log.jsonl").read_text().splitlines() if (out / "log.jsonl").exists() else []:
        strict_json(line)


def snapshot(out: Path) -> dict:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_a_finished_run_is_not_overwritten(model_dir, data, tmp_path):
    out = tmp_path / "run"
    assert_clean(invoke(*train_args(model_dir, data, out)))
    before = snapshot(out)
    assert_error(invoke(*train_args(model_dir, data, out)), "already holds a run")
    assert snapshot(out) == before
    assert_error(invoke(*train_args(model_dir, data, out, "--phase", "1")), "--resume, or start again with --overwrite")
    assert snapshot(out) == before
    assert_clean(invoke(*train_args(model_dir, data, out, "--overwrite", "--seed", "3")))
    assert snapshot(out) != before
    assert_consistent(out)


def test_a_finished_recipe_is_not_overwritten(model_dir, data, tmp_path):
    out = tmp_path / "recipe"
    args = ["train", "--model", model_dir, "--train", data, "--out", out, "--task", "sst2", "--batch-size", "4",
            "--max-length", "16", "--max-steps", "2", "--quiet"]
    assert_clean(invoke(*args))
    before = snapshot(out)
    assert_error(invoke(*args), "already holds a run (recipe.json, final, phase1, heads, joint)")
    assert snapshot(out) == before
    assert_clean(invoke(*args, "--overwrite"))


def test_a_second_writer_fails_at_once(model_dir, data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(str(holder.pid))  # a training in progress, as far as the lock says
        start = time.perf_counter()
        assert_error(invoke(*train_args(model_dir, data, out)), f"another training (process {holder.pid}) is writing to")
        assert time.perf_counter() - start < 5 and not (out / "state.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    assert_clean(invoke(*train_args(model_dir, data, out)))  # the lock's process is gone: a stale lock is taken over
    assert not (out / ".lock").exists()
    assert_consistent(out)


def test_out_that_is_a_file_fails_before_training(model_dir, data, tmp_path):
    out = write(tmp_path, "run", "not a folder")
    assert_error(invoke(*train_args(model_dir, data, out)), "is a file, not a folder")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_that_is_read_only_fails_before_training(model_dir, data, tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        assert_error(invoke(*train_args(model_dir, data, parent / "run")), "cannot write to")
    finally:
        parent.chmod(0o700)


def test_divergence_stops_the_run_and_saves_nothing_nan(model_dir, data, tmp_path):
    out = tmp_path / "run"
    line = assert_error(invoke(*train_args(model_dir, data, out, "--lr", "1e8", "--head-lr", "1e8", "--max-steps", "20",
                                           "--eval-every", "1", "--save-every", "1")), "training diverged")
    assert "at step" in line
    assert not (out / "final").exists()
    if (out / "state.pt").exists():  # written at a step whose loss was still finite
        state = torch.load(out / "state.pt", weights_only=True)
        assert all(torch.isfinite(v).all() for v in state["model"].values())
        assert_consistent(out)
    if (out / "best").exists():
        load_checkpoint(out / "best")  # refuses NaN weights


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, "folder"])
def test_a_bad_state_is_one_error_line(model_dir, data, tmp_path, content):
    out = tmp_path / "run"
    assert_clean(invoke(*train_args(model_dir, data, out)))
    (out / "state.pt").unlink()
    if content == "folder":
        (out / "state.pt").mkdir()
    else:
        (out / "state.pt").write_bytes(content)
    assert_error(invoke("train", "--resume", "--out", out, "--quiet"), "state.pt")


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, "folder"])
def test_a_bad_cache_is_one_error_line(model_dir, data, tmp_path, content):
    cache = tmp_path / "cls.pt"
    if content == "folder":
        cache.mkdir()
    else:
        cache.write_bytes(content)
    assert_error(invoke(*train_args(model_dir, data, tmp_path / "run", "--freeze-backbone", "--cache", cache)), "cls.pt")


def test_the_cache_follows_the_content_of_data_and_model(model_dir, tmp_path):
    """An edited training file of the same length, or a model retrained in the same folder,
    gets its states computed again (the key covers the bytes, not names and sizes)."""
    from tinydact.train import TrainConfig, cached_head_inputs, load_data_and_model

    train = write(tmp_path, "t.tsv", TINY_TSV)
    model = tmp_path / "m"
    shutil.copytree(model_dir, model)
    cfg = TrainConfig(model=str(model), train=str(train), out=str(tmp_path / "o"), task="sst2", phase=2,
                      freeze_backbone=True, max_length=16, cache=str(tmp_path / "c.pt"))

    def states():
        train_ex, dev_ex, _, _, tok, m = load_data_and_model(cfg, torch.device("cpu"))
        return cached_head_inputs(m, train_ex, dev_ex, tok, cfg, torch.device("cpu"))[0]

    first = states()
    assert torch.equal(states(), first)  # reused
    train.write_text(TINY_TSV.replace("good film", "bad  film"))  # same size, other words
    edited = states()
    assert not torch.equal(edited, first)
    make_tiny_checkpoint(model, seed=9)  # retrained in place
    assert not torch.equal(states(), edited)


def test_an_interrupt_during_a_best_save_finishes_it(model_dir, data, tmp_path, monkeypatch):
    """Ctrl-C arrives while best/ is being written: the save completes, then the run stops
    with its state naming exactly the model in best/."""
    real = checkpoint_module.save_checkpoint
    calls = {"n": 0}

    def interrupted_save(model, tokenizer, path, *args, **kw):
        calls["n"] += 1
        if Path(path).name == "best" and calls["n"] == 1:  # the first best: before it, best/ did not exist
            os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of the save
        return real(model, tokenizer, path, *args, **kw)

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", interrupted_save)
    out = tmp_path / "run"
    assert_error(invoke(*train_args(model_dir, data, out, "--eval-every", "1", "--save-every", "100", "--max-steps", "12",
                                    "--lr", "0", "--head-lr", "0.05")), "interrupted at step")
    assert_consistent(out)
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["best"] is not None and state["step"] < 12


def test_an_exception_during_a_save_leaves_no_temporary_files(model_dir, data, tmp_path, monkeypatch):
    import tinydact.runfolder as runfolder_module

    real = runfolder_module.atomic_write

    def failing(path, write):
        if path.name == "state.pt":
            def half(p):
                p.write_bytes(b"half a state")
                raise OSError(28, "No space left on device")
            return real(path, half)
        return real(path, write)

    monkeypatch.setattr(runfolder_module, "atomic_write", failing)
    out = tmp_path / "run"
    assert_error(invoke(*train_args(model_dir, data, out)), "No space left on device")
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]


@pytest.mark.slow  # a real process, a real SIGTERM, and a resumed run: ~6 s
def test_sigterm_then_resume_through_the_entry_point(model_dir, data, tmp_path):
    """A real process, a real SIGTERM: one Error line naming the resume command, a loadable
    state, and `--resume` finishes the run."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "tinydact", *map(str, train_args(model_dir, data, out, "--max-steps", "0", "--epochs", "100",
                                                                      "--eval-every", "1000"))]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "state.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "interrupted at step" in errors[0] and "--resume" in errors[0], err
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["step"] > 0 and not (out / ".lock").exists()
    assert_error(invoke(*train_args(model_dir, data, out)), "already holds a run")
    assert_clean(invoke("train", "--resume", "--out", out, "--quiet"))
    assert torch.load(out / "state.pt", weights_only=True)["step"] == 300
    assert_consistent(out)


def test_resume_without_anything_to_resume(tmp_path):
    assert_error(invoke("train", "--resume", "--out", tmp_path / "nothing"), "nothing to resume")


@pytest.mark.slow  # two runs and a real kill -9: ~6 s
def test_kill_9_then_resume_gives_the_weights_of_an_uninterrupted_run(model_dir, data, tmp_path):
    """SIGKILL leaves no chance to clean up: a stale lock and whatever state.pt was last
    written. `--resume` takes the lock over and ends at the uninterrupted run's weights."""
    settings = ["--max-steps", "0", "--epochs", "60", "--eval-every", "1000", "--save-every", "5"]
    assert_clean(invoke(*train_args(model_dir, data, tmp_path / "straight", *settings)))
    out = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "tinydact", *map(str, train_args(model_dir, data, out, *settings))],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "state.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    p.kill()
    p.wait()
    assert (out / ".lock").exists() and not (out / "final").exists()
    assert_clean(invoke("train", "--resume", "--out", out, "--quiet"))
    a, _ = load_checkpoint(tmp_path / "straight" / "final")
    b, _ = load_checkpoint(out / "final")
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(v, w, atol=1e-6), k
    assert_consistent(out)
