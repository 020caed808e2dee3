"""A table of phase-2 training runs: the dev trajectory each run logged during training
(`log.jsonl`: accuracy / average blocks, paper rule) and its `final/` checkpoint evaluated on
dev under both exact halting rules (same predictions; the tight rule never exits later),
then the mean and range for each τ given by several runs (pass only runs of one recipe that
differ by seed: runs are grouped by τ alone).

    python benchmarks/joint_runs.py runs/sst2-ep2-joint-tau0.1 runs/sst2-ep2-joint-tau0.1-seed1 \\
        --name sst2_joint_runs

--dev defaults to data/glue/SST-2/dev.tsv in $TINYDACT_HOME or ~/.cache/tinydact
(`tinydact download glue SST-2`).
"""

import argparse
import json
import sys
from pathlib import Path

from tinydact.data import read_examples
from tinydact.errors import TinydactError
from tinydact.evaluate import evaluate
from tinydact.checkpoint import load_checkpoint
from tinydact.tokenizer import Tokenizer
from results_files import RESULTS, default_path, write_results  # benchmarks/results_files.py


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders written by `tinydact train --phase 2`")
    ap.add_argument("--dev", default=None, help="dev TSV (default: data/glue/SST-2/dev.tsv in the tinydact home)")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--name", default="joint_runs", help="results file stem")
    ap.add_argument("--results", default=str(RESULTS), help="folder for <name>.csv and <name>.md")
    args = ap.parse_args()
    if args.dev is None:
        args.dev = str(default_path("data/glue/SST-2", "run `tinydact download glue SST-2` or pass --dev") / "dev.tsv")

    rows = []
    for run in map(Path, args.runs):
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        model, meta = load_checkpoint(run / "final")
        tok = Tokenizer.from_pretrained(run / "final")
        dev, _, _ = read_examples(args.dev, meta["task"], meta["labels"])
        paper = evaluate(model, dev, tok, 64, args.max_length, rule="paper")
        tight = evaluate(model, dev, tok, 64, args.max_length, rule="tight")
        assert paper["predictions"] == tight["predictions"], "the two exact rules disagree on a prediction"
        trained = meta["trained"]
        tau = f"{trained['tau']:g}" + (f" → {trained['tau_end']:g}" if trained.get("tau_end") else "")
        rows.append({"run": run.name, "tau": tau, "accuracy": round(paper["accuracy"], 4),
                     "avg_blocks": round(paper["avg_blocks"], 3), "tight_avg_blocks": round(tight["avg_blocks"], 3),
                     "flops_ratio": round(paper["flops_ratio"], 3), "tight_flops_ratio": round(tight["flops_ratio"], 3),
                     "trajectory": " ".join(f"{r['step']}:{100 * r['dev']['accuracy']:.1f}/{logged_blocks(r['dev']):.2f}"
                                            for r in log)})
        print(rows[-1], flush=True)

    lines = [f"# {args.name}", "", f"Command: `python {' '.join(sys.argv)}`", "",
             f"Dev = `{args.dev}`. Trajectory: step:accuracy/average blocks (paper rule) as logged during training; "
             "the other columns evaluate each run's `final/` (the last step, no selection on dev).", "",
             "| run | τ | dev accuracy | avg blocks, paper rule | tight rule | FLOPs vs full, paper / tight | trajectory |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['tau']} | {100 * r['accuracy']:.2f}% | {r['avg_blocks']:.2f} | {r['tight_avg_blocks']:.2f} "
              f"| {r['flops_ratio']:.2f} / {r['tight_flops_ratio']:.2f} | {r['trajectory']} |" for r in rows]
    lines += seed_means(rows)
    write_results(args.name, rows, lines, args.results)


def logged_blocks(dev: dict) -> float:
    """The average blocks of a dev evaluation in log.jsonl (`avg_layers` in logs of older versions)."""
    return dev["avg_blocks"] if "avg_blocks" in dev else dev["avg_layers"]


def seed_means(rows: list) -> list:
    """Markdown lines: for each τ with several runs (seeds), the mean and range of their final/ figures."""
    groups = {}
    for r in rows:
        groups.setdefault(r["tau"], []).append(r)
    groups = {tau: g for tau, g in groups.items() if len(g) > 1}
    if not groups:
        return []
    lines = ["", "Runs with the same τ (seeds), `final/`: mean [min – max].", "",
             "| τ | runs | dev accuracy | avg blocks, paper rule | tight rule |", "|---|---|---|---|---|"]
    for tau, g in groups.items():
        cells = []
        for key, scale, fmt in (("accuracy", 100, "{:.2f}%"), ("avg_blocks", 1, "{:.2f}"), ("tight_avg_blocks", 1, "{:.2f}")):
            v = [scale * r[key] for r in g]
            cells.append(f"{fmt.format(sum(v) / len(v))} [{fmt.format(min(v))} – {fmt.format(max(v))}]")
        lines.append(f"| {tau} | {len(g)} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    try:
        main()
    except TinydactError as e:  # a missing file, a wrong checkpoint: one line, no traceback
        sys.exit(f"Error: {e}")
