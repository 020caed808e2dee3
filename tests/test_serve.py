"""`tinydact serve`: the schedulers answer what `tinydact.load()` answers, and the HTTP service
behaves as a service must (order, many clients at once, bad requests, a full queue, Ctrl-C).

The schedulers are checked in-process (`Service`) on the shipped model; the HTTP service as a
real `tinydact serve` process on a free local port, spoken to with urllib.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

import tinydact
from tinydact.errors import TinydactError
from tinydact.scheduler import QueueFull, Service

from conftest import assert_error, invoke, shipped_weights

pytest.importorskip("uvicorn")

TEXTS = [
    "a gripping, beautiful film", "the plot is thin and the acting wooden", "it's not bad, but not good either",
    "an utterly forgettable two hours", "i laughed, i cried, i went home happy", "well, it is a movie",
    "the cast does what it can with a script that gives them nothing", "a masterpiece", "meh",
    "surprisingly moving for a film about a vending machine", "too long by half", "fine",
    "the best thing i have seen this year, and the worst", "visually stunning, emotionally hollow", "it is what it is",
    "the movie",
]
SCHEDULES = [("depth", "oldest"), ("depth", "fair"), ("depth", "fullest"), ("compact", "oldest"), ("static", "oldest")]


@pytest.fixture(scope="module")
def clf():
    return tinydact.load(shipped_weights())


def assert_same_answers(got, want, full_depth=False):
    """Labels equal, blocks equal (N for a full-depth scheduler), probabilities to 1e-6: the rows
    batched together differ, which moves float32 results in their last bits only."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g["text"], g.get("pair"), g["label"], g["truncated"]) == (w["text"], w.get("pair"), w["label"], w["truncated"])
        assert g["blocks"] == (w["num_blocks"] if full_depth else w["blocks"])
        if not full_depth:
            assert abs(g["confidence"] - w["confidence"]) < 1e-6
            assert all(abs(g["probs"][k] - w["probs"][k]) < 1e-6 for k in w["probs"])


@pytest.mark.parametrize("scheduler,policy", SCHEDULES)
def test_every_scheduler_answers_what_the_classifier_answers(clf, scheduler, policy):
    inputs = TEXTS + [("a film", "it was good"), "x" * 3000]  # a pair, and a text that gets truncated
    want = clf(inputs)
    service = Service(clf, scheduler, policy, max_batch=4, max_wait_ms=1)
    # many requests of different sizes at once: rows of different requests and depths share blocks
    cuts = [0, 3, 4, 6, 9, 12, 15, len(inputs)]
    futures = [service.submit(inputs[i:j]) for i, j in zip(cuts, cuts[1:])]
    futures.append(service.submit(inputs))
    got = [r for f in futures[:-1] for r in f.result(timeout=60)]
    service.close()
    assert_same_answers(got, want, full_depth=scheduler == "static")
    assert_same_answers(futures[-1].result(), want, full_depth=scheduler == "static")
    assert {r["blocks"] for r in want} != {6}, "the texts must exit at different depths for this test to mean anything"


def test_the_depth_scheduler_runs_one_block_on_rows_of_several_depths_and_requests(clf, monkeypatch):
    """Rows join a queue between blocks: a new request starts at block 1 while the rows of an
    earlier one are still deep in the blocks (policy fair: each queue in turn)."""
    service = Service(clf, "depth", "fair", max_batch=32, max_wait_ms=0)
    ticks = []
    tick = service.scheduler.tick

    def watched():
        n = service.scheduler.pick()
        ticks.append((n, {id(r.job) for r in service.scheduler.queues[n]}))
        return tick()

    monkeypatch.setattr(service.scheduler, "tick", watched)
    deep = "it is what it is"  # runs five blocks
    assert clf([deep])[0]["blocks"] >= 4
    first = service.submit([deep] * 3)
    while not ticks:
        time.sleep(0.001)
    second = service.submit(["a masterpiece"])  # arrives while the first request is deep in the blocks
    first.result(timeout=60), second.result(timeout=60)
    service.close()
    starts = [i for i, (n, _) in enumerate(ticks) if n == 0]
    assert len(starts) == 2 and starts[1] < len(ticks) - 1, f"the second request should start before the first ends: {ticks}"


def test_a_request_never_sees_another_requests_rows(clf):
    service = Service(clf, "depth", max_batch=8, max_wait_ms=2)
    with ThreadPoolExecutor(16) as pool:
        requests = [[TEXTS[(i + j) % len(TEXTS)] for j in range(1 + i % 4)] for i in range(64)]
        answers = list(pool.map(lambda texts: service.submit(texts).result(timeout=60), requests))
    service.close()
    for texts, answer in zip(requests, answers):
        assert [r["text"] for r in answer] == texts
    m = service.metrics()
    assert m["requests"] == 64 and m["rows"] == sum(map(len, requests)) and m["in_service"] == 0
    assert 1 <= m["blocks_per_row"] <= 6 and m["latency_ms"]["p50"] <= m["latency_ms"]["p99"]


def test_a_full_service_refuses_and_close_answers_what_it_holds(clf):
    service = Service(clf, "static", max_batch=64, max_wait_ms=600_000, max_queue=3)  # rows wait: never a full batch
    held = service.submit(TEXTS[:2])
    with pytest.raises(QueueFull, match="full"):
        service.submit(TEXTS[:2])
    fits = service.submit(TEXTS[2:3])
    service.close()  # no waiting for fuller batches: everything submitted is answered
    assert [r["text"] for r in held.result(timeout=1) + fits.result(timeout=1)] == TEXTS[:3]
    assert service.metrics()["rejected"] == 1
    with pytest.raises(QueueFull, match="shutting down"):
        service.submit(TEXTS[:1])


@pytest.mark.parametrize("bad,error", [
    (("a", "b"), TypeError), ([3], TypeError), ([""], TinydactError), ([], TinydactError), (["a"] * 9, TinydactError),
])
def test_bad_inputs_fail_at_submit(clf, bad, error):
    service = Service(clf, max_queue=8)
    with pytest.raises(error):
        service.submit(bad)
    service.close()


@pytest.mark.parametrize("kwargs", [dict(scheduler="fast"), dict(policy="newest"), dict(rule="loose"), dict(max_batch=0),
                                    dict(max_queue=True), dict(max_wait_ms=-1), dict(max_wait_ms=float("nan"))])
def test_bad_settings_are_clear_errors(clf, kwargs):
    with pytest.raises(TinydactError):
        Service(clf, **kwargs)


def test_a_fault_of_the_model_fails_the_waiting_requests_and_the_service_goes_on(clf, monkeypatch):
    service = Service(clf, "depth", max_wait_ms=0)
    block = clf.model.bert.blocks[2]
    monkeypatch.setattr(block, "forward", lambda *a: (_ for _ in ()).throw(RuntimeError("out of memory")))
    with pytest.raises(RuntimeError, match="out of memory"):
        service.submit(["it is what it is"]).result(timeout=60)
    monkeypatch.undo()
    assert service.submit(["a masterpiece"]).result(timeout=60)[0]["label"] == "positive"
    service.close()
    assert service.metrics()["failed"] == 1 and service.metrics()["in_service"] == 0


# ----------------------------------------------------------------------------------------
# The HTTP service: a real `tinydact serve` process
# ----------------------------------------------------------------------------------------


class Server:
    def __init__(self, *args):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "tinydact", "serve", "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stderr.readline()
        assert "serving" in line, line + self.proc.stderr.read()
        self.url = line.split(" on ")[1].split()[0]

    def request(self, path, body=None, method=None, raw=None):
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self, sig=signal.SIGINT):
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err


@pytest.fixture(scope="module")
def server():
    s = Server("--max-wait-ms", "1")
    yield s
    code, err = s.stop()
    assert code == 0 and "Traceback" not in err, err


def test_the_service_answers_what_load_answers(server, clf):
    inputs = TEXTS + [["a film", "it was good"]]
    status, body = server.request("/classify", {"texts": inputs})
    assert status == 200
    assert_same_answers(body["results"], clf(TEXTS + [("a film", "it was good")]))
    assert server.request("/health") == (200, {"status": "ok", "model": "weights/", "num_blocks": 6,
                                               "labels": ["negative", "positive"], "scheduler": "depth"})


def test_many_clients_at_once_each_get_their_own_answers_in_order(server, clf):
    want = {r["text"]: r["label"] for r in clf(TEXTS)}
    requests = [[TEXTS[(i * 5 + j) % len(TEXTS)] for j in range(1 + i % 5)] for i in range(48)]
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda texts: server.request("/classify", {"texts": texts}), requests))
    for texts, (status, body) in zip(requests, answers):
        assert status == 200 and [(r["text"], r["label"]) for r in body["results"]] == [(t, want[t]) for t in texts]
    status, m = server.request("/metrics")
    assert status == 200 and m["requests"] >= 48 and m["queue_depth"] == 0 and m["latency_ms"]["p99"] > 0


@pytest.mark.parametrize("path,body,raw,method,status,fragment", [
    ("/classify", None, b"{not json", None, 400, "not JSON"),
    ("/classify", ["a"], None, None, 400, "JSON object"),
    ("/classify", {"text": ["a"]}, None, None, 400, "JSON object"),
    ("/classify", {"texts": ["a"], "halt": False}, None, None, 400, "unknown key 'halt'"),
    ("/classify", {"texts": []}, None, None, 400, "non-empty list"),
    ("/classify", {"texts": "a film"}, None, None, 400, "non-empty list"),
    ("/classify", {"texts": ["a", 3]}, None, None, 400, "text 2"),
    ("/classify", {"texts": [["a", "b", "c"]]}, None, None, 400, "text 1"),
    ("/classify", {"texts": ["  "]}, None, None, 400, "text 1 is empty"),
    ("/classify", None, b"\xff\xfe", None, 400, "not JSON"),
    ("/classify", None, b'{"texts": ["' + b"a" * (1 << 20) + b'"]}', None, 413, "bytes"),
    ("/classify", None, None, "GET", 405, "POST"),
    ("/health", {"texts": ["a"]}, None, None, 405, "GET"),
    ("/predict", None, None, None, 404, "/classify"),
])
def test_bad_requests_get_a_4xx_and_one_clear_message(server, path, body, raw, method, status, fragment):
    got, answer = server.request(path, body, method, raw)
    assert got == status and set(answer) == {"error"} and fragment in answer["error"], answer
    assert "\n" not in answer["error"] and "Traceback" not in answer["error"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_full_queue_answers_503_and_ctrl_c_answers_the_requests_in_flight(sig):
    """Rows wait for a batch that never fills (--max-wait-ms 10 minutes): a second request that
    would overfill --max-queue gets 503; Ctrl-C (or SIGTERM) then answers the one held, and
    the service exits 0."""
    s = Server("--scheduler", "static", "--max-batch", "64", "--max-wait-ms", "600000", "--max-queue", "3")
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(s.request, "/classify", {"texts": TEXTS[:2]})
        while s.request("/metrics")[1]["in_service"] < 2:
            time.sleep(0.01)
        status, answer = s.request("/classify", {"texts": TEXTS[2:4]})
        assert status == 503 and "full" in answer["error"]
        assert not held.done()
        code, err = s.stop(sig)
        status, answer = held.result(timeout=60)
    assert status == 200 and [r["text"] for r in answer["results"]] == TEXTS[:2]
    assert code == 0 and "Traceback" not in err and "stopped: 1 requests answered" in err, err


def test_serve_command_line_errors():
    assert_error(invoke("serve", "--scheduler", "static", "--rule", "tight"), "--rule does nothing with --scheduler static")
    assert_error(invoke("serve", "--scheduler", "compact", "--policy", "fullest"), "--policy")
    assert_error(invoke("serve", "--model", "/nonexistent/model"), "/nonexistent/model")


def test_a_port_in_use_is_one_error_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_error(invoke("serve", "--port", port), f"cannot listen on 127.0.0.1:{port}")


def test_close_stops_the_scheduler_thread(clf):
    before = threading.active_count()
    Service(clf).close()
    assert threading.active_count() == before
