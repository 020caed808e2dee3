"""The one way the benchmark scripts write their results: `<name>.csv` (one row per dict)
and `<name>.md` (the lines given), in benchmarks/results/ unless told otherwise."""

import csv
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, rows: list, lines: list, folder=RESULTS) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (folder / f"{name}.md").write_text("\n".join(lines) + "\n")
