# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial 6: serving adaptive depth
#
# Tutorial 5 made early exit pay in a batch: rows that stopped leave it before the next
# block. A service has no fixed batch: requests arrive one by one, and the server decides
# which rows run together. This tutorial: (1) why a batch must let rows leave *and* let
# others in; (2) three schedulers in a few lines each, simulated on a model of time you can
# follow on paper, with the depth queues drawn (`tutorials/serving_schedules.png`); (3) the
# real one, `tinydact.scheduler.Service`, on the shipped model: its answers equal
# `tinydact.load()(texts)` whichever scheduler runs them; (4) `tinydact serve` over HTTP.
#
# **What it needs.** The DACT-BERT shipped in `weights/`, and SST-2 dev sentences from
# `data/glue/SST-2` (`tinydact.home.locate`), or else the sentences written into this script.

# %%
import os
from collections import namedtuple
from pathlib import Path

import tinydact
from tinydact.data import read_examples
from tinydact.home import locate

FAST = os.environ.get("TINYDACT_FAST") == "1"
# pictures are written next to the tutorials (the folder that holds the tinydact package's checkout)
PICTURES = Path(tinydact.__file__).resolve().parent.parent / "tutorials"

# %% [markdown]
# ## 1. Why a batch must let rows leave and let others in
#
# A server batches because one block on b rows costs much less than b blocks on one row:
# the fixed cost of a call (the weights read, the kernels launched, Python) is paid once.
#
# - **static**: take the rows waiting (up to `max_batch`), run all N blocks on all of them,
#   answer them (with `a_N`), take the next batch. A row that could stop after block 1 runs
#   N blocks.
# - **compact**: the same batch with tutorial 5's early exit (`DACTBert.predict`): halted
#   rows leave before the next block. But the batch is answered when `predict` returns,
#   after its deepest row, and a request that arrives meanwhile waits for all of it.
# - **depth**: one queue per depth: queue n holds the rows that have run n blocks, and new
#   rows join queue 0. A *tick* runs block n + 1 on the rows of queue n; then the rows whose
#   halting test passes leave with their answer, the others join queue n + 1. The policy
#   picks the queue: `oldest`, the one whose first row belongs to the oldest request (first
#   come, first served); `fair`, the one whose first row has waited longest (since it arrived
#   or ran its last block: every queue in turn, so a new request starts within a tick or
#   two); or `fullest`, the longest (fuller calls, fewer fixed costs). Rows of different
#   requests at the same depth share a call, and a row is answered after the block where it
#   halts, whatever the rows it ran with still have to do.
#
# ## 2. The three, simulated
#
# A request is its arrival time and its exit depth (the model decides it; here we write it
# down). One block on b rows costs `C0 + C1 * b` time units, and the server runs one thing
# at a time. Static and compact take the rows waiting when the server is free (`max_wait` 0).

# %%
Request = namedtuple("Request", "name arrival depth")
C0, C1 = 2, 1  # cost of one block on b rows: C0 + C1·b time units


def cost(b):
    return C0 + C1 * b


def batch_at_a_time(requests, N, max_batch, early_exit):
    """static (early_exit False) and compact (True). Returns {name: finish time} and the log
    of block runs, (start, duration, block n, rows)."""
    t, waiting, finish, log = 0, sorted(requests, key=lambda r: r.arrival), {}, []
    while waiting:
        t = max(t, waiting[0].arrival)  # idle until the next arrival
        batch = [r for r in waiting if r.arrival <= t][:max_batch]
        waiting = [r for r in waiting if r not in batch]
        for n in range(1, N + 1):
            rows = [r for r in batch if r.depth >= n] if early_exit else batch
            if not rows:
                break
            log.append((t, cost(len(rows)), n, rows))
            t += cost(len(rows))
        finish.update({r.name: t for r in batch})  # the batch is answered when it is done
    return finish, log


def depth_queues(requests, N, max_batch, policy):
    """depth: queues[n] holds the rows that have run n blocks (as in tinydact/scheduler.py);
    each tick runs block n + 1 on (up to max_batch of) the rows of one queue."""
    t, pending, finish, log = 0, sorted(requests, key=lambda r: r.arrival), {}, []
    queues, since = [[] for _ in range(N)], {r.name: r.arrival for r in requests}  # since: joined its queue
    while pending or any(queues):
        if not any(queues):
            t = max(t, pending[0].arrival)  # idle until the next arrival
        queues[0] += [r for r in pending if r.arrival <= t]  # new rows have run 0 blocks
        pending = [r for r in pending if r.arrival > t]
        live = [n for n in range(N) if queues[n]]
        if policy == "oldest":  # the queue whose first row arrived first (ties: the deeper)
            n = min(live, key=lambda n: (queues[n][0].arrival, -n))
        elif policy == "fair":  # the queue whose first row has waited longest (ties: the deeper)
            n = min(live, key=lambda n: (since[queues[n][0].name], -n))
        else:  # "fullest": the longest queue (ties: the deeper)
            n = max(live, key=lambda n: (len(queues[n]), n))
        rows, queues[n] = queues[n][:max_batch], queues[n][max_batch:]
        log.append((t, cost(len(rows)), n + 1, rows))  # block n + 1
        t += cost(len(rows))
        for r in rows:  # halted rows leave with their answer, the others wait for the next block
            if r.depth == n + 1:
                finish[r.name] = t
            else:
                queues[n + 1].append(r)
                since[r.name] = t
    return finish, log


# %% [markdown]
# The tiny case: N = 3 blocks, `C0 = 2`, `C1 = 1`. A deep request A (3 blocks) and a short
# one B (1 block) arrive at 0; C and D (1 block each) at 3 and 5; E (2 blocks) at 6.
#
# Try it on paper first. **Static**: A and B run 3 blocks of 2 rows, 3 × 4 = 12, and finish
# at 12; then C, D, E: 3 × 5 = 15, they finish at 27. **Compact**: block 1 on A, B (4, t =
# 4), B halts; A alone runs blocks 2 and 3 (3 + 3): both are answered at 10. C, D, E:
# block 1 (5, t = 15), C and D halt; block 2 on E (3, t = 18). **Depth, oldest**: block 1
# on A, B (t = 4): B is answered at 4 (not at 10, as in compact); A arrived before C: block
# 2 on A (t = 7), block 3 on A (t = 10); then C, D, E, block 1 (t = 15), C and D answered;
# block 2 on E (t = 18). **Depth, fair**: block 1
# on A, B (t = 4): B is answered at 4, A joins queue 1 at 4; C has waited in queue 0 since
# 3, so block 1 on C (t = 7); A (since 4) before D (since 5): block 2 on A (t = 10); block
# 1 on D, E (t = 14), D answered; A (since 10) before E (since 14): block 3 on A (t = 17),
# block 2 on E (t = 20). **Depth, fullest**: at t = 4 queues 0 (C) and 1 (A) tie, the
# deeper goes first: block 2 on A (t = 7); queue 0 now holds C, D, E: block 1 (5, t = 12),
# C and D answered; A and E tie again: block 3 on A (t = 15), block 2 on E (t = 18).

# %%
N_TOY = 3
TOY = [Request("A", 0, 3), Request("B", 0, 1), Request("C", 3, 1), Request("D", 5, 1), Request("E", 6, 2)]
runs = {  # name: ({request: finish time}, log of block calls)
    "static": batch_at_a_time(TOY, N_TOY, 32, early_exit=False),
    "compact": batch_at_a_time(TOY, N_TOY, 32, early_exit=True),
    "depth, oldest": depth_queues(TOY, N_TOY, 32, "oldest"),
    "depth, fair": depth_queues(TOY, N_TOY, 32, "fair"),
    "depth, fullest": depth_queues(TOY, N_TOY, 32, "fullest"),
}
BY_HAND = {  # the finish times worked out above
    "static": dict(A=12, B=12, C=27, D=27, E=27),
    "compact": dict(A=10, B=10, C=18, D=18, E=18),
    "depth, oldest": dict(A=10, B=4, C=15, D=15, E=18),
    "depth, fair": dict(A=17, B=4, C=7, D=14, E=20),
    "depth, fullest": dict(A=15, B=4, C=12, D=12, E=18),
}
TOTALS_BY_HAND = {"static": (5 / 27, 18.2, 24), "compact": (5 / 18, 12, 15), "depth, oldest": (5 / 18, 9.6, 12),
                  "depth, fair": (5 / 20, 9.6, 17), "depth, fullest": (5 / 18, 9.4, 15)}  # throughput, mean and worst latency, worked out below
totals = {}
print(f"{'':>15}  finish  " + " ".join(f"{r.name:>3}" for r in TOY) + "   throughput  mean latency  worst")
for name, (finish, log) in runs.items():
    latency = [finish[r.name] - r.arrival for r in TOY]
    totals[name] = (len(TOY) / max(finish.values()), sum(latency) / len(TOY), max(latency))
    print(f"{name:>15}          " + " ".join(f"{finish[r.name]:>3}" for r in TOY)
          + f"   {totals[name][0]:10.3f}  {totals[name][1]:12.1f}  {max(latency):5}")  # fmt: skip

# %% [markdown]
# Throughput is requests per time unit until the last answer: 5/27, 5/18, 5/18, 5/20, 5/18.
# Latency is finish − arrival: on average 91/5 = 18.2, 60/5 = 12, 48/5 = 9.6, 48/5 = 9.6 and
# 47/5 = 9.4 units; at worst 24 (C, static), 15 (C), 12 (C and E), 17 (A), 15 (A). Compact
# does static's work in two thirds of the time (8 rows·blocks, the sum of the exit depths,
# instead of 5 × 3 = 15, in 5 calls instead of 6), but B waits 10 units for A, and C, D, E
# for the first batch. The depth queues answer B at 4. `oldest` makes compact's very calls
# and answers each row as it halts: the lowest worst latency. `fair` answers C at once, at
# the price of one call more (block 1 runs twice: 6 calls, the lowest throughput of the
# early-exit schedules); `fullest` gathers C, D, E into one call: the lowest mean latency.
# Which wins under real load, `benchmarks/serve_load.py` measures.
#
# The picture: one row per block, time to the right; every box is one block call, labelled
# with the rows it ran; the triangles are the arrivals.

# %%
try:
    import matplotlib.pyplot as plt  # without a display, matplotlib draws into files only
except ImportError:
    plt = None
    print("matplotlib is not installed: no picture")

if plt is not None:
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 1.3 * len(runs) + 1), sharex=True)
    for ax, (name, (finish, log)) in zip(axes, runs.items()):
        for start, duration, n, rows in log:
            ax.broken_barh([(start, duration)], (n - 0.4, 0.8), facecolor=f"C{n - 1}", edgecolor="black", alpha=0.6)
            ax.text(start + duration / 2, n, "".join(r.name for r in rows), ha="center", va="center", fontsize=8)
        ax.plot([r.arrival for r in TOY], [0.55] * len(TOY), "k^", markersize=5)  # the arrivals
        ax.set(yticks=range(1, N_TOY + 1), ylim=(0.4, N_TOY + 0.6), ylabel="block")
        ax.set_title(f"{name}: finish times " + ", ".join(f"{k} {v}" for k, v in sorted(finish.items())), fontsize=9, loc="left")
    axes[-1].set_xlabel("time (units; one block on b rows costs C0 + C1·b)")
    fig.tight_layout()
    fig.savefig(PICTURES / "serving_schedules.png", dpi=100)
    print("saved", PICTURES / "serving_schedules.png")

# %% [markdown]
# ## 3. The real scheduler
#
# `tinydact.scheduler.Service` runs these schedulers on a model, in a thread of its own:
# `submit(texts)` returns a `concurrent.futures.Future` whose result is what `clf(texts)`
# returns, and `metrics()` counts requests, rows, blocks per row and latencies. Requests
# submitted without waiting for answers queue as in section 2. Rows batched with other
# requests' rows are padded differently, so probabilities may differ in the last bits; labels
# and blocks may not (the halting test is `dact.py`'s, and exact). Static runs every block,
# so it answers what `clf(texts, halt=False)` answers: the same labels, `a_N`, N blocks.

# %%
from tinydact.scheduler import Service

clf = tinydact.load()  # the DACT-BERT shipped in weights/
N = clf.num_blocks
SENTENCES = [
    "a masterpiece: funny, moving and beautifully acted.", "the worst film i have seen this year.",
    "it is not bad, but it is not good either.", "i wanted to like it more than i did.",
    "brilliant performances and a gripping story.", "only occasionally as clever as it thinks it is.",
    "a warm, witty and wonderful film.", "the first half drags; the second half almost makes up for it.",
]
data, line = locate("data/glue/SST-2", None, f"the {len(SENTENCES)} sentences written into this script")
print(line)
TEXTS = SENTENCES if data is None else [e.text_a for e in read_examples(data / "dev.tsv")[0]][: 48 if FAST else 200]
expected, full_depth = clf(TEXTS), clf(TEXTS, halt=False)  # with early exit, and every block (static's answers)
assert [r["label"] for r in expected] == [r["label"] for r in full_depth], "early exit changed a label"
print(f"model: N = {N} blocks; {len(TEXTS)} texts, {sum(r['blocks'] for r in expected) / len(TEXTS):.2f} blocks on average")


def served(scheduler, policy, want):
    """Every text as its own request, all submitted at once, and one request of them all.
    Returns the answers whose label or blocks differ from `want`, the max |probability
    difference|, and the service's metrics."""
    service = Service(clf, scheduler=scheduler, policy=policy, max_batch=16, max_wait_ms=5.0)
    try:
        singles = [service.submit([text]) for text in TEXTS]  # never waiting for an answer before the next
        together = service.submit(TEXTS)
        got = [f.result(timeout=300)[0] for f in singles] + together.result(timeout=300)
        metrics = service.metrics()
    finally:
        service.close()  # drains what is still running, stops the thread
    pairs = list(zip(got, want * 2, strict=True))
    wrong = sum((r["label"], r["blocks"]) != (e["label"], e["blocks"]) for r, e in pairs)
    return wrong, max(abs(r["probs"][k] - e["probs"][k]) for r, e in pairs for k in e["probs"]), metrics


checks = {}
print(f"{'scheduler':>15}  {'blocks/row':>10}  {'p50 ms':>7}  {'p99 ms':>7}  labels/blocks differing  max |Δ prob|")
for scheduler, policy in [("static", "oldest"), ("compact", "oldest"), ("depth", "oldest"), ("depth", "fair"), ("depth", "fullest")]:
    wrong, gap, metrics = served(scheduler, policy, full_depth if scheduler == "static" else expected)
    name = scheduler if scheduler != "depth" else f"depth, {policy}"
    checks[name], latency = (wrong, gap, metrics["blocks_per_row"]), metrics["latency_ms"]
    print(f"{name:>15}  {metrics['blocks_per_row']:>10.2f}  {latency['p50']:>7.1f}  {latency['p99']:>7.1f}  "
          f"{wrong:>23}  {gap:.1e}")  # fmt: skip

# %% [markdown]
# `blocks/row` is what the service ran: N for static, `clf`'s average blocks for the others.
# The latencies mean little here: everything was submitted at once, a burst, not a load.
#
# ## 4. The HTTP service
#
# `tinydact serve` puts a `Service` behind HTTP (an ASGI app under uvicorn: `pip install -e
# ".[serve]"`); it prints one line when it listens, and Ctrl-C drains the requests in flight.
#
#     OMP_NUM_THREADS=1 tinydact serve --port 8000 --scheduler depth --policy oldest --max-batch 32 --max-wait-ms 5
#
# `POST /classify` takes texts, and pairs as two-element lists; it answers what
# `tinydact.load()(texts)` answers, in input order. A bad request gets a 4xx, a full queue
# (`--max-queue`) a 503, each with `{"error": "..."}`.
#
#     curl -s localhost:8000/classify -H 'Content-Type: application/json' \
#          -d '{"texts": ["a gripping, beautiful film", "dull and far too long"]}'
#     curl -s localhost:8000/health      # {"status": "ok", "model": "weights/", "num_blocks": 6, "labels": [...], ...}
#     curl -s localhost:8000/metrics     # requests, rows, blocks_per_row, queue_depth, queues, latency_ms, ...
#
# `benchmarks/serve_load.py` offers Poisson arrivals at several rates to each scheduler and
# reports, side by side, the rate each sustains under a p99 latency bound.
#
# ## The check
#
# 1. **The simulation is the one worked out by hand**: the finish times and totals of
#    section 2; static runs N blocks on every row, the others each row's exit depth.
# 2. **The service answers what `clf` answers** (static: `clf(texts, halt=False)`, with
#    the same labels), for every scheduler, on one-text requests submitted together and on
#    one request of all the texts: labels and blocks equal, probabilities within 1e-6.
# 3. **Blocks per row**: N for static, `clf`'s average for the others.

# %%
for name, (finish, log) in runs.items():
    ran = {r.name: sum(r in rows for _, _, _, rows in log) for r in TOY}
    depth = {r.name: N_TOY if name == "static" else r.depth for r in TOY}
    print(f"1. {name:>15}: finish times {finish == BY_HAND[name]}, blocks run per request {ran}")
    assert finish == BY_HAND[name], f"{name}: {finish} is not the hand computation {BY_HAND[name]}"
    assert all(abs(a - b) < 1e-9 for a, b in zip(totals[name], TOTALS_BY_HAND[name])), f"{name}: totals {totals[name]}"
    assert ran == depth, f"{name}: the rows ran {ran} blocks, not {depth}"
mean_blocks = sum(r["blocks"] for r in expected) / len(expected)
for name, (wrong, gap, blocks_per_row) in checks.items():
    print(f"2. {name:>15}: {wrong} labels or blocks differ, max probability difference {gap:.1e}; "
          f"3. blocks per row {blocks_per_row:.3f} (N = {N}, clf's average {mean_blocks:.3f})")  # fmt: skip
    assert wrong == 0 and gap < 1e-6, f"{name}: the service does not answer what clf answers"
    want = N if name == "static" else mean_blocks
    assert abs(blocks_per_row - want) < 1e-6, f"{name}: {blocks_per_row} blocks per row, expected {want}"
print("all checks passed")
