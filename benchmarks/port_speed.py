"""The JavaScript port against tinydact on the same sentences and the shipped weights: time
per sentence (batch 1, weights already loaded), with halting and at full depth, side by side
in one run, and whether both give the same label and blocks.

    python benchmarks/port_speed.py [--repeats 5]

Node runs `ports/js/classify.js --json` (it reports each sentence's milliseconds, loading
excluded); Python times `tinydact.load()` on one sentence at a time. Both use one thread of
this CPU for the port (it has no threads) and --threads (default 1) for torch.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import tinydact
from precision import cpu_description  # benchmarks/precision.py

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = [
    "a gripping, beautiful film",
    "not the best film of the year, but fun",
    "it's not that it is bad, it just never comes alive",
    "the performances are uniformly strong, and the script gives them room to breathe",
    "a tedious, overlong exercise in style over substance that never finds its footing",
]


def node_times(halt: bool, repeats: int) -> tuple:
    """Per sentence: the median milliseconds over `repeats` runs of classify.js, and its results."""
    times = {s: [] for s in SENTENCES}
    for _ in range(repeats):
        out = subprocess.run(["node", str(ROOT / "ports/js/classify.js"), "--json", *([] if halt else ["--no-halt"]), *SENTENCES],
                             capture_output=True, text=True, check=True).stdout
        results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        for r in results:
            times[r["text"]].append(r["ms"])
    return {s: statistics.median(t) for s, t in times.items()}, {r["text"]: r for r in results}


def python_times(clf, halt: bool, repeats: int) -> tuple:
    times, results = {}, {}
    for s in SENTENCES:
        clf([s], halt=halt)  # warm-up
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            results[s] = clf([s], halt=halt)[0]
            runs.append((time.perf_counter() - t0) * 1e3)
        times[s] = statistics.median(runs)
    return times, results


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="runs per sentence; the median is shown")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the same as the port)")
    args = ap.parse_args()
    if shutil.which("node") is None:
        sys.exit("Error: node is not on PATH (the JavaScript port runs under Node >= 18)")
    torch.set_num_threads(args.threads)
    clf = tinydact.load()
    print(*cpu_description(), f"node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}")
    for halt in (True, False):
        js, js_r = node_times(halt, args.repeats)
        py, py_r = python_times(clf, halt, args.repeats)
        print(f"\n{'with halting' if halt else 'full depth (--no-halt)'}: ms per sentence, median of {args.repeats}")
        print(f"{'blocks':>6} {'node':>8} {'python':>8} {'node/python':>11}  same label and blocks  text")
        for s in SENTENCES:
            same = js_r[s]["label"] == py_r[s]["label"] and js_r[s]["blocks"] == py_r[s]["blocks"]
            print(f"{py_r[s]['blocks']:>6} {js[s]:>8.1f} {py[s]:>8.1f} {js[s] / py[s]:>11.1f}  {'yes' if same else 'NO':<21}  {s}")
        print(f"{'all':>6} {sum(js.values()):>8.1f} {sum(py.values()):>8.1f} {sum(js.values()) / sum(py.values()):>11.1f}")


if __name__ == "__main__":
    main()
