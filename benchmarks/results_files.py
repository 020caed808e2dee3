"""What the benchmark scripts share: `write_results`, the one way they write their results,
`<name>.csv` (one row per dict) and `<name>.md` (the lines given), in the folder their
`--results` names (no default: benchmarks/results/ holds the published ones); `default_path`,
the one way they find a model or data set that was not passed on the command line."""

import csv
import sys
from pathlib import Path

from tinydact.home import locate, search_path


def write_results(name: str, rows: list, lines: list | None, folder) -> None:
    """`<name>.csv` from the rows (a column missing from a row is left empty) and, unless
    lines is None, `<name>.md` from the lines."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))  # every row's columns
        w.writeheader()
        w.writerows(rows)
    if lines is not None:
        (folder / f"{name}.md").write_text("\n".join(lines) + "\n")


def default_path(relative: str, get: str) -> Path:
    """`relative` (e.g. "data/glue/SST-2") in $TINYDACT_HOME or ~/.cache/tinydact
    (`tinydact.home.locate`), saying in one line which folder is used. When neither has it,
    exit with one `Error:` line that names the folders searched and `get`, how to obtain it
    or what to pass instead."""
    path, line = locate(relative)
    if path is None:
        sys.exit(f"Error: {relative} is not in {' or '.join(str(p) for p in search_path())}; {get}")
    print(line, flush=True)
    return path
