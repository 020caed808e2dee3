"""Where tinydact keeps and finds models and data.

    $TINYDACT_HOME/            default ~/.cache/tinydact
        models/<name>/         BERT or DACT-BERT directories (`tinydact download NAME`)
        data/glue/<TASK>/      GLUE tasks (`tinydact download glue TASK`)
        data/<task>/           other datasets, same layout (train.tsv, dev.tsv)

`model_dir(x)` turns what a user passes as `--model` (a directory, or the name of a model
under `models/`) into a directory, or one clear error. `locate(relative, fallback)` is the
single way tutorials and benchmarks look for a model or a dataset (`find`: $TINYDACT_HOME,
then the default cache folder); they fall back to what the repository ships (the model in
`weights/`, a few sentences written into the script) when neither has it, and print the
one line `locate` returns, which says what they use.
"""

import os
from importlib.resources import files
from pathlib import Path

from .errors import TinydactError

DEFAULT_HOME = Path("~/.cache/tinydact")


def expand(path) -> Path:
    """`path` with a leading ~ or ~user replaced by that home folder, or one clear error
    (Python says only "Could not determine home directory" for an unknown user)."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise TinydactError(f"{path}: cannot find the home folder of {Path(path).parts[0]} (no such user?)") from None


def home() -> Path:
    """The folder `tinydact download` writes into: $TINYDACT_HOME, else ~/.cache/tinydact."""
    return expand(os.environ.get("TINYDACT_HOME") or DEFAULT_HOME)


def search_path() -> list:
    """Folders searched for models and data, in order: $TINYDACT_HOME (when set), the cache."""
    places = [expand(os.environ["TINYDACT_HOME"])] if os.environ.get("TINYDACT_HOME") else []
    return list(dict.fromkeys(places + [expand(DEFAULT_HOME)]))


def find(relative: str) -> Path | None:
    """`relative` (e.g. "models/all-MiniLM-L6-v2", "data/glue/SST-2") in the first folder of
    `search_path()` that has it, else None."""
    for place in search_path():
        if (place / relative).exists():
            return place / relative
    return None


def locate(relative: str, fallback=None, fallback_name: str = "the built-in fallback"):
    """(path, line): `find(relative)`, or `fallback` when nothing is found, and one line that
    says which one is used, for a tutorial or benchmark to print."""
    path = find(relative)
    if path is not None:
        return path, f"{relative}: using {path}"
    where = " or ".join(str(p) for p in search_path())
    return fallback, f"{relative}: not in {where}; using {fallback_name}"


def shipped_model_places() -> list:
    """Where the shipped model may be: `tinydact/weights/` in an installed package (`pip
    install .` copies the repository's weights/ there, see pyproject.toml), then `weights/`
    beside the package folder (a checkout, or `pip install -e .`)."""
    return [Path(str(files("tinydact") / "weights")), Path(__file__).resolve().parent.parent / "weights"]


def shipped_model() -> Path:
    """The model of `tinydact classify` and `tinydact.load()` without a path."""
    places = shipped_model_places()
    for place in places:
        if (place / "model.safetensors").is_file():
            return place
    raise TinydactError(
        f"no default model: weights/model.safetensors is not in this installation (looked in "
        f"{' and '.join(str(p) for p in dict.fromkeys(places))}); pass --model DIR with a tinydact checkpoint"
    )


def model_dir(name_or_path) -> Path:
    """A model directory from a path, or from the name of a model under `models/` in the
    search path (what `tinydact download NAME` wrote). The one "model not found" error."""
    path = expand(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise TinydactError(f"{path} is a file; --model takes a model directory")
    named = find(f"models/{name_or_path}") if len(path.parts) == 1 else None
    if named is not None and named.is_dir():
        return named
    raise TinydactError(f"model directory not found: {name_or_path} (neither a directory nor a model name in "
                        f"{' or '.join(str(p / 'models') for p in search_path())}; see tinydact download)")
