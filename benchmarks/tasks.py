"""Every method on its own recipe, one backbone, the same budget, several seeds: accuracy
against blocks on one task, merged into RESULTS/<name>.csv (one row per task, method, knob,
seed), <name>_blocks.csv (each block's own classifier), <name>.md (the best mean accuracy at
≤ N/3, ≤ N/2, ≤ 2N/3 blocks of the backbone's N, or --budgets, each DACT point against the
baselines at its own blocks, and the per-block tables) and <name>_<task>.png (report.py).

    python benchmarks/tasks.py --task trec --seeds 0,1,2 --epochs 3 --head-input mean --runs ../runs/tasks --results ../results [--dtype bfloat16]
    python benchmarks/tasks.py --task trec --seeds "" --results ../results  # only rewrite the report from the CSV files
    python benchmarks/tasks.py --task sst2 --train-sample 10000 ...  # task "sst2-10k": a fixed 10,000-line sample of train
    python benchmarks/tasks.py --task agnews --seeds 1,2 --wall-clock 3 --runs ../runs/tasks --results ../results  # time the kept runs at batch 1

--results is required: a rerun writes where it says, never over the published rows (those are
rebuilt from their CSV by `--seeds "" --results benchmarks/results`).

Methods (E = --epochs of backbone training for every method; every other setting of a run is
the library's: tinydact.train.RECIPE for DACT, tinydact.baselines.training_settings for the rest):
    plain        DeeBERT's first stage (--blocks last), E epochs; the last block's classifier (the reference)
    static       static truncation's training (--blocks all), E epochs; exit at block k (the jointly
                 trained per-block classifiers)
    static-ft    separately fine-tuned k-block models: the backbone cut to its first k blocks,
                 then plain, E epochs, for each k of --ft-blocks (not in the default methods)
    deebert      stage 1 = plain; stage 2 = the other classifiers on the frozen backbone, E epochs;
                 entropy threshold sweep
    pabee        PABEE's training (--blocks weighted: Σ_j j·L_j / Σ_j j), E epochs; patience sweep
    dact         the recipe's phase 1 for E − 1 epochs, then per τ: heads only on cached states
                 (3 epochs) and joint (1 epoch): E backbone epochs in all; both rules
    dact-distill the same with self-distillation in phase 1 (--distill 0.9, T 3; our option)
--head-input (our option) sets what every method's per-block classifiers read; a method's
name carries it when it is not [CLS] (static-mean, dact-mean, dact-mean-distill, ...).
Ablations of DACT's training (`ABLATIONS`: --halt-bias B, --deep-supervision λ,
--shared-classifier) apply to the DACT methods; the name of the method, and so its rows and
run folders, carries each one set (dact-mean-bias0, dact-mean-ds0.5, dact-mean-shared); its
phase-1 folder only those phase 1 uses, so a variant whose phase 1 is the default's reuses it.

--wall-clock trains nothing: it times each point at ≤ N/2 blocks (the headline's budget) whose
run folder is still under --runs, at batch 1 over dev, against the plain model of the same
seed, and fills the CSV's wallclock_ratio and wallclock_cpu columns (empty where not measured).

Training time: each run folder that trained here keeps train_time.json (seconds, CPU, threads);
a row's train_seconds is the sum over the runs that made its model (DeeBERT: plain and stage 2;
DACT: phase 1, heads and joint), train_cpu the machine; empty where a run was resumed (its
first part went untimed) or trained before the file existed.

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
import shutil
import statistics
import sys
import time
from dataclasses import fields
from pathlib import Path

import torch
from tqdm import tqdm

import report  # benchmarks/report.py
from precision import cpu_description  # benchmarks/precision.py
from results_files import default_path, write_results  # benchmarks/results_files.py
from tinydact.baselines import training_settings
from tinydact.bert import Bert, bert_state_for_hf, read_config
from tinydact.data import detect_task, example_lengths, header_lines, read_examples
from tinydact.errors import TinydactError
from tinydact.evaluate import block_accuracies, cache_head_inputs, estimate_flops, evaluate
from tinydact.home import model_dir
from tinydact.checkpoint import load_checkpoint
from tinydact.options import APPLIES, HEAD_INPUTS, TRAIN_DTYPES, check_config
from tinydact.runfolder import atomic_write
from tinydact.tokenizer import Tokenizer
from tinydact.train import RECIPE, TrainConfig, train

DATA = {"sst2": "data/glue/SST-2", "subj": "data/subj", "agnews": "data/agnews", "trec": "data/trec"}
METHODS = ("plain", "deebert", "static", "static-ft", "pabee", "dact", "dact-distill")
# What the benchmark decides itself (every other setting is the library's):
ENTROPIES = (0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8)  # DeeBERT's exit thresholds, swept
DISTILL = {"distill": 0.9}  # dact-distill's phase 1 (the temperature: TrainConfig's default, 3)
SHARED = dict(batch_size=32, eval_every=0, save_every=500)  # every run's (the recipe's heads-only phase sets its own batch)
EVAL_BATCH = 64  # examples per batch when the points are evaluated
# DACT's ablations: (TrainConfig field, the tag a method's name gets when it is set: tag + its
# value, e.g. -bias0, -ds0.5, or the tag alone for a flag, -shared).
ABLATIONS = (("halt_bias", "bias"), ("deep_supervision", "ds"), ("shared_classifier", "shared"))


def ablation(args, phase1: bool = False) -> tuple:
    """(settings, tag): the ablations of `args` that differ from TrainConfig's defaults (with
    `phase1`: only those phase 1 uses, by options.APPLIES), and the tag they add to names."""
    default, new_heads_phase1 = TrainConfig(), TrainConfig(phase=1, blocks="all")
    settings = {field: getattr(args, field) for field, _ in ABLATIONS if getattr(args, field) != getattr(default, field)
                and (not phase1 or APPLIES[field][1](new_heads_phase1, None))}
    tag = "".join(f"-{t}" + ("" if isinstance(v, bool) else f"{v:g}") for field, t in ABLATIONS if (v := settings.get(field)) is not None)
    return settings, tag


def dact_epochs(E: int) -> tuple:
    """Epochs of DACT's three phases (RECIPE's order) when every method trains its backbone E
    epochs: phase 1 E − 1, heads only 3 (on cached states: seconds each), joint 1."""
    return E - 1, 3, 1


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
    """A copy of the BERT directory `bert` cut to its first k blocks, unless `dst` holds it
    already: blocks[:k] saved under Hugging Face names (bert.py's `bert_state_for_hf`), its
    config.json with num_hidden_layers k, the other files (the tokenizer's) as they are."""
    if (dst / "model.safetensors").is_file():
        return dst
    from safetensors.torch import save_file

    model = Bert.from_pretrained(bert)
    N = model.config.num_hidden_layers
    if not 0 < k <= N:
        raise TinydactError(f"--ft-blocks {k}: {bert} has {N} blocks")
    model.blocks = model.blocks[:k]
    model.config.num_hidden_layers = k
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in bert.iterdir():
        if f.is_file() and f.name not in ("config.json", "model.safetensors", "pytorch_model.bin"):
            shutil.copy(f, tmp / f.name)
    (tmp / "config.json").write_text(json.dumps({**read_config(bert), "num_hidden_layers": k}, indent=2))
    save_file({name: t.contiguous() for name, t in bert_state_for_hf(model).items()}, str(tmp / "model.safetensors"))
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return dst


TIME_FILE = "train_time.json"  # in a run folder trained here: its wall-clock, the CPU and threads, the dtype


def run(cfg: TrainConfig, device, keep_state: bool = False) -> Path:
    """Train one phase into cfg.out unless a finished run is there already; its final/. A
    finished run is reused from final/ alone, so its resume state (state.pt: the weights and
    the optimizer's two moments, three times the model) is removed unless `keep_state`: a
    task's seeds would otherwise leave tens of them. The time it took goes to TIME_FILE."""
    out = Path(cfg.out)
    if not (out / "final" / "model.safetensors").is_file():
        resume = (out / "state.pt").is_file()
        start = time.perf_counter()
        train(cfg, device, resume=resume, quiet=True, overwrite=not resume)
        spent = {"seconds": round(time.perf_counter() - start, 1), "resumed": resume,
                 "cpu": f"{cpu_description()[0]}; training in {cfg.dtype}"}
        atomic_write(out / TIME_FILE, lambda p: p.write_text(json.dumps(spent) + "\n"))
    if not keep_state:
        (out / "state.pt").unlink(missing_ok=True)
    return out / "final"


def points(path: Path, method: str, knobs, data: Path, max_length: int, rule: str = "paper") -> list:
    """(knob, accuracy, blocks, FLOPs ratio) of a checkpoint under a method's exit rule."""
    model, meta = load_checkpoint(path)
    tok = Tokenizer.from_pretrained(path)
    examples = read_examples(data, meta.get("task"), meta["labels"])[0]
    out = []
    for knob in knobs:
        r = evaluate(model, examples, tok, EVAL_BATCH, max_length, rule=rule, method="dact" if method.startswith("dact") else method, knob=knob)
        out.append((knob, r["accuracy"], r["avg_blocks"], r["flops_ratio"]))
    return out


def cost_of_first_blocks(path: Path, k: int, blocks: int, data: Path, max_length: int) -> float:
    """FLOPs of running k blocks on every dev example, against `blocks` blocks (the backbone's
    full depth): a k-block model's cost as a share of the full model's."""
    model, meta = load_checkpoint(path)
    lengths = example_lengths(read_examples(data, meta.get("task"), meta["labels"])[0], Tokenizer.from_pretrained(path), max_length)
    cfg, K = model.bert.config, model.num_labels
    return sum(estimate_flops(cfg, t, k, K) for t in lengths) / sum(estimate_flops(cfg, t, blocks, K) for t in lengths)


def per_block(path: Path, data: Path, max_length: int) -> list:
    """Dev accuracy of each block's own answer y_n (the per-block classifiers) of a checkpoint."""
    model, meta = load_checkpoint(path)
    examples = read_examples(data, meta.get("task"), meta["labels"])[0]
    states = cache_head_inputs(model, examples, Tokenizer.from_pretrained(path), max_length, torch.device("cpu"), "per-block")
    return block_accuracies(model, states, torch.tensor([e.label for e in examples]), torch.device("cpu"))


def trained(folders: list) -> tuple:
    """(seconds, CPU) the training of `folders` took together, from their TIME_FILEs; ("", "")
    unless each was timed whole (none resumed) on one kind of machine."""
    times = [json.loads((f / TIME_FILE).read_text()) if (f / TIME_FILE).is_file() else None for f in folders]
    if not times or None in times or any(t["resumed"] for t in times) or len({t["cpu"] for t in times}) > 1:
        return "", ""
    return round(sum(t["seconds"] for t in times), 1), times[0]["cpu"]


def run_folder(method: str, knob=None) -> tuple:
    """Where a results row's model lives under a seed's folder, and how it is run: (folder,
    exit method, knob, rule). `method` is as the CSV names it (e.g. "dact-mean-distill (tight
    rule)"), `knob` as the CSV gives it. The one place that names the run folders."""
    method, rule = report.rule_of(method)
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


class Seed:
    """One seed of one task: its run folders, what every run shares, and `save(rows, blocks)`,
    called after each method, so a stopped run keeps what it measured (and its finished run
    folders are reused)."""

    def __init__(self, task: str, seed: int, args, device, save):
        base = data_dir(task, args)
        self.task, self.seed, self.args, self.device, self.save = task_name(task, args.train_sample), seed, args, device, save
        self.dev, self.bert, self.E = base / "dev.tsv", model_dir(args.bert), args.epochs
        self.N = read_config(self.bert)["num_hidden_layers"]  # the backbone's blocks
        train_tsv = base / "train.tsv"
        if args.train_sample:
            train_tsv = sample_train(train_tsv, args.train_sample, Path(args.runs) / self.task / "train.tsv")
        self.runs = Path(args.runs) / self.task / f"seed{seed}"
        self.common = dict(train=str(train_tsv), dev=str(self.dev), max_length=args.max_length, seed=seed, dtype=args.dtype,
                           head_input=args.head_input, **SHARED)
        self.reads = "" if args.head_input == "cls" else f"-{args.head_input}"  # every classifier reads the same: the name says which

    def fit(self, model, folder: str, settings: dict, **more) -> Path:
        """Train `model` into the seed's `folder` with the library's `settings` (and `more`)."""
        cfg = TrainConfig(model=str(model), out=str(self.runs / folder), **{**self.common, **settings, **more})
        return run(cfg, self.device, self.args.keep_states)

    def points(self, path: Path, method: str, knobs, rule: str = "paper") -> list:
        return points(path, method, knobs, self.dev, self.args.max_length, rule)

    def add(self, method: str, pts: list, made_by: list, rule: str = "paper") -> None:
        """Save a method's points (knob, accuracy, blocks, FLOPs ratio) as rows, with the
        training time of the run folders `made_by` (`trained`)."""
        seconds, cpu = trained([self.runs / folder for folder in made_by])
        self.save([{"task": self.task, "method": method if rule == "paper" else method + report.TIGHT, "knob": knob, "seed": self.seed,
                    "dev_accuracy": acc, "avg_blocks": blocks, "flops_ratio": flops, "train_seconds": seconds, "train_cpu": cpu}
                   for knob, acc, blocks, flops in pts], [])

    def blocks_of(self, method: str, path: Path) -> None:
        """Save the per-block classifiers' accuracies of a checkpoint as block rows."""
        self.save([], [{"task": self.task, "method": method, "seed": self.seed, "block": n + 1, "dev_accuracy": acc}
                       for n, acc in enumerate(per_block(path, self.dev, self.args.max_length))])


def baselines(s: Seed, wanted: set) -> None:
    """plain, DeeBERT's two stages on it, static truncation, separately fine-tuned k-block
    models and PABEE, each trained as the library trains it (`training_settings`)."""
    r, E, N = s.reads, s.E, s.N
    if wanted & {"plain", "deebert"}:  # the plain model is DeeBERT's first stage
        plain = s.fit(s.bert, run_folder(f"plain{r}", N)[0], training_settings("deebert", 1), epochs=E)
        s.add(f"plain{r}", s.points(plain, "static", [N]), [plain.parent.name])  # the last block's own classifier, full depth
        if "deebert" in wanted:
            folder = run_folder(f"deebert{r}", 0)[0]
            deebert = s.fit(plain, folder, training_settings("deebert", 2), epochs=E, cache=f"{s.runs / folder}-cache.pt")
            s.add(f"deebert{r}", s.points(deebert, "deebert", ENTROPIES), [plain.parent.name, folder])
            s.blocks_of(f"deebert{r}", deebert)
    if "static" in wanted:  # static truncation and PABEE on their own joint losses
        static = s.fit(s.bert, run_folder(f"static{r}", N)[0], training_settings("static", None), epochs=E)
        s.add(f"static{r}", s.points(static, "static", range(1, N + 1)), [static.parent.name])
        s.blocks_of(f"static{r}", static)
    if "static-ft" in wanted:  # separately fine-tuned k-block models (cut once per task, shared by the seeds)
        for k in s.args.ft_blocks:
            cut = first_blocks(s.bert, k, s.runs.parent / f"{s.bert.name}-{k}-blocks")
            ft = s.fit(cut, run_folder(f"static-ft{r}", k)[0], training_settings("deebert", 1), epochs=E)
            cost = cost_of_first_blocks(ft, k, N, s.dev, s.args.max_length)
            s.add(f"static-ft{r}", [(k, acc, k, cost) for _, acc, _, _ in s.points(ft, "static", [k])], [ft.parent.name])
    if "pabee" in wanted:
        pabee = s.fit(s.bert, run_folder(f"pabee{r}", N)[0], training_settings("pabee", None), epochs=E)
        s.add(f"pabee{r}", s.points(pabee, "pabee", range(1, N + 1)), [pabee.parent.name])
        s.blocks_of(f"pabee{r}", pabee)


def dact(s: Seed, method: str) -> None:
    """DACT (`method` dact or dact-distill) as the recipe trains it (RECIPE's three phases and
    their settings), with `dact_epochs`: phase 1 once, then per τ heads only and joint."""
    (first, first_tag), (every, tag) = ablation(s.args, phase1=True), ablation(s.args)
    base = method.replace("dact", f"dact{s.reads}")
    name = base + tag
    phase1, heads, joint = (settings for _, settings in RECIPE)
    e1, e_heads, e_joint = dact_epochs(s.E)
    p1 = s.fit(s.bert, f"{base}{first_tag}-p1", phase1, epochs=e1, **(DISTILL if method == "dact-distill" else {}), **first)
    s.blocks_of(f"{name} phase 1", p1)
    for tau in s.args.taus:
        frozen = s.fit(p1, f"{name}-tau{tau}-heads", heads, tau=tau, epochs=e_heads, cache=str(s.runs / f"{name}-cache.pt"), **every)
        final = s.fit(frozen, run_folder(name, tau)[0], joint, tau=tau, epochs=e_joint, **every)
        for rule in ("paper", "tight"):
            s.add(name, [(tau, *p[1:]) for p in s.points(final, name, [None], rule)], [f.parent.name for f in (p1, frozen, final)], rule)
        s.blocks_of(f"{name} τ {tau}", final)
    print(f"{s.task} seed {s.seed}: {name} done", flush=True)


def one_seed(task: str, seed: int, args, device, save) -> None:
    """Every method of args.methods on one seed (see Seed for `save`)."""
    s = Seed(task, seed, args, device, save)
    wanted = set(args.methods)
    baselines(s, wanted)
    for method in ("dact", "dact-distill"):  # with and without self-distillation
        if method in wanted:
            dact(s, method)


def wall_clock(rows: list, seeds: list, runs: Path, data: Path, budget: float, rounds: int, max_length: int) -> list:
    """Seconds over dev at batch 1 of each point at ≤ `budget` mean blocks (over `rows`, one
    task's) whose model is still in its seed's run folder, against the plain model of the same
    seed at full depth, timed in the same process before and after every round: those rows of
    `seeds` with "wallclock_ratio" (median point time over median plain time) and
    "wallclock_cpu" (the machine) filled in."""
    means = {(m[0], m[1]): m[4] for m in report.point_means(rows)}
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
            return evaluate(model, examples, tok, 1, max_length, rule=rule, method=method, knob=knob)["seconds"]

        seconds(reference[0])  # warm up
        points = [r for r in wanted if r is not reference[0]]
        times = {id(r): [] for r in wanted}
        for i in tqdm(range(rounds), desc=f"seed {seed}: {len(wanted)} points at batch 1", leave=False):
            for r in reference + points[::-1 if i % 2 else 1] + reference:  # every round between two plain timings
                times[id(r)].append(seconds(r))
        full = statistics.median(times[id(reference[0])])
        out += [{**r, "wallclock_ratio": statistics.median(times[id(r)]) / full, "wallclock_cpu": machine} for r in wanted]
    return out


def numbers(kind):
    """An argparse type: a comma-separated list of `kind` (empty items skipped)."""
    def parse(text):
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list of {kind.__name__} values: {text!r}") from None
    return parse


THREADS_HELP = ("torch threads for training and evaluation (default 1: with other jobs on a 2-core machine a training "
                "step took 0.7-1.7 s at 1 thread and 5.2-12.6 s at 2, 7-8x slower; figures in benchmarks/results/README.md; "
                "the published rows were made at 2 and their commands say so)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=list(DATA), required=True, help="the task whose train.tsv and dev.tsv to use")
    ap.add_argument("--seeds", default="0,1,2", type=numbers(int), help="seeds of the whole pipeline (\"\": only rebuild the report)")
    ap.add_argument("--epochs", type=int, default=3, help="backbone-training epochs, the same for every method")
    ap.add_argument("--taus", default="0.05,0.1,0.2", type=numbers(float), help="DACT's τ sweep")
    ap.add_argument("--methods", default="plain,deebert,static,pabee,dact,dact-distill", help="the methods to run (and static-ft)")
    ap.add_argument("--ft-blocks", default="1,2,3", type=numbers(int), help="static-ft: the k of the k-block models")
    ap.add_argument("--head-input", default="cls", choices=HEAD_INPUTS,
                    help="what every per-block classifier reads, for every method (named in the method: static-mean, ...)")
    for field, tag in ABLATIONS:  # TrainConfig's options, for the DACT methods
        f = next(f for f in fields(TrainConfig) if f.name == field)
        kind = dict(action="store_true") if isinstance(f.default, bool) else dict(type=float, default=f.default)
        ap.add_argument("--" + field.replace("_", "-"), **kind, help=f"the DACT methods (named -{tag}{'' if 'action' in kind else '<value>'} then): {f.metadata['help']}")
    ap.add_argument("--bert", default="all-MiniLM-L6-v2", help="BERT directory or downloaded model name")
    ap.add_argument("--data-dir", default=None, help="folder with train.tsv and dev.tsv (default: the task's in the tinydact home)")
    ap.add_argument("--train-sample", type=int, default=0, metavar="N",
                    help="train every method on a fixed sample of N training examples (the task is then named TASK-Nk)")
    ap.add_argument("--max-length", type=int, default=64, help="tokens per example, the same for every method, in training and on dev")
    ap.add_argument("--dtype", default="float32", choices=TRAIN_DTYPES,
                    help="training precision (bfloat16: autocast on the matrix products)")
    ap.add_argument("--runs", default=None, help="folder for the run folders (outside the repository); needed unless --seeds \"\"")
    ap.add_argument("--results", required=True,
                    help="folder for the results files, merged with what it holds (benchmarks/results holds the published ones: "
                         "give it only to rebuild their report with --seeds \"\")")
    ap.add_argument("--budgets", default="", type=numbers(float), metavar="B1,B2,...",
                    help="the summary's budgets in blocks (default N/3, N/2, 2N/3: 2,3,4 of 6 blocks; 3,4,6 suits 12); "
                         "the middle one is the headline's and --wall-clock's")
    ap.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    ap.add_argument("--keep-states", action="store_true",
                    help="keep each finished run's resume state (state.pt); by default it is removed once final/ is written")
    ap.add_argument("--wall-clock", type=int, default=0, metavar="ROUNDS",
                    help="train nothing: time every point at ≤ the headline's budget of --seeds whose run folder is under --runs, "
                         "at batch 1, against the plain model of its seed (ROUNDS rounds), and add the ratios to the results")
    ap.add_argument("--name", default="tasks", help="results file names: NAME.csv, NAME.md, NAME_blocks.csv, NAME_<task>.png")
    return ap


class Results:
    """The results folder's NAME.csv and NAME_blocks.csv, merged with new rows by (task,
    method, seed, knob or block), and the report and plots rebuilt from them alone."""

    def __init__(self, args, command: str | None):
        self.args, self.folder = args, Path(args.results)
        self.files = {kind: self.folder / f"{args.name}{kind}.csv" for kind in ("", "_blocks")}
        self.kept = {kind: list(csv.DictReader(open(f))) if f.is_file() else [] for kind, f in self.files.items()}
        self.md = self.folder / f"{args.name}.md"
        old = [line for line in (self.md.read_text().splitlines() if self.md.is_file() else []) if line.startswith("- `python benchmarks/tasks.py")]
        self.commands = [c for c in old if c != command] + ([command] if command else [])  # no line for a rebuild

    def depth(self) -> int:
        """N: from the rows, else (nothing trained yet says) from the backbone's config."""
        return report.depth(*self.kept.values()) or read_config(model_dir(self.args.bert))["num_hidden_layers"]

    def save(self, rows: list, blocks: list) -> None:
        """Merge new rows over earlier ones with the same task, method, seed (and knob / block), and rewrite both files."""
        for kind, new in (("", rows), ("_blocks", blocks)):
            key = (lambda r: (r["task"], r["method"], str(r["seed"]), str(r.get("knob", r.get("block")))))
            fresh = {key(r) for r in new}
            self.kept[kind] = [r for r in self.kept[kind] if key(r) not in fresh] + new
        N, args = self.depth(), self.args
        header = ["# Every method on its own recipe, one backbone, the same budget", "",
                  f"Backbone {args.bert}, max length {args.max_length}; dev accuracy (the knobs and τ are read on dev), "
                  f"mean ± sample sd over seeds, average blocks of {N} and the knob in brackets. Made by:", "", *self.commands, ""]
        write_results(args.name, self.kept[""], report.report(header, *self.kept.values(), N, args.budgets), self.folder)
        if self.kept["_blocks"]:
            write_results(f"{args.name}_blocks", self.kept["_blocks"], None, self.folder)

    def plots(self) -> None:
        rows, N = self.kept[""], self.depth()
        for task in dict.fromkeys(r["task"] for r in rows):
            report.plot([r for r in rows if r["task"] == task], task, N, self.folder / f"{self.args.name}_{task}.png")


def time_points(args, results: Results, seeds: list) -> None:
    """--wall-clock: time the task's kept runs of `seeds` and add the ratios to the results."""
    task = task_name(args.task, args.train_sample)
    rows = [r for r in results.kept[""] if r["task"] == task]
    spend = report.budgets(results.depth(), args.budgets)
    timed = wall_clock(rows, seeds, Path(args.runs) / task, data_dir(args.task, args) / "dev.tsv", spend[len(spend) // 2],
                       args.wall_clock, args.max_length)
    if not timed:
        raise TinydactError(f"nothing to time: no run folders of {task}'s points (seeds {seeds}, with their plain model) "
                            f"under {Path(args.runs) / task}")
    results.save(timed, [])


def main():
    ap = parser()
    args = ap.parse_args()
    args.methods = args.methods.split(",")
    if unknown := set(args.methods) - set(METHODS):
        ap.error(f"unknown method(s) {', '.join(sorted(unknown))}; known: {', '.join(METHODS)}")
    if ablation(args)[0] and not {"dact", "dact-distill"} & set(args.methods):
        ap.error(f"--{', --'.join(f.replace('_', '-') for f in ablation(args)[0])}: DACT's options, for the methods dact, dact-distill")
    check_config(TrainConfig(**ablation(args)[0]), one_phase=False)
    if args.seeds and args.runs is None:
        ap.error("--runs is needed to train or time (only --seeds \"\" rebuilds the report without it)")
    torch.set_num_threads(args.threads)
    seeds = args.seeds  # none: rewrite the report from the CSV files
    results = Results(args, f"- `python benchmarks/tasks.py {' '.join(sys.argv[1:])}`" if seeds else None)
    if not seeds and not results.kept[""]:
        raise TinydactError(f"no results in {results.files['']} to rebuild the report from: run some seeds first")
    if args.wall_clock:
        time_points(args, results, seeds)
        seeds = []  # nothing to train
    for seed in seeds:
        one_seed(args.task, seed, args, torch.device("cpu"), results.save)
    results.save([], [])
    results.plots()
    print(results.md.read_text())


if __name__ == "__main__":
    try:
        main()
    except TinydactError as e:
        sys.exit(f"Error: {e}")
