"""The explainer page in a real browser: headless Chromium against tinydact itself.

    python ports/js/browser_check.py                      # the check (exit 1 on a mismatch)
    python ports/js/browser_check.py --time               # also the time per sentence in the browser
    python ports/js/browser_check.py --screenshot docs/explain.png

Starts `python -m http.server` on 127.0.0.1 (a free port) in the repository root, opens
ports/js/explain.html?text=...&rule=... in headless Chromium (`--dump-dom` with a virtual time
budget) for three sentences under both halting rules, reads the JSON the page writes into
#result, and checks label, blocks and confidence against `tinydact.load()` on the same
sentences. Without a Chromium it prints why and exits 0 (or 1 with --require).
"""

import argparse
import html
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = [
    "a gripping, beautiful film",  # 1 block
    "not the best film of the year, but fun",  # 3 blocks
    "it's not that it is bad, it just never comes alive",  # 4 blocks under the paper rule, 2 under the tight one
]
RULES = ("paper", "tight")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CONFIDENCE_TOLERANCE = 1e-5
RESULT = re.compile(r'<pre id="result"[^>]*>(.*?)</pre>', re.S)


def find_browser():
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server():
    """`python -m http.server` serving the repository root; returns (process, base URL)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(ROOT)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "ports/js/explain.html", timeout=1).close()
            return server, base
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("the http.server did not start")


def page_url(base: str, text: str, rule: str, **extra) -> str:
    return base + "ports/js/explain.html?" + urllib.parse.urlencode({"text": text, "rule": rule, **extra})


def chromium(browser: str, url: str, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        command = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", f"--user-data-dir={profile}",
                   "--virtual-time-budget=120000", *args, url]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def page_result(browser: str, url: str):
    """The JSON object the page wrote into #result, and the browser's wall-clock seconds."""
    t0 = time.perf_counter()
    run = chromium(browser, url, "--dump-dom")
    seconds = time.perf_counter() - t0
    match = RESULT.search(run.stdout)
    if not match or not match.group(1).strip():
        raise RuntimeError(f"no result in the page for {url}\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    return json.loads(html.unescape(match.group(1))), seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require", action="store_true", help="fail (exit 1) when no Chromium is installed")
    parser.add_argument("--time", action="store_true", help="also measure the time per sentence in the browser")
    parser.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the page (1000 x 900) and stop")
    args = parser.parse_args(argv)
    browser = find_browser()
    if browser is None:
        print(f"browser check skipped: no Chromium found (looked for {', '.join(BROWSERS)})")
        return 1 if args.require else 0
    server, base = start_server()
    try:
        if args.screenshot:
            out = Path(args.screenshot).resolve()
            chromium(browser, page_url(base, SENTENCES[1], "paper"), f"--screenshot={out}", "--window-size=1000,900",
                     "--hide-scrollbars")
            print(f"wrote {out}" if out.is_file() else f"no screenshot written to {out}")
            return 0 if out.is_file() else 1
        return check(browser, base, args.time)
    finally:
        server.terminate()
        server.wait()


def check(browser: str, base: str, timing: bool) -> int:
    import tinydact

    clf = tinydact.load()
    passed = failed = 0
    for rule in RULES:
        for text, want in zip(SENTENCES, clf(SENTENCES, rule=rule)):
            got, seconds = page_result(browser, page_url(base, text, rule))
            ok = (got["label"] == want["label"] and got["blocks"] == want["blocks"]
                  and abs(got["confidence"] - want["confidence"]) <= CONFIDENCE_TOLERANCE)
            passed, failed = passed + ok, failed + (not ok)
            print(f"{'ok  ' if ok else 'FAIL'}  {rule:5}  browser {got['label']} {got['confidence']:.6f} blocks {got['blocks']}"
                  f"  tinydact {want['label']} {want['confidence']:.6f} blocks {want['blocks']}  ({seconds:.1f} s)  {text}")
    if timing:
        measure(browser, base, clf)
    print(f"(headless {Path(browser).name}, the explainer page against tinydact.load())")
    print(f"browser: {passed} passed, {failed} failed")
    return 1 if failed else 0


def measure(browser: str, base: str, clf, repeat: int = 30) -> None:
    """Milliseconds per sentence: Python (tinydact.load(), CPU) in this process, and the page,
    timed from outside as (wall time with `repeat` extra runs − wall time with none) / repeat."""
    for text in SENTENCES:
        clf(text)  # warm up
        t0 = time.perf_counter()
        for _ in range(repeat):
            r = clf(text)[0]
        python_ms = (time.perf_counter() - t0) / repeat * 1000
        _, once = page_result(browser, page_url(base, text, "paper"))
        _, many = page_result(browser, page_url(base, text, "paper", repeat=repeat))
        browser_ms = (many - once) / repeat * 1000
        print(f"time per sentence, blocks {r['blocks']}: python {python_ms:.0f} ms, browser {browser_ms:.0f} ms  {text}")


if __name__ == "__main__":
    sys.exit(main())
