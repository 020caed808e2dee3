"""Serving adaptive depth: how requests that arrive one by one become batches.

In a batch, early exit already pays: rows that halt leave before the next block
(`model.run_with_early_exit`). But a batch is a closed list. Its short rows finish early and
then wait, idle, for the deep rows; requests that arrive meanwhile wait for the whole batch.
A service needs batches that rows can leave *and join* between blocks. That is what the depth
queues do: one queue per depth, each holding the rows that have run that many blocks.

    new rows ──▶ queue 0 ──block 1──▶ queue 1 ──block 2──▶ queue 2 ── ... ──block N──▶ done
                                 │                    │
                                 └─ halted: answered  └─ halted: answered

Each tick runs ONE block, on (up to `max_batch` of) the rows waiting for it: block n + 1 on
queue n. After the block, the DACT head and the halting test run on those rows (the very
functions `DACTBert.predict` uses: `dact_update`, `can_halt`); rows that pass leave with
their answer, the others join queue n + 1. A new request starts at block 1 on the next tick
that picks queue 0, whatever the depth of the rows before it. Which queue a tick serves is
the policy: `oldest` (the queue whose first row belongs to the oldest request: first come,
first served), `fair` (the queue whose first row has waited longest for its next block:
every queue in turn, so a new row waits a tick or two, never for deep rows to finish) or
`fullest` (the longest queue: the most rows per block run; a lone deep row may starve).
Whatever the policy, a row is answered after the block where it halts, not when the rows
it was batched with are done. Every row's blocks are the
same blocks run in the same order with the same test, so predictions are those of full depth
(`--no-halt`), as in `predict`; only the rows batched together differ, which moves float32
results in their last bits, never the exactness argument (docs/dact.md §3).

For comparison, the usual dynamic batching: wait up to `max_wait_ms` for up to `max_batch`
rows, then run that batch to the end, either at full depth (`static`) or with per-batch early
exit (`compact`, `DACTBert.predict`).

`Service` runs one scheduler in a thread of its own: `submit(texts)` returns a future of
exactly what `Classifier.__call__` returns for them. The HTTP layer is server.py.
"""

import collections
import math
import threading
import time
from concurrent.futures import Future

import torch

from .api import as_list, check_input, runs_of_one_kind
from .dact import can_halt, dact_update
from .errors import TinydactError
from .options import POLICIES, SCHEDULERS, check_choice, check_rule

LATENCIES_KEPT = 10_000  # the metrics' latency quantiles are over the last this many requests


class QueueFull(TinydactError):
    """More rows than the service holds (`max_queue`): try again later (HTTP 503)."""


class Job:
    """One request: its inputs, their answers as they come, and the future it waits on."""

    def __init__(self, items: list):
        self.items, self.results, self.left = items, [None] * len(items), len(items)
        self.future, self.arrived = Future(), time.monotonic()


class Row:
    """One input of a job on its way through the blocks: token ids (T,) without padding,
    its hidden states x (T, H) after `n` blocks (None before block 1), a_n (K,) and p_n ()."""

    def __init__(self, job: Job, index: int, ids, type_ids, truncated: bool, a, p):
        self.job, self.index, self.ids, self.type_ids, self.truncated = job, index, ids, type_ids, truncated
        self.x, self.a, self.p, self.n = None, a, p, 0
        self.since = job.arrived  # when it joined the queue it is in


def padded(tensors, value=0):
    """Tensors (T_i, ...) stacked into (b, T, ...), T = max T_i, right-padded with `value`,
    and the (b, T) mask of real positions."""
    T = max(t.size(0) for t in tensors)
    out = tensors[0].new_full((len(tensors), T, *tensors[0].shape[1:]), value)  # (b, T, ...)
    mask = torch.zeros(len(tensors), T, dtype=torch.long, device=tensors[0].device)  # (b, T)
    for i, t in enumerate(tensors):
        out[i, : t.size(0)], mask[i, : t.size(0)] = t, 1
    return out, mask


class DepthQueues:
    """The depth-bucketed scheduler (module docstring). No threads: `Service` calls `tick`."""

    def __init__(self, clf, rule: str, max_batch: int, max_wait_ms: float, policy: str = "oldest"):
        self.clf, self.model, self.rule, self.max_batch = clf, clf.model, rule, max_batch
        self.max_wait, self.policy = max_wait_ms / 1000, check_choice(policy, POLICIES, "policy")
        self.N = clf.num_blocks
        self.queues = [collections.deque() for _ in range(self.N)]  # queues[n]: rows that have run n blocks

    def add(self, rows):
        self.queues[0].extend(rows)

    def waiting(self) -> list:
        return [len(q) for q in self.queues]

    def ready(self, now: float) -> float:
        """Seconds until a tick is worth running: 0 with rows past block 1, or a full batch of
        new rows, or new rows that waited `max_wait_ms`; inf with nothing to run."""
        if any(self.queues[1:]) or len(self.queues[0]) >= self.max_batch:
            return 0.0
        return max(0.0, self.queues[0][0].job.arrived + self.max_wait - now) if self.queues[0] else float("inf")

    def pick(self) -> int:
        """The depth n whose queue the next tick serves (block n + 1 runs)."""
        live = [n for n, q in enumerate(self.queues) if q]
        if self.policy == "oldest":
            return min(live, key=lambda n: (self.queues[n][0].job.arrived, -n))
        if self.policy == "fair":
            return min(live, key=lambda n: (self.queues[n][0].since, -n))
        return max(live, key=lambda n: (len(self.queues[n]), n))

    @torch.no_grad()
    def tick(self) -> tuple:
        """Run one block on the rows of the picked queue: (rows run, the rows that halted)."""
        n = self.pick()
        queue, bert = self.queues[n], self.model.bert
        rows = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
        if n == 0:  # block 1 starts from the embeddings
            ids, mask = padded([r.ids for r in rows], bert.config.pad_token_id)  # (b, T), (b, T)
            x = bert.embed(ids, padded([r.type_ids for r in rows])[0])  # (b, T, H)
        else:
            x, mask = padded([r.x for r in rows])  # (b, T, H), (b, T)
        x = bert.blocks[n](x, bert.mask(mask, x.size(1)))  # (b, T, H): block n + 1
        # the DACT step of `DACTBert.predict`, in float32 whatever the backbone's dtype
        y_n, h_n = self.model.heads[n](self.model.read(x, mask).float())  # (b, K), (b,)
        a_n, p_n = dact_update(torch.stack([r.a for r in rows]), torch.stack([r.p for r in rows]), y_n, h_n)
        done = can_halt(a_n, p_n, self.N - (n + 1), self.rule)  # (b,)
        finished, now = [], time.monotonic()
        for i, (r, stop) in enumerate(zip(rows, done.tolist())):  # one transfer, not a tensor per row
            r.a, r.p, r.n, r.since = a_n[i], p_n[i], n + 1, now
            if stop:
                finished.append(r)
            else:
                r.x = x[i, : r.ids.size(0)]  # (T_i, H): the row's own tokens, no padding
                self.queues[n + 1].append(r)
        return len(rows), finished

    def drain(self):
        """Forget every row waiting."""
        for q in self.queues:
            q.clear()


class WholeBatches:
    """Dynamic batching: up to `max_batch` rows, once the first has waited `max_wait_ms`, run
    to the end together: every block (`static`), or with per-batch early exit (`compact`)."""

    def __init__(self, clf, rule: str, max_batch: int, max_wait_ms: float, halt: bool):
        self.clf, self.rule, self.max_batch, self.max_wait, self.halt = clf, rule, max_batch, max_wait_ms / 1000, halt
        self.queue = collections.deque()

    def add(self, rows):
        self.queue.extend(rows)

    def waiting(self) -> list:
        return [len(self.queue)]

    def ready(self, now: float) -> float:
        if len(self.queue) >= self.max_batch:
            return 0.0
        return max(0.0, self.queue[0].job.arrived + self.max_wait - now) if self.queue else float("inf")

    def tick(self) -> tuple:
        rows = [self.queue.popleft() for _ in range(min(len(self.queue), self.max_batch))]
        pad = self.clf.model.bert.config.pad_token_id
        ids, mask = padded([r.ids for r in rows], pad)  # (b, T), (b, T)
        _, probs, blocks = self.clf.model.predict(ids, mask, padded([r.type_ids for r in rows])[0], halt=self.halt, rule=self.rule)
        for i, r in enumerate(rows):
            r.a, r.n = probs[i], int(blocks[i])
        return len(rows), rows

    def drain(self):
        self.queue.clear()


class Service:
    """A scheduler (`SCHEDULERS`) in a thread of its own, behind `submit`.

    `submit(inputs)` checks the inputs as `Classifier.__call__` does (TypeError or
    TinydactError at once), tokenizes them and returns a `Future` of the same results. At most
    `max_queue` inputs are in the service at a time: beyond that `submit` raises `QueueFull`.
    `close()` answers every input already submitted, then stops the thread."""

    def __init__(self, clf, scheduler: str = "depth", policy: str = "oldest", rule: str = "paper",
                 max_batch: int = 32, max_wait_ms: float = 5.0, max_queue: int = 1024):
        check_choice(scheduler, SCHEDULERS, "scheduler")
        check_rule(rule)
        for name, value in (("max_batch", max_batch), ("max_queue", max_queue)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TinydactError(f"{name} must be an integer >= 1, got {value!r}")
        if not max_wait_ms >= 0:
            raise TinydactError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
        if scheduler == "depth":
            self.scheduler = DepthQueues(clf, rule, max_batch, max_wait_ms, policy)
        else:
            self.scheduler = WholeBatches(clf, rule, max_batch, max_wait_ms, halt=scheduler == "compact")
        self.clf, self.name, self.max_queue = clf, scheduler, max_queue
        self.inbox, self.jobs, self.in_service, self.closing = [], set(), 0, False
        self.cond = threading.Condition()
        self.stats = dict(requests=0, rows=0, blocks=0, rejected=0, ticks=0, tick_rows=0, failed=0)
        self.histogram = [0] * clf.num_blocks
        self.latencies = collections.deque(maxlen=LATENCIES_KEPT)  # seconds, the last requests'
        self.thread = threading.Thread(target=self._loop, name="tinydact-scheduler", daemon=True)
        self.thread.start()

    def submit(self, inputs) -> Future:
        items = [check_input(x, i) for i, x in enumerate(as_list(inputs), start=1)]
        if not items:
            raise TinydactError("no texts given")
        if len(items) > self.max_queue:
            raise TinydactError(f"{len(items)} texts in one request; this service takes at most {self.max_queue} at a time")
        job = Job(items)
        rows = self._rows(job)
        with self.cond:
            if self.closing:
                raise QueueFull("the service is shutting down")
            if self.in_service + len(items) > self.max_queue:
                self.stats["rejected"] += 1
                raise QueueFull(f"the service is full ({self.in_service} of {self.max_queue} texts in progress): try again later")
            self.in_service += len(items)
            self.jobs.add(job)
            self.inbox.append(rows)
            self.cond.notify()
        return job.future

    def _rows(self, job: Job) -> list:
        """The job's inputs as `Row`s: tokenized in runs of one kind, padding removed."""
        rows, start, model = [], 0, self.clf.model
        K, ref = model.num_labels, model.heads[0].answer.weight
        for batch in runs_of_one_kind(job.items, len(job.items)):
            enc, truncated = self.clf.encode(batch)
            device = self.clf.device
            for j in range(len(batch)):
                T = int(enc.attention_mask[j].sum())
                rows.append(Row(job, start + j, enc.input_ids[j, :T].to(device), enc.token_type_ids[j, :T].to(device),
                                truncated[j], ref.new_zeros(K), ref.new_ones(())))  # a_0 = 0, p_0 = 1
            start += len(batch)
        return rows

    def _loop(self):
        while True:
            with self.cond:
                for rows in self.inbox:
                    self.scheduler.add(rows)
                self.inbox.clear()
                wait = self.scheduler.ready(time.monotonic())
                if self.closing and wait == float("inf"):
                    return
                if wait > 0 and not self.closing:  # nothing worth a tick yet: sleep until it is, or until rows come
                    self.cond.wait(None if wait == float("inf") else wait)
                    continue
            self._tick()

    def _tick(self):
        try:
            ran, finished = self.scheduler.tick()
        except Exception as e:  # a fault of the model (never of a request): every waiting job fails with it
            return self._fail_all(e)
        self.stats["ticks"] += 1
        self.stats["tick_rows"] += ran
        for r in finished:
            job = r.job
            try:
                job.results[r.index] = self.clf.result(job.items[r.index], r.a, r.n, r.truncated)
            except TinydactError as e:
                job.results[r.index] = e
            job.left -= 1
            if job.left == 0:
                self._answer(job)

    def _answer(self, job: Job):
        errors = [r for r in job.results if isinstance(r, Exception)]
        with self.cond:
            self.in_service -= len(job.items)
            self.jobs.discard(job)
            self.stats["requests"] += 1
            if errors:
                self.stats["failed"] += 1
            else:
                self.stats["rows"] += len(job.items)
                for r in job.results:
                    self.stats["blocks"] += r["blocks"]
                    self.histogram[r["blocks"] - 1] += 1
                self.latencies.append(time.monotonic() - job.arrived)
        if errors:
            job.future.set_exception(errors[0])
        else:
            job.future.set_result(job.results)

    def _fail_all(self, error: Exception):
        """Every job in the service fails with `error` (a fault of the model or the machine)."""
        with self.cond:
            self.scheduler.drain()
            jobs, self.jobs = self.jobs, set()
            for rows in self.inbox:  # (not yet in the scheduler: they go on)
                jobs.discard(rows[0].job)
                self.jobs.add(rows[0].job)
            for job in jobs:
                self.in_service -= len(job.items)
                self.stats["failed"] += 1
        for job in jobs:
            job.future.set_exception(error)

    def metrics(self) -> dict:
        """Counts since the start, the queues now, latency quantiles of the last requests."""
        with self.cond:
            s, lat = dict(self.stats), sorted(self.latencies)
            queues = self.scheduler.waiting()
            queues[0] += sum(len(rows) for rows in self.inbox)

        def quantile(q):  # nearest rank, in milliseconds
            return round(1000 * lat[max(0, math.ceil(q * len(lat)) - 1)], 3) if lat else None

        return {"scheduler": self.name, "requests": s["requests"], "rows": s["rows"], "failed": s["failed"],
                "rejected": s["rejected"], "blocks_per_row": s["blocks"] / s["rows"] if s["rows"] else None,
                "blocks_histogram": self.histogram[:], "queue_depth": sum(queues), "queues": queues,
                "in_service": self.in_service, "ticks": s["ticks"],
                "rows_per_tick": s["tick_rows"] / s["ticks"] if s["ticks"] else None,
                "latency_ms": {f"p{round(100 * q)}": quantile(q) for q in (0.5, 0.9, 0.99)}}

    def close(self):
        """Answer everything submitted, then stop (a later `submit` raises `QueueFull`)."""
        with self.cond:
            self.closing = True
            self.cond.notify()
        self.thread.join()
