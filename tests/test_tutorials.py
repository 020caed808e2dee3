"""Every tutorial runs top to bottom as a plain script and its final check passes.

Each `tutorials/NN_*.py` ends by asserting the number it prints (a max error, an agreement
rate), so a tutorial that exits 0 has checked itself. New tutorials are picked up by name."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("[0-9]*.py"))
# the tutorials that load a BERT and honour TINYDACT_MODEL (a directory, or "random")
MODEL_TUTORIALS = [p for p in TUTORIALS if "TINYDACT_MODEL" in p.read_text(encoding="utf-8")]
# the tutorials that read SST-2 from ../shared when it is there and honour TINYDACT_DATA=builtin
DATA_TUTORIALS = [p for p in TUTORIALS if "TINYDACT_DATA" in p.read_text(encoding="utf-8")]
SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue" / "SST-2"


def run_tutorial(path, cwd, **env):
    """Run a tutorial as a script in `cwd` (where its pictures land), in fast mode."""
    inherited = {k: v for k, v in os.environ.items() if k != "TINYDACT_MODEL"}  # the default search, unless given
    env = {**inherited, "TINYDACT_FAST": "1", "MPLBACKEND": "Agg", **env}
    result = subprocess.run([sys.executable, str(path)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert result.returncode == 0, f"{path.name} failed (exit {result.returncode}):\n{output}"
    return result.stdout


def test_tutorials_are_found():
    assert len(TUTORIALS) >= 3, TUTORIALS


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_tutorial_runs(path, tmp_path):
    run_tutorial(path, tmp_path)


@pytest.mark.parametrize("path", MODEL_TUTORIALS, ids=lambda p: p.name)
def test_tutorial_runs_on_a_dact_checkpoint(path, tiny_model_dir, tmp_path):
    """The fallback to a DACT-BERT checkpoint, as shipped in weights/: a backbone under
    `BertModel` names plus `dact_heads.*` keys (here a tiny random one). The other fallback,
    the random BERT built in the script, is what test_tutorial_runs takes without ../shared."""
    run_tutorial(path, tmp_path, TINYDACT_MODEL=str(tiny_model_dir))


@pytest.mark.parametrize("path", DATA_TUTORIALS, ids=lambda p: p.name)
def test_tutorial_runs_on_builtin_sentences(path, tmp_path):
    """What a user's clone runs: without ../shared/data, the sentences written into the script."""
    if not SST2.is_dir():
        pytest.skip("no ../shared/data/glue/SST-2: test_tutorial_runs already used the built-in sentences")
    run_tutorial(path, tmp_path, TINYDACT_DATA="builtin")


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_tutorial_opens_as_notebook(path):
    """jupytext's percent format: text and code cells, the first one text."""
    jupytext = pytest.importorskip("jupytext")
    kinds = [cell.cell_type for cell in jupytext.read(path).cells]
    assert kinds[0] == "markdown" and "code" in kinds, kinds
