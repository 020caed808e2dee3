"""Every method on its own recipe, one backbone, the same budget, several seeds: accuracy
against blocks on one task, written to benchmarks/results/<name>.csv (one row per task,
method, knob, seed) and <name>.md (the best mean accuracy at ≤ 2, ≤ 3, ≤ 4 blocks of 6).

    python benchmarks/tasks.py --task trec --seeds 0,1 --epochs 3 --runs /tmp/tasks [--dtype bfloat16]

Methods (E = --epochs of backbone training for every method):
    plain        phase 1 --blocks last, E epochs; the last block's classifier (the reference)
    static       phase 1 --blocks all, E epochs; exit at block k (the jointly trained
                 per-block classifiers, not separately fine-tuned k-block models)
    deebert      stage 1 = plain; stage 2 = the other classifiers on the frozen backbone;
                 entropy threshold sweep
    pabee        phase 1 --blocks weighted (Σ_j j·L_j / Σ_j j), E epochs; patience sweep
    dact         phase 1 --blocks all for E − 1 epochs, then per τ: heads only on cached
                 states (3 epochs) and joint (1 epoch): E backbone epochs in all; both rules
    dact-distill the same with self-distillation in phase 1 (--distill 0.9, T 3; our option)
    dact-mean    the same with modules reading the mean of the token states (--head-input
                 mean; our option), and dact-mean-distill with both

Data: data/<task>/{train,dev}.tsv (data/glue/SST-2 for sst2) in $TINYDACT_HOME or
~/.cache/tinydact. Dev is where the knobs are read and where τ is chosen: say so when quoting.
"""

import argparse
import csv
import statistics
import sys
from pathlib import Path

import torch

from results_files import RESULTS, default_path, write_results  # benchmarks/results_files.py
from tinydact.data import read_examples
from tinydact.errors import TinydactError
from tinydact.evaluate import evaluate
from tinydact.home import model_dir
from tinydact.model import load_checkpoint
from tinydact.tokenizer import Tokenizer
from tinydact.train import TrainConfig, train

DATA = {"sst2": "data/glue/SST-2", "subj": "data/subj", "agnews": "data/agnews", "trec": "data/trec"}
ENTROPIES = (0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8)


def run(cfg: TrainConfig, device) -> Path:
    """Train one phase into cfg.out unless a finished run is there already; its final/."""
    out = Path(cfg.out)
    if not (out / "final" / "model.safetensors").is_file():
        resume = (out / "state.pt").is_file()
        train(cfg, device, resume=resume, quiet=True, overwrite=not resume)
    return out / "final"


def points(path: Path, method: str, knobs, data: Path, rule: str = "paper") -> list:
    """(knob, accuracy, blocks, FLOPs ratio) of a checkpoint under a method's exit rule."""
    model, meta = load_checkpoint(path)
    tok = Tokenizer.from_pretrained(path)
    examples = read_examples(data, meta.get("task"), meta["labels"])[0]
    out = []
    for knob in knobs:
        r = evaluate(model, examples, tok, 64, 64, rule=rule, method="dact" if method.startswith("dact") else method, knob=knob)
        out.append((knob, r["accuracy"], r["avg_blocks"], r["flops_ratio"]))
    return out


def one_seed(task: str, seed: int, args, device) -> list:
    base = default_path(DATA[task], "run `tinydact download` for it or pass --data-dir") if not args.data_dir else Path(args.data_dir)
    train_tsv, dev_tsv = str(base / "train.tsv"), str(base / "dev.tsv")
    runs = Path(args.runs) / task / f"seed{seed}"
    common = dict(train=train_tsv, dev=dev_tsv, max_length=args.max_length, batch_size=32, seed=seed, dtype=args.dtype,
                  eval_every=0, save_every=500)
    bert = str(model_dir(args.bert))
    E = args.epochs
    rows = []

    def add(method, pts, rule="paper"):
        for knob, acc, blocks, flops in pts:
            rows.append({"task": task, "method": method if rule == "paper" else f"{method} (tight rule)", "knob": knob,
                         "seed": seed, "dev_accuracy": acc, "avg_blocks": blocks, "flops_ratio": flops})

    # plain, and DeeBERT's two stages on it
    plain = run(TrainConfig(model=bert, out=str(runs / "plain"), phase=1, blocks="last", epochs=E, **common), device)
    add("plain", points(plain, "static", [6], Path(dev_tsv)))  # the last block's own classifier, full depth
    deebert = run(TrainConfig(model=str(plain), out=str(runs / "deebert2"), phase=1, blocks="all-but-last",
                              freeze_backbone=True, epochs=E, cache=str(runs / "deebert2-cache.pt"), **common), device)
    add("deebert", points(deebert, "deebert", ENTROPIES, Path(dev_tsv)))
    # static truncation and PABEE on their own joint losses
    static = run(TrainConfig(model=bert, out=str(runs / "static"), phase=1, blocks="all", epochs=E, **common), device)
    add("static", points(static, "static", range(1, 7), Path(dev_tsv)))
    pabee = run(TrainConfig(model=bert, out=str(runs / "pabee"), phase=1, blocks="weighted", epochs=E, **common), device)
    add("pabee", points(pabee, "pabee", range(1, 7), Path(dev_tsv)))
    # DACT, with and without self-distillation: E - 1 epochs of phase 1, then per τ heads only and joint
    variants = {"dact": {}, "dact-distill": {"distill": 0.9}, "dact-mean": {"head_input": "mean"},
                "dact-mean-distill": {"head_input": "mean", "distill": 0.9}}
    for method, extra in ((m, variants[m]) for m in args.dact):
        p1 = run(TrainConfig(model=bert, out=str(runs / f"{method}-p1"), phase=1, blocks="all", epochs=E - 1, **common, **extra), device)
        for tau in args.taus:
            heads = run(TrainConfig(model=str(p1), out=str(runs / f"{method}-tau{tau}-heads"), phase=2, tau=tau,
                                    freeze_backbone=True, epochs=3, head_lr=1e-3, cache=str(runs / f"{method}-cache.pt"),
                                    **{**common, "batch_size": 256}), device)
            joint = run(TrainConfig(model=str(heads), out=str(runs / f"{method}-tau{tau}-joint"), phase=2, tau=tau,
                                    epochs=1, lr=2e-5, head_lr=5e-4, **common), device)
            for rule in ("paper", "tight"):
                add(method, [(tau, *p[1:]) for p in points(joint, method, [None], Path(dev_tsv), rule)], rule)
        print(f"{task} seed {seed}: {method} done", flush=True)
    return rows


def summary(rows: list, task: str) -> list:
    """Per method: the best mean dev accuracy among its knobs at ≤ 2, ≤ 3, ≤ 4 blocks."""
    by = {}
    for r in rows:
        by.setdefault((r["method"], str(r["knob"])), []).append(r)
    means = [(m, k, statistics.mean(float(r["dev_accuracy"]) for r in rs), statistics.pstdev([float(r["dev_accuracy"]) for r in rs]),
              statistics.mean(float(r["avg_blocks"]) for r in rs), len(rs)) for (m, k), rs in by.items()]
    plain = [m for m in means if m[0] == "plain"]
    lines = [f"## {task}", "",
             f"plain full depth: {100 * plain[0][2]:.2f} ± {100 * plain[0][3]:.2f}% (n {plain[0][5]})" if plain else "", "",
             "| method | ≤ 2 blocks | ≤ 3 blocks | ≤ 4 blocks |", "|---|---|---|---|"]
    for method in dict.fromkeys(m[0] for m in means if m[0] != "plain"):
        cells = []
        for budget in (2, 3, 4):
            fit = [m for m in means if m[0] == method and m[4] <= budget + 1e-9]
            best = max(fit, key=lambda m: m[2], default=None)
            cells.append(f"{100 * best[2]:.2f} ± {100 * best[3]:.2f}% at {best[4]:.2f} ({best[1]}, n {best[5]})" if best else "—")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=list(DATA), required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=3, help="backbone-training epochs, the same for every method")
    ap.add_argument("--taus", default="0.05,0.1,0.2", help="DACT's τ sweep")
    ap.add_argument("--dact", default="dact,dact-distill,dact-mean,dact-mean-distill", help="the DACT variants to run")
    ap.add_argument("--bert", default="all-MiniLM-L6-v2", help="BERT directory or downloaded model name")
    ap.add_argument("--data-dir", default=None, help="folder with train.tsv and dev.tsv (default: the task's in the tinydact home)")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--runs", required=True, help="folder for the run folders (outside the repository)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="tasks")
    args = ap.parse_args()
    args.taus = [float(t) for t in args.taus.split(",")]
    args.dact = args.dact.split(",")
    torch.set_num_threads(args.threads)
    rows = []
    csv_path = RESULTS / f"{args.name}.csv"
    if csv_path.is_file():  # earlier tasks and seeds stay; this task's seeds are measured again
        seeds = {int(s) for s in args.seeds.split(",")}
        rows = [r for r in csv.DictReader(open(csv_path)) if not (r["task"] == args.task and int(r["seed"]) in seeds)]
    for seed in [int(s) for s in args.seeds.split(",")]:
        rows += one_seed(args.task, seed, args, torch.device("cpu"))
    lines = [f"# Every method on its own recipe: `python benchmarks/tasks.py {' '.join(sys.argv[1:])}`", "",
             f"Backbone {args.bert}, {args.epochs} backbone epochs per method, max length {args.max_length}, {args.dtype}; "
             "dev accuracy (knobs and τ read on dev), mean ± sd over seeds.", ""]
    for task in dict.fromkeys(r["task"] for r in rows):
        lines += summary([r for r in rows if r["task"] == task], task) + [""]
    write_results(args.name, rows, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    try:
        main()
    except TinydactError as e:
        sys.exit(f"Error: {e}")
