"""benchmarks/serve_load.py: fast, what its numbers mean (Poisson arrivals bounded in time and
count, nearest-rank quantiles, 503s and errors counted apart and never meeting the SLO, the
headline's highest rate and ratios) and one-line argument errors; slow, its quick mode end to
end against the real `tinydact serve`, one server per schedule, and the files it writes."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import import_benchmark

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_load.py"


serve_load = import_benchmark("serve_load")


def test_arrivals_are_poisson_seeded_and_bounded():
    times = serve_load.poisson_arrivals(50.0, 200.0, 100_000, seed=3)
    assert times == serve_load.poisson_arrivals(50.0, 200.0, 100_000, seed=3)
    assert times != serve_load.poisson_arrivals(50.0, 200.0, 100_000, seed=4)
    assert times == sorted(times) and 0 < times[0] and times[-1] < 200.0
    assert abs(len(times) / 200.0 - 50.0) < 2.0  # 10,000 expected: the rate is the one asked for
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert abs(sum(g > 0.02 for g in gaps) / len(gaps) - 0.3679) < 0.02  # P(gap > mean) = 1/e: exponential gaps
    assert len(serve_load.poisson_arrivals(50.0, 200.0, 7, seed=3)) == 7


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert serve_load.percentile(values, 0.5) == 50 and serve_load.percentile(values, 0.99) == 99
    assert serve_load.percentile(values, 1.0) == 100 and serve_load.percentile([7.0], 0.99) == 7.0


def records(*outcomes, latency=10.0):
    return [{"outcome": o, "latency_ms": latency, "blocks": 2 if o == "ok" else None} for o in outcomes]


def test_refusals_and_errors_are_counted_apart_and_miss_the_slo():
    row = serve_load.summary("depth", 10.0, records("ok", "503", "ok", "no answer within 30 s", "HTTP 400: bad"), 2.0, 500)
    assert (row["sent"], row["ok"], row["rejected_503"], row["errors"]) == (5, 2, 1, 2)
    assert row["achieved_rps"] == 1.0 and row["mean_blocks"] == 2 and row["first_error"] == "no answer within 30 s"
    assert not row["meets_slo"]
    assert serve_load.summary("depth", 10.0, records("ok", "ok"), 2.0, 500)["meets_slo"]
    assert not serve_load.summary("depth", 10.0, records("ok", "ok", latency=600.0), 2.0, 500)["meets_slo"]
    empty = serve_load.summary("depth", 10.0, records("503"), 2.0, 500)
    assert empty["ok"] == 0 and empty["p99_ms"] is None and not empty["meets_slo"]


def test_headline_takes_each_schedules_highest_rate_under_the_slo():
    def row(name, rate, meets):
        return {"schedule": name, "offered_rps": rate, "meets_slo": meets}

    rows = [row("static", 5, True), row("static", 10, False), row("compact", 5, True), row("compact", 10, True),
            row("compact", 20, False), row("depth", 5, True), row("depth", 10, True), row("depth", 20, True)]
    lines = serve_load.headline(rows, ["static", "compact", "depth"], 500)
    assert "static 5 req/s, compact 10 req/s, depth 20 req/s" in lines[0]
    assert lines[1:] == ["- depth / static: 4.00x", "- depth / compact: 2.00x"]
    lines = serve_load.headline(rows[1:2] + rows[5:], ["static", "depth"], 500)
    assert "static no tested rate" in lines[0] and "not measured" in lines[1]


def test_chunked_bodies_are_read_whole():
    assert serve_load.dechunk(b"4\r\n{\"a\"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n") == b'{"a": 1}'


@pytest.mark.parametrize("option", [["--rates", "0,5"], ["--rates", "fast"], ["--schedules", "depth,lifo"],
                                    ["--seconds", "0"]])
def test_bad_options_are_one_error_line(option, tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--results", str(tmp_path), *option],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1, result
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_quick_mode_against_the_real_server(tmp_path):
    """Every schedule started, checked against tinydact.load(), loaded at 5 requests/s for 2
    s over HTTP and stopped with Ctrl-C (SIGINT); both result files written."""
    command = [sys.executable, str(SCRIPT), "--rates", "5", "--seconds", "2", "--check", "8", "--results", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    rows = list(csv.DictReader(open(tmp_path / "serve_load.csv")))
    assert [r["schedule"] for r in rows] == list(serve_load.SCHEDULES)
    for r in rows:
        assert int(r["sent"]) > 0 and int(r["ok"]) == int(r["sent"]), r
        assert int(r["rejected_503"]) == int(r["errors"]) == 0, r
        assert float(r["p50_ms"]) <= float(r["p99_ms"]), r
    # the same texts at the same times: static runs all 6 blocks, the others the same exits, fewer
    blocks = {r["schedule"]: float(r["mean_blocks"]) for r in rows}
    assert blocks["static"] == 6 and blocks["compact"] == blocks["depth"] == blocks["depth-fair"] == blocks["depth-fullest"] < 6, blocks
    report = (tmp_path / "serve_load.md").read_text()
    assert "- CPU: " in report and "python benchmarks/serve_load.py --rates 5" in report
    assert "| depth-fullest | 5 |" in report and "depth / static" in report and "depth / compact" in report
