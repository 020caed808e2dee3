"""The τ sweep of docs/dact.md §4: accuracy against blocks executed as the ponder penalty τ
grows, for DACT modules trained on one backbone.

Each τ trains a phase-2 run from the same starting checkpoint (by default with the backbone
frozen and its per-block [CLS] states cached once, so a run takes seconds), then evaluates
the run's `final/` checkpoint (no selection on dev) on dev with the real inference path
(`predict`: per-example early exit, batch compaction), under the paper rule and the tight
rule of docs/dact.md §3 (same predictions, the tight rule never exits later). Writes a CSV
and a markdown table.

    python benchmarks/tau_sweep.py --model runs/sst2-p1-all/best --taus 0,0.01,0.05,0.1 \\
        --name sst2_frozen_tau_sweep

--train and --dev default to data/glue/SST-2/ in $TINYDACT_HOME or ~/.cache/tinydact
(`tinydact download glue SST-2`).
"""

import argparse
import sys
import time
from pathlib import Path

import torch

from tinydact.data import read_examples
from tinydact.errors import TinydactError
from tinydact.evaluate import evaluate
from tinydact.home import model_dir
from tinydact.checkpoint import load_checkpoint
from tinydact.tokenizer import Tokenizer
from tinydact.train import TrainConfig, train
from results_files import RESULTS, default_path, write_results  # benchmarks/results_files.py

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="phase-1 checkpoint (directory or downloaded model name) to start every run from")
    ap.add_argument("--train", default=None, help="default: data/glue/SST-2/train.tsv in the tinydact home")
    ap.add_argument("--dev", default=None, help="default: data/glue/SST-2/dev.tsv in the tinydact home")
    ap.add_argument("--taus", default="0,0.01,0.02,0.05,0.1")
    ap.add_argument("--joint", action="store_true", help="train the backbone too (slow) instead of caching it")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--batch-size", type=int, default=0, help="default: 256 frozen, 32 joint")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--halt-lr", type=float, default=0.0)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default=str(ROOT / "runs"), help="folder for the runs' checkpoints")
    ap.add_argument("--name", default="tau_sweep", help="results file stem")
    ap.add_argument("--results", default=str(RESULTS), help="folder for <name>.csv and <name>.md")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.model = str(model_dir(args.model))
    if args.train is None or args.dev is None:
        sst2 = default_path("data/glue/SST-2", "run `tinydact download glue SST-2` or pass --train and --dev")
        args.train = args.train or str(sst2 / "train.tsv")
        args.dev = args.dev or str(sst2 / "dev.tsv")

    mode = "joint" if args.joint else "frozen"
    start = Path(args.model).resolve()
    cache = Path(args.runs) / f"cls-cache-{start.parent.name}-{start.name}-{args.max_length}.pt"  # best/ and final/ differ
    tok = Tokenizer.from_pretrained(args.model)
    rows = []
    for tau in [float(t) for t in args.taus.split(",")]:
        out = Path(args.runs) / f"{args.name}-tau{tau:g}-seed{args.seed}"
        cfg = TrainConfig(model=args.model, train=args.train, dev=args.dev, out=str(out), phase=2, tau=tau,
                          freeze_backbone=not args.joint, cache=None if args.joint else str(cache),
                          epochs=args.epochs, batch_size=args.batch_size or (32 if args.joint else 256),
                          max_length=args.max_length, lr=args.lr, head_lr=args.head_lr, halt_lr=args.halt_lr,
                          seed=args.seed, eval_every=0)
        start = time.time()
        train(cfg, torch.device("cpu"), quiet=True)
        model, meta = load_checkpoint(out / "final")
        dev, _, _ = read_examples(args.dev, meta["task"], meta["labels"])
        r = evaluate(model, dev, tok, 64, args.max_length)
        tight = evaluate(model, dev, tok, 64, args.max_length, rule="tight")
        assert tight["predictions"] == r["predictions"], "the two exact rules disagree on a prediction"
        rows.append({"tau": tau, "mode": mode, "seed": args.seed, "accuracy": round(r["accuracy"], 4),
                     "avg_blocks": round(r["avg_blocks"], 3), "flops_ratio": round(r["flops_ratio"], 3),
                     "histogram": " ".join(map(str, r["histogram"])), "tight_avg_blocks": round(tight["avg_blocks"], 3),
                     "train_seconds": round(time.time() - start)})
        print(rows[-1], flush=True)

    command = "python " + " ".join(sys.argv)
    lines = [f"# {args.name}", "", f"Command: `{command}`", "",
             f"Start: `{args.model}`; phase 2, {mode} backbone, {args.epochs:g} epochs; dev = `{args.dev}`; "
             "the `final/` checkpoint of each run, evaluated with per-example early exit (paper rule; the tight "
             "rule gives the same predictions, its average blocks in the last column).", "",
             "| τ | dev accuracy | avg blocks | FLOPs vs full | examples exiting after block 1..N | avg blocks, tight rule |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['tau']:g} | {100 * r['accuracy']:.2f}% | {r['avg_blocks']:.2f} | {r['flops_ratio']:.2f} | {r['histogram']} "
              f"| {r['tight_avg_blocks']:.2f} |" for r in rows]
    write_results(args.name, rows, lines, args.results)


if __name__ == "__main__":
    try:
        main()
    except TinydactError as e:  # a missing file, a wrong checkpoint: one line, no traceback
        sys.exit(f"Error: {e}")
