"""What the tests share, one helper per idea:

- where things are: the shipped model in `weights/` (in every clone: a test that needs it fails
  without it), and the optional ../shared folder beside the dev checkout (TINYDACT_HOME points
  there, so library, tutorials and benchmarks find its models and data; a test that needs it
  is skipped, and says so, in a user's clone);
- a tiny random DACT-BERT checkpoint built by hand (a 29-token vocabulary, 4 blocks of width
  32) and a tiny TSV, so that model, CLI and training tests run without any download; a plain
  BERT folder written from any `Bert` (`save_plain_bert`); a folder's JSON fields or tensors
  changed in place (`edit_json`, `edit_tensors`), or in a copy (`broken_copy`);
- a Ctrl-C at the n-th call of a function (`ctrl_c_on_call`), for interrupted runs;
- the command line run in-process (`invoke`) and the two outcomes a run may have: clean
  (`assert_clean`) or one `Error:` line (`assert_error`).

A test whose premise is missing fails; it skips only for "../shared is absent", "no CUDA
here" (or "CUDA is here", for the error a machine without it gives), "root writes into
read-only folders", and, for the offline errors of `download`, "the host is reachable" or "the
resolver hangs"."""

import inspect
import json
import os
import shutil
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from click.testing import CliRunner

# One thread per process, for this process and the ones the tests start (CLI, tutorials,
# torchrun): on a 2-core machine, several processes each spinning 2 OpenMP threads slow each
# other down many times over, and single-threaded runs are the same from one machine to
# another.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights"  # the shipped model (an fp16 DACT-BERT on a MiniLM-L6 backbone)
SHARED = ROOT.parent / "shared"  # beside the dev checkout only
MINILM = SHARED / "models" / "all-MiniLM-L6-v2"
GLUE = SHARED / "data" / "glue"
if SHARED.is_dir():
    os.environ.setdefault("TINYDACT_HOME", str(SHARED))

needs_minilm = pytest.mark.skipif(not (MINILM / "model.safetensors").is_file(),
                                  reason="../shared/models/all-MiniLM-L6-v2 is absent (it only exists beside the dev checkout)")

TINY_WORDS = ["good", "great", "fun", "bad", "awful", "dull", "film", "movie", "a", "the", "is", "was",
              "not", "very", "plot", "acting", "##s", "##ly", ".", ",", "it", "and", "but", "story"]
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + TINY_WORDS


def shipped_weights() -> Path:
    """weights/, the model every clone ships: a test that needs it fails when it is gone."""
    assert (WEIGHTS / "model.safetensors").is_file(), f"{WEIGHTS / 'model.safetensors'} is missing: every clone ships it"
    return WEIGHTS


# A tiny BERT's shape as config.json fields (width 32, 4 attention heads, 2 blocks, 100 token
# ids), for random checkpoints written in transformers' layouts
TINY_BERT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=40)  # fmt: skip


def tiny_config(blocks=4):
    """The tiny DACT-BERT's encoder: TINY_BERT's width on TINY_VOCAB, `blocks` blocks, 64
    positions, no dropout."""
    from tinydact.bert import BertConfig

    return BertConfig(**{**TINY_BERT, "vocab_size": len(TINY_VOCAB), "num_hidden_layers": blocks, "max_position_embeddings": 64,
                         "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})


def make_tiny_checkpoint(path, seed=0, blocks=4, halt_bias=None, labels=("negative", "positive")):
    """Save a random tiny DACT-BERT (with its vocabulary) to `path`; returns the model."""
    from tinydact.bert import Bert
    from tinydact.checkpoint import save_checkpoint
    from tinydact.model import DACTBert
    from tinydact.tokenizer import Tokenizer

    torch.manual_seed(seed)
    kw = {} if halt_bias is None else {"halt_bias": halt_bias}
    model = DACTBert(Bert(tiny_config(blocks)), len(labels), **kw).eval()
    save_checkpoint(model, Tokenizer(TINY_VOCAB, max_length=64), path, list(labels), "sst2")
    return model


def save_plain_bert(bert, path, tokenizer=None) -> Path:
    """Write the tinydact `Bert` `bert` to the folder `path` as a plain BERT (no DACT modules) in
    transformers' `BertModel` layout: config.json and model.safetensors, and the tokenizer's
    files when one is given. Returns `path`."""
    from safetensors.torch import save_file

    from tinydact.bert import bert_state_for_hf

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(bert.config.to_dict()))
    save_file({k: v.contiguous() for k, v in bert_state_for_hf(bert).items()}, str(path / "model.safetensors"))
    if tokenizer is not None:
        tokenizer.save(path)
    return path


def edit_json(path, **changes):
    """Set fields of the JSON object in the file `path`, in place; a key "dact.task" sets the
    field `task` of the section `dact` (pass it as **{"dact.task": ...})."""
    data = json.loads(path.read_text())
    for key, value in changes.items():
        section, _, field = key.rpartition(".")
        (data[section] if section else data)[field] = value
    path.write_text(json.dumps(data))


def edit_tensors(path, edit):
    """Change the tensors of the folder `path`'s model.safetensors in place: `edit` gets the
    dict {name: tensor} and changes it."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"))


def broken_copy(src, dst, edit):
    """A copy of the model folder `src` at `dst`, then changed by `edit(dst)`; returns `dst`."""
    shutil.copytree(src, dst)
    edit(dst)
    return dst


@pytest.fixture
def tiny_model_dir(tmp_path):
    path = tmp_path / "tiny-dact"
    make_tiny_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def early_model_dir(tmp_path_factory):
    """A tiny checkpoint with 6 blocks and halting bias -3 (h ≈ 0.05 at the start): p collapses
    after a block or two, so texts stop early. Made once per test file."""
    path = tmp_path_factory.mktemp("early") / "model"
    make_tiny_checkpoint(path, seed=1, blocks=6, halt_bias=-3.0)
    return path


def assert_rows_alone_exit_the_same(model, enc, labels, probs, blocks, rule, atol):
    """Each row of the padded batch `enc` (input_ids, attention_mask, token_type_ids), run alone
    and without its padding, exits after the same block with the same label and probabilities
    (within `atol`) as `model.predict` gave the batch: compaction and trimming change nothing."""
    for i in range(len(labels)):
        one = [t[i : i + 1, : int(enc[1][i].sum())] for t in enc]
        l1, p1, b1 = model.predict(*one, rule=rule)
        assert (l1.item(), b1.item()) == (labels[i].item(), blocks[i].item()), f"row {i}"
        assert torch.allclose(p1[0], probs[i], atol=atol), f"row {i}"


def ctrl_c_on_call(monkeypatch, owner, name, n, counts=lambda *args: True):
    """Replace `owner.name` (a module's function or a class's method) so that its n-th call
    raises KeyboardInterrupt, as a Ctrl-C there would; only the calls whose arguments pass
    `counts` are counted. Returns the real function, to put back with monkeypatch.setattr."""
    real = getattr(owner, name)
    calls = 0

    def interrupting(*args):
        nonlocal calls
        if counts(*args):
            calls += 1
            if calls == n:
                raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(owner, name, interrupting)
    return real


TINY_TSV = """sentence\tlabel
good film \t1
a great movie \t1
the acting was very good \t1
fun , fun and fun \t1
great story \t1
it is good but dull \t0
bad film \t0
an awful movie \t0
the plot was dull \t0
not good . \t0
awful acting and a bad story \t0
the film is not fun \t0
"""


@pytest.fixture
def tiny_tsv(tmp_path):
    path = tmp_path / "tiny.tsv"
    path.write_text(TINY_TSV)
    return path


VECTORS = Path(__file__).parent / "vectors"


def load_vector_script(name: str):
    """tests/vectors/<name>.py as a module (the scripts that write the port vectors)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, VECTORS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def import_benchmark(name: str):
    """benchmarks/<name>.py as a module, importing its neighbours (results_files, report) as it does."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def same_content(x, y, rel: float, abs: float, path: str = "") -> None:
    """Equal structure, strings and ints; floats equal to `rel` (or `abs` near zero)."""
    assert type(x) is type(y), path
    if isinstance(x, dict):
        assert list(x) == list(y), path
        for k in x:
            same_content(x[k], y[k], rel, abs, f"{path}.{k}")
    elif isinstance(x, list):
        assert len(x) == len(y), path
        for i, (u, v) in enumerate(zip(x, y)):
            same_content(u, v, rel, abs, f"{path}[{i}]")
    elif isinstance(x, float):
        assert x == pytest.approx(y, rel=rel, abs=abs), path
    else:
        assert x == y, path


# ---------------------------------------------------------------------------------------------
# The command line, in-process
# ---------------------------------------------------------------------------------------------


class CliResult(NamedTuple):
    code: int  # the exit code
    out: str  # standard output
    err: str  # standard error
    exc: BaseException | None  # what ended the command: SystemExit for a clean exit or error


def invoke(*args, input=None) -> CliResult:
    """Run `tinydact ARGS` in-process with click's CliRunner (arguments str()-ed, so paths and
    numbers may be passed as they are), stdout and stderr kept apart."""
    from tinydact.cli import cli

    kw = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters else {}  # click < 8.2
    r = CliRunner(**kw).invoke(cli, [str(a) for a in args], input=input)
    return CliResult(r.exit_code, r.stdout, r.stderr, r.exception)


def assert_clean(result: CliResult) -> tuple:
    """Exit 0, no traceback, no NaN or Infinity printed; returns (stdout, stderr)."""
    code, out, err, exc = result
    assert code == 0, f"exit {code}, {exc!r}: {out + err}"
    assert "Traceback" not in out + err and "NaN" not in out + err and "Infinity" not in out, out + err
    return out, err


CLICK_USAGE = ("Usage: ", "Try ")  # the lines click prints before its own `Error:` on a misused option


def assert_error(result: CliResult, *fragments) -> str:
    """A failure as the command line must fail on bad input: exit 1 through SystemExit (no
    exception escaped; exit 2 for click's own usage errors), exactly one `Error:` line, on
    standard error, holding every fragment, nothing else printed but click's Usage/Try lines,
    no traceback, no NaN outside the message. Returns the `Error:` line."""
    code, out, err, exc = result
    text = out + err
    lines = [line for line in text.splitlines() if line.strip()]
    usage = any(line.startswith(CLICK_USAGE) for line in lines)
    assert code == (2 if usage else 1) and isinstance(exc, SystemExit), f"exit {code}, {exc!r}: {text}"
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and all(line.startswith(("Error:", *CLICK_USAGE)) for line in lines), text
    assert errors[0] in err.splitlines(), f"the error is not on standard error: {text}"
    assert "Traceback" not in text and "NaN" not in text.replace(errors[0], ""), text
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# ---------------------------------------------------------------------------------------------
# The command line in a process of its own, with a signal at a chosen point
# ---------------------------------------------------------------------------------------------

SIGNAL_AT = """
import importlib, os, sys
module, name, match, n, sig, *argv = sys.argv[1:]
owner = importlib.import_module(module)
*path, attr = name.split(".")
for part in path:
    owner = getattr(owner, part)
real, calls = getattr(owner, attr), 0

def signalled(*args, **kw):
    global calls
    if match in " ".join(map(str, args)):
        calls += 1
        if calls == int(n):
            if len(args) == 2 and callable(args[1]):  # a writer (path, write): the signal arrives mid-write
                write = args[1]
                return real(args[0], lambda tmp: (write(tmp), os.kill(os.getpid(), int(sig))))
            os.kill(os.getpid(), int(sig))
    return real(*args, **kw)

setattr(owner, attr, signalled)
from tinydact.cli import main
main(argv)
"""


def run_signalled(where, n, sig, *args, timeout=180):
    """Run `tinydact ARGS` in a new process whose n-th call of `where` = (module, attribute,
    text its arguments hold) sends it signal `sig` (SIGKILL: kill -9) — in the middle of the
    write when the call is a writer (path, write), such as atomic_write or replace_folder.
    Returns the CompletedProcess (text)."""
    import subprocess
    import sys

    module, name, match = where
    cmd = [sys.executable, "-c", SIGNAL_AT, module, name, match, str(n), str(int(sig)), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
