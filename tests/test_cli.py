"""`tinydact classify`: what it prints, that it agrees with `DACTBert.predict`, that --explain
shows the halting test that really stopped each text, and that every user mistake ends in
one line `Error: ...` and a non-zero exit, never a traceback.

A few tests run the installed `tinydact` entry point (each pays the ~2 s torch import, so they
are marked slow); the rest call the click command in-process with CliRunner. Every `--help`
runs through the real entry point too, and must not import torch."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_clean, assert_error, broken_copy, edit_json, edit_tensors, invoke, make_tiny_checkpoint, shipped_weights

from tinydact import home
from tinydact.cli import cli
from tinydact.dact import can_halt, halting_bounds
from tinydact.checkpoint import load_checkpoint
from tinydact.tokenizer import Tokenizer

TEXTS = ["a great movie", "the plot was dull", "good film", "awful acting and a bad story", "it is fun but not very good"]
LINE = re.compile(r"^(\S+) +(\d\.\d\d)  blocks (\d+)/(\d+)  (.*)$")  # label  0.97  blocks 3/6  text


def classify_json(*args, input=None):
    out, _ = assert_clean(invoke("classify", *args, "--json", input=input))
    return [json.loads(line) for line in out.splitlines()]


def direct_predict(model_dir, texts, pairs=None, halt=True, rule="paper"):
    model, meta = load_checkpoint(model_dir)
    tok = Tokenizer.from_pretrained(model_dir)
    pred, probs, layers = model.predict(*tok(texts, pairs), halt=halt, rule=rule)
    return [meta["labels"][i] for i in pred.tolist()], probs.max(-1).values.tolist(), layers.tolist()


# ----------------------------------------------------------------------------------------
# The real entry point
# ----------------------------------------------------------------------------------------


def entry_point():
    """The installed `tinydact` script (a dev install has it: its absence is a failure)."""
    exe = Path(sys.executable).with_name("tinydact")
    assert exe.is_file(), f"{exe} is missing: `pip install -e .` installs the tinydact entry point"
    return str(exe)


@pytest.mark.slow  # a process that imports torch: ~2-3 s
def test_entry_point_prints_label_confidence_and_blocks(early_model_dir):
    r = subprocess.run([entry_point(), "classify", "a gripping, beautiful film", "good film", "--model", str(early_model_dir)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    labels, confidences, layers = direct_predict(early_model_dir, ["a gripping, beautiful film", "good film"])
    for line, text, label, conf, n in zip(lines, ["a gripping, beautiful film", "good film"], labels, confidences, layers):
        m = LINE.match(line)
        assert m, line
        assert m.group(1) == label and m.group(5) == text
        assert float(m.group(2)) == pytest.approx(conf, abs=0.006)
        assert (int(m.group(3)), int(m.group(4))) == (n, 6)


@pytest.mark.slow  # a process that imports torch: ~2-3 s
def test_python_m_reads_stdin(tiny_model_dir):
    r = subprocess.run([sys.executable, "-m", "tinydact", "classify", "-", "--json", "--model", str(tiny_model_dir)],
                       input="good film\nbad film\n", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["text"] for line in r.stdout.splitlines()] == ["good film", "bad film"]


@pytest.mark.slow  # processes that import torch: ~2-3 s
def test_entry_point_error_is_one_line(tmp_path):
    r = subprocess.run([entry_point(), "classify", "good film", "--model", str(tmp_path / "missing")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert r.stdout == ""
    (line,) = r.stderr.splitlines()
    assert line.startswith(f"Error: model directory not found: {tmp_path / 'missing'} (")


# ----------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------


def test_json_fields_match_predict(early_model_dir):
    rows = classify_json(*TEXTS, "--model", early_model_dir)
    labels, confidences, layers = direct_predict(early_model_dir, TEXTS)
    assert [r["text"] for r in rows] == TEXTS
    for r, label, conf, n in zip(rows, labels, confidences, layers):
        assert set(r) == {"text", "label", "confidence", "probs", "blocks", "num_blocks"}
        assert r["probs"][label] == pytest.approx(conf, abs=1e-6) and sum(r["probs"].values()) == pytest.approx(1, abs=1e-5)
        assert r["label"] == label and r["blocks"] == n and r["num_blocks"] == 6
        assert r["confidence"] == pytest.approx(conf, abs=1e-6)
    assert min(layers) < 6, "the low halting bias should make some texts stop early"


def test_text_lines(early_model_dir):
    code, out, err, _ = invoke("classify", *TEXTS, "--model", early_model_dir)
    assert code == 0 and err == ""
    rows = classify_json(*TEXTS, "--model", early_model_dir)
    for line, r in zip(out.splitlines(), rows, strict=True):
        m = LINE.match(line)
        assert m and m.group(1) == r["label"] and m.group(5) == r["text"]
        assert m.group(3) == str(r["blocks"]) and float(m.group(2)) == pytest.approx(r["confidence"], abs=0.006)


def test_same_labels_with_and_without_halting(early_model_dir):
    for rule in ("paper", "tight"):
        halted = classify_json(*TEXTS, "--model", early_model_dir, "--rule", rule)
        full = classify_json(*TEXTS, "--model", early_model_dir, "--rule", rule, "--no-halt")
        assert [r["label"] for r in halted] == [r["label"] for r in full]
        assert all(r["blocks"] == 6 for r in full)


def test_stdin_batches_keep_order(early_model_dir):
    lines = TEXTS + ["", "   ", "good film\tbad film"]  # blank lines are skipped; a TAB makes a pair
    stdin = "\n".join(lines) + "\n"
    small = classify_json("-", "--model", early_model_dir, "--batch-size", "2", input=stdin)
    large = classify_json("-", "--model", early_model_dir, input=stdin)
    assert [r["text"] for r in small] == TEXTS + ["good film"]
    assert small[-1]["pair"] == "bad film" and "pair" not in small[0]
    for a, b in zip(small, large, strict=True):
        assert (a["label"], a["blocks"]) == (b["label"], b["blocks"])
        assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-5)


def test_pair_matches_predict_and_warns_for_a_single_sentence_model(tiny_model_dir):
    code, out, err, _ = invoke("classify", "good film", "--pair", "bad film", "--json", "--model", tiny_model_dir)
    assert code == 0
    r = json.loads(out)
    assert (r["text"], r["pair"]) == ("good film", "bad film")
    labels, confidences, layers = direct_predict(tiny_model_dir, ["good film"], ["bad film"])
    assert (r["label"], r["blocks"]) == (labels[0], layers[0]) and r["confidence"] == pytest.approx(confidences[0], abs=1e-6)
    assert "single sentences" in err and "warning" in err


def test_pair_task_model_without_pair_warns(tmp_path):
    path = tmp_path / "rte"
    make_tiny_checkpoint(path, labels=("entailment", "not_entailment"))
    edit_json(path / "config.json", **{"dact.task": "rte"})
    code, out, err, _ = invoke("classify", "good film", "--model", path)
    assert code == 0 and "sentence pairs" in err
    code, out, err, _ = invoke("classify", "good film", "--pair", "a great movie", "--model", path)
    assert code == 0 and err == ""
    assert out.split()[0] in ("entailment", "not_entailment") and "[SEP]" in out


def test_long_text_is_truncated_with_a_notice(tiny_model_dir):
    long = " ".join(["good film"] * 60)  # 120 words: more than the tiny model's 64 positions
    code, out, err, _ = invoke("classify", "good film", long, "--model", tiny_model_dir)
    assert code == 0
    assert len(out.splitlines()) == 2
    assert "text 2 was truncated to the model's maximum of 64 tokens" in err and "text 1" not in err


# ----------------------------------------------------------------------------------------
# --explain: the algorithm made visible
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["paper", "tight"])
def test_explain_shows_the_decision_that_stopped_each_text(early_model_dir, rule):
    rows = classify_json(*TEXTS, "--model", early_model_dir, "--explain", "--rule", rule)
    for r in rows:
        blocks = r["steps"]
        assert [b["n"] for b in blocks] == list(range(1, r["blocks"] + 1))  # one entry per block run
        p_prev, a_prev = 1.0, [0.0, 0.0]
        for b in blocks:
            # the numbers shown follow the DACT recursion ...
            assert b["p_n"] == pytest.approx(b["h_n"] * p_prev, rel=1e-5)
            a_n = [p_prev * y + (1 - p_prev) * a for y, a in zip(b["y_n"], a_prev)]
            assert b["a_n"] == pytest.approx(a_n, abs=1e-6)
            p_prev, a_prev = b["p_n"], b["a_n"]
            # ... and the decision shown is the bounds' comparison, and what happened
            if b["d"] > 0:
                assert b["passes_test"] == (b["top_lower_bound"] > b["runner_up_upper_bound"])
            assert b["stop"] == (b["n"] == r["blocks"])
        assert blocks[-1]["passes_test"]
        assert r["confidence"] == pytest.approx(max(blocks[-1]["a_n"]), abs=1e-6)


def test_explain_without_halting_marks_where_it_would_have_stopped(early_model_dir):
    halted = classify_json(*TEXTS, "--model", early_model_dir)
    full = classify_json(*TEXTS, "--model", early_model_dir, "--explain", "--no-halt")
    for h, f in zip(halted, full):
        assert len(f["steps"]) == 6
        first_pass = next(b["n"] for b in f["steps"] if b["passes_test"])
        assert first_pass == h["blocks"]


def test_explain_text(early_model_dir):
    code, out, err, _ = invoke("classify", "good film", "--model", early_model_dir, "--explain")
    assert code == 0
    (row,) = classify_json("good film", "--model", early_model_dir)
    assert "a_n[c*]·(1 − p_n)^d" in out and "a_n[c'] + p_n·d (paper rule)" in out
    table = [line.split() for line in out.splitlines() if re.match(r"^    \d ", line)]
    assert [int(t[0]) for t in table] == list(range(1, row["blocks"] + 1))
    verdicts = [" ".join(t[t.index(">" if ">" in t else "≤") + 3 :]) for t in table]
    assert verdicts[-1] in ("stop", "last block: stop") and all(v == "go on" for v in verdicts[:-1])


def test_halting_bounds_agree_with_can_halt():
    """The two sides displayed by --explain decide exactly as `can_halt` (away from exact ties)."""
    g = torch.Generator().manual_seed(0)
    a_n = torch.softmax(3 * torch.randn(4000, 3, generator=g, dtype=torch.float64), -1)
    p_n = torch.rand(4000, generator=g, dtype=torch.float64) ** 4  # many small p_n: tests that pass
    for rule in ("paper", "tight"):
        for d in range(1, 7):
            lower, upper, passes = halting_bounds(a_n, p_n, d, rule)
            assert torch.equal(passes, can_halt(a_n, p_n, d, rule))
            clear = (lower - upper).abs() > 1e-9
            assert torch.equal((lower > upper)[clear], can_halt(a_n, p_n, d, rule)[clear])
            assert 0 < can_halt(a_n, p_n, d, rule).sum() < len(p_n)


# ----------------------------------------------------------------------------------------
# Errors: one line, non-zero exit, no traceback
# ----------------------------------------------------------------------------------------


def rename_key(t):
    t["dact_heads.0.surprise.weight"] = t.pop("dact_heads.0.dense.weight")


BROKEN = {
    "no model.safetensors": (lambda p: (p / "model.safetensors").unlink(), "model.safetensors"),
    "no vocab.txt": (lambda p: (p / "vocab.txt").unlink(), "vocab.txt"),
    "no config.json": (lambda p: (p / "config.json").unlink(), "config.json"),
    "bad JSON": (lambda p: (p / "config.json").write_text("{ not json"), "not valid JSON"),
    "bad safetensors bytes": (lambda p: (p / "model.safetensors").write_bytes(b"\x08\0\0\0\0\0\0\0garbage!"), "safetensors"),
    "wrong key": (lambda p: edit_tensors(p, rename_key), "surprise"),
    "wrong shape": (lambda p: edit_tensors(p, lambda t: t.update({"dact_heads.0.answer.weight": torch.zeros(3, 32)})), "shape"),
    "config value of the wrong type": (lambda p: edit_json(p / "config.json", hidden_size="wide"), "'hidden_size' must be a non-negative integer"),
    "no dact section": (lambda p: edit_json(p / "config.json", dact=None), "not a DACT-BERT"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_model_directory(tiny_model_dir, tmp_path, case):
    edit, fragment = BROKEN[case]
    path = broken_copy(tiny_model_dir, tmp_path / "broken", edit)
    assert_error(invoke("classify", "good film", "--model", path), fragment)


def test_missing_model_directory(tmp_path):
    assert_error(invoke("classify", "good film", "--model", tmp_path / "nowhere"), "not found")


@pytest.mark.parametrize(
    "args, stdin, fragment",
    [
        (["", "good film"], None, "text 1 is empty"),
        (["good film", "  \t "], None, "text 2 is empty"),
        ([], None, "no text given"),
        (["-"], "", "no text on standard input"),
        (["-"], "\n  \n", "no text on standard input"),
        (["-", "good film"], None, "only TEXT"),
        (["-"], "good\tfilm\tbad\n", "more than one TAB"),
        (["-"], "good film\t \n", "empty sentence"),
        (["good", "film", "--pair", "bad"], None, "exactly one TEXT"),
        (["good film", "--pair", " "], None, "--pair is empty"),
        (["-", "--pair", "bad"], "good\n", "TAB"),
    ],
)
def test_bad_input(tiny_model_dir, args, stdin, fragment):
    assert_error(invoke("classify", *args, "--model", tiny_model_dir, input=stdin), fragment)


def test_cuda_without_cuda(tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert_error(invoke("classify", "good film", "--model", tiny_model_dir, "--device", "cuda"), "CUDA is not available")


def test_missing_default_model_says_how_to_pass_one(tmp_path, monkeypatch):
    monkeypatch.setattr(home, "shipped_model_places", lambda: [tmp_path / "weights"])
    assert_error(invoke("classify", "good film"), "no default model", "--model")


# ----------------------------------------------------------------------------------------
# The shipped default model (weights/)
# ----------------------------------------------------------------------------------------


def test_default_model_gets_obvious_sentiment_right():
    shipped_weights()
    positive = ["a gripping, beautiful film", "one of the best movies of the year, wonderful acting"]
    negative = ["a dull, boring and badly acted mess", "the worst film i have seen in years"]
    rows = classify_json(*positive, *negative)
    assert [r["label"] for r in rows] == ["positive"] * len(positive) + ["negative"] * len(negative)


def test_default_model_files_are_complete():
    path = shipped_weights()
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"):
        assert (path / name).is_file(), name
    model, meta = load_checkpoint(path)
    assert meta["labels"] == ["negative", "positive"]


# ----------------------------------------------------------------------------------------
# --help without torch; eval's defaults: the shipped model, the checkpoint's own method
# ----------------------------------------------------------------------------------------


def imported_modules(*args) -> set:
    """The modules `python -X importtime -m tinydact ARGS` imports (the real entry point)."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "tinydact", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("command", ["", *cli.commands])
def test_every_help_answers_without_importing_torch(command):
    modules = imported_modules(*([command] if command else []), "--help")
    assert "click" in modules and "torch" not in modules and not any(m.startswith("torch.") for m in modules)


def test_train_help_gives_the_default_tau_and_the_authors():
    _, out, _, _ = invoke("train", "--help")
    text = " ".join(out.split())
    assert "--tau FLOAT RANGE" in text and "[default: 0.1; x>=0.0]" in text and "authors' default, 1e-3" in text


def test_eval_defaults_to_the_shipped_model_and_its_method(tiny_tsv):
    path = shipped_weights()
    assert json.loads((path / "config.json").read_text())["dact"]["trained"]["phase"] == 2  # a DACT model, read by the table
    code, out, err, _ = invoke("eval", "--data", tiny_tsv, "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["num_blocks"] == 6 and r["rule"] == "paper" and "method" not in r  # DACT's own exit on weights/
