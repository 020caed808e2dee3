"""benchmarks/tasks.py end to end on a tiny 6-block model: every method on two seeds, the
results merged by (task, method, seed, knob), finished runs reused, the report rebuilt from
the CSV files alone."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_TSV, make_tiny_checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "tasks.py"
METHODS = {"plain", "deebert", "static", "pabee", "dact", "dact (tight rule)", "dact-distill", "dact-distill (tight rule)"}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    pytest.importorskip("matplotlib")
    root = tmp_path_factory.mktemp("tasks")
    make_tiny_checkpoint(root / "bert", layers=6)
    (root / "data").mkdir()
    for split in ("train", "dev"):
        (root / "data" / f"{split}.tsv").write_text(TINY_TSV)

    def tasks(*args):
        cmd = [sys.executable, str(SCRIPT), "--task", "sst2", "--epochs", "2", "--taus", "0.1", "--bert", str(root / "bert"),
               "--data-dir", str(root / "data"), "--runs", str(root / "runs"), "--results", str(root / "results"), *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    tasks("--seeds", "0,1")
    return root, tasks


def rows(root, name="tasks"):
    return list(csv.DictReader(open(root / "results" / f"{name}.csv")))


def test_every_method_on_every_seed(ran):
    root, _ = ran
    got = rows(root)
    assert {r["method"] for r in got} == METHODS
    assert {(r["method"], r["seed"]) for r in got} == {(m, s) for m in METHODS for s in ("0", "1")}
    static = [r for r in got if r["method"] == "static" and r["seed"] == "0"]
    assert sorted(int(r["knob"]) for r in static) == [1, 2, 3, 4, 5, 6]
    assert [float(r["avg_blocks"]) for r in sorted(static, key=lambda r: int(r["knob"]))] == [1, 2, 3, 4, 5, 6]
    blocks = rows(root, "tasks_blocks")
    assert {r["method"] for r in blocks} == {"deebert", "static", "pabee", "dact phase 1", "dact τ 0.1",
                                             "dact-distill phase 1", "dact-distill τ 0.1"}
    assert sorted({int(r["block"]) for r in blocks}) == [1, 2, 3, 4, 5, 6]
    md = (root / "results" / "tasks.md").read_text()
    assert "| static | " in md and "plain full depth:" in md and "(n 2)" in md
    assert (root / "results" / "tasks_sst2.png").stat().st_size > 1000
    assert not list((root / "runs").rglob("state.pt"))  # finished runs are reused from final/ alone


def test_keep_states_keeps_the_resume_state_of_finished_runs(ran):
    root, tasks = ran
    tasks("--seeds", "2", "--methods", "plain", "--keep-states")
    assert (root / "runs" / "sst2" / "seed2" / "plain" / "state.pt").is_file()


def test_a_rerun_reuses_runs_and_replaces_its_rows(ran):
    root, tasks = ran
    before = rows(root)
    mtime = (root / "runs" / "sst2" / "seed0" / "static" / "final" / "model.safetensors").stat().st_mtime
    tasks("--seeds", "0", "--methods", "static")
    after = rows(root)
    assert len(after) == len(before)  # replaced, not appended
    assert (root / "runs" / "sst2" / "seed0" / "static" / "final" / "model.safetensors").stat().st_mtime == mtime


def test_the_report_is_rebuilt_from_the_csv_alone(ran):
    root, tasks = ran
    md = root / "results" / "tasks.md"
    before = md.read_text()
    md.write_text(before.replace("| pabee | ", "| gone | "))
    out = tasks("--seeds", "").stdout
    assert md.read_text() == before and before.strip() in out  # the table again; no command line added for this


def import_tasks():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import tasks
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return tasks


def test_dact_is_read_against_the_static_line_at_its_own_blocks():
    tasks = import_tasks()
    rows = [{"task": "t", "method": "static-mean", "knob": k, "seed": 0, "dev_accuracy": 0.80 + 0.02 * k, "avg_blocks": k}
            for k in range(1, 7)]
    rows += [{"task": "t", "method": "static-ft-mean", "knob": k, "seed": 0, "dev_accuracy": 0.84 + 0.02 * k, "avg_blocks": k}
             for k in range(1, 4)]  # separately fine-tuned k-block models: a line of their own
    rows.append({"task": "t", "method": "deebert-mean", "knob": 0.2, "seed": 0, "dev_accuracy": 0.9, "avg_blocks": 2.4})
    rows += [{"task": "t", "method": "dact-mean", "knob": 0.1, "seed": s, "dev_accuracy": a, "avg_blocks": b}
             for s, a, b in ((0, 0.85, 2.4), (1, 0.87, 2.6))]
    rows.append({"task": "t", "method": "dact", "knob": 0.1, "seed": 0, "dev_accuracy": 0.5, "avg_blocks": 3})  # [CLS] heads: no static-cls line
    lines = tasks.against_baselines(rows, "t")
    assert lines[-1] == "| dact-mean 0.1 | 86.00 ± 1.41% at 2.50 (n 2) | 85.00% | 89.00% | 90.00 ± 0.00% at 2.40 | — |"
    assert not any(line.startswith("| dact 0.1") for line in lines)
    without_static = [r for r in rows if not r["method"].startswith("static")]  # a task where static was not run
    assert tasks.against_baselines(without_static, "t")[-1] == "| dact-mean 0.1 | 86.00 ± 1.41% at 2.50 (n 2) | — | — | 90.00 ± 0.00% at 2.40 | — |"


def test_the_training_sample_is_fixed_and_keeps_the_header(tmp_path):
    tasks = import_tasks()
    src = tmp_path / "train.tsv"
    src.write_text("sentence\tlabel\n" + "".join(f"line {i}\t{i % 2}\n" for i in range(50)) + "\n")
    first = tasks.sample_train(src, 20, tmp_path / "a" / "train.tsv").read_text().splitlines()
    again = tasks.sample_train(src, 20, tmp_path / "b" / "train.tsv").read_text().splitlines()
    assert first == again and first[0] == "sentence\tlabel" and len(first) == 21
    numbers = [int(line.split()[1]) for line in first[1:]]
    assert numbers == sorted(set(numbers)) and numbers != list(range(20))  # file order, no repeats, not the head
    plain = tmp_path / "plain.tsv"
    plain.write_text("".join(f"text {i}\tsport\n" for i in range(5)))
    assert len(tasks.sample_train(plain, 5, tmp_path / "c.tsv").read_text().splitlines()) == 5  # no header to keep
    with pytest.raises(tasks.TinydactError, match="has 5 examples"):
        tasks.sample_train(plain, 6, tmp_path / "d.tsv")
    assert [tasks.task_name("sst2", n) for n in (0, 10000, 2500)] == ["sst2", "sst2-10k", "sst2-2500"]


def test_static_ft_fine_tunes_models_cut_to_k_blocks(ran):
    root, tasks = ran
    tasks("--seeds", "0", "--methods", "static-ft", "--ft-blocks", "1,3")
    got = {r["knob"]: r for r in rows(root) if r["method"] == "static-ft"}
    static = {r["knob"]: r for r in rows(root) if r["method"] == "static" and r["seed"] == "0"}
    assert sorted(got) == ["1", "3"] and [got[k]["avg_blocks"] for k in ("1", "3")] == ["1", "3"]
    for k in ("1", "3"):  # the same cost as the 6-block model run to block k
        assert float(got[k]["flops_ratio"]) == pytest.approx(float(static[k]["flops_ratio"]), rel=1e-12)
    from tinydact.bert import read_checkpoint
    from tinydact.checkpoint import load_checkpoint

    cut = read_checkpoint(root / "runs" / "sst2" / "bert-3-blocks")
    full = read_checkpoint(root / "bert")
    assert set(cut) == {k for k in full if not any(f"{m}.{i}." in k for m in ("layer", "dact_heads") for i in range(3, 6))} and len(cut) < len(full)
    assert all(torch.equal(cut[k], full[k]) for k in cut)
    assert load_checkpoint(root / "runs" / "sst2" / "seed0" / "static-ft-3" / "final")[0].num_blocks == 3


@pytest.mark.parametrize("args, message", [
    (["--seeds", ""], "Error: no results in"),
    (["--methods", "plain,foo"], "unknown method(s) foo"),
    (["--taus", "0.1,x"], "not a comma-separated list of float values"),
])
def test_bad_arguments_get_one_error_line(tmp_path, args, message):
    r = subprocess.run([sys.executable, str(SCRIPT), "--task", "trec", "--runs", str(tmp_path / "runs"),
                        "--results", str(tmp_path / "results"), *args], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr


def test_every_row_names_its_own_run_folder(ran):
    root, tasks = ran
    tasks_module = import_tasks()
    for r in rows(root):
        folder = root / "runs" / "sst2" / f"seed{r['seed']}" / tasks_module.run_folder(r["method"], r["knob"])[0] / "final"
        assert (folder / "model.safetensors").is_file(), (r["method"], r["knob"], folder)
    assert tasks_module.run_folder("dact-mean-distill (tight rule)", "0.1") == ("dact-mean-distill-tau0.1-joint", "dact", None, "tight")
    assert tasks_module.run_folder("pabee-mean", "2") == ("pabee-mean", "pabee", 2, "paper")
    assert tasks_module.run_folder("plain-mean", "6") == ("plain-mean", "static", 6, "paper")


def test_wall_clock_times_the_points_of_the_seeds_asked(ran):
    root, tasks = ran
    before = rows(root)
    tasks("--seeds", "1", "--wall-clock", "1")
    after = rows(root)
    assert len(after) == len(before)  # filled in, not appended
    timed = [r for r in after if r["wallclock_ratio"]]
    assert timed and {r["seed"] for r in timed} == {"1"}
    assert [float(r["wallclock_ratio"]) for r in timed if r["method"] == "plain"] == [1.0]  # the reference itself
    assert all(float(r["wallclock_ratio"]) > 0 and r["wallclock_cpu"].startswith("CPU: ") for r in timed)
    static = {r["knob"] for r in timed if r["method"] == "static"}
    assert static == {"1", "2", "3"}  # the points at ≤ 3 blocks only
    md = (root / "results" / "tasks.md").read_text()
    assert "time at batch 1 against the plain model" in md and "| static | 2 | 1 |" in md
    r = subprocess.run([sys.executable, str(SCRIPT), "--task", "sst2", "--seeds", "7", "--wall-clock", "1", "--runs", str(root / "runs"),
                        "--data-dir", str(root / "data"), "--results", str(root / "results")], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Error: nothing to time" in r.stderr and "Traceback" not in r.stderr
