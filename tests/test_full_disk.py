"""A disk that fills up while a run writes: one `Error:` line naming the file, whichever
library reports it (safetensors for a model, torch.save for the resume state and the cache
of head inputs, Python for a plain file), no temporary file left, and the run continues
with --resume once there is room. The full disk is simulated: the writer raises what it
raises on a full disk, from its second call on (the cache: its first)."""

import errno

import pytest
import safetensors.torch
import torch
from safetensors import SafetensorError

from conftest import assert_clean, assert_error, invoke


def train(model, data, out, *more):
    return invoke("train", "--model", model, "--train", data, "--dev", data, "--out", out, "--task", "sst2", "--phase", "2",
                  "--batch-size", "4", "--max-length", "16", "--eval-every", "2", "--save-every", "2", "--max-steps", "6",
                  "--quiet", "--device", "cpu", *more)


def full_disk(monkeypatch, module, name, error, only="", after=1):
    """Make module.name raise `error` once it has written `after` files (whose path holds `only`)."""
    real, calls = getattr(module, name), []

    def writer(obj, path, *args, **kw):
        if only in str(path):
            calls.append(path)
            if len(calls) > after:
                raise error
        return real(obj, path, *args, **kw)

    monkeypatch.setattr(module, name, writer)


DISK_FULL = {
    "safetensors": (safetensors.torch, "save_file", SafetensorError(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'), "", "final (Error while serializing"),
    "torch.save": (torch, "save", RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing "
                                                "file data/0: file write failed"), "state.pt", "state.pt"),
    "OSError": (torch, "save", OSError(errno.ENOSPC, "No space left on device"), "state.pt", "state.pt (No space left on device)"),
}


@pytest.mark.parametrize("writer", DISK_FULL)
def test_a_full_disk_while_training_is_one_line_and_the_run_resumes(tiny_model_dir, tiny_tsv, tmp_path, monkeypatch, writer):
    module, name, error, only, named = DISK_FULL[writer]
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        full_disk(m, module, name, error, only)
        line = assert_error(train(tiny_model_dir, tiny_tsv, out), "cannot write", named)
    # torch and safetensors need not say the disk is full: their line says how much room is left
    assert ("MB free on its disk" in line) == (writer != "OSError")
    assert not [p.name for p in out.glob(".*") if p.name != ".lock"] and not (out / ".lock").exists()
    assert_clean(invoke("train", "--resume", "--out", out, "--quiet"))
    assert (out / "final" / "model.safetensors").is_file()


def test_a_full_disk_while_caching_head_inputs_is_one_line(tiny_model_dir, tiny_tsv, tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "head-inputs.pt"
    full_disk(monkeypatch, torch, "save", RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
              "head-inputs", after=0)
    assert_error(train(tiny_model_dir, tiny_tsv, tmp_path / "run", "--freeze-backbone", "--cache", cache), "cannot write",
                 f"{cache} (PytorchStreamWriter failed writing file data/0: file write failed; ", "MB free on its disk)")
    assert not cache.exists() and not list(cache.parent.glob(".*"))
