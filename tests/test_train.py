"""Training on a tiny random model and a hand-written TSV: the loss goes down, an interrupted
run resumes to exactly the weights of an uninterrupted one, the frozen-backbone path caches
[CLS] states, and the saved checkpoints load."""

import json

import pytest
import torch
from conftest import assert_clean, assert_error, ctrl_c_on_call, invoke

import tinydact.train as train_module
from tinydact.errors import TinydactError
from tinydact.checkpoint import load_checkpoint
from tinydact.train import TrainConfig, train


def config(tiny_model_dir, tiny_tsv, out, **kw):
    base = dict(model=str(tiny_model_dir), train=str(tiny_tsv), dev=str(tiny_tsv), out=str(out), task="sst2", phase=2,
                batch_size=4, max_length=16, lr=1e-3, head_lr=1e-2, warmup=0.0, eval_every=3, save_every=2)
    return TrainConfig(**{**base, **kw})


def losses(out):
    return [json.loads(line)["train_loss"] for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow  # 30 epochs with a dev evaluation each: ~3-6 s
@pytest.mark.parametrize("phase", [1, 2])
def test_training_lowers_the_loss(tiny_model_dir, tiny_tsv, tmp_path, phase):
    cfg = config(tiny_model_dir, tiny_tsv, tmp_path / "run", phase=phase, epochs=30, tau=0.01, eval_every=1000)
    model, _ = load_checkpoint(tiny_model_dir)
    from tinydact.data import encode_batch, read_examples
    from tinydact.tokenizer import Tokenizer

    ex, _, _ = read_examples(tiny_tsv)
    enc, labels, _ = encode_batch(ex, list(range(len(ex))), Tokenizer.from_pretrained(tiny_model_dir), 16)

    def full_loss(m):
        with torch.no_grad():
            if phase == 1:
                return train_module.phase1_loss(m, m.head_inputs(*enc), labels, "all").item()
            a, p, _, _ = m(*enc)
            return train_module.dact_loss(a[:, -1], labels, p, 0.01).item()

    start = full_loss(model)
    train(cfg, torch.device("cpu"), quiet=True)
    trained, _ = load_checkpoint(tmp_path / "run" / "final")
    assert full_loss(trained) < 0.7 * start


def test_interrupted_run_resumes_to_the_same_weights(tiny_model_dir, tiny_tsv, tmp_path, monkeypatch):
    straight = config(tiny_model_dir, tiny_tsv, tmp_path / "straight", epochs=3)
    train(straight, torch.device("cpu"), quiet=True)

    real = ctrl_c_on_call(monkeypatch, train_module, "encode_batch", 5)  # in the middle of epoch 2, after 4 optimizer steps
    cut = config(tiny_model_dir, tiny_tsv, tmp_path / "cut", epochs=3)
    with pytest.raises(TinydactError, match=r"interrupted at step 4/9.*--resume"):
        train(cut, torch.device("cpu"), quiet=True)
    assert torch.load(tmp_path / "cut" / "state.pt", weights_only=True)["step"] == 4
    monkeypatch.setattr(train_module, "encode_batch", real)
    train(TrainConfig(model="", train="", out=str(tmp_path / "cut")), torch.device("cpu"), resume=True, quiet=True)

    a, _ = load_checkpoint(tmp_path / "straight" / "final")
    b, _ = load_checkpoint(tmp_path / "cut" / "final")
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(v, w, atol=1e-6), k


def test_frozen_backbone_trains_only_heads_on_cached_states(tiny_model_dir, tiny_tsv, tmp_path):
    cache = tmp_path / "cls.pt"
    cfg = config(tiny_model_dir, tiny_tsv, tmp_path / "frozen", freeze_backbone=True, cache=str(cache), epochs=5, tau=0.05)
    best = train(cfg, torch.device("cpu"), quiet=True)
    assert cache.is_file() and 1 <= best["avg_blocks"] <= 4
    before, _ = load_checkpoint(tiny_model_dir)
    after, _ = load_checkpoint(tmp_path / "frozen" / "final")
    assert all(torch.equal(v, w) for v, w in zip(before.bert.state_dict().values(), after.bert.state_dict().values()))
    assert not all(torch.equal(v, w) for v, w in zip(before.heads.state_dict().values(), after.heads.state_dict().values()))
    # a second run with the same cache reuses it (same states, so the same result)
    again = train(config(tiny_model_dir, tiny_tsv, tmp_path / "frozen2", freeze_backbone=True, cache=str(cache), epochs=5, tau=0.05),
                  torch.device("cpu"), quiet=True)
    assert again["accuracy"] == best["accuracy"] and again["avg_blocks"] == best["avg_blocks"]


def test_resume_without_state_is_a_clear_error(tmp_path):
    with pytest.raises(TinydactError, match="nothing to resume"):
        train(TrainConfig(model="", train="", out=str(tmp_path)), torch.device("cpu"), resume=True)


def test_labels_of_a_checkpoint_must_match_the_data(tiny_model_dir, tmp_path):
    data = tmp_path / "three.tsv"
    data.write_text("good\ta\nbad\tb\nmeh\tc\n")
    with pytest.raises(TinydactError, match=r"three\.tsv:1: label 'a' is not one of \['negative', 'positive'\]"):
        train(config(tiny_model_dir, data, tmp_path / "x", task="plain"), torch.device("cpu"), quiet=True)
    rte = tmp_path / "rte.tsv"
    rte.write_text("sentence1\tsentence2\tlabel\nA\tB\tentailment\n")
    with pytest.raises(TinydactError, match=r"trained for labels \['negative', 'positive'\]"):
        train(config(tiny_model_dir, rte, tmp_path / "y", task="rte", dev=None), torch.device("cpu"), quiet=True)


@pytest.mark.parametrize("tau_end", [0.0, 0.3])
def test_the_loss_gets_tau_or_its_linear_ramp_to_tau_end(tiny_model_dir, tiny_tsv, tmp_path, monkeypatch, tau_end):
    seen = []
    real = train_module.dact_loss

    def recording(a_N, labels, p, tau):
        seen.append(tau)
        return real(a_N, labels, p, tau)

    monkeypatch.setattr(train_module, "dact_loss", recording)
    cfg = config(tiny_model_dir, tiny_tsv, tmp_path / "ramp", freeze_backbone=True, epochs=3, tau=0.1, tau_end=tau_end)
    train(cfg, torch.device("cpu"), quiet=True)
    assert len(seen) == 9  # 12 rows, batch 4, 3 epochs: one loss per optimizer step
    expected = [0.1] * 9 if tau_end == 0 else [0.1 + 0.2 * s / 8 for s in range(9)]  # from τ at step 0 to τ_end at the last
    assert seen == pytest.approx(expected, abs=1e-12)
    trained = json.loads((tmp_path / "ramp" / "final" / "config.json").read_text())["dact"]["trained"]
    assert trained["tau"] == 0.1 and trained.get("tau_end", "absent") == (tau_end or "absent")  # recorded when ramped
    with pytest.raises(TinydactError, match="--tau-end must be >= 0"):
        train(config(tiny_model_dir, tiny_tsv, tmp_path / "bad", tau_end=-0.1), torch.device("cpu"), quiet=True)


# ----------------------------------------------------------------------------------------
# The whole recipe in one command: phase1/, heads/, joint/, then final/
# ----------------------------------------------------------------------------------------


def recipe_config(tiny_model_dir, tiny_tsv, out, **kw):
    return TrainConfig(model=str(tiny_model_dir), train=str(tiny_tsv), dev=str(tiny_tsv), out=str(out), task="sst2",
                       batch_size=4, max_length=16, warmup=0.0, save_every=2, tau=0.05, phase_epochs="2,3,2", **kw)


def test_recipe_runs_its_three_phases_and_leaves_a_final_model(tiny_model_dir, tiny_tsv, tmp_path):
    from tinydact import load
    from tinydact.train import recipe

    out = tmp_path / "run"
    recipe(recipe_config(tiny_model_dir, tiny_tsv, out, keep_states=True), torch.device("cpu"), quiet=True)
    trained = {name: json.loads((out / name / "final" / "config.json").read_text())["dact"]["trained"]
               for name in ("phase1", "heads", "joint")}
    assert [(t["phase"], t["step"]) for t in trained.values()] == [(1, 6), (2, 3), (2, 6)]
    assert (out / "heads" / "head-inputs.pt").is_file()  # the heads trained on cached head inputs
    heads, _ = load_checkpoint(out / "heads" / "final")
    phase1, _ = load_checkpoint(out / "phase1" / "final")
    assert all(torch.equal(v, w) for v, w in zip(phase1.bert.state_dict().values(), heads.bert.state_dict().values()))
    joint, _ = load_checkpoint(out / "joint" / "final")
    final, _ = load_checkpoint(out / "final")
    assert all(torch.equal(v, w) for v, w in zip(joint.state_dict().values(), final.state_dict().values()))
    assert not torch.equal(heads.bert.embeddings.word.weight, joint.bert.embeddings.word.weight)  # joint moved the backbone
    (r,) = load(out / "final")(["good film"])
    assert r["label"] in ("negative", "positive") and 1 <= r["blocks"] <= 4


@pytest.mark.slow  # two recipes each: ~3 s
@pytest.mark.parametrize("phase, at", [("phase1", 3), ("heads", 2), ("joint", 4)])
def test_recipe_interrupted_in_any_phase_resumes_to_the_same_model(tiny_model_dir, tiny_tsv, tmp_path, monkeypatch, phase, at):
    from tinydact.train import Batches, recipe

    recipe(recipe_config(tiny_model_dir, tiny_tsv, tmp_path / "straight"), torch.device("cpu"), quiet=True)

    # Ctrl-C while fetching the batch of step `at` of this phase
    real = ctrl_c_on_call(monkeypatch, Batches, "get", at, counts=lambda batches, idx: batches.cfg.out.endswith(phase))
    cut = tmp_path / "cut"
    with pytest.raises(TinydactError, match=rf"interrupted at step {at - 1}/\d+ of .*{phase}.*tinydact train --resume --out {cut}$"):
        recipe(recipe_config(tiny_model_dir, tiny_tsv, cut), torch.device("cpu"), quiet=True)
    assert not (cut / "final").exists()
    monkeypatch.setattr(Batches, "get", real)
    recipe(TrainConfig(out=str(cut)), torch.device("cpu"), resume=True, quiet=True)

    a, _ = load_checkpoint(tmp_path / "straight" / "final")
    b, _ = load_checkpoint(cut / "final")
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(v, w, atol=1e-6), k


def test_a_finished_recipe_keeps_only_its_model_settings_and_logs(tiny_model_dir, tiny_tsv, tmp_path):
    from tinydact.train import recipe

    out = tmp_path / "run"
    recipe(recipe_config(tiny_model_dir, tiny_tsv, out), torch.device("cpu"), quiet=True)
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.parent.name != "final")
    assert left == ["heads/log.jsonl", "joint/log.jsonl", "phase1/log.jsonl", "recipe.json"]
    assert json.loads((out / "final" / "config.json").read_text())["dact"]["trained"]["method"] == "dact"
    with pytest.raises(TinydactError, match="is finished.*nothing to resume"):
        recipe(TrainConfig(out=str(out)), torch.device("cpu"), resume=True, quiet=True)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.parent.name != "final") == left


def test_recipe_command_runs_and_refuses_options_each_phase_sets(tiny_model_dir, tiny_tsv, tmp_path):
    common = ["--model", tiny_model_dir, "--train", tiny_tsv, "--dev", tiny_tsv, "--task", "sst2",
              "--batch-size", "4", "--max-length", "16", "--max-steps", "2", "--quiet", "--device", "cpu"]
    out, err = assert_clean(invoke("train", *common, "--out", tmp_path / "run", "--keep-states", "--tau", "0.05", "--distill", "0.5"))
    assert err == "" and json.loads(out)["out"] == str(tmp_path / "run")
    assert all((tmp_path / "run" / phase / "state.pt").is_file() for phase in ("phase1", "heads", "joint"))  # --keep-states
    out, _ = assert_clean(invoke("classify", "good film", "--model", tmp_path / "run" / "final"))
    assert "blocks" in out
    assert_error(invoke("train", *common, "--out", tmp_path / "x", "--lr", "1e-4"), "--lr applies to one phase whose backbone trains")
    assert_error(invoke("train", "--resume", "--out", tmp_path / "run"), f"the recipe in {tmp_path / 'run'} is finished")
    assert_error(invoke("train", *common, "--out", tmp_path / "y", "--phase-epochs", "1,2"), "--phase-epochs takes 3 positive numbers")


@pytest.mark.parametrize("blocks, method", [("all", "static"), ("last", "plain"), ("weighted", "pabee"), ("all-but-last", "deebert")])
def test_a_checkpoint_records_the_method_it_was_trained_for(tiny_model_dir, tiny_tsv, tmp_path, blocks, method):
    assert_clean(invoke("train", "--model", tiny_model_dir, "--train", tiny_tsv, "--out", tmp_path / "run", "--phase", "1",
                        "--blocks", blocks, "--max-steps", "1", "--max-length", "16", "--quiet"))
    for name in ("best", "final"):
        trained = json.loads((tmp_path / "run" / name / "config.json").read_text())["dact"]["trained"]
        assert trained["method"] == method and trained["blocks"] == blocks and "tau" not in trained  # τ: phase 2 only


def test_a_frozen_run_cut_by_max_steps_caches_only_its_batches_and_trains_the_same(tiny_model_dir, tiny_tsv, tmp_path, monkeypatch):
    """--max-steps 2 of 3 steps per epoch: only the 8 training rows of its 2 batches go through
    the backbone (a smoke run of the recipe's heads phase does not cache all of SST-2), and the
    heads end where a run of the same 2 steps over a full cache ends."""
    computed = []
    real = train_module.cache_head_inputs

    def recording(model, examples, *args):
        computed.append(len(examples))
        return real(model, examples, *args)

    monkeypatch.setattr(train_module, "cache_head_inputs", recording)
    cut = config(tiny_model_dir, tiny_tsv, tmp_path / "cut", freeze_backbone=True, max_steps=2, cache=str(tmp_path / "c.pt"))
    train(cut, torch.device("cpu"), quiet=True)
    assert computed == [8, 12] and not (tmp_path / "c.pt").exists()  # train rows of 2 batches of 4; dev, all of it
    full = config(tiny_model_dir, tiny_tsv, tmp_path / "full", freeze_backbone=True, epochs=2 / 3)  # the same 2 steps
    train(full, torch.device("cpu"), quiet=True)
    assert computed[2:] == [12, 12]
    a, _ = load_checkpoint(tmp_path / "cut" / "final")
    b, _ = load_checkpoint(tmp_path / "full" / "final")
    assert all(torch.equal(v, w) for v, w in zip(a.state_dict().values(), b.state_dict().values()))
