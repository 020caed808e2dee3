"""A run folder that is never lost: what `tinydact train` writes, and how.

A run's folder (`--out`) holds `state.pt` (everything needed to resume: weights, optimizer,
step, best dev figures, settings, RNG), the models `best/` and `final/`, and `log.jsonl`, one
line per dev evaluation (`RUN_FILES`). What this module guarantees:

- **One writer.** `claim_folder` publishes `.lock`, which names the writer (process id, its
  start time, the boot, the machine), whole (written aside, then hard-linked into place): a
  second training into the same folder fails at once. A lock whose process is gone (kill -9,
  a crash, a restart that reused its number) is stale and taken over; claimants take turns
  (a kernel lock on the folder) so two never both take one over.
- **No accidental overwrite.** A folder that holds a run is refused unless the run is resumed
  or `--overwrite` asks to delete it.
- **Whole files or none.** `atomic_write` writes a file beside its target and renames it
  over it; `replace_folder` does the same for a folder (two renames). A crash leaves the old
  version or the new one, never half of one, and leftovers are removed by the next claim. A
  write that fails (a full disk) is one error naming the file; the old version stays.
- **Saves finish.** Inside `uninterrupted`, Ctrl-C and SIGTERM wait until the block is done
  (a checkpoint, the resume state), then arrive as `KeyboardInterrupt` / `Interrupted`.
- **Resume state read safely.** `load_saved` reads with `torch.load(weights_only=True)` (no
  code runs from a file) and turns any unreadable file into one clear error.
"""

import hashlib
import json
import math
import os
import shutil
import signal
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch

from .errors import TinydactError
from .options import TrainConfig, trained_method

RUN_FILES = ("state.pt", "best", "final", "log.jsonl")  # what a run leaves in its folder


# ----------------------------------------------------------------------------------------
# Whole files or none
# ----------------------------------------------------------------------------------------


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over `path`: a crash
    leaves either the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with write_errors(path):
            write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # some writers create 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:  # a full disk, an interrupt: leave no temporary file behind
        tmp.unlink(missing_ok=True)
        raise


def replace_folder(path: Path, write) -> None:
    """Write a folder beside `path`, then swap it in with two renames: a crash while writing
    leaves the old folder whole (and no temporary one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = (path.with_name(f".{path.name}.{kind}{os.getpid()}") for kind in ("tmp", "old"))
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with write_errors(path):
            write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def write_errors(path: Path):
    """A write that fails (a full disk, no permission) as one line naming the file, whether
    Python (OSError), torch.save (RuntimeError) or safetensors (SafetensorError) reports it.
    torch and safetensors may not say the disk is full ("unexpected pos ..."), so their line
    also says how much room the disk has left."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as e:
        if isinstance(e, OSError) and e.strerror:
            reason = e.strerror
        else:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0] + room_left(path.parent)
        raise TinydactError(f"cannot write {path} ({reason})") from None


def room_left(folder: Path) -> str:
    """"; N MB free on its disk" for an error line, or "" where the disk cannot be asked."""
    try:
        return f"; {shutil.disk_usage(folder).free / 2**20:,.0f} MB free on its disk"
    except OSError:
        return ""


def remove(path: Path) -> None:
    """Delete a file or a folder (a link is deleted, not followed)."""
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------
# Saves finish: interrupts wait
# ----------------------------------------------------------------------------------------


class Interrupted(Exception):
    """SIGTERM, as an exception (Ctrl-C is KeyboardInterrupt)."""


def on_sigterm(signum, frame):
    raise Interrupted()


_deferring = []  # non-empty while a block of `uninterrupted` runs


@contextmanager
def uninterrupted(reraise: bool = True):
    """Ctrl-C and SIGTERM wait until the block is done, so a save is finished, not cut; the
    interrupt then arrives (with `reraise`) as soon as the block ends."""
    if threading.current_thread() is not threading.main_thread() or _deferring:
        yield  # signal handlers belong to the main thread; an outer block already defers them
        return
    caught = []
    old = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    _deferring.append(True)
    try:
        yield
    finally:
        _deferring.pop()
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if caught and reraise:
            raise KeyboardInterrupt if caught[0] == signal.SIGINT else Interrupted()


# ----------------------------------------------------------------------------------------
# One writer, no accidental overwrite
# ----------------------------------------------------------------------------------------


def claim_folder(out: Path, resume: bool, overwrite: bool, held=RUN_FILES, kept: bool = True) -> Path:
    """Take the run folder `out` for this process: a lock file that a second writer finds at
    once, and a refusal to write over a run unless resuming or `overwrite`. `held`: what runs
    leave in a folder (of every kind, so that --overwrite removes all of it); `kept`: whether
    that is a run worth keeping (a resume state or a finished model). What a run interrupted
    before its first resume save left (a log, a best/ nothing can resume) is removed, and so
    are temporary files of an interrupted save. Returns the lock's path."""
    if out.exists() and not out.is_dir():
        raise TinydactError(f"--out {out} is a file, not a folder")
    lock = out / ".lock"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with claimants_one_at_a_time(out):
            take_lock(lock)
    except OSError as e:
        raise TinydactError(f"cannot write to {out} ({e.strerror})") from None
    found = [name for name in held if (out / name).exists()]
    if found and not resume:
        if kept and not overwrite:
            lock.unlink()
            raise TinydactError(f"{out} already holds a run ({', '.join(found)}): continue it with --resume, "
                                "or start again with --overwrite (which deletes it)")
        for name in found:
            remove(out / name)
    for leftover in [*out.glob(".*.tmp*"), *out.glob(".*.old*")]:
        remove(leftover)
    return lock


def take_lock(lock: Path) -> None:
    """Publish `lock` holding this process's identity, or fail because a live process holds
    it. The file appears whole (written aside, then hard-linked into place, which fails if a
    lock exists), so no claimant ever reads it empty; a stale one is removed first."""
    holder = read_lock(lock)
    if holder is not None and holding(holder, lock):
        pid = holder.get("pid", "?")
        raise TinydactError(f"another training (process {pid}) is writing to {lock.parent}; wait for it, or stop it "
                            f"first (if you are sure no training is running, delete {lock})")
    if holder is not None:
        lock.unlink(missing_ok=True)  # stale: its process is gone (kill -9, a crash, a restart)
    tmp = lock.with_name(f"{lock.name}.claim{os.getpid()}")  # not .tmp: a winner's clean-up would take it
    tmp.write_text(json.dumps(identity(os.getpid())) + "\n")
    try:
        os.link(tmp, lock)  # FileExistsError when a lock appeared meanwhile (claimants without a kernel lock)
    except FileExistsError:
        raise TinydactError(f"another training is writing to {lock.parent}; wait for it, or stop it first") from None
    except OSError:  # a filesystem without hard links: create, then write
        with open(lock, "x") as f:
            f.write(tmp.read_text())
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def claimants_one_at_a_time(out: Path):
    """A kernel lock on the folder for the milliseconds of a claim, so that two claimants never
    judge and replace a stale lock at once; the kernel drops it when its process dies. Where
    there is none (Windows, some network filesystems), claims rely on the hard link alone."""
    try:
        import fcntl

        fd = os.open(out, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # no kernel locks on this filesystem
        yield
    finally:
        os.close(fd)  # releases the kernel lock


def identity(pid: int) -> dict:
    """What tells process `pid` apart from a later one that reuses its number: its start time
    (Linux's /proc, in clock ticks since boot), the boot, and the machine."""
    return {"pid": pid, "started": process_started(pid), "boot": boot_id(), "host": socket.gethostname()}


def process_started(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[19]  # field 22, starttime; the name in (...) may hold spaces


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def read_lock(lock: Path) -> dict | None:
    """The identity in `lock` (None: no lock). A bare process id is an older tinydact's lock;
    an empty or unreadable file (a crash while an older tinydact wrote it) holds {}."""
    try:
        text = lock.read_text(errors="replace").strip()
    except FileNotFoundError:
        return None
    if text.isdigit():
        return {"pid": int(text)}
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else {}


def holding(holder: dict, lock: Path) -> bool:
    """Whether the process a lock names still runs: the same process, not merely the same
    number. A lock from another machine (a shared filesystem) cannot be checked: it holds."""
    if not holder:  # empty or garbage: stale, unless it is being written this very moment
        try:
            return time.time() - lock.stat().st_mtime < 5
        except FileNotFoundError:
            return False
    if holder.get("host", socket.gethostname()) != socket.gethostname():
        return True
    now = identity(holder["pid"])  # a field either side cannot tell (no /proc) is taken to agree
    return alive(holder["pid"]) and all(None in (holder.get(k), now[k]) or holder[k] == now[k] for k in ("started", "boot"))


def alive(pid: int) -> bool:
    """Whether process `pid` exists (the holder of a lock)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


# ----------------------------------------------------------------------------------------
# What a run writes, and reads back to resume
# ----------------------------------------------------------------------------------------


class RunFolder:
    """What a run writes into its folder: `state.pt` to resume, the models `best/` and
    `final/`, and `log.jsonl`, one line per dev evaluation."""

    def __init__(self, out: Path, cfg: TrainConfig, model, tokenizer, labels, task: str):
        self.out, self.cfg, self.model, self.tokenizer, self.labels, self.task = out, cfg, model, tokenizer, labels, task

    def save_state(self, optimizer, step: int, best, reraise: bool = True) -> None:
        snapshot = {"model": self.model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "best": best,
                    "config": asdict(self.cfg), "rng": torch.get_rng_state()}
        with uninterrupted(reraise):
            atomic_write(self.out / "state.pt", lambda p: torch.save(snapshot, p))

    def save_model(self, name: str, step: int) -> None:
        from .checkpoint import save_checkpoint  # not at the top: checkpoint.py writes through replace_folder above

        cfg = self.cfg
        trained = {"phase": cfg.phase, "step": step, "blocks": cfg.blocks}  # τ only where the loss used it: phase 2
        trained.update({"tau": cfg.tau, **({"tau_end": cfg.tau_end} if cfg.tau_end else {}),
                        **({"deep_supervision": cfg.deep_supervision} if cfg.deep_supervision else {})} if cfg.phase == 2 else {})
        trained["method"] = trained_method(trained)
        with uninterrupted():
            save_checkpoint(self.model, self.tokenizer, self.out / name, self.labels, self.task, getattr(torch, cfg.save_dtype),
                            extra={"trained": trained})

    def log(self, record: dict) -> None:
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def keep_log_until(self, step: int) -> None:
        """On resume: keep the log lines of steps up to `step`, the resume state's. The later
        ones (evaluations after the last save, before a kill) the resumed run logs again; a
        line half-written by a kill goes too."""
        path = self.out / "log.jsonl"
        if path.is_file():
            lines = [line for line in path.read_text(errors="replace").splitlines() if logged_step(line) <= step]
            atomic_write(path, lambda p: p.write_text("".join(line + "\n" for line in lines)))


def logged_step(line: str) -> float:
    """The step of a log.jsonl line (infinity for a line that is not a whole record)."""
    try:
        step = json.loads(line)["step"]
    except (ValueError, TypeError, KeyError):
        return math.inf
    return step if isinstance(step, int) else math.inf


def load_saved(path: Path, what: str):
    """torch.load(weights_only=True) of a file that should hold `what`, or a one-line error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # empty, truncated, garbage, a pickle with code: torch's messages run over lines
        raise TinydactError(f"cannot read {path} as {what} ({type(e).__name__}); delete or replace it") from None


def saved_state(out: Path):
    """The state.pt of the run in `out`, to resume it, or a clear error."""
    path = out / "state.pt"
    if not path.is_file():
        left = [name for name in RUN_FILES if (out / name).exists()]
        raise TinydactError(f"nothing to resume: {path} does not exist" + (
            f"; {out} holds a finished model: start again with --overwrite (which deletes it)" if "final" in left else
            f"; the run in {out} stopped before its first resume save ({', '.join(left)}): start it again with its "
            "command, without --resume (what it left is removed)" if left else ""))
    state = load_saved(path, "the resume state of a tinydact run")
    if not isinstance(state, dict) or not {"model", "optimizer", "step", "best", "config", "rng"} <= set(state):
        raise TinydactError(f"{path} is not the resume state of a tinydact run")
    return state


def restore(saved: dict, model, optimizer, rank: int):
    """Put a resumed run back where it stood; returns (step, best)."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if rank == 0:  # the saved random state is rank 0's; other ranks keep their own stream
        torch.set_rng_state(saved["rng"])
    return saved["step"], saved["best"]


def saved_config(d, path: Path) -> TrainConfig:
    """The settings a run saved (in state.pt or recipe.json), or a clear error."""
    try:
        return TrainConfig(**d)
    except TypeError:
        raise TinydactError(f"{path}: the saved settings do not fit this version of tinydact") from None


def file_digest(path) -> str:
    """sha256 of a file's bytes (the cache key covers content, not names and sizes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def leftovers(phases: tuple) -> tuple:
    """What a run of either kind leaves in its folder: one phase (`RUN_FILES`) or the whole
    recipe (recipe.json and its `phases`' subfolders); `--overwrite` removes all of it."""
    return ("recipe.json", *RUN_FILES, *phases)


def worth_keeping(out: Path, phases: tuple) -> bool:
    """Whether the run folder `out` holds something a rerun must not delete unasked: a resume
    state (its own, or one of the recipe's `phases`') or a finished model. What else a run leaves (a log,
    a best/ without a state, recipe.json before any phase saved) is removed by a rerun."""
    return (out / "final").exists() or any((folder / "state.pt").is_file() for folder in (out, *(out / name for name in phases)))


def run_kind(out: Path, phases: tuple) -> str:
    """What `out` holds, to resume: "recipe" or "phase"; a folder with files of both is an error."""
    recipe_files = [name for name in ("recipe.json", *phases) if (out / name).exists()]
    phase_files = [name for name in RUN_FILES if name != "final" and (out / name).exists()]
    if recipe_files and phase_files:
        raise TinydactError(f"{out} holds files of the whole recipe ({', '.join(recipe_files)}) and of one phase "
                            f"({', '.join(phase_files)}): it is neither run to resume; start again with --overwrite (which deletes both)")
    return "recipe" if recipe_files else "phase"
