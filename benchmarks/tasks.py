"""Every method on its own recipe, one backbone, the same budget, several seeds: accuracy
against blocks on one task, merged into benchmarks/results/<name>.csv (one row per task,
method, knob, seed), <name>_blocks.csv (each block's own classifier), <name>.md (the best mean
accuracy at ≤ 2, ≤ 3, ≤ 4 blocks of 6, each DACT point against the baselines at its own
blocks, and the per-block tables) and <name>_<task>.png.

    python benchmarks/tasks.py --task trec --seeds 0,1,2 --epochs 3 --head-input mean --runs /tmp/tasks [--dtype bfloat16]
    python benchmarks/tasks.py --task trec --seeds ""        # only rewrite the report from the CSV files
    python benchmarks/tasks.py --task sst2 --train-sample 10000 ...  # task "sst2-10k": a fixed 10,000-line sample of train
    python benchmarks/tasks.py --task agnews --seeds 1,2 --wall-clock 3 --runs /tmp/tasks  # time the kept runs at batch 1

Methods (E = --epochs of backbone training for every method):
    plain        phase 1 --blocks last, E epochs; the last block's classifier (the reference)
    static       phase 1 --blocks all, E epochs; exit at block k (the jointly trained
                 per-block classifiers)
    static-ft    separately fine-tuned k-block models: the backbone cut to its first k blocks,
                 then plain, E epochs, for each k of --ft-blocks (not in the default methods)
    deebert      stage 1 = plain; stage 2 = the other classifiers on the frozen backbone;
                 entropy threshold sweep
    pabee        phase 1 --blocks weighted (Σ_j j·L_j / Σ_j j), E epochs; patience sweep
    dact         phase 1 --blocks all for E − 1 epochs, then per τ: heads only on cached
                 states (3 epochs) and joint (1 epoch): E backbone epochs in all; both rules
    dact-distill the same with self-distillation in phase 1 (--distill 0.9, T 3; our option)
--head-input (our option) sets what every method's per-block classifiers read; a method's
name carries it when it is not [CLS] (static-mean, dact-mean, dact-mean-distill, ...).

--wall-clock trains nothing: it times each point at ≤ 3 blocks whose run folder is still under
--runs, at batch 1 over dev, against the plain model of the same seed, and fills the CSV's
wallclock_ratio and wallclock_cpu columns (empty where not measured).

Finished run folders under --runs are reused, so a stopped run picks up where it was, and the
results are saved after every method. A finished run keeps only final/ (and best/, log.jsonl):
its resume state is removed unless --keep-states. Data: data/<task>/{train,dev}.tsv
(data/glue/SST-2 for sst2) in $TINYDACT_HOME or ~/.cache/tinydact. Dev is where the knobs are
read and where τ is chosen: say so when quoting.
"""

import argparse
import csv
import json
import os
import random
import re
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from precision import cpu_description  # benchmarks/precision.py
from results_files import RESULTS, default_path, write_results  # benchmarks/results_files.py
from tinydact.bert import read_checkpoint
from tinydact.data import detect_task, example_lengths, header_lines, read_examples
from tinydact.errors import TinydactError
from tinydact.evaluate import block_accuracies, estimate_flops, evaluate
from tinydact.home import model_dir
from tinydact.checkpoint import load_checkpoint
from tinydact.tokenizer import Tokenizer
from tinydact.train import TrainConfig, cls_cache, train

DATA = {"sst2": "data/glue/SST-2", "subj": "data/subj", "agnews": "data/agnews", "trec": "data/trec"}
METHODS = ("plain", "deebert", "static", "static-ft", "pabee", "dact", "dact-distill")
ENTROPIES = (0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8)


def sample_train(src: Path, n: int, dst: Path) -> Path:
    """A fixed sample of `n` examples of the training file `src`, written to `dst`: the same
    lines on every call and every machine (drawn with seed 0, whatever the run's seed), in the
    file's order, a header line kept."""
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    header = lines[:header_lines(detect_task(src, lines[0]), lines[0])] if lines else []
    body = [line for line in lines[len(header):] if line.strip()]
    if not 0 < n <= len(body):
        raise TinydactError(f"--train-sample {n}: {src} has {len(body)} examples")
    keep = sorted(random.Random(0).sample(range(len(body)), n))
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp")
    tmp.write_text("".join(header + [body[i] for i in keep]), encoding="utf-8")
    os.replace(tmp, dst)
    return dst


def first_blocks(bert: Path, k: int, dst: Path) -> Path:
    """A copy of the BERT directory `bert` (or tinydact checkpoint) cut to its first k blocks
    (config and weights; the tokenizer files as they are), unless `dst` holds it already."""
    if (dst / "model.safetensors").is_file():
        return dst
    from safetensors.torch import save_file

    config = json.loads((bert / "config.json").read_text())
    if not 0 < k <= config["num_hidden_layers"]:
        raise TinydactError(f"--ft-blocks {k}: {bert} has {config['num_hidden_layers']} blocks")
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in bert.iterdir():
        if f.is_file() and f.name not in ("config.json", "model.safetensors", "pytorch_model.bin"):
            shutil.copy(f, tmp / f.name)
    (tmp / "config.json").write_text(json.dumps({**config, "num_hidden_layers": k}, indent=2))
    kept = {key: t.contiguous() for key, t in read_checkpoint(bert).items()
            if not (m := re.search(r"(?:^|\.)(?:layer|dact_heads)\.(\d+)\.", key)) or int(m.group(1)) < k}
    save_file(kept, str(tmp / "model.safetensors"))
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return dst


def run(cfg: TrainConfig, device, keep_state: bool = False) -> Path:
    """Train one phase into cfg.out unless a finished run is there already; its final/. A
    finished run is reused from final/ alone, so its resume state (state.pt: the weights and
    the optimizer's two moments, three times the model) is removed unless `keep_state`: a
    task's seeds would otherwise leave tens of them."""
    out = Path(cfg.out)
    if not (out / "final" / "model.safetensors").is_file():
        resume = (out / "state.pt").is_file()
        train(cfg, device, resume=resume, quiet=True, overwrite=not resume)
    if not keep_state:
        (out / "state.pt").unlink(missing_ok=True)
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


def cost_of_first_blocks(path: Path, k: int, blocks: int, data: Path) -> float:
    """FLOPs of running k blocks on every dev example, against `blocks` blocks (the backbone's
    full depth): a k-block model's cost as a share of the full model's."""
    model, meta = load_checkpoint(path)
    lengths = example_lengths(read_examples(data, meta.get("task"), meta["labels"])[0], Tokenizer.from_pretrained(path), 64)
    cfg, K = model.bert.config, model.num_labels
    return sum(estimate_flops(cfg, t, k, K) for t in lengths) / sum(estimate_flops(cfg, t, blocks, K) for t in lengths)


def per_block(path: Path, data: Path) -> list:
    """Dev accuracy of each block's own answer y_n (the per-block classifiers) of a checkpoint."""
    model, meta = load_checkpoint(path)
    examples = read_examples(data, meta.get("task"), meta["labels"])[0]
    states = cls_cache(model, examples, Tokenizer.from_pretrained(path), 64, torch.device("cpu"), "per-block")
    return block_accuracies(model, states, torch.tensor([e.label for e in examples]), torch.device("cpu"))


TIGHT = " (tight rule)"  # a method's name in the results ends with this when its points use the tight rule


def rule_of(method: str) -> tuple:
    """A results method name split into the method and its halting rule: "dact-mean (tight
    rule)" -> ("dact-mean", "tight")."""
    return (method.removesuffix(TIGHT), "tight") if method.endswith(TIGHT) else (method, "paper")


def run_folder(method: str, knob=None) -> tuple:
    """Where a results row's model lives under a seed's folder, and how it is run: (folder,
    exit method, knob, rule). `method` is as the CSV names it (e.g. "dact-mean-distill (tight
    rule)"), `knob` as the CSV gives it. The one place that names the run folders."""
    method, rule = rule_of(method)
    if method.startswith("dact"):  # dact{reads}[-distill]: the joint run of its τ
        return f"{method}-tau{float(knob)}-joint", "dact", None, rule
    if method.startswith("deebert"):  # stage 2 (the "2" keeps old, differently trained folders apart)
        return f"{method}2", "deebert", float(knob), rule
    if method.startswith("static-ft"):  # one model per k, cut to k blocks
        return f"{method}-{int(knob)}", "static", int(knob), rule
    if method.startswith("plain"):  # the last block's classifier, run to its knob: full depth
        return method, "static", int(knob), rule
    if method.startswith(("static", "pabee")):
        return method, method.split("-")[0], int(knob), rule
    raise TinydactError(f"no run folder for method {method!r}")


def task_name(task: str, sample: int) -> str:
    """The task as the results name it: with the size of the training sample when there is one."""
    return task if not sample else f"{task}-{sample // 1000}k" if sample % 1000 == 0 else f"{task}-{sample}"


def data_dir(task: str, args) -> Path:
    """The folder with the task's train.tsv and dev.tsv: --data-dir, else the tinydact home's."""
    return default_path(DATA[task], "run `tinydact download` for it or pass --data-dir") if not args.data_dir else Path(args.data_dir)


def one_seed(task: str, seed: int, args, device, save) -> None:
    """Every method on one seed; `save(rows, blocks)` is called after each method, so a
    stopped run keeps what it measured (and its finished run folders are reused)."""
    base = data_dir(task, args)
    train_tsv, dev = str(base / "train.tsv"), base / "dev.tsv"
    task = task_name(task, args.train_sample)
    if args.train_sample:
        train_tsv = str(sample_train(base / "train.tsv", args.train_sample, Path(args.runs) / task / "train.tsv"))
    runs = Path(args.runs) / task / f"seed{seed}"
    common = dict(train=train_tsv, dev=str(dev), max_length=args.max_length, batch_size=32, seed=seed, dtype=args.dtype,
                  eval_every=0, save_every=500, head_input=args.head_input)
    bert = str(model_dir(args.bert))
    E = args.epochs
    reads = "" if args.head_input == "cls" else f"-{args.head_input}"  # every classifier reads the same: the name says which

    def add(method, pts, rule="paper"):
        save([{"task": task, "method": method if rule == "paper" else method + TIGHT, "knob": knob, "seed": seed,
               "dev_accuracy": acc, "avg_blocks": blocks, "flops_ratio": flops} for knob, acc, blocks, flops in pts], [])

    def blocks_of(method, path):
        save([], [{"task": task, "method": method, "seed": seed, "block": n + 1, "dev_accuracy": acc}
                  for n, acc in enumerate(per_block(path, dev))])

    def fit(cfg):
        return run(cfg, device, args.keep_states)

    def phase1(folder, **kw):
        return fit(TrainConfig(model=bert, out=str(runs / folder), phase=1, **{**common, **kw}))

    wanted = set(args.methods)
    if wanted & {"plain", "deebert"}:  # plain, and DeeBERT's two stages on it
        plain = phase1(run_folder(f"plain{reads}", 1)[0], blocks="last", epochs=E)
        add(f"plain{reads}", points(plain, "static", [6], dev))  # the last block's own classifier, full depth
        if "deebert" in wanted:
            folder = runs / run_folder(f"deebert{reads}", 0)[0]
            deebert = fit(TrainConfig(model=str(plain), out=str(folder), phase=1, blocks="all-but-last",
                                      freeze_backbone=True, epochs=E, cache=f"{folder}-cache.pt",
                                      **common))
            add(f"deebert{reads}", points(deebert, "deebert", ENTROPIES, dev))
            blocks_of(f"deebert{reads}", deebert)
    if "static" in wanted:  # static truncation and PABEE on their own joint losses
        static = phase1(run_folder(f"static{reads}", 1)[0], blocks="all", epochs=E)
        add(f"static{reads}", points(static, "static", range(1, 7), dev))
        blocks_of(f"static{reads}", static)
    if "static-ft" in wanted:  # separately fine-tuned k-block models (cut once per task, shared by the seeds)
        depth = json.loads((Path(bert) / "config.json").read_text())["num_hidden_layers"]
        for k in args.ft_blocks:
            cut = first_blocks(Path(bert), k, runs.parent / f"{Path(bert).name}-{k}-blocks")
            ft = fit(TrainConfig(model=str(cut), out=str(runs / run_folder(f"static-ft{reads}", k)[0]), phase=1, blocks="last", epochs=E,
                                 **common))
            add(f"static-ft{reads}", [(k, acc, k, cost_of_first_blocks(ft, k, depth, dev)) for _, acc, _, _ in points(ft, "static", [k], dev)])
    if "pabee" in wanted:
        pabee = phase1(run_folder(f"pabee{reads}", 1)[0], blocks="weighted", epochs=E)
        add(f"pabee{reads}", points(pabee, "pabee", range(1, 7), dev))
        blocks_of(f"pabee{reads}", pabee)
    # DACT, with and without self-distillation: E - 1 epochs of phase 1, then per τ heads only and joint
    for method, extra in (("dact", {}), ("dact-distill", {"distill": 0.9})):
        if method not in wanted:
            continue
        name = method.replace("dact", f"dact{reads}")
        p1 = phase1(f"{name}-p1", blocks="all", epochs=E - 1, **extra)
        blocks_of(f"{name} phase 1", p1)
        for tau in args.taus:
            heads = fit(TrainConfig(model=str(p1), out=str(runs / f"{name}-tau{tau}-heads"), phase=2, tau=tau,
                                    freeze_backbone=True, epochs=3, head_lr=1e-3, cache=str(runs / f"{name}-cache.pt"),
                                    **{**common, "batch_size": 256}))
            joint = fit(TrainConfig(model=str(heads), out=str(runs / run_folder(name, tau)[0]), phase=2, tau=tau,
                                    epochs=1, lr=2e-5, head_lr=5e-4, **common))
            for rule in ("paper", "tight"):
                add(name, [(tau, *p[1:]) for p in points(joint, name, [None], dev, rule)], rule)
            blocks_of(f"{name} τ {tau}", joint)
        print(f"{task} seed {seed}: {name} done", flush=True)


def wall_clock(rows: list, seeds: list, runs: Path, data: Path, budget: float, rounds: int) -> list:
    """Seconds over dev at batch 1 of each point at ≤ `budget` mean blocks (over `rows`, one
    task's) whose model is still in its seed's run folder, against the plain model of the same
    seed at full depth, timed in the same process before and after every round: those rows of
    `seeds` with "wallclock_ratio" (median point time over median plain time) and
    "wallclock_cpu" (the machine) filled in."""
    means = {(m[0], m[1]): m[4] for m in point_means(rows)}
    machine = cpu_description()[0]
    out = []
    for seed in seeds:
        folder = runs / f"seed{seed}"
        where = {id(r): run_folder(r["method"], r["knob"]) for r in rows if r["seed"] == str(seed)}  # (folder, method, knob, rule)
        wanted = [r for r in rows if id(r) in where and (folder / where[id(r)][0] / "final").is_dir()
                  and (means[(r["method"], str(r["knob"]))] <= budget + 1e-9 or r["method"].startswith("plain"))]
        reference = [r for r in wanted if r["method"].startswith("plain")][:1]
        if not reference:
            continue
        loaded = {}
        for r in wanted:
            path = folder / where[id(r)][0] / "final"
            if path not in loaded:
                model, meta = load_checkpoint(path)
                loaded[path] = model, Tokenizer.from_pretrained(path), read_examples(data, meta.get("task"), meta["labels"])[0]

        def seconds(r):
            path, method, knob, rule = where[id(r)]
            model, tok, examples = loaded[folder / path / "final"]
            return evaluate(model, examples, tok, 1, 64, rule=rule, method=method, knob=knob)["seconds"]

        seconds(reference[0])  # warm up
        points = [r for r in wanted if r is not reference[0]]
        times = {id(r): [] for r in wanted}
        for i in tqdm(range(rounds), desc=f"seed {seed}: {len(wanted)} points at batch 1", leave=False):
            for r in reference + points[::-1 if i % 2 else 1] + reference:  # every round between two plain timings
                times[id(r)].append(seconds(r))
        full = statistics.median(times[id(reference[0])])
        out += [{**r, "wallclock_ratio": statistics.median(times[id(r)]) / full, "wallclock_cpu": machine} for r in wanted]
    return out


def wall_table(rows: list, task: str) -> list:
    """The measured wall-clock ratios of a task, mean over seeds, next to blocks and FLOPs."""
    timed = [r for r in rows if r.get("wallclock_ratio") not in (None, "")]
    if not timed:
        return []
    by = {}
    for r in timed:
        by.setdefault((r["method"], str(r["knob"])), []).append(r)
    lines = [f"### {task}: time at batch 1 against the plain model of the same seed (dev, float32)", "",
             *[f"{m}  " for m in dict.fromkeys(r["wallclock_cpu"] for r in timed)], "",
             "| method | knob | n | accuracy | blocks | FLOPs ratio | wall-clock ratio |", "|---|---|---|---|---|---|---|"]
    for (method, knob), rs in sorted(by.items(), key=lambda kv: (kv[0][0], statistics.mean(float(r["avg_blocks"]) for r in kv[1]))):
        acc, sd = mean_sd([100 * float(r["dev_accuracy"]) for r in rs])
        wall, wall_sd = mean_sd([float(r["wallclock_ratio"]) for r in rs])
        lines.append(f"| {method} | {knob} | {len(rs)} | {acc:.2f} ± {sd:.2f}% | {statistics.mean(float(r['avg_blocks']) for r in rs):.2f} | "
                     f"{statistics.mean(float(r['flops_ratio']) for r in rs):.3f} | {wall:.3f} ± {wall_sd:.3f} |")
    return lines


def mean_sd(values: list) -> tuple:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def point_means(rows: list) -> list:
    """(method, knob, mean accuracy, sd, mean blocks, n) for every (method, knob) over seeds."""
    by = {}
    for r in rows:
        by.setdefault((r["method"], str(r["knob"])), []).append(r)
    return [(m, k, *mean_sd([float(r["dev_accuracy"]) for r in rs]), statistics.mean(float(r["avg_blocks"]) for r in rs), len(rs))
            for (m, k), rs in by.items()]


def best_within(means: list, method: str, budget: float, knob: bool = True) -> str:
    """The method's best mean accuracy among its points at ≤ budget blocks, as a table cell
    (with its knob and number of seeds in brackets unless `knob` is False)."""
    best = max((m for m in means if m[0] == method and m[4] <= budget + 1e-9), key=lambda m: m[2], default=None)
    if not best:
        return "—"
    return f"{100 * best[2]:.2f} ± {100 * best[3]:.2f}% at {best[4]:.2f}" + (f" ({best[1]}, n {best[5]})" if knob else "")


def summary(rows: list, task: str) -> list:
    """Per method: the best mean dev accuracy among its knobs at ≤ 2, ≤ 3, ≤ 4 blocks."""
    means = point_means(rows)
    lines = [f"## {task}", ""]
    lines += [f"{m[0]} full depth: {100 * m[2]:.2f} ± {100 * m[3]:.2f}% (n {m[5]})  " for m in means if m[0].startswith("plain")]
    lines += ["", "| method | ≤ 2 blocks | ≤ 3 blocks | ≤ 4 blocks |", "|---|---|---|---|"]
    for method in dict.fromkeys(m[0] for m in means if not m[0].startswith("plain")):
        lines.append(f"| {method} | " + " | ".join(best_within(means, method, budget) for budget in (2, 3, 4)) + " |")
    return lines


def headline(rows: list, budget: float = 3) -> list:
    """One table over the tasks: each method's best mean accuracy at ≤ budget blocks, and the
    full-depth references."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    means = {t: point_means([r for r in rows if r["task"] == t]) for t in tasks}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = [f"## At ≤ {budget:g} blocks of 6, every task", "", "| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for method in methods:
        cells = [best_within(means[t], method, 6 if method.startswith("plain") else budget) for t in tasks]
        lines.append(f"| {method}{' (6 blocks)' if method.startswith('plain') else ''} | " + " | ".join(cells) + " |")
    return lines


def against_baselines(rows: list, task: str) -> list:
    """Each DACT point next to the baselines at the same cost: the static line read at its
    blocks (linear between k and k + 1, what running k or k + 1 blocks on a share of the
    inputs gives), the same line of the separately fine-tuned k-block models where they were
    run, and the best DeeBERT and PABEE points at no more blocks ("—" where a baseline was
    not run or has no point there)."""
    means = point_means(rows)
    names = {m[0] for m in means}
    dacts = [m for m in means if m[0].startswith("dact")]
    reads_of = (lambda method: rule_of(method)[0][4:].replace("-distill", "", 1))  # "dact-mean-distill (tight rule)": "-mean"
    reads = {reads_of(m[0]) for m in dacts}
    lines = [f"### {task}: DACT at the baselines' cost (mean dev accuracy ± sd at average blocks)", "",
             "| DACT point | accuracy | static line there | fine-tuned k-block line there | best DeeBERT at ≤ its blocks "
             "| best PABEE at ≤ its blocks |", "|---|---|---|---|---|---|"]

    def read_line(line, blocks):  # the line at `blocks` as a cell, "—" outside it
        return f"{100 * np.interp(blocks, *zip(*line)):.2f}%" if len(line) > 1 and line[0][0] <= blocks <= line[-1][0] else "—"

    for r in sorted(reads):
        if not names & {f"{b}{r}" for b in ("static", "static-ft", "deebert", "pabee")}:
            continue  # no baseline whose classifiers read what these DACT modules read
        line = sorted((m[4], m[2]) for m in means if m[0] == f"static{r}")
        ft = sorted((m[4], m[2]) for m in means if m[0] == f"static-ft{r}")
        for m in sorted((m for m in dacts if reads_of(m[0]) == r), key=lambda m: (m[0], m[4])):
            cells = [read_line(line, m[4]), read_line(ft, m[4])] + [best_within(means, f"{b}{r}", m[4], knob=False) for b in ("deebert", "pabee")]
            lines.append(f"| {m[0]} {m[1]} | {100 * m[2]:.2f} ± {100 * m[3]:.2f}% at {m[4]:.2f} (n {m[5]}) | " + " | ".join(cells) + " |")
    return lines


def block_table(rows: list, task: str) -> list:
    """Each method's per-block classifier accuracy, mean over seeds."""
    by = {}
    for r in rows:
        by.setdefault(r["method"], {}).setdefault(int(r["block"]), []).append(float(r["dev_accuracy"]))
    lines = [f"### {task}: each block's own classifier (dev accuracy, mean over seeds)", "",
             "| classifiers of | n | " + " | ".join(f"block {b}" for b in range(1, 7)) + " |", "|---|---|" + "---|" * 6]
    for method, blocks in by.items():
        lines.append(f"| {method} | {len(blocks[1])} | " + " | ".join(f"{100 * statistics.mean(v):.1f}" for _, v in sorted(blocks.items())) + " |")
    return lines


def plot(rows: list, task: str, path: Path) -> None:
    """Accuracy against average blocks for every method (mean over seeds, sd as error bars),
    the full-depth reference as a line; left all points, right the top of the range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {}
    for r in rows:
        by.setdefault(r["method"], {}).setdefault(str(r["knob"]), []).append((float(r["avg_blocks"]), 100 * float(r["dev_accuracy"])))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    bases = list(dict.fromkeys(rule_of(m)[0] for m in by))  # a method and its tight rule share a colour
    color = dict(zip(bases, (plt.cm.tab10.colors + plt.cm.Dark2.colors) * 2))  # 18 distinct colours before any repeats
    top = max(a for pts in by.values() for runs in pts.values() for _, a in runs)
    for method, knobs in by.items():
        pts = sorted((statistics.mean(b for b, _ in runs), *mean_sd([a for _, a in runs])) for runs in knobs.values())
        for ax in axes:
            c = color[rule_of(method)[0]]
            if method.startswith("plain"):
                ax.axhline(pts[0][1], color=c, ls=":", lw=1.2, label=f"{method}, 6 blocks")
            else:
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", ms=4, capsize=2,
                            lw=1.2, ls="--" if "tight" in method else "-", color=c, label=method)
    for ax, floor in ((axes[0], None), (axes[1], top - 8)):
        ax.set_xlabel("average blocks run (of 6)")
        ax.set_ylabel(f"{task} dev accuracy (%)")
        ax.grid(alpha=0.3)
        if floor is not None:
            ax.set_ylim(floor, top + 1)
    axes[0].set_title(f"{task}: every point")
    axes[1].set_title("the top of the range")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def numbers(kind):
    """An argparse type: a comma-separated list of `kind` (empty items skipped)."""
    def parse(text):
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list of {kind.__name__} values: {text!r}") from None
    return parse


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=list(DATA), required=True, help="the task whose train.tsv and dev.tsv to use")
    ap.add_argument("--seeds", default="0,1,2", type=numbers(int), help="seeds of the whole pipeline (\"\": only rebuild the report)")
    ap.add_argument("--epochs", type=int, default=3, help="backbone-training epochs, the same for every method")
    ap.add_argument("--taus", default="0.05,0.1,0.2", type=numbers(float), help="DACT's τ sweep")
    ap.add_argument("--methods", default="plain,deebert,static,pabee,dact,dact-distill", help="the methods to run (and static-ft)")
    ap.add_argument("--ft-blocks", default="1,2,3", type=numbers(int), help="static-ft: the k of the k-block models")
    ap.add_argument("--head-input", default="cls", choices=["cls", "cls-norm", "mean"],
                    help="what every per-block classifier reads, for every method (named in the method: static-mean, ...)")
    ap.add_argument("--bert", default="all-MiniLM-L6-v2", help="BERT directory or downloaded model name")
    ap.add_argument("--data-dir", default=None, help="folder with train.tsv and dev.tsv (default: the task's in the tinydact home)")
    ap.add_argument("--train-sample", type=int, default=0, metavar="N",
                    help="train every method on a fixed sample of N training examples (the task is then named TASK-Nk)")
    ap.add_argument("--max-length", type=int, default=64, help="tokens per example, the same for every method")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="training precision (bfloat16: autocast on the matrix products)")
    ap.add_argument("--runs", required=True, help="folder for the run folders (outside the repository)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for training and evaluation")
    ap.add_argument("--keep-states", action="store_true",
                    help="keep each finished run's resume state (state.pt); by default it is removed once final/ is written")
    ap.add_argument("--wall-clock", type=int, default=0, metavar="ROUNDS",
                    help="train nothing: time every point at ≤ 3 blocks of --seeds whose run folder is under --runs, at batch 1, "
                         "against the plain model of its seed (ROUNDS rounds), and add the ratios to the results")
    ap.add_argument("--name", default="tasks", help="results file names: NAME.csv, NAME.md, NAME_blocks.csv, NAME_<task>.png")
    ap.add_argument("--results", default=str(RESULTS), help="folder for the results files")
    args = ap.parse_args()
    args.methods = args.methods.split(",")
    if unknown := set(args.methods) - set(METHODS):
        ap.error(f"unknown method(s) {', '.join(sorted(unknown))}; known: {', '.join(METHODS)}")
    torch.set_num_threads(args.threads)
    results = Path(args.results)
    files = {kind: results / f"{args.name}{kind}.csv" for kind in ("", "_blocks")}
    kept = {kind: list(csv.DictReader(open(f))) if f.is_file() else [] for kind, f in files.items()}
    md = results / f"{args.name}.md"
    commands = [line for line in (md.read_text().splitlines() if md.is_file() else []) if line.startswith("- `python benchmarks/tasks.py")]
    command = f"- `python benchmarks/tasks.py {' '.join(sys.argv[1:])}`"
    seeds = args.seeds  # none: rewrite the report from the CSV files
    if not seeds and not kept[""]:
        raise TinydactError(f"no results in {files['']} to rebuild the report from: run some seeds first")
    commands = [c for c in commands if c != command] + ([command] if seeds else [])
    header = ["# Every method on its own recipe, one backbone, the same budget", "",
              f"Backbone {args.bert}, max length {args.max_length}; dev accuracy (the knobs and τ are read on dev), "
              "mean ± sample sd over seeds, average blocks of 6 and the knob in brackets. Made by:", "", *commands, ""]

    def save(rows: list, blocks: list) -> None:
        """Merge new rows over earlier ones with the same task, method, seed (and knob / block), and rewrite both files."""
        for kind, new in (("", rows), ("_blocks", blocks)):
            key = (lambda r: (r["task"], r["method"], str(r["seed"]), str(r.get("knob", r.get("block")))))
            fresh = {key(r) for r in new}
            kept[kind] = [r for r in kept[kind] if key(r) not in fresh] + new
        lines = header + headline(kept[""]) + [""]
        for task in dict.fromkeys(r["task"] for r in kept[""]):
            lines += summary([r for r in kept[""] if r["task"] == task], task) + [""]
            lines += against_baselines([r for r in kept[""] if r["task"] == task], task) + [""]
            lines += block_table([r for r in kept["_blocks"] if r["task"] == task], task) + [""]
            lines += wall_table([r for r in kept[""] if r["task"] == task], task) + [""]
        write_results(args.name, kept[""], lines, results)
        if kept["_blocks"]:
            write_results(f"{args.name}_blocks", kept["_blocks"], None, results)

    def plots() -> None:
        for task in dict.fromkeys(r["task"] for r in kept[""]):
            plot([r for r in kept[""] if r["task"] == task], task, results / f"{args.name}_{task}.png")

    if args.wall_clock:
        task = task_name(args.task, args.train_sample)
        rows = [r for r in kept[""] if r["task"] == task]
        timed = wall_clock(rows, seeds, Path(args.runs) / task, data_dir(args.task, args) / "dev.tsv", 3, args.wall_clock)
        if not timed:
            raise TinydactError(f"nothing to time: no run folders of {task}'s points (seeds {seeds}, with their plain model) "
                                f"under {Path(args.runs) / task}")
        seeds = []  # nothing to train
        save(timed, [])
    for seed in seeds:
        one_seed(args.task, seed, args, torch.device("cpu"), save)
    save([], [])
    plots()
    print(md.read_text())


if __name__ == "__main__":
    try:
        main()
    except TinydactError as e:
        sys.exit(f"Error: {e}")
