"""`tinydact serve` under load: the schedulers side by side, on real HTTP, at several rates.

For each schedule (static, compact, and depth with each policy: oldest, fair, fullest) the
script starts `tinydact serve` on a free port of 127.0.0.1 (torch on `--server-threads`
threads, so that this client keeps a core of its own), checks its answers against
`tinydact.load()` on a fixed set of texts (labels and blocks must be equal, or the run
stops), then offers it load: for each rate in `--rates`, Poisson arrivals of one-text
requests for `--seconds` (at most `--requests`), sent open loop, never waiting for an answer
before sending the next. The same arrivals and texts go to every schedule.

    python benchmarks/serve_load.py --results ../results                         # the defaults below
    python benchmarks/serve_load.py --rates 5 --seconds 2 --results ../results   # quick: under a minute

Per request: its latency from the moment it was due to be sent (so a late client counts
against the server, not for it) to the last byte of the answer, its status, its blocks.
Answers other than 200 are counted, never dropped: 503 (the server's queue was full) apart
from other errors (other statuses, refused connections, no answer within `--timeout`). Per
schedule and rate: the offered rate, the achieved throughput (answers per second, until the
last one), p50 and p99 latency of the answered requests, the mean blocks, the 503s and
errors. A rate meets the SLO when every request was answered with 200 and p99 <= `--slo-ms`;
once a rate is missed with requests refused or lost, or answered at under 80% of the rate
they were sent at (the server is saturated), the schedule's higher rates are not run. The
headline: each schedule's highest rate that meets the SLO, and depth's against static's and
compact's.

Texts: SST-2 dev sentences (`data/glue/SST-2` in $TINYDACT_HOME or ~/.cache/tinydact), or
else a few written here; shuffled with `--seed`. Writes serve_load.md and serve_load.csv into
`--results` (required: benchmarks/results holds the published ones).
"""

import argparse
import asyncio
import json
import math
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import torch

from precision import cpu_description  # benchmarks/precision.py
from results_files import write_results  # benchmarks/results_files.py
import tinydact
from tinydact.data import read_examples
from tinydact.errors import TinydactError
from tinydact.home import locate

SCHEDULES = {"static": ("static", ""), "compact": ("compact", ""),
             "depth": ("depth", "oldest"), "depth-fair": ("depth", "fair"),
             "depth-fullest": ("depth", "fullest")}  # name: (--scheduler, --policy)
SENTENCES = [  # without SST-2: short reviews, clear-cut and mixed
    "a masterpiece: funny, moving and beautifully acted.", "the worst film i have seen this year.",
    "i loved every minute of it.", "an awful, boring mess.", "it is not bad, but it is not good either.",
    "the plot is thin, but the actors are charming.", "i wanted to like it more than i did.",
    "not quite the disaster everyone said it was.", "only occasionally as clever as it thinks it is.",
    "a warm, witty and wonderful film.", "the first half drags; the second half almost makes up for it.",
    "dull, lifeless and far too long.", "brilliant performances and a gripping story.",
]
SATURATED = 0.8  # achieved / offered below this, with the SLO missed: higher rates are not run


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, help="folder for serve_load.md and serve_load.csv")
    ap.add_argument("--model", default=None, help="DACT-BERT checkpoint (default: the shipped model, weights/)")
    ap.add_argument("--schedules", default=",".join(SCHEDULES), help=f"comma-separated, of {', '.join(SCHEDULES)}")
    ap.add_argument("--rates", default="5,10,20,30,40,50,60,80,100,120,160",
                    help="offered rates, requests per second, comma-separated (the headline is only as fine as this grid)")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long each rate is offered")
    ap.add_argument("--requests", type=int, default=2000, help="at most this many requests per rate")
    ap.add_argument("--slo-ms", type=float, default=500.0, help="the p99 latency a rate must stay under")
    ap.add_argument("--server-threads", type=int, default=1, help="the server's torch threads (OMP_NUM_THREADS)")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--max-queue", type=int, default=1024)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds a request may wait for its answer")
    ap.add_argument("--check", type=int, default=64, help="texts whose answers are checked against tinydact.load()")
    ap.add_argument("--seed", type=int, default=0, help="seeds the texts' order and the arrivals")
    return ap


def numbers(text: str, kind, name: str) -> list:
    """The comma-separated positive numbers of an option; one clear error otherwise."""
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or any(v <= 0 for v in values):
        raise TinydactError(f"{name} must be positive numbers separated by commas, got {text!r}")
    return values


def load_texts(seed: int) -> tuple:
    """(texts shuffled with `seed`, what they are), saying where they come from."""
    data, line = locate("data/glue/SST-2", None, f"the {len(SENTENCES)} sentences written into serve_load.py")
    print(line, flush=True)
    texts = list(SENTENCES) if data is None else [e.text_a for e in read_examples(data / "dev.tsv")[0]]
    random.Random(seed).shuffle(texts)
    return texts, f"{len(texts)} {'sentences written into serve_load.py' if data is None else 'SST-2 dev sentences'}"


def poisson_arrivals(rate: float, seconds: float, most: int, seed: int) -> list:
    """Send times in seconds from the start: exponential gaps of mean 1/rate, until `seconds`
    or `most` requests."""
    rng, times, t = random.Random(seed), [], 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= seconds or len(times) == most:
            return times
        times.append(t)


def percentile(sorted_values: list, q: float) -> float:
    """The nearest-rank q-quantile (q in (0, 1]) of values sorted ascending."""
    return sorted_values[max(math.ceil(q * len(sorted_values)), 1) - 1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(port: int, path: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return json.load(r)


async def post(port: int, payload: dict) -> tuple:
    """POST /classify over a fresh HTTP/1.1 connection: (status, JSON body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        body = json.dumps(payload).encode()
        writer.write(b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        raw = await reader.read()  # to the end: the server closes the connection after its answer
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return int(head.split(b" ", 2)[1]), json.loads(body)


def dechunk(body: bytes) -> bytes:
    """The payload of a chunked HTTP/1.1 body."""
    out = b""
    while True:
        size, _, rest = body.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            return out
        out, body = out + rest[:n], rest[n + 2:]


class Server:
    """`tinydact serve` with one schedule, on a free port, its output in a temporary file;
    `stop()` sends SIGINT, a Ctrl-C (it drains, then exits), and returns its exit code."""

    def __init__(self, args, scheduler: str, policy: str):
        self.port, self.log = free_port(), tempfile.TemporaryFile()
        command = [sys.executable, "-m", "tinydact", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                   "--scheduler", scheduler, "--max-batch", str(args.max_batch),
                   "--max-wait-ms", str(args.max_wait_ms), "--max-queue", str(args.max_queue)]
        command += ["--policy", policy] if policy else []
        command += ["--model", args.model] if args.model else []
        env = {**os.environ, "OMP_NUM_THREADS": str(args.server_threads)}
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while True:
            try:
                self.health = get_json(self.port, "/health")
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise TinydactError(f"tinydact serve --scheduler {scheduler} did not answer /health:\n{self.output()}")
                time.sleep(0.2)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def idle(self, timeout: float = 120.0) -> None:
        """Wait until the server holds no rows (requests that timed out may still be queued)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            metrics = get_json(self.port, "/metrics")
            if metrics["queue_depth"] == 0 and metrics["in_service"] == 0:
                return
            time.sleep(0.2)


def check_answers(port: int, texts: list, expected: list, name: str) -> None:
    """All texts in one request, then each in its own request, all at once: every answer's
    label and blocks must be `expected`'s (tinydact.load()'s; static runs all N blocks), or
    the run stops."""
    async def ask():
        return await asyncio.gather(post(port, {"texts": texts}), *(post(port, {"texts": [t]}) for t in texts))

    answers = asyncio.run(ask())
    if any(status != 200 for status, _ in answers):
        raise TinydactError(f"{name}: the check requests got {sorted({s for s, _ in answers})}: {answers[0][1]}")
    got = answers[0][1]["results"] + [body["results"][0] for _, body in answers[1:]]
    blocks = "num_blocks" if SCHEDULES[name][0] == "static" else "blocks"
    wrong = [r["text"] for r, e in zip(got, expected * 2) if (r["label"], r["blocks"]) != (e["label"], e[blocks])]
    if wrong or len(got) != 2 * len(expected):
        raise TinydactError(f"{name}: {len(wrong)} answers differ from tinydact.load()'s, e.g. {wrong[:1]}")


async def offer(port: int, texts: list, times: list, timeout: float) -> tuple:
    """Send one request per time (seconds from now, one text each), open loop. Returns one
    record per request and the seconds from the start to the last answer."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05

    async def one(i, at):
        await asyncio.sleep(start + at - loop.time())
        due = start + at  # latency counts from here, however late the client sent it
        try:
            status, body = await asyncio.wait_for(post(port, {"texts": [texts[i % len(texts)]]}), timeout)
            outcome = "ok" if status == 200 else "503" if status == 503 else f"HTTP {status}: {body.get('error')}"
            blocks = body["results"][0]["blocks"] if status == 200 else None
        except asyncio.TimeoutError:
            outcome, blocks = f"no answer within {timeout:g} s", None
        except (OSError, ValueError, IndexError) as e:  # refused, reset, or not an HTTP/JSON answer
            outcome, blocks = f"{type(e).__name__}: {e}", None
        return {"outcome": outcome, "latency_ms": (loop.time() - due) * 1e3, "blocks": blocks}, loop.time()

    done = await asyncio.gather(*(one(i, at) for i, at in enumerate(times)))
    return [record for record, _ in done], max(end for _, end in done) - start


def summary(name: str, rate: float, records: list, seconds: float, slo_ms: float) -> dict:
    """One results row: a schedule at one offered rate."""
    ok = [r for r in records if r["outcome"] == "ok"]
    latencies = sorted(r["latency_ms"] for r in ok)
    rejected = sum(r["outcome"] == "503" for r in records)
    errors = [r["outcome"] for r in records if r["outcome"] not in ("ok", "503")]
    row = {"schedule": name, "scheduler": SCHEDULES[name][0], "policy": SCHEDULES[name][1], "offered_rps": rate,
           "sent": len(records), "ok": len(ok), "rejected_503": rejected, "errors": len(errors),
           "achieved_rps": round(len(ok) / seconds, 2) if seconds > 0 else 0.0,
           "p50_ms": round(percentile(latencies, 0.5), 1) if ok else None,
           "p99_ms": round(percentile(latencies, 0.99), 1) if ok else None,
           "mean_blocks": round(sum(r["blocks"] for r in ok) / len(ok), 3) if ok else None,
           "first_error": errors[0] if errors else ""}
    row["meets_slo"] = bool(ok) and len(ok) == len(records) and row["p99_ms"] <= slo_ms
    return row


def saturated(row: dict, seconds: float) -> bool:
    """The SLO missed with requests refused or lost, or answered much slower than they were sent."""
    return not row["meets_slo"] and (row["rejected_503"] + row["errors"] > 0 or
                                     row["achieved_rps"] < SATURATED * row["sent"] / seconds)


def run_schedule(name: str, args, texts: list, expected: list, rates: list) -> list:
    """Start the server with this schedule, check its answers, offer each rate; the rows."""
    scheduler, policy = SCHEDULES[name]
    server, rows = Server(args, scheduler, policy), []
    try:
        if server.health["scheduler"] != scheduler:
            raise TinydactError(f"asked for --scheduler {scheduler}, the server says {server.health['scheduler']}")
        check_answers(server.port, texts[: args.check], expected, name)
        print(f"{name}: listening on port {server.port}, answers equal tinydact.load()'s on "
              f"{len(expected)} texts (in one request and one by one)", flush=True)
        for k, rate in enumerate(rates):
            if rows and saturated(rows[-1], args.seconds):
                print(f"  {rate:g} req/s: not run, saturated at {rows[-1]['offered_rps']:g} req/s", flush=True)
                continue
            times = poisson_arrivals(rate, args.seconds, args.requests, args.seed * 1000 + k)  # the same for every schedule
            records, seconds = asyncio.run(offer(server.port, texts, times, args.timeout))
            seconds = max(seconds, args.seconds)  # throughput: per second offered, or until the last answer
            rows.append(summary(name, rate, records, seconds, args.slo_ms))
            r = rows[-1]
            print(f"  {rate:g} req/s: {r['ok']}/{r['sent']} answered, {r['achieved_rps']} req/s, p50 {r['p50_ms']} ms, "
                  f"p99 {r['p99_ms']} ms, {r['mean_blocks']} blocks, {r['rejected_503']} 503s, {r['errors']} errors "
                  f"{r['first_error']}", flush=True)
            server.idle()
    finally:
        code = server.stop()
    if code != 0:
        raise TinydactError(f"{name}: tinydact serve exited with code {code} after a Ctrl-C (SIGINT):\n{server.output()}")
    return rows


def table(rows: list) -> list:
    """The rows as a markdown table."""
    lines = ["| schedule | offered req/s | sent | answered | achieved req/s | p50 ms | p99 ms | mean blocks | 503 | errors | SLO |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['schedule']} | {r['offered_rps']:g} | {r['sent']} | {r['ok']} | {r['achieved_rps']} | "
                     f"{r['p50_ms']} | {r['p99_ms']} | {r['mean_blocks']} | {r['rejected_503']} | {r['errors']} | "
                     f"{'met' if r['meets_slo'] else 'missed'} |")
    return lines


def headline(rows: list, names: list, slo_ms: float) -> list:
    """Each schedule's highest rate that meets the SLO, and depth's against the others."""
    best = {name: max((r["offered_rps"] for r in rows if r["schedule"] == name and r["meets_slo"]), default=None)
            for name in names}
    lines = [f"Highest offered rate with p99 <= {slo_ms:g} ms and every request answered: "
             + ", ".join(f"{name} {'no tested rate' if rate is None else f'{rate:g} req/s'}" for name, rate in best.items())]
    for other in ("static", "compact"):
        if "depth" in best and other in best:
            if best["depth"] and best[other]:
                lines.append(f"- depth / {other}: {best['depth'] / best[other]:.2f}x")
            else:
                lines.append(f"- depth / {other}: not measured (a schedule met the SLO at no tested rate: test lower rates)")
    return lines


def main():
    args = parser().parse_args()
    rates = numbers(args.rates, float, "--rates")
    names = [n.strip() for n in args.schedules.split(",") if n.strip()]
    if not names or any(n not in SCHEDULES for n in names):
        raise TinydactError(f"--schedules must name some of {', '.join(SCHEDULES)}, got {args.schedules!r}")
    for option in ("seconds", "requests", "slo_ms", "server_threads", "timeout", "check"):
        if getattr(args, option) <= 0:
            raise TinydactError(f"--{option.replace('_', '-')} must be positive, got {getattr(args, option)}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a connection per request in flight, here and in the server
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    torch.set_num_threads(args.server_threads)  # the reference answers; and cpu_description names the server's threads
    texts, what = load_texts(args.seed)
    expected = tinydact.load(args.model)(texts[: args.check])
    rows = []
    for name in names:
        rows += run_schedule(name, args, texts, expected, rates)
    lines = ["# tinydact serve under load", "", f"- `python benchmarks/serve_load.py {' '.join(sys.argv[1:])}`",
             *(f"- {d}" for d in cpu_description()),
             f"- server: `tinydact serve` with OMP_NUM_THREADS={args.server_threads}, --max-batch {args.max_batch}, "
             f"--max-wait-ms {args.max_wait_ms:g}, --max-queue {args.max_queue}; {os.cpu_count()} cores; the client is "
             "one Python process (asyncio), a new connection per request",
             f"- texts: {what}, one per request; Poisson arrivals for {args.seconds:g} s (at most {args.requests}) per rate, "
             f"seed {args.seed}, the same for every schedule",
             f"- every schedule's answers on {len(expected)} texts equal tinydact.load()'s (labels, and blocks: N for static)",
             "- latency: from the moment a request was due to the last byte of its answer; p50 and p99 of the "
             "answered requests; a rate is not run after a lower one saturated the server", "",
             *table(rows), "", *headline(rows, names, args.slo_ms)]
    write_results("serve_load", rows, lines, args.results)
    print("\n".join(lines[2:]))


if __name__ == "__main__":
    try:
        main()
    except TinydactError as e:  # a missing model, a server that would not start or answered wrongly: no traceback
        sys.exit(f"Error: {e}")
