"""Every tutorial runs top to bottom, as a script and as a notebook runs it, and its checks pass.

Each `tutorials/NN_*.py` asserts the numbers it prints (a max error, an agreement rate, blocks
saved) and ends by printing "all checks passed", so a run that prints it has checked itself.
New tutorials are picked up by name.

Two ways to run a tutorial, both in fast mode (`TINYDACT_FAST=1`):

- **as a script**, `python tutorials/NN_*.py`, from an unrelated working directory, with the
  environment the tests have (`TINYDACT_HOME` points at the dev models and data when they are
  beside the checkout, see conftest.py; otherwise nothing is found and the tutorials fall back);
- **as a notebook**: the source executed with `exec`, without `__file__`, in a process whose
  working directory is the repository root (where Jupyter starts a kernel for a notebook opened
  there). These runs also point `TINYDACT_HOME` at an empty folder, so every tutorial takes its
  built-in fallbacks (the model in `weights/`, the sentences written into the script) in one of
  its two runs, whether or not the dev models and data are here.

Neither may write a picture anywhere but `tutorials/`. These runs take a minute and a half
together: they are marked `slow` (`python -m pytest -m slow`); the quick suite checks only
what reading the files can tell (they open as notebooks, compile, end with their checks, find
their models the one way).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

from tinydact.home import DEFAULT_HOME

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9]*.py"))
# the tutorials that find a BERT through tinydact.home.locate and fall back to weights/ or a random BERT
MODEL_TUTORIALS = [p for p in TUTORIALS if '"models/all-MiniLM-L6-v2"' in p.read_text(encoding="utf-8")]
PASSED = "all checks passed"

# A notebook: no __file__, the source compiled under a name that is not a path.
NOTEBOOK = """
import sys
source = open(sys.argv[1], encoding="utf-8").read()
sys.argv = sys.argv[:1]
{prelude}
exec(compile(source, "<notebook>", "exec"), {{"__name__": "__main__"}})
"""
# No model shipped either: what a user's copy without weights/ runs (01 and 02 build a random BERT).
NO_SHIPPED_MODEL = """
import tinydact.errors, tinydact.home
def no_weights():
    raise tinydact.errors.TinydactError("no weights/ in this test")
tinydact.home.shipped_model = no_weights
"""


def run(args, cwd, **env):
    """Run a tutorial in fast mode, check that its checks passed and that pictures were written
    into tutorials/ only; returns its standard output."""
    env = {**os.environ, "TINYDACT_FAST": "1", "MPLBACKEND": "Agg", **env}
    pictures_before = set(cwd.glob("*.png"))
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert result.returncode == 0, f"{args[-1]} failed (exit {result.returncode}):\n{output}"
    assert result.stdout.strip().splitlines()[-1:] == [PASSED], f"{args[-1]} did not finish its checks:\n{output}"
    assert set(cwd.glob("*.png")) == pictures_before, "a picture was written into the working directory"
    for line in result.stdout.splitlines():
        if line.startswith("saved "):
            picture = Path(line.split(maxsplit=1)[1])
            assert picture.parent == ROOT / "tutorials" and picture.is_file(), line
    return result.stdout


def run_script(path, tmp_path, **env):
    return run([sys.executable, str(path)], tmp_path, **env)


def run_notebook(path, tmp_path, prelude="", **env):
    empty = tmp_path / "empty-home"
    empty.mkdir(exist_ok=True)
    return run([sys.executable, "-c", NOTEBOOK.format(prelude=prelude), str(path)], ROOT,
               **{"TINYDACT_HOME": str(empty), **env})


def test_tutorials_are_found():
    assert len(TUTORIALS) >= 5, TUTORIALS
    assert len(MODEL_TUTORIALS) >= 2, MODEL_TUTORIALS


@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_tutorial_runs_as_a_script(path, tmp_path):
    run_script(path, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_tutorial_runs_as_a_notebook_on_its_fallbacks(path, tmp_path):
    out = run_notebook(path, tmp_path)
    if not DEFAULT_HOME.expanduser().is_dir():  # nothing in the cache either: the fallbacks were taken
        assert ": not in " in out or "locate(" not in path.read_text(encoding="utf-8"), out


@pytest.mark.slow
@pytest.mark.parametrize("path", MODEL_TUTORIALS, ids=lambda p: p.name)
def test_tutorial_runs_without_any_model(path, tmp_path):
    """Neither a downloaded model nor weights/: a small random BERT built by the tutorial."""
    out = run_notebook(path, tmp_path, prelude=NO_SHIPPED_MODEL)
    if not DEFAULT_HOME.expanduser().is_dir():
        assert "random BERT" in out, out


def test_tutorials_do_not_depend_on_where_they_run():
    """Found through tinydact.home.locate and the package, never the working directory, __file__
    or a folder beside the checkout."""
    for path in TUTORIALS:
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"(?<!tinydact\.)__file__", source), f"{path.name} uses its own __file__"
        for forbidden in ("Path.cwd()", "os.getcwd", "../shared", "DACT.md", "TINYDACT_MODEL", "TINYDACT_DATA"):
            assert forbidden not in source, f"{path.name} mentions {forbidden}"


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_tutorial_opens_as_notebook(path):
    """jupytext's percent format: text and code cells, the first one text; the code compiles
    cell by cell, and the last cell prints that every check passed."""
    cells = jupytext.read(path).cells
    kinds = [cell.cell_type for cell in cells]
    assert kinds[0] == "markdown" and "code" in kinds, kinds
    code = [cell.source for cell in cells if cell.cell_type == "code"]
    for i, source in enumerate(code):
        compile(source, f"{path.name} code cell {i + 1}", "exec")
    assert f'print("{PASSED}")' in code[-1].strip().splitlines()[-1], f"{path.name} does not end by printing {PASSED!r}"
