"""The report of benchmarks/tasks.py, from its rows alone: the tables of <name>.md and the
plots <name>_<task>.png. A row is one point of the results CSV (task, method, knob, seed,
dev_accuracy, avg_blocks, flops_ratio, [wallclock_ratio, wallclock_cpu, train_seconds, train_cpu]); a block row one
per-block classifier of the blocks CSV (task, method, seed, block, dev_accuracy). N, the
backbone's blocks, is read from the rows (`depth`), so any depth reads right."""

import statistics

import numpy as np

from tinydact.options import HEAD_INPUTS

TIGHT = " (tight rule)"  # a method's name in the results ends with this when its points use the tight rule
BUDGETS = (1 / 3, 1 / 2, 2 / 3)  # the summary's budgets as shares of N: ≤ 2, ≤ 3, ≤ 4 blocks of 6


def rule_of(method: str) -> tuple:
    """A results method name split into the method and its halting rule: "dact-mean (tight
    rule)" -> ("dact-mean", "tight")."""
    return (method.removesuffix(TIGHT), "tight") if method.endswith(TIGHT) else (method, "paper")


def depth(rows: list, blocks: list) -> int | None:
    """N as the results record it: the plain model's knob (it runs to full depth), static
    truncation's deepest exit, the deepest per-block classifier; None when no row says."""
    full = [int(r["knob"]) for r in rows if rule_of(r["method"])[0].split("-")[0] in ("plain", "static")
            and not r["method"].startswith("static-ft")]
    return max(full + [int(r["block"]) for r in blocks], default=None)


def budgets(N: int, given: list | None = None) -> list:
    """The summary's budgets in blocks: `given` (a backbone's own, e.g. 3, 4, 6 of 12), else
    BUDGETS of N. The middle one is the headline's."""
    return list(given) if given else [round(share * N) for share in BUDGETS]


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


def summary(rows: list, task: str, spend: list) -> list:
    """Per method: the best mean dev accuracy among its knobs at each budget of `spend` (blocks)."""
    means = point_means(rows)
    lines = [f"## {task}", ""]
    lines += [f"{m[0]} full depth: {100 * m[2]:.2f} ± {100 * m[3]:.2f}% (n {m[5]})  " for m in means if m[0].startswith("plain")]
    lines += ["", "| method | " + " | ".join(f"≤ {b:g} blocks" for b in spend) + " |", "|---|" + "---|" * len(spend)]
    for method in dict.fromkeys(m[0] for m in means if not m[0].startswith("plain")):
        lines.append(f"| {method} | " + " | ".join(best_within(means, method, budget) for budget in spend) + " |")
    return lines


def headline(rows: list, N: int, budget: float) -> list:
    """One table over the tasks: each method's best mean accuracy at ≤ budget blocks, and the
    full-depth references."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    means = {t: point_means([r for r in rows if r["task"] == t]) for t in tasks}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = [f"## At ≤ {budget:g} blocks of {N}, every task", "", "| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for method in methods:
        cells = [best_within(means[t], method, N if method.startswith("plain") else budget) for t in tasks]
        lines.append(f"| {method}{f' ({N} blocks)' if method.startswith('plain') else ''} | " + " | ".join(cells) + " |")
    return lines


def reads_of(method: str) -> str:
    """What a DACT method's modules read, as the baselines' names carry it: "dact-mean-distill
    (tight rule)" and "dact-mean-bias0" -> "-mean", "dact" -> ""."""
    tags = rule_of(method)[0].split("-")[1:]
    return next((f"-{r}" for r in HEAD_INPUTS if "-".join(tags).startswith(r) and r != "cls"), "")


def against_baselines(rows: list, task: str) -> list:
    """Each DACT point next to the baselines at the same cost: the static line read at its
    blocks (linear between k and k + 1, what running k or k + 1 blocks on a share of the
    inputs gives), the same line of the separately fine-tuned k-block models where they were
    run, and the best DeeBERT and PABEE points at no more blocks ("—" where a baseline was
    not run or has no point there)."""
    means = point_means(rows)
    names = {m[0] for m in means}
    dacts = [m for m in means if m[0].startswith("dact")]
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


def block_table(blocks: list, task: str, N: int) -> list:
    """Each method's per-block classifier accuracy, mean over seeds: one column per block 1..N."""
    by = {}
    for r in blocks:
        by.setdefault(r["method"], {}).setdefault(int(r["block"]), []).append(float(r["dev_accuracy"]))
    lines = [f"### {task}: each block's own classifier (dev accuracy, mean over seeds)", "",
             "| classifiers of | n | " + " | ".join(f"block {b}" for b in range(1, N + 1)) + " |", "|---|---|" + "---|" * N]
    for method, accs in by.items():
        lines.append(f"| {method} | {len(accs[1])} | " + " | ".join(f"{100 * statistics.mean(v):.1f}" for _, v in sorted(accs.items())) + " |")
    return lines


def dact_blocks(rows: list, blocks: list, task: str) -> list:
    """Each DACT point's mixture (accuracy, blocks under both rules) beside each block's own
    answer y_n, after phase 1 and at the end: mean over seeds (the block rows `<method> phase 1`
    and `<method> τ <τ>` that tasks.py writes)."""
    by = {}
    for r in blocks:
        by.setdefault(r["method"], {}).setdefault(int(r["block"]), []).append(float(r["dev_accuracy"]))

    def accs(method):  # "77.6 85.8 ..." or "—"
        return " ".join(f"{100 * statistics.mean(v):.1f}" for _, v in sorted(by[method].items())) if method in by else "—"

    means = {(m[0], m[1]): m for m in point_means(rows)}
    lines = [f"### {task}: each DACT point's mixture beside each block's own answer (dev accuracy, mean over seeds)", "",
             "| DACT point | n | mixture | blocks, paper / tight rule | each block's own, after phase 1 (block 1 …) | at the end |",
             "|---|---|---|---|---|---|"]
    for (method, knob), m in sorted(means.items(), key=lambda kv: (kv[0][0], float(kv[0][1]))):
        if method.startswith("dact") and rule_of(method)[1] == "paper":
            tight = means.get((method + TIGHT, knob))
            lines.append(f"| {method} {knob} | {m[5]} | {100 * m[2]:.2f} ± {100 * m[3]:.2f}% | {m[4]:.2f} / "
                         f"{f'{tight[4]:.2f}' if tight else '—'} | {accs(f'{method} phase 1')} | {accs(f'{method} τ {float(knob)}')} |")
    return lines if len(lines) > 4 else []


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


def train_table(rows: list, task: str) -> list:
    """Minutes of training behind each model (a DACT model per τ; one model per seed for the
    others, whatever their knob), mean over the seeds that recorded it, and on what CPU."""
    timed = {}
    for r in rows:
        if r.get("train_seconds") not in (None, "") and not r["method"].endswith(TIGHT):
            knob = str(r["knob"]) if r["method"].startswith("dact") else ""
            timed.setdefault((r["method"], knob), {})[r["seed"]] = r
    if not timed:
        return []
    lines = [f"### {task}: minutes of training behind each model (its runs together, mean over the seeds that recorded them)", "",
             *[f"{m}  " for m in dict.fromkeys(r["train_cpu"] for by_seed in timed.values() for r in by_seed.values())], "",
             "| method | τ | n | minutes |", "|---|---|---|---|"]
    for (method, knob), by_seed in timed.items():
        minutes, sd = mean_sd([float(r["train_seconds"]) / 60 for r in by_seed.values()])
        lines.append(f"| {method} | {knob or '—'} | {len(by_seed)} | {minutes:.1f} ± {sd:.1f} |")
    return lines


def report(header: list, rows: list, blocks: list, N: int, given_budgets: list | None = None) -> list:
    """The lines of <name>.md: `header`, the headline over the tasks, then per task its
    summary, DACT against the baselines, the per-block table and the measured times."""
    spend = budgets(N, given_budgets)
    lines = header + headline(rows, N, spend[len(spend) // 2]) + [""]
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        lines += summary(mine, task, spend) + [""]
        lines += against_baselines(mine, task) + [""]
        lines += block_table([r for r in blocks if r["task"] == task], task, N) + [""]
        lines += dact_blocks(mine, [r for r in blocks if r["task"] == task], task) + [""]
        lines += wall_table(mine, task) + [""]
        lines += train_table(mine, task) + [""]
    return lines


def plot(rows: list, task: str, N: int, path) -> None:
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
                ax.axhline(pts[0][1], color=c, ls=":", lw=1.2, label=f"{method}, {N} blocks")
            else:
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", ms=4, capsize=2,
                            lw=1.2, ls="--" if "tight" in method else "-", color=c, label=method)
    for ax, floor in ((axes[0], None), (axes[1], top - 8)):
        ax.set_xlabel(f"average blocks run (of {N})")
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
