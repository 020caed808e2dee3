"""GLUE-style readers: every format reads, bad rows are named by file and line, batches are
length-bucketed and cover every example exactly once."""

import pytest
from conftest import GLUE, TINY_VOCAB

from tinydact.data import batch_plan, encode_batch, example_lengths, read_examples
from tinydact.errors import TinydactError
from tinydact.tokenizer import Tokenizer


def write(tmp_path, name, text):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_sst2_format_with_header(tmp_path):
    ex, task, names = read_examples(write(tmp_path, "SST-2/dev.tsv", "sentence\tlabel\ngood film \t1\nbad \t0\n"))
    assert task == "sst2" and names == ["negative", "positive"]
    assert [(e.text_a, e.text_b, e.label) for e in ex] == [("good film", None, 1), ("bad", None, 0)]


def test_cola_format_without_header(tmp_path):
    ex, task, names = read_examples(write(tmp_path, "CoLA/dev.tsv", "gj04\t1\t\tThe dog barked.\ngj04\t0\t*\tDog the barked.\n"))
    assert task == "cola" and names == ["unacceptable", "acceptable"]
    assert [(e.text_a, e.label) for e in ex] == [("The dog barked.", 1), ("Dog the barked.", 0)]


def test_pair_formats(tmp_path):
    rte = "sentence1\tsentence2\tlabel\tidx\nA man sleeps.\tA person sleeps.\t0\t0\nIt rains.\tIt is dry.\tnot_entailment\t1\n"
    ex, task, _ = read_examples(write(tmp_path, "RTE/dev.tsv", rte))
    assert task == "rte" and [(e.text_a, e.text_b, e.label) for e in ex] == [
        ("A man sleeps.", "A person sleeps.", 0), ("It rains.", "It is dry.", 1)]
    mrpc = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said hi.\tHe greeted.\n"
    ex, task, _ = read_examples(write(tmp_path, "x/mrpc.tsv", mrpc))
    assert task == "mrpc" and ex[0].text_b == "He greeted." and ex[0].label == 1
    qnli = "index\tquestion\tsentence\tlabel\n0\tWho?\tHim.\tentailment\n"
    assert read_examples(write(tmp_path, "y/q.tsv", qnli))[1] == "qnli"
    mnli = "index\tpromptID\tsentence1\tsentence2\tgold_label\n0\t1\tA\tB\tneutral\n"
    ex, task, names = read_examples(write(tmp_path, "z/m.tsv", mnli))
    assert task == "mnli" and ex[0].label == names.index("neutral")


def test_plain_sentence_label_file(tmp_path):
    ex, task, names = read_examples(write(tmp_path, "mine.tsv", "I love it\tpos\nI hate it\tneg\nmeh\tneg\n"))
    assert task == "plain" and names == ["neg", "pos"] and [e.label for e in ex] == [1, 0, 0]
    # a model's label order wins over the order seen in the file
    ex, _, names = read_examples(write(tmp_path, "dev2.tsv", "great\tpos\n"), label_names=["neg", "pos"])
    assert names == ["neg", "pos"] and ex[0].label == 1


@pytest.mark.parametrize("text,message", [
    ("sentence\tlabel\ngood\t1\nno label here\n", r"bad\.tsv:3: expected 2 tab-separated columns \(task sst2\), found 1"),
    ("sentence\tlabel\ngood\t1\n \t0\n", r"bad\.tsv:3: empty text"),
    ("sentence\tlabel\ngood\t7\n", r"bad\.tsv:2: label '7' is not one of \['0', '1'\]"),
    ("", r"bad\.tsv: the file is empty"),
    ("sentence\tlabel\n", r"bad\.tsv: no examples"),
])
def test_malformed_rows_are_reported_with_file_and_line(tmp_path, text, message):
    with pytest.raises(TinydactError, match=message):
        read_examples(write(tmp_path, "bad.tsv", text), task="sst2")


def test_missing_file_and_unknown_task(tmp_path):
    with pytest.raises(TinydactError, match="data file not found"):
        read_examples(tmp_path / "nope.tsv")
    with pytest.raises(TinydactError, match="unknown task 'sts'"):
        read_examples(write(tmp_path, "a.tsv", "x\t1\n"), task="sts")
    with pytest.raises(TinydactError, match="header has no column 'sentence1'"):
        read_examples(write(tmp_path, "b.tsv", "s\tlabel\nx\t1\n"), task="rte")


def test_batches_cover_every_example_once_with_little_padding(tmp_path):
    tok = Tokenizer(TINY_VOCAB)
    lines = ["sentence\tlabel"] + [" ".join(["good"] * (1 + i % 17)) + f"\t{i % 2}" for i in range(300)]
    ex, _, _ = read_examples(write(tmp_path, "t.tsv", "\n".join(lines)), task="sst2")
    seen, padded, real = [], 0, 0
    for plan in batch_plan(example_lengths(ex, tok, 12), 16, shuffle=True, seed=1):
        enc, labels, idx = encode_batch(ex, plan, tok, 12)
        assert enc.input_ids.shape[1] <= 12
        assert labels.tolist() == [ex[i].label for i in idx.tolist()]
        seen += idx.tolist()
        padded, real = padded + enc.attention_mask.numel(), real + int(enc.attention_mask.sum())
    assert sorted(seen) == list(range(300))
    assert real / padded > 0.9  # bucketing: under 10% of the compute goes to padding
    assert batch_plan([1] * 300, 16, True, 5) == batch_plan([1] * 300, 16, True, 5)  # deterministic per seed
    assert batch_plan([1] * 300, 16, True, 5) != batch_plan([1] * 300, 16, True, 6)


@pytest.mark.parametrize("task,rows", [("SST-2", 872), ("RTE", 277), ("CoLA", 1043)])
def test_real_glue_dev_files_read(task, rows):
    path = GLUE / task / "dev.tsv"
    if not path.is_file():
        pytest.skip("../shared GLUE data is not here")
    ex, _, _ = read_examples(path)
    assert len(ex) == rows


def test_a_plain_file_may_name_its_columns(tmp_path):
    ex, task, names = read_examples(write(tmp_path, "subj/train.tsv", "text\tlabel\nan opinion\tsubj\na fact\tobj\n"))
    assert task == "plain" and [e.text_a for e in ex] == ["an opinion", "a fact"] and sorted(names) == ["obj", "subj"]
