"""Checkpoints that would load and answer wrongly are refused at load (see checkpoint.py's
docstring for what is checked and what cannot be): a vocab.txt whose lines moved, integer
weights, label names that disagree with the task. Each case through `classify` and `eval`,
and `tinydact.load()`; what cannot be checked is shown to load."""

import hashlib
import json

import pytest
import torch
from conftest import assert_clean, assert_error, broken_copy, edit_json, edit_tensors, invoke, shipped_weights

import tinydact
from tinydact.errors import TinydactError


def refused_everywhere(model, tsv, *fragments) -> None:
    """`classify`, `eval` and `tinydact.load` all refuse `model` with the same one-line error."""
    line = assert_error(invoke("classify", "good film", "--model", model), *fragments)
    assert assert_error(invoke("eval", "--model", model, "--data", tsv)) == line
    with pytest.raises(TinydactError) as e:
        tinydact.load(model)
    assert all(f in str(e.value) for f in fragments)


def shift_vocab(model, shift) -> None:
    """Rewrite `model`'s vocab.txt as shift(lines): the same length, other ids."""
    lines = (model / "vocab.txt").read_text().splitlines()
    shifted = shift(lines)
    assert len(shifted) == len(lines) and shifted != lines
    (model / "vocab.txt").write_text("".join(t + "\n" for t in shifted))


def without_fingerprint(model) -> None:
    """As a checkpoint saved before vocabularies were fingerprinted."""
    config = json.loads((model / "config.json").read_text())
    del config["dact"]["vocab_sha256"]
    (model / "config.json").write_text(json.dumps(config))


# ----------------------------------------------------------------------------------------
# the vocabulary
# ----------------------------------------------------------------------------------------


def test_a_saved_checkpoint_records_its_vocabulary_and_special_ids(tiny_model_dir):
    meta = json.loads((tiny_model_dir / "config.json").read_text())["dact"]
    assert meta["vocab_sha256"] == hashlib.sha256((tiny_model_dir / "vocab.txt").read_bytes()).hexdigest()
    recorded = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    vocab = (tiny_model_dir / "vocab.txt").read_text().splitlines()
    assert {int(i): e["content"] for i, e in recorded.items()} == {i: vocab[i] for i in range(5)}  # [PAD] ... [MASK]


def test_vocab_shifted_by_one_line_is_refused(tiny_model_dir, tiny_tsv, tmp_path):
    """A word line dropped and one added at the end: the same length, every id after it moved."""
    model = broken_copy(tiny_model_dir, tmp_path / "m", lambda d: shift_vocab(d, lambda v: v[:10] + v[11:] + ["extra"]))
    refused_everywhere(model, tiny_tsv, f"{model / 'vocab.txt'} is not the vocabulary this model was saved with", "vocab_sha256")


def test_special_token_moved_is_refused_without_a_fingerprint(tiny_model_dir, tiny_tsv, tmp_path):
    """An older checkpoint (no fingerprint) whose tokenizer_config.json records the special ids."""
    def edit(d):
        without_fingerprint(d)
        shift_vocab(d, lambda v: v[:1] + v[2:] + [v[1]])  # [UNK] (id 1) moved to the end
    model = broken_copy(tiny_model_dir, tmp_path / "m", edit)
    refused_everywhere(model, tiny_tsv, "[UNK] is token 28, tokenizer_config.json records it as token 1")


def test_pad_moved_is_refused(tiny_model_dir, tiny_tsv, tmp_path):
    def edit(d):
        without_fingerprint(d)
        edit_json(d / "tokenizer_config.json", added_tokens_decoder={})
        shift_vocab(d, lambda v: ["extra"] + v[:-1])
    model = broken_copy(tiny_model_dir, tmp_path / "m", edit)
    refused_everywhere(model, tiny_tsv, "[PAD] is token 1 in vocab.txt, the config says 0")


@pytest.mark.parametrize("value", [123, "abc", None])
def test_a_malformed_fingerprint_is_an_error(tiny_model_dir, tiny_tsv, tmp_path, value):
    model = broken_copy(tiny_model_dir, tmp_path / "m", lambda d: edit_json(d / "config.json", **{"dact.vocab_sha256": value}))
    if value is None:  # null: as no fingerprint, an older checkpoint
        assert_clean(invoke("classify", "good film", "--model", model))
    else:
        refused_everywhere(model, tiny_tsv, "config.json: the 'dact' section's vocab_sha256 must be a sha256 in hex")


@pytest.mark.parametrize("key", ["x", "\u00b2"])  # a letter; a character that is a digit but no id
def test_malformed_special_ids_are_an_error(tiny_model_dir, tiny_tsv, tmp_path, key):
    model = broken_copy(tiny_model_dir, tmp_path / "m",
                        lambda d: edit_json(d / "tokenizer_config.json", added_tokens_decoder={key: {"content": "[PAD]"}}))
    refused_everywhere(model, tiny_tsv, f"tokenizer_config.json: added_tokens_decoder[{key!r}] is not an id with a token")


def test_the_shipped_model_predates_fingerprints_and_loads():
    """weights/ records no fingerprint and no special ids: only its [PAD] id is checked (documented)."""
    weights = shipped_weights()
    assert "vocab_sha256" not in json.loads((weights / "config.json").read_text())["dact"]
    assert "added_tokens_decoder" not in json.loads((weights / "tokenizer_config.json").read_text())
    assert tinydact.load()("a gripping, beautiful film")[0]["label"] == "positive"


# ----------------------------------------------------------------------------------------
# floating-point weights only
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key, dtype", [("encoder.layer.0.attention.self.query.weight", torch.int8),
                                        ("dact_heads.0.halt.weight", torch.int32),
                                        ("embeddings.LayerNorm.bias", torch.bool)])
def test_integer_weights_are_refused(tiny_model_dir, tiny_tsv, tmp_path, key, dtype):
    def quantize(tensors):
        assert key in tensors
        tensors[key] = (tensors[key] * 20).round().to(dtype)
    model = broken_copy(tiny_model_dir, tmp_path / "m", lambda d: edit_tensors(d, quantize))
    refused_everywhere(model, tiny_tsv, f"key {key!r} holds {str(dtype).removeprefix('torch.')} values", "floating-point")


def test_half_precision_weights_still_load(tiny_model_dir, tiny_tsv, tmp_path):
    model = broken_copy(tiny_model_dir, tmp_path / "m",
                        lambda d: edit_tensors(d, lambda t: t.update({k: v.to(torch.bfloat16) for k, v in t.items()})))
    assert_clean(invoke("eval", "--model", model, "--data", tiny_tsv))


# ----------------------------------------------------------------------------------------
# label names and their order
# ----------------------------------------------------------------------------------------


def test_swapped_labels_of_a_known_task_are_refused(tiny_model_dir, tiny_tsv, tmp_path):
    """SST-2's files say 0/1; only the order of names says 0 is negative."""
    model = broken_copy(tiny_model_dir, tmp_path / "m", lambda d: edit_json(d / "config.json", **{"dact.labels": ["positive", "negative"]}))
    refused_everywhere(model, tiny_tsv, "task sst2's labels are ['negative', 'positive']", "says ['positive', 'negative']")


def test_eval_refuses_data_of_another_task(tiny_model_dir, tmp_path):
    """CoLA's 0/1 are unacceptable/acceptable: an SST-2 model's accuracy on them means nothing."""
    cola = tmp_path / "cola.tsv"
    cola.write_text("src\t1\t\tgood film\nsrc\t0\t\tfilm good the\n")
    assert_error(invoke("eval", "--model", tiny_model_dir, "--data", cola, "--task", "cola"),
                 "holds cola labels ['unacceptable', 'acceptable'], the model answers ['negative', 'positive']")


def test_plain_files_are_labelled_by_name(tiny_model_dir, tmp_path):
    """A task whose files name their labels (text<TAB>name: TREC, AG News): the order of the
    names cannot be checked, but eval maps by name, so swapped names show in its accuracy, as
    in classify's answers."""
    edit_json(tiny_model_dir / "config.json", **{"dact.task": "plain"})
    texts = ["good film", "bad film", "a great movie", "the plot was dull", "awful acting"]
    out, _ = assert_clean(invoke("classify", *texts, "--model", tiny_model_dir, "--json"))
    answers = [json.loads(line)["label"] for line in out.splitlines()]
    data = tmp_path / "named.tsv"
    data.write_text("".join(f"{t}\t{a}\n" for t, a in zip(texts, answers)))
    r = json.loads(assert_clean(invoke("eval", "--model", tiny_model_dir, "--data", data, "--json"))[0])
    assert r["accuracy"] == 1.0
    edit_json(tiny_model_dir / "config.json", **{"dact.labels": ["positive", "negative"]})  # loads: cannot be checked
    out, _ = assert_clean(invoke("classify", *texts, "--model", tiny_model_dir, "--json"))
    assert [json.loads(line)["label"] for line in out.splitlines()] == [{"negative": "positive", "positive": "negative"}[a] for a in answers]
    r = json.loads(assert_clean(invoke("eval", "--model", tiny_model_dir, "--data", data, "--json"))[0])
    assert r["accuracy"] == 0.0  # eval says so: no flipped answers behind a good accuracy


def test_training_from_a_shifted_vocab_is_refused(tiny_model_dir, tiny_tsv, tmp_path):
    """Else the new checkpoint would record the shifted file's fingerprint as its own."""
    model = broken_copy(tiny_model_dir, tmp_path / "m", lambda d: shift_vocab(d, lambda v: v[:10] + v[11:] + ["extra"]))
    assert_error(invoke("train", "--model", model, "--train", tiny_tsv, "--out", tmp_path / "run", "--phase", "2",
                        "--batch-size", 4, "--max-length", 16, "--epochs", 1), "is not the vocabulary this model was saved with")
    assert not (tmp_path / "run" / "final").exists()
