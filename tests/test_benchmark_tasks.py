"""benchmarks/tasks.py: fast, the settings of every run read from the library's recipe and
baseline tables, the report rebuilt from the CSV files alone, any backbone depth, one-line
argument errors; slow, end to end on a tiny 6-block BERT: every method on two seeds, the
results merged by (task, method, seed, knob), finished runs reused."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_TSV, TINY_VOCAB, import_benchmark, save_plain_bert, tiny_config

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "tasks.py"
METHODS = {"plain", "deebert", "static", "pabee", "dact", "dact (tight rule)", "dact-distill", "dact-distill (tight rule)"}


def plain_bert(path, blocks):
    """A random tiny BERT directory (no DACT modules): what --bert takes."""
    from tinydact.bert import Bert
    from tinydact.tokenizer import Tokenizer

    torch.manual_seed(0)
    return save_plain_bert(Bert(tiny_config(blocks)), path, Tokenizer(TINY_VOCAB, max_length=64))


def task_data(root):
    (root / "data").mkdir()
    for split in ("train", "dev"):
        (root / "data" / f"{split}.tsv").write_text(TINY_TSV)
    return root / "data"


# ----------------------------------------------------------------------------------------
# Fast: nothing trained
# ----------------------------------------------------------------------------------------

def planned_runs(tmp_path, monkeypatch, blocks, *flags, save=lambda rows, blocks: None):
    """{run folder: TrainConfig} of every run one seed would train, and the knobs each method
    is evaluated at; training and evaluation replaced by stand-ins (`save` gets the rows)."""
    tasks = import_benchmark("tasks")
    runs, knobs = {}, {}

    def run(cfg, device, keep_state=False):
        runs[Path(cfg.out).name] = cfg
        return Path(cfg.out) / "final"

    monkeypatch.setattr(tasks, "run", run)
    monkeypatch.setattr(tasks, "points", lambda path, method, k, *a: knobs.setdefault(path.parent.name, list(k)) and
                        [(knob, 0.5, 1.0, 0.2) for knob in k])
    monkeypatch.setattr(tasks, "per_block", lambda *a: [0.5] * blocks)
    monkeypatch.setattr(tasks, "first_blocks", lambda bert, k, dst: dst)
    monkeypatch.setattr(tasks, "cost_of_first_blocks", lambda *a: 0.0)
    args = tasks.parser().parse_args(["--task", "sst2", "--bert", str(plain_bert(tmp_path / "bert", blocks)), "--data-dir",
                                      str(task_data(tmp_path)), "--runs", str(tmp_path / "runs"), "--results", str(tmp_path),
                                      "--methods", ",".join(tasks.METHODS), "--taus", "0.1", *flags])
    args.methods = args.methods.split(",")
    tasks.one_seed("sst2", 0, args, "cpu", save)
    return tasks, runs, knobs


def test_every_run_takes_its_settings_from_the_recipe_and_baseline_tables(tmp_path, monkeypatch):
    from tinydact.baselines import training_settings
    from tinydact.train import RECIPE

    tasks, runs, _ = planned_runs(tmp_path, monkeypatch, 6, "--epochs", "3")
    phase1, heads, joint = (settings for _, settings in RECIPE)
    expected = {"plain": training_settings("deebert", 1), "deebert2": training_settings("deebert", 2),
                "static": training_settings("static", None), "pabee": training_settings("pabee", None),
                **{f"static-ft-{k}": training_settings("deebert", 1) for k in (1, 2, 3)},
                **{f"{m}-p1": phase1 for m in ("dact", "dact-distill")},
                **{f"{m}-tau0.1-heads": heads for m in ("dact", "dact-distill")},
                **{f"{m}-tau0.1-joint": joint for m in ("dact", "dact-distill")}}
    assert set(runs) == set(expected)
    for folder, settings in expected.items():
        assert {k: getattr(runs[folder], k) for k in settings} == settings, folder
    assert [runs[f].epochs for f in ("plain", "deebert2", "static", "pabee", "dact-p1", "dact-tau0.1-heads", "dact-tau0.1-joint")] == \
        [3, 3, 3, 3, *tasks.dact_epochs(3)]
    assert runs["dact-distill-p1"].distill == 0.9 and runs["dact-p1"].distill == 0.0
    assert {runs[f].batch_size for f in runs if not f.endswith("-heads")} == {32}


def test_a_changed_recipe_changes_the_runs(tmp_path, monkeypatch):
    tasks = import_benchmark("tasks")
    changed = tuple((name, {**settings, "lr": 7e-5, "head_lr": 3e-3}) for name, settings in tasks.RECIPE)
    monkeypatch.setattr(tasks, "RECIPE", changed)
    _, runs, _ = planned_runs(tmp_path, monkeypatch, 6, "--methods", "dact")
    assert {(runs[f].lr, runs[f].head_lr) for f in runs} == {(7e-5, 3e-3)}


def test_an_ablation_names_its_rows_and_run_folders(tmp_path, monkeypatch):
    saved = []
    _, runs, _ = planned_runs(tmp_path, monkeypatch, 6, "--methods", "dact", "--halt-bias", "0", "--deep-supervision", "0.5",
                              save=lambda rows, blocks: saved.extend(rows + blocks))
    assert set(runs) == {"dact-bias0-p1", "dact-bias0-ds0.5-tau0.1-heads", "dact-bias0-ds0.5-tau0.1-joint"}
    assert runs["dact-bias0-p1"].halt_bias == 0 and runs["dact-bias0-p1"].deep_supervision == 0  # phase 1 does not use λ
    assert {(runs[f].halt_bias, runs[f].deep_supervision) for f in runs if "tau" in f} == {(0, 0.5)}
    assert {r["method"] for r in saved} == {"dact-bias0-ds0.5", "dact-bias0-ds0.5 (tight rule)", "dact-bias0-ds0.5 phase 1",
                                            "dact-bias0-ds0.5 τ 0.1"}
    tasks = import_benchmark("tasks")
    assert tasks.run_folder("dact-bias0-ds0.5 (tight rule)", "0.1")[0] == "dact-bias0-ds0.5-tau0.1-joint"
    # a variant whose phase 1 is the default's reuses its folder; the later phases never collide
    (tmp_path / "b").mkdir()
    _, runs, _ = planned_runs(tmp_path / "b", monkeypatch, 6, "--methods", "dact", "--shared-classifier", "--head-input", "mean")
    assert set(runs) == {"dact-mean-shared-p1", "dact-mean-shared-tau0.1-heads", "dact-mean-shared-tau0.1-joint"}
    assert all(runs[f].shared_classifier for f in runs)
    (tmp_path / "c").mkdir()
    _, runs, _ = planned_runs(tmp_path / "c", monkeypatch, 6, "--methods", "dact", "--deep-supervision", "0.5")
    assert set(runs) == {"dact-p1", "dact-ds0.5-tau0.1-heads", "dact-ds0.5-tau0.1-joint"}


def test_each_dact_point_is_reported_beside_its_blocks_after_phase_1_and_at_the_end():
    report = import_benchmark("report")
    rows = [{"task": "t", "method": m, "knob": 0.2, "seed": s, "dev_accuracy": 0.88 + 0.01 * s, "avg_blocks": b + 0.1 * s}
            for s in (0, 1) for m, b in (("dact-mean-bias0", 3.0), ("dact-mean-bias0 (tight rule)", 2.5))]
    blocks = [{"task": "t", "method": f"dact-mean-bias0 {when}", "seed": s, "block": n, "dev_accuracy": a + 0.1 * n + 0.01 * s}
              for s in (0, 1) for when, a in (("phase 1", 0.3), ("τ 0.2", 0.35)) for n in (1, 2, 3)]
    lines = report.dact_blocks(rows, blocks, "t")
    assert lines[-1] == "| dact-mean-bias0 0.2 | 2 | 88.50 ± 0.71% | 3.05 / 2.55 | 40.5 50.5 60.5 | 45.5 55.5 65.5 |"
    assert "| dact-mean-bias0 0.2 | 2 |" in "\n".join(report.report([], rows, blocks, 3))


def test_a_models_training_time_is_the_sum_of_its_runs_and_blank_unless_each_was_timed_whole(tmp_path):
    tasks = import_benchmark("tasks")
    cpu = "AMD EPYC, 1 thread(s), bfloat16"
    for name, seconds, resumed, on in (("p1", 600, False, cpu), ("heads", 60, False, cpu), ("joint", 240, False, cpu),
                                       ("resumed", 60, True, cpu), ("elsewhere", 60, False, "Intel Xeon, 2 thread(s), float32")):
        (tmp_path / name).mkdir()
        (tmp_path / name / tasks.TIME_FILE).write_text(json.dumps({"seconds": seconds, "resumed": resumed, "cpu": on}))
    (tmp_path / "untimed").mkdir()
    assert tasks.trained([tmp_path / f for f in ("p1", "heads", "joint")]) == (900, cpu)
    for other in ("resumed", "untimed", "elsewhere"):
        assert tasks.trained([tmp_path / "p1", tmp_path / other]) == ("", ""), other
    report = import_benchmark("report")
    rows = [{"task": "t", "method": m, "knob": k, "seed": s, "train_seconds": 60 * (minutes + s), "train_cpu": cpu}
            for s in (0, 1) for m, k, minutes in (("dact", 0.1, 15.0), ("dact (tight rule)", 0.1, 15.0), ("static", 1, 9.0),
                                                  ("static", 2, 9.0), ("dact", 0.2, 14.0))]
    rows.append({"task": "t", "method": "pabee", "knob": 1, "seed": 0, "train_seconds": "", "train_cpu": ""})
    assert report.train_table(rows, "t")[2:] == [f"{cpu}  ", "", "| method | τ | n | minutes |", "|---|---|---|---|",
                                                 "| dact | 0.1 | 2 | 15.5 ± 0.7 |", "| static | — | 2 | 9.5 ± 0.7 |",
                                                 "| dact | 0.2 | 2 | 14.5 ± 0.7 |"]
    assert report.train_table(rows[-1:], "t") == []


@pytest.mark.parametrize("flags", [["--halt-bias", "0"], ["--shared-classifier"]])
def test_an_ablation_needs_a_dact_method(tmp_path, monkeypatch, capsys, flags):
    tasks = import_benchmark("tasks")
    monkeypatch.setattr(sys, "argv", ["tasks.py", "--task", "trec", "--methods", "plain,pabee", *flags, "--runs", str(tmp_path),
                                      "--results", str(tmp_path)])
    with pytest.raises(SystemExit) as exit:
        tasks.main()
    assert exit.value.code == 2 and "DACT's options, for the methods dact, dact-distill" in capsys.readouterr().err


def test_a_12_block_backbone_is_run_and_reported_at_its_own_depth(tmp_path, monkeypatch):
    tasks, _, knobs = planned_runs(tmp_path, monkeypatch, 12, "--methods", "plain,static,pabee")
    assert knobs == {"plain": [12], "static": list(range(1, 13)), "pabee": list(range(1, 13))}
    report = import_benchmark("report")
    rows = [{"task": "t", "method": m, "knob": k, "seed": 0, "dev_accuracy": 0.5 + 0.01 * k, "avg_blocks": k}
            for m in ("plain", "static") for k in (range(1, 13) if m == "static" else [12])]
    blocks = [{"task": "t", "method": "static", "seed": 0, "block": b, "dev_accuracy": 0.5} for b in range(1, 13)]
    assert report.depth(rows, blocks) == 12 and report.budgets(12) == [4, 6, 8] and report.budgets(6) == [2, 3, 4]
    lines = report.report([], rows, blocks, 12, [3, 4, 6])
    assert lines[0] == "## At ≤ 4 blocks of 12, every task" and "| plain (12 blocks) | 62.00 ± 0.00% at 12.00 (12, n 1) |" in lines
    assert "| method | ≤ 3 blocks | ≤ 4 blocks | ≤ 6 blocks |" in lines
    assert "| static | 1 | " + " | ".join(["50.0"] * 12) + " |" in lines


def test_the_report_is_rebuilt_from_the_csv_alone(tmp_path, monkeypatch, capsys):
    tasks = import_benchmark("tasks")
    rows = [{"task": "trec", "method": m, "knob": k, "seed": s, "dev_accuracy": 0.8 + 0.01 * k + 0.001 * s, "avg_blocks": k,
             "flops_ratio": k / 6} for s in (0, 1) for m, ks in (("plain", [6]), ("static", range(1, 7))) for k in ks]
    rows += [{"task": "trec", "method": "dact", "knob": 0.1, "seed": s, "dev_accuracy": 0.85, "avg_blocks": 2.5, "flops_ratio": 0.4}
             for s in (0, 1)]
    tasks.write_results("tasks", rows, ["- `python benchmarks/tasks.py --task trec --seeds 0,1 --runs R --results R`"], tmp_path)
    monkeypatch.setattr(sys, "argv", ["tasks.py", "--task", "trec", "--seeds", "", "--results", str(tmp_path)])
    tasks.main()
    md = (tmp_path / "tasks.md").read_text()
    assert "average blocks of 6" in md and "- `python benchmarks/tasks.py --task trec --seeds 0,1 --runs R --results R`" in md
    assert "| static | 82.05 ± 0.07% at 2.00 (2, n 2) | 83.05 ± 0.07% at 3.00 (3, n 2) | 84.05 ± 0.07% at 4.00 (4, n 2) |" in md
    assert "| dact 0.1 | 85.00 ± 0.00% at 2.50 (n 2) | 82.55% | — | — | — |" in md
    (tmp_path / "tasks.md").write_text(md.replace("| static | ", "| gone | "))
    tasks.main()
    assert (tmp_path / "tasks.md").read_text() == md and md.strip() in capsys.readouterr().out  # no command line added
    assert (tmp_path / "tasks_trec.png").stat().st_size > 1000


def test_dact_is_read_against_the_static_line_at_its_own_blocks():
    report = import_benchmark("report")
    rows = [{"task": "t", "method": "static-mean", "knob": k, "seed": 0, "dev_accuracy": 0.80 + 0.02 * k, "avg_blocks": k}
            for k in range(1, 7)]
    rows += [{"task": "t", "method": "static-ft-mean", "knob": k, "seed": 0, "dev_accuracy": 0.84 + 0.02 * k, "avg_blocks": k}
             for k in range(1, 4)]  # separately fine-tuned k-block models: a line of their own
    rows.append({"task": "t", "method": "deebert-mean", "knob": 0.2, "seed": 0, "dev_accuracy": 0.9, "avg_blocks": 2.4})
    rows += [{"task": "t", "method": "dact-mean", "knob": 0.1, "seed": s, "dev_accuracy": a, "avg_blocks": b}
             for s, a, b in ((0, 0.85, 2.4), (1, 0.87, 2.6))]
    rows.append({"task": "t", "method": "dact", "knob": 0.1, "seed": 0, "dev_accuracy": 0.5, "avg_blocks": 3})  # [CLS] heads: no static-cls line
    lines = report.against_baselines(rows, "t")
    assert lines[-1] == "| dact-mean 0.1 | 86.00 ± 1.41% at 2.50 (n 2) | 85.00% | 89.00% | 90.00 ± 0.00% at 2.40 | — |"
    assert not any(line.startswith("| dact 0.1") for line in lines)
    without_static = [r for r in rows if not r["method"].startswith("static")]  # a task where static was not run
    assert report.against_baselines(without_static, "t")[-1] == "| dact-mean 0.1 | 86.00 ± 1.41% at 2.50 (n 2) | — | — | 90.00 ± 0.00% at 2.40 | — |"


def test_the_training_sample_is_fixed_and_keeps_the_header(tmp_path):
    tasks = import_benchmark("tasks")
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


def test_a_backbone_is_cut_to_its_first_k_blocks_through_the_encoders_names(tmp_path):
    tasks = import_benchmark("tasks")
    from tinydact.bert import Bert, read_checkpoint

    bert = plain_bert(tmp_path / "bert", 6)
    cut = tasks.first_blocks(bert, 3, tmp_path / "cut")
    full, mine = read_checkpoint(bert), read_checkpoint(cut)
    assert set(mine) == {k for k in full if not any(f"layer.{i}." in k for i in range(3, 6))} and len(mine) < len(full)
    assert all(torch.equal(mine[k], full[k]) for k in mine)
    assert Bert.from_pretrained(cut).config.num_hidden_layers == 3 and (cut / "vocab.txt").read_text() == (bert / "vocab.txt").read_text()
    with pytest.raises(tasks.TinydactError, match="has 6 blocks"):
        tasks.first_blocks(bert, 7, tmp_path / "too-deep")


def test_run_folders_are_named_in_one_place():
    tasks = import_benchmark("tasks")
    assert tasks.run_folder("dact-mean-distill (tight rule)", "0.1") == ("dact-mean-distill-tau0.1-joint", "dact", None, "tight")
    assert tasks.run_folder("pabee-mean", "2") == ("pabee-mean", "pabee", 2, "paper")
    assert tasks.run_folder("plain-mean", "6") == ("plain-mean", "static", 6, "paper")


@pytest.mark.parametrize("args, message", [
    (["--methods", "plain,foo", "--runs", "R", "--results", "R"], "unknown method(s) foo"),
    (["--taus", "0.1,x", "--runs", "R", "--results", "R"], "not a comma-separated list of float values"),
    (["--runs", "R"], "the following arguments are required: --results"),
    (["--results", "R"], "--runs is needed to train"),
])
def test_bad_arguments_get_one_error_line(tmp_path, monkeypatch, capsys, args, message):
    tasks = import_benchmark("tasks")
    monkeypatch.setattr(sys, "argv", ["tasks.py", "--task", "trec", *[str(tmp_path / a) if a == "R" else a for a in args]])
    with pytest.raises(SystemExit) as exit:
        tasks.main()
    err = capsys.readouterr().err
    assert exit.value.code == 2 and message in err.splitlines()[-1] and not list(tmp_path.iterdir())  # nothing written


def test_nothing_to_rebuild_is_one_error_line_from_the_script(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--task", "trec", "--seeds", "", "--results", str(tmp_path / "results")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.startswith("Error: no results in") and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------------------
# Slow: end to end on a tiny 6-block BERT
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    plain_bert(root / "bert", 6)
    task_data(root)

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


@pytest.mark.slow
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
    assert "| static | " in md and "plain full depth:" in md and "(n 2)" in md and "--results " in md
    assert (root / "results" / "tasks_sst2.png").stat().st_size > 1000
    assert not list((root / "runs").rglob("state.pt"))  # finished runs are reused from final/ alone
    assert all(float(r["train_seconds"]) > 0 and r["train_cpu"] for r in got)  # every run timed, each model's runs summed
    seed0 = root / "runs" / "sst2" / "seed0"
    spent = [json.loads((seed0 / f / "train_time.json").read_text())["seconds"] for f in ("dact-p1", "dact-tau0.1-heads", "dact-tau0.1-joint")]
    assert {float(r["train_seconds"]) for r in got if r["method"] == "dact" and r["seed"] == "0"} == {round(sum(spent), 1)}
    assert "minutes of training behind each model" in md


@pytest.mark.slow
def test_keep_states_keeps_the_resume_state_of_finished_runs(ran):
    root, tasks = ran
    tasks("--seeds", "2", "--methods", "plain", "--keep-states")
    assert (root / "runs" / "sst2" / "seed2" / "plain" / "state.pt").is_file()


@pytest.mark.slow
def test_a_rerun_reuses_runs_and_replaces_its_rows(ran):
    root, tasks = ran
    before = rows(root)
    mtime = (root / "runs" / "sst2" / "seed0" / "static" / "final" / "model.safetensors").stat().st_mtime
    tasks("--seeds", "0", "--methods", "static")
    after = rows(root)
    assert len(after) == len(before)  # replaced, not appended
    assert (root / "runs" / "sst2" / "seed0" / "static" / "final" / "model.safetensors").stat().st_mtime == mtime


@pytest.mark.slow
def test_static_ft_fine_tunes_models_cut_to_k_blocks(ran):
    root, tasks = ran
    tasks("--seeds", "0", "--methods", "static-ft", "--ft-blocks", "1,3")
    got = {r["knob"]: r for r in rows(root) if r["method"] == "static-ft"}
    static = {r["knob"]: r for r in rows(root) if r["method"] == "static" and r["seed"] == "0"}
    assert sorted(got) == ["1", "3"] and [got[k]["avg_blocks"] for k in ("1", "3")] == ["1", "3"]
    for k in ("1", "3"):  # the same cost as the 6-block model run to block k
        assert float(got[k]["flops_ratio"]) == pytest.approx(float(static[k]["flops_ratio"]), rel=1e-12)
    from tinydact.checkpoint import load_checkpoint

    assert load_checkpoint(root / "runs" / "sst2" / "seed0" / "static-ft-3" / "final")[0].num_blocks == 3


@pytest.mark.slow
def test_every_row_names_its_own_run_folder(ran):
    root, _ = ran
    tasks = import_benchmark("tasks")
    for r in rows(root):
        folder = root / "runs" / "sst2" / f"seed{r['seed']}" / tasks.run_folder(r["method"], r["knob"])[0] / "final"
        assert (folder / "model.safetensors").is_file(), (r["method"], r["knob"], folder)


@pytest.mark.slow
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
    assert static == {"1", "2", "3"}  # the points at ≤ 3 blocks (N/2) only
    md = (root / "results" / "tasks.md").read_text()
    assert "time at batch 1 against the plain model" in md and "| static | 2 | 1 |" in md
    r = subprocess.run([sys.executable, str(SCRIPT), "--task", "sst2", "--seeds", "7", "--wall-clock", "1", "--runs", str(root / "runs"),
                        "--data-dir", str(root / "data"), "--results", str(root / "results")], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Error: nothing to time" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_an_ablation_reaches_the_csv_the_report_and_its_own_run_folders(ran):
    root, tasks = ran
    tasks("--seeds", "0", "--methods", "dact", "--shared-classifier", "--deep-supervision", "0.5")
    got = {r["method"] for r in rows(root) if r["seed"] == "0"}
    assert {"dact-ds0.5-shared", "dact-ds0.5-shared (tight rule)", "dact", "dact (tight rule)"} <= got  # beside the default's
    assert {"dact-ds0.5-shared phase 1", "dact-ds0.5-shared τ 0.1"} <= {r["method"] for r in rows(root, "tasks_blocks")}
    from tinydact.checkpoint import load_checkpoint

    model, meta = load_checkpoint(root / "runs" / "sst2" / "seed0" / "dact-ds0.5-shared-tau0.1-joint" / "final")
    assert model.shared_classifier and meta["trained"]["deep_supervision"] == 0.5
    assert load_checkpoint(root / "runs" / "sst2" / "seed0" / "dact-shared-p1" / "final")[0].shared_classifier
    md = (root / "results" / "tasks.md").read_text()
    assert "| dact-ds0.5-shared 0.1 | 1 | " in md and "--shared-classifier --deep-supervision 0.5" in md
