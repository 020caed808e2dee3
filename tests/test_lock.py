"""One writer per run folder: the lock `claim_folder` takes.

Many processes claiming one folder at the same instant, round after round, never both get
in, whether the folder is free or holds a stale lock they all race to take over; a lock whose
process number now belongs to an unrelated process (reused after a restart) is stale; an
empty or garbage lock left by a crash does not block for ever; a live holder's lock is
refused with a message that names the lock file and how to remove it."""

import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections import Counter

import pytest

from tinydact.errors import TinydactError
from tinydact.runfolder import claim_folder, identity

CLAIMANTS, ROUNDS = 8, 300


def dead_pid() -> int:
    """The number of a process that has exited."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def stale_lock(path, kind: str, pid: int) -> None:
    """What a crash leaves: a lock of a dead process, or an empty or garbage file (an older
    tinydact killed between creating its lock and writing it)."""
    path.write_text({"dead": json.dumps(identity(os.getpid()) | {"pid": pid}), "empty": "", "garbage": "\x00{not json"}[kind])
    old = time.time() - 60
    os.utime(path, (old, old))


def claimant(folder, rounds, start, done, won):
    """Claim folder/<round> at the barrier, hold it until everyone has tried, let go. Sends
    each round won, then None (or the error that stopped it)."""
    try:
        for r in range(rounds):
            start.wait(timeout=20)
            try:
                lock = claim_folder(folder / str(r), resume=False, overwrite=False)
            except TinydactError:
                lock = None
            done.wait(timeout=20)
            if lock is not None:
                won.put(r)
                lock.unlink(missing_ok=True)  # gone when another claimant took it for stale
        won.put(None)
    except BaseException as e:  # a broken barrier: another claimant failed
        won.put(repr(e))
        start.abort()
        done.abort()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_many_claimants_at_once_never_both_get_in(tmp_path):
    kinds = ("free", "dead", "empty", "garbage")  # a quarter of the rounds race to take over a stale lock
    pid = dead_pid()
    for r in range(ROUNDS):
        (tmp_path / str(r)).mkdir()
        if kinds[r % 4] != "free":
            stale_lock(tmp_path / str(r) / ".lock", kinds[r % 4], pid)
    ctx = multiprocessing.get_context("fork")
    start, done, won = ctx.Barrier(CLAIMANTS), ctx.Barrier(CLAIMANTS), ctx.Queue()
    workers = [ctx.Process(target=claimant, args=(tmp_path, ROUNDS, start, done, won)) for _ in range(CLAIMANTS)]
    for w in workers:
        w.start()
    wins, ends = Counter(), []
    while len(ends) < CLAIMANTS:
        r = won.get(timeout=60)
        ends.append(r) if not isinstance(r, int) else wins.update([r])
    for w in workers:
        w.join(timeout=60)
    assert {r: n for r, n in wins.items() if n > 1} == {}, "rounds where several claimants got in"
    assert ends == [None] * CLAIMANTS and all(w.exitcode == 0 for w in workers)
    assert sorted(wins) == list(range(ROUNDS))  # and always one got in


def test_a_lock_of_a_reused_process_number_is_taken_over(tmp_path):
    """The number names a live process, but not the one that wrote the lock: it started later."""
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(json.dumps(identity(unrelated.pid) | {"started": "1"}))
        lock = claim_folder(tmp_path, resume=False, overwrite=False)
        assert json.loads(lock.read_text()) == identity(os.getpid())
    finally:
        unrelated.kill()
        unrelated.wait()


def test_a_live_holder_is_refused_with_the_way_out(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(json.dumps(identity(holder.pid)))
        for overwrite in (False, True):
            with pytest.raises(TinydactError) as e:
                claim_folder(tmp_path, resume=False, overwrite=overwrite)
            assert f"another training (process {holder.pid}) is writing to {tmp_path}" in str(e.value)
            assert f"if you are sure no training is running, delete {tmp_path / '.lock'}" in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    claim_folder(tmp_path, resume=False, overwrite=False)  # its process is gone: stale


@pytest.mark.parametrize("kind", ["dead", "empty", "garbage"])
def test_a_lock_left_by_a_crash_does_not_block(tmp_path, kind):
    stale_lock(tmp_path / ".lock", kind, dead_pid())
    lock = claim_folder(tmp_path, resume=False, overwrite=False)
    assert json.loads(lock.read_text()) == identity(os.getpid())


def test_a_lock_being_written_this_moment_holds(tmp_path):
    """An empty lock a second old may be an older tinydact between creating and writing it."""
    (tmp_path / ".lock").write_text("")
    with pytest.raises(TinydactError, match="another training"):
        claim_folder(tmp_path, resume=False, overwrite=False)
