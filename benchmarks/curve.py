"""The accuracy–computation picture (docs/dact.md §5–6): DACT-BERT against static
truncation, DeeBERT and PABEE on the same backbone, each method's knob swept.

All four methods share one architecture, a classifier after every block (baselines.py), and
start from two phase-1 backbones trained once (single seed, CPU budget):

    --last  phase 1 --blocks last (backbone + last classifier) = DeeBERT stage 1
    --all   phase 1 --blocks all (backbone + every block's classifier, uniform loss)

    method   classifiers                                   knob swept               seeds
    static   --all's own (exit at block k)                 k = 1..N                 1 (the backbone run)
    pabee    --all's own (uniform, not PABEE's j-weighted  patience t = 1..N        1 (the backbone run)
             loss: no weighted backbone was trained)
    deebert  stage 2 on --last's frozen states (heads       entropy threshold S      --seeds
             1..N-1 trained, the last one kept)
    dact     phase 2 on --all's frozen states (heads only,  ponder penalty τ         --seeds
             the DACT loss), paper halting rule             (a training knob)
    dact-joint  optional (--joint): finished phase-2 runs that also trained the backbone, each
             a single run with its own τ; their backbone is no longer the one the others share

The head-only runs train on [CLS] states cached once per backbone (train.py's `--cache`);
a seed changes their batch order and dropout masks (the heads start from the checkpoint's
weights). Each run's `final/` is used (no selection on dev). Every point is evaluated on
dev with the real inference path (`evaluate` -> `predict` / `predict_exit`: per-example
exit, batch compaction) at batch size 1, which gives accuracy, blocks run, estimated FLOPs
and the measured wall-clock (tokenization included, ~0.1 ms per example) in one pass.
Wall-clock is relative to the full-depth pass (static k = N), timed several times through
the run (the median is used; min and max are printed). Writes
benchmarks/results/<name>.{csv,md,png}.

    python benchmarks/curve.py --task sst2 --last ../runs/sst2-p1-last/best --all ../runs/sst2-p1-all/best

--train and --dev default to data/glue/<TASK>/ in $TINYDACT_HOME or ~/.cache/tinydact
(`tinydact download glue SST-2`).
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from tinydact.data import read_examples
from tinydact.errors import TinydactError
from tinydact.evaluate import block_accuracies, evaluate
from tinydact.home import model_dir
from tinydact.checkpoint import load_checkpoint, read_dact_config
from tinydact.tokenizer import Tokenizer
from tinydact.train import TrainConfig, train
from results_files import RESULTS, default_path, write_results  # benchmarks/results_files.py

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"sst2": "SST-2", "rte": "RTE"}
REUSED = []  # head runs found finished with the same settings (an earlier invocation of the same command)
KNOB_NAMES = {"static": "k", "deebert": "S", "pabee": "t", "dact": "τ", "dact-joint": "τ"}
LABELS = {"dact": "DACT (frozen-backbone phase 2)", "deebert": "DeeBERT (entropy exit)",
          "pabee": "PABEE exit rule (uniform-loss joint classifiers)", "static": "static truncation",
          "dact-joint": "DACT, joint phase 2 (--joint: backbone trained further, single runs)"}


def floats(text):
    return [float(x) for x in text.split(",")]


def cache_path(args, model: str) -> Path:
    """The file of the [CLS] states cached for the backbone of checkpoint `model` (as tau_sweep.py names it)."""
    return Path(args.runs) / f"cls-cache-{Path(model).resolve().parent.name}-{args.max_length}.pt"


def head_run(args, name: str, model: str, seed: int, **settings) -> Path:
    """Train heads on cached [CLS] states of `model`; returns the run's final/. A finished run
    with the same settings (runs/<name>/curve.json) is reused, not retrained."""
    out = Path(args.runs) / name
    cache = cache_path(args, model)
    cfg = TrainConfig(model=model, train=args.train, dev=args.dev, out=str(out), freeze_backbone=True, cache=str(cache),
                      epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length, head_lr=args.head_lr,
                      seed=seed, save_every=10**9, **settings)
    backbone_time = (Path(model) / "model.safetensors").stat().st_mtime
    if cache.is_file() and cache.stat().st_mtime < backbone_time:
        cache.unlink()  # the cache key names the backbone's folder, not its contents: this one predates them
    stamp = out / "curve.json"
    if stamp.is_file() and stamp.stat().st_mtime > backbone_time and json.loads(stamp.read_text()) == asdict(cfg):
        print(f"reusing {out}", flush=True)
        REUSED.append(name)
        return out / "final"
    (out / "log.jsonl").unlink(missing_ok=True)  # a stale run: start over
    start = time.time()
    train(cfg, torch.device("cpu"), quiet=True)
    (out / "state.pt").unlink()  # only needed to resume (~90 MB a run)
    shutil.rmtree(out / "best", ignore_errors=True)  # selected on dev; only final/ is used
    stamp.write_text(json.dumps(asdict(cfg)))
    print(f"trained {out} in {time.time() - start:.0f} s", flush=True)
    return out / "final"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="sst2", choices=sorted(FOLDERS))
    ap.add_argument("--last", required=True, help="phase 1 --blocks last checkpoint (DeeBERT stage 1)")
    ap.add_argument("--all", required=True, help="phase 1 --blocks all checkpoint (static, PABEE rule, DACT's start)")
    ap.add_argument("--train", default=None, help="default: data/glue/<TASK>/train.tsv in the tinydact home")
    ap.add_argument("--dev", default=None, help="default: data/glue/<TASK>/dev.tsv in the tinydact home")
    ap.add_argument("--taus", default="0,0.01,0.02,0.05,0.1,0.2,0.3,0.5")
    ap.add_argument("--entropies", default="0,0.05,0.1,0.15,0.2,0.3,0.4,0.5,0.6,0.65,0.68,0.69,0.7")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--joint", default="", help="comma-separated checkpoints of joint phase-2 DACT runs to add (optional)")
    ap.add_argument("--epochs", type=float, default=3.0, help="head-only runs")
    ap.add_argument("--batch-size", type=int, default=256, help="head-only runs")
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (timings are for this many)")
    ap.add_argument("--runs", default=str(ROOT / "runs"), help="folder for the head-only runs and the state caches")
    ap.add_argument("--results", default=str(RESULTS), help="folder for <name>.csv, <name>.md and <name>.png")
    ap.add_argument("--name", default=None, help="results file stem (default: curve_<task>)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.last, args.all = str(model_dir(args.last)), str(model_dir(args.all))
    if args.train is None or args.dev is None:
        folder = FOLDERS[args.task]
        folder = default_path(f"data/glue/{folder}", f"run `tinydact download glue {folder}` or pass --train and --dev")
        args.train = args.train or str(folder / "train.tsv")
        args.dev = args.dev or str(folder / "dev.tsv")
    name = args.name or f"curve_{args.task}"
    seeds = [int(s) for s in args.seeds.split(",")]
    began = time.time()

    # 1. Head-only training runs on cached states
    runs = []  # (method, knob, seed, checkpoint)
    for seed in seeds:
        stage2 = head_run(args, f"curve-{args.task}-deebert-seed{seed}", args.last, seed, phase=1, blocks="all-but-last")
        runs += [("deebert", s, seed, stage2) for s in floats(args.entropies)]
        for tau in floats(args.taus):
            runs.append(("dact", tau, seed, head_run(args, f"curve-{args.task}-dact-tau{tau:g}-seed{seed}", args.all, seed,
                                                     phase=2, tau=tau)))
    N = load_checkpoint(args.all)[0].num_blocks
    runs = [(m, k, None, Path(args.all)) for m in ("static", "pabee") for k in range(1, N + 1)] + runs
    for path in filter(None, args.joint.split(",")):
        runs.append(("dact-joint", read_dact_config(path)["trained"]["tau"], None, Path(path)))
    train_seconds = time.time() - began

    # 2. Every point on dev, batch size 1, the real inference path; full depth timed between groups
    tok = Tokenizer.from_pretrained(args.all)
    models = {}

    def model_at(path):
        if path not in models:
            models[path] = load_checkpoint(path)
        return models[path]

    meta = model_at(Path(args.all))[1]
    dev, task, _ = read_examples(args.dev, meta["task"], meta["labels"])
    load_before = os.getloadavg()

    def timed(path, method, knob):
        """evaluate() at batch 1: its metrics, with wall-clock and this process's CPU time per example (ms)."""
        rule = "dact" if method.startswith("dact") else method  # dact's knob τ is a training setting
        r = evaluate(model_at(path)[0], dev, tok, 1, args.max_length, method=rule, knob=None if rule == "dact" else knob)
        return r, 1000 * r["seconds"] / len(dev), 1000 * r["cpu_seconds"] / len(dev)

    reference = []  # (wall, CPU) ms per example of full-depth passes

    def full_depth():
        reference.append(timed(Path(args.all), "static", N)[1:])
        print(f"full depth: {reference[-1][0]:.2f} ms per example (CPU {reference[-1][1]:.2f})", flush=True)

    rows, group = [], None
    with torch.inference_mode():
        evaluate(model_at(Path(args.all))[0], dev[:200], tok, 1, args.max_length, method="static", knob=N)  # warm-up, not timed
        full_depth()
        for method, knob, seed, path in runs:
            if (method, seed) != group and group is not None:
                full_depth()
            group = (method, seed)
            r, wall, cpu = timed(path, method, knob)
            rows.append({"task": task, "method": method, "knob_name": KNOB_NAMES[method], "knob": knob,
                         "seed": "backbone" if seed is None else seed, "accuracy": round(r["accuracy"], 4),
                         "avg_blocks": round(r["avg_blocks"], 3), "flops_ratio": round(r["flops_ratio"], 4),
                         "ms_per_example": round(wall, 3), "cpu_ms_per_example": round(cpu, 3),
                         "histogram": " ".join(map(str, r["histogram"])), "checkpoint": str(path)})
            print(rows[-1], flush=True)
        full_depth()
    ref_wall = statistics.median(w for w, _ in reference)
    ref_cpu = statistics.median(c for _, c in reference)
    for row in rows:
        row["time_ratio"] = round(row["ms_per_example"] / ref_wall, 3)
        row["cpu_ratio"] = round(row["cpu_ms_per_example"] / ref_cpu, 3)

    # per-block accuracy of each set of classifiers, on the cached dev states
    blocks = {}
    for label, path, backbone in [("--all backbone's own (static, PABEE)", Path(args.all), args.all)] + \
            [(f"DeeBERT stage 2, seed {s}", Path(args.runs) / f"curve-{args.task}-deebert-seed{s}" / "final", args.last) for s in seeds]:
        dev_cls = torch.load(cache_path(args, backbone), weights_only=True)["dev"]
        blocks[label] = block_accuracies(model_at(path)[0], dev_cls, torch.tensor([e.label for e in dev]), "cpu")

    # 3. Results
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    summary = summarise(rows)
    plot(summary, results / f"{name}.png", task, N)
    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    load = os.getloadavg()
    lines = [
        f"# Accuracy against computation, {task} dev ({len(dev)} examples)", "",
        f"Command (from the repository root): `{command}`", "",
        f"Backbones (single runs): `--last` = `{args.last}`, `--all` = `{args.all}`; {N} blocks, max length "
        f"{args.max_length}. Head-only runs: {args.epochs:g} epochs, batch {args.batch_size}, head lr {args.head_lr:g}, "
        f"seeds {args.seeds}, `final/` checkpoints.", "",
        f"Timing: CPU, torch {torch.__version__}, {args.threads} thread(s), batch size 1, one pass over dev per point, "
        f"tokenization included; wall-clock, and this process's CPU time (less sensitive to other processes on the "
        f"machine). Full depth (static k = {N}), {len(reference)} passes spread through the run: wall-clock median "
        f"{ref_wall:.2f} ms per example (min {min(w for w, _ in reference):.2f}, max {max(w for w, _ in reference):.2f}), "
        f"CPU time median {ref_cpu:.2f} (min {min(c for _, c in reference):.2f}, max {max(c for _, c in reference):.2f}). "
        f"Load average (1/5/15 min) {' / '.join(f'{x:.1f}' for x in load_before)} before the timed passes and "
        f"{' / '.join(f'{x:.1f}' for x in load)} at the end, on {os.cpu_count()} cores. "
        f"Head training {train_seconds / 60:.1f} min ({len(REUSED)} of {len(seeds) * (1 + len(floats(args.taus)))} head runs "
        f"reused from an earlier invocation of this command), whole script {(time.time() - began) / 60:.1f} min.", "",
        "Mean ± standard deviation over seeds where there are several (n); blocks = blocks run per example; "
        "FLOPs, wall-clock and CPU time are relative to the same model run to full depth (medians above).", "",
        "| method | knob | n | dev accuracy | avg blocks | FLOPs | wall-clock | CPU time |", "|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(f"| {s['method']} | {KNOB_NAMES[s['method']]} = {s['knob']:g} | {s['n']} | {pm(s['acc'], s['acc_sd'], 1, 100)}% | "
                     f"{pm(s['blocks'], s['blocks_sd'], 2)} | {s['flops']:.2f} | {s['time']:.2f} | {s['cpu']:.2f} |")
    lines += ["", "Accuracy of each block's own classifier (dev, cached states):", "",
              "| classifiers | " + " | ".join(f"block {n}" for n in range(1, N + 1)) + " |", "|---|" + "---|" * N]
    lines += [f"| {label} | " + " | ".join(f"{100 * a:.1f}" for a in accs) + " |" for label, accs in blocks.items()]
    lines += ["", f"Per-seed rows, with the histogram of exit blocks: `{name}.csv`. Plot: `{name}.png`."]
    write_results(name, rows, lines, results)
    print("\n".join(lines))


def pm(mean, sd, digits, scale=1):
    return f"{scale * mean:.{digits}f}" + (f" ± {scale * sd:.{digits}f}" if sd is not None else "")


def summarise(rows):
    """One entry per (method, knob): means (and standard deviations over seeds)."""
    out = []
    for key in dict.fromkeys((r["method"], r["knob"]) for r in rows):
        group = [r for r in rows if (r["method"], r["knob"]) == key]
        sd = lambda k: statistics.stdev(r[k] for r in group) if len(group) > 1 else None  # noqa: E731
        mean = lambda k: statistics.mean(r[k] for r in group)  # noqa: E731
        out.append({"method": key[0], "knob": key[1], "n": len(group), "acc": mean("accuracy"), "acc_sd": sd("accuracy"),
                    "blocks": mean("avg_blocks"), "blocks_sd": sd("avg_blocks"), "flops": mean("flops_ratio"),
                    "time": mean("time_ratio"), "cpu": mean("cpu_ratio"), "cpu_sd": sd("cpu_ratio")})
    return out


def plot(summary, path, task, N):
    """Accuracy against average blocks (all of it, and the top of the range), and against
    CPU time per example relative to full depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = max(100 * s["acc"] for s in summary)
    floor = min(100 * s["acc"] for s in summary if s["blocks"] >= 3.5) - 1.5  # the zoom: budgets of 3.5 blocks and more
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    styles = {"dact": ("tab:red", "o"), "deebert": ("tab:blue", "s"), "pabee": ("tab:green", "^"), "static": ("gray", "D"),
              "dact-joint": ("darkred", "*")}
    panels = [(axes[0], "blocks", "blocks_sd", "all points"), (axes[1], "blocks", "blocks_sd", "zoom"),
              (axes[2], "cpu", "cpu_sd", "zoom")]
    for method, (color, marker) in styles.items():
        pts = sorted((s for s in summary if s["method"] == method), key=lambda s: s["blocks"])
        if not pts:
            continue
        joint = method == "dact-joint"  # separate runs, separate backbones: points, no line
        for ax, x, xsd, _ in panels:
            ax.errorbar([s[x] for s in pts], [100 * s["acc"] for s in pts], xerr=[s[xsd] or 0 for s in pts],
                        yerr=[100 * (s["acc_sd"] or 0) for s in pts], color=color, marker=marker, ms=11 if joint else 5,
                        capsize=2, lw=1.2, ls="none" if joint else "-", label=LABELS[method])
        if method.startswith("dact"):
            for s in pts:
                axes[1].annotate(f"τ={s['knob']:g}", (s["blocks"], 100 * s["acc"]), fontsize=7, color=color,
                                 xytext=(4, -10), textcoords="offset points")
    for ax, x, _, what in panels:
        ax.grid(alpha=0.3)
        ax.set_ylabel(f"{task} dev accuracy (%)")
        if what == "zoom":
            ax.set_ylim(floor, top + 0.8)
    axes[0].set_xlabel(f"average blocks run per example (of {N})")
    axes[1].set_xlabel(f"average blocks run per example (of {N}), accuracy ≥ {floor:.0f}%")
    axes[1].set_xlim(3.3, N + 0.15)
    axes[2].set_xlabel("CPU time per example, batch 1, relative to full depth")
    axes[2].set_xlim(0.5, None)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Accuracy against computation on one backbone, {task} dev (mean ± sd over seeds where there are several)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    try:
        main()
    except TinydactError as e:  # a missing file, a wrong checkpoint: one line, no traceback
        sys.exit(f"Error: {e}")
