"""GLUE-style TSV readers and length-bucketed batches.

A task's file format is a row of `FORMATS`: whether the file has a header, which column holds
the first text, the second text (pair tasks) and the label, how labels are written in the
file, and the names shown to users. `read_examples(path)` picks the format from `--task`, else
from the file's folder name (`SST-2/dev.tsv` -> sst2), else from its header, else `plain`
(`sentence<TAB>label`, no header). A row that does not fit is an error naming file and line.
"""

import random
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import TinydactError


@dataclass(frozen=True)
class Format:
    header: bool  # does the first line name the columns?
    text_a: object  # column name (with a header) or 0-based index (without)
    text_b: object  # None for single-sentence tasks
    label: object
    raw_labels: tuple  # labels as written in the file; index = class id (None: sorted values seen)
    names: tuple  # what users see, same order
    width: int | None = None  # columns per row without a header (with one: the header's count)


FORMATS = {
    "sst2": Format(True, "sentence", None, "label", ("0", "1"), ("negative", "positive")),
    "cola": Format(False, 3, None, 1, ("0", "1"), ("unacceptable", "acceptable"), width=4),
    "rte": Format(True, "sentence1", "sentence2", "label", ("entailment", "not_entailment"), ("entailment", "not_entailment")),
    "qnli": Format(True, "question", "sentence", "label", ("entailment", "not_entailment"), ("entailment", "not_entailment")),
    "mrpc": Format(True, "#1 String", "#2 String", "Quality", ("0", "1"), ("not_equivalent", "equivalent")),
    "qqp": Format(True, "question1", "question2", "is_duplicate", ("0", "1"), ("not_duplicate", "duplicate")),
    "mnli": Format(True, "sentence1", "sentence2", "gold_label", ("contradiction", "entailment", "neutral"), ("contradiction", "entailment", "neutral")),
    "plain": Format(False, 0, None, 1, None, None, width=2),  # text<TAB>label: a TAB inside a text is an error
}


def split_lines(text: str) -> list:
    """Lines split at \n (a \r before it dropped) only: unlike str.splitlines, a form feed,
    U+2028 or U+001C inside a line does not cut one text into several."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def readable(text: str) -> bool:
    """Whether a text has something to read: a letter, digit, symbol or punctuation mark, not
    only spaces, control or zero-width characters, or U+FFFD (the replacement character that
    undecodable bytes become), all of which the tokenizer drops."""
    return any(unicodedata.category(c)[0] in "LNSP" and c != "\ufffd" for c in text)


@dataclass
class Example:
    text_a: str
    text_b: str | None
    label: int


def detect_task(path: Path, first_line: str) -> str:
    folder = path.parent.name.lower().replace("-", "")
    if folder in FORMATS:
        return folder
    columns = first_line.rstrip("\n").split("\t")
    matches = [task for task, fmt in FORMATS.items()
               if fmt.header and all(c in columns for c in (fmt.text_a, fmt.text_b or fmt.text_a, fmt.label))]
    matches.sort(key=lambda task: FORMATS[task].text_b is None)  # pair formats first: QNLI's header also fits SST-2's
    return matches[0] if matches else "plain"


def header_lines(task: str, first_line: str) -> int:
    """1 when a file of `task` starts with a header line (the GLUE formats, and a plain file
    that names its columns), else 0."""
    last = first_line.rstrip("\r\n").split("\t")[-1].strip().lower()
    return int(FORMATS[task].header or (task == "plain" and last == "label"))


def read_examples(path, task: str | None = None, label_names=None):
    """Read a labelled TSV. Returns (examples, task, label_names).

    `label_names` (from a trained model) fixes the class order for `plain` files, so a dev
    file whose labels are a subset of the training labels still maps to the same ids."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TinydactError(f"data file not found: {path}") from None
    except OSError as e:  # a directory, no permission, ...
        raise TinydactError(f"cannot read data file {path} ({e.strerror})") from None
    lines = split_lines(decode(data, str(path)))
    if not lines:
        raise TinydactError(f"{path}: the file is empty")
    task = task or detect_task(path, lines[0])
    if task not in FORMATS:
        raise TinydactError(f"unknown task {task!r}; known: {', '.join(FORMATS)}")
    fmt = FORMATS[task]

    def column(spec, header):
        if isinstance(spec, int):
            return spec
        if spec not in header:
            raise TinydactError(f"{path}:1: header has no column {spec!r} (task {task}; columns: {header})")
        return header.index(spec)

    start = header_lines(task, lines[0])  # a plain file may still name its columns
    header = lines[0].split("\t") if fmt.header else []
    ia, il = column(fmt.text_a, header), column(fmt.label, header)
    ib = None if fmt.text_b is None else column(fmt.text_b, header)

    rows = []
    for lineno, line in enumerate(lines[start:], start=start + 1):
        if not line.strip():
            continue
        cells = line.split("\t")
        width = len(header) if fmt.header else fmt.width
        if len(cells) != width:
            raise TinydactError(f"{path}:{lineno}: expected {width} tab-separated columns (task {task}), found {len(cells)}"
                                + (": a TAB inside the text?" if len(cells) > width else ""))
        a, b, raw = cells[ia].strip(), None if ib is None else cells[ib].strip(), cells[il].strip()
        if not readable(a) or (ib is not None and not readable(b)):
            raise TinydactError(f"{path}:{lineno}: empty text (nothing to read)")
        rows.append((lineno, a, b, raw))
    if not rows:
        raise TinydactError(f"{path}: no examples")

    raw_labels = fmt.raw_labels or tuple(label_names or sorted({r[3] for r in rows}))
    names = fmt.names or raw_labels
    examples = []
    for lineno, a, b, raw in rows:
        if raw in raw_labels:
            label = raw_labels.index(raw)
        elif fmt.raw_labels and raw.isdigit() and int(raw) < len(raw_labels):  # e.g. RTE written with 0/1 ids
            label = int(raw)
        else:
            raise TinydactError(f"{path}:{lineno}: label {raw!r} is not one of {list(raw_labels)}")
        examples.append(Example(a, b, label))
    return examples, task, list(names)


def decode(data: bytes, source: str) -> str:
    """UTF-8 bytes as text, or an error naming the line with the first undecodable byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise TinydactError(f"line {line} of {source} is not UTF-8 text (byte {data[e.start]:#04x})") from None


def text_lines(data: bytes, source: str) -> list:
    """Texts to classify, one per line of `data` (read from `source`, for messages): a line
    with a TAB is a pair (text_a, text_b); blank lines are skipped."""
    inputs = []
    for lineno, line in enumerate(split_lines(decode(data, source)), start=1):
        if not line.strip():
            continue
        a, tab, b = line.partition("\t")
        if "\t" in b:
            raise TinydactError(f"line {lineno} of {source} has more than one TAB (expected TEXT<TAB>PAIR)")
        if not readable(a) or (tab and not readable(b)):
            raise TinydactError(f"line {lineno} of {source} has " + ("an empty sentence around its TAB" if tab else "nothing to read"))
        inputs.append((a, b) if tab else a)
    if not inputs:
        raise TinydactError(f"no text on {source} (one text per line)")
    return inputs


def command_line_inputs(texts, pair, read_stdin) -> list:
    """Texts or (text_a, text_b) pairs from the TEXT arguments and --pair of `tinydact
    classify`, or from standard input (`read_stdin()`, bytes) for `-`: one text per line, a
    TAB between the two sentences of a pair."""
    if list(texts) == ["-"]:
        if pair is not None:
            raise TinydactError("--pair goes with one TEXT argument; on standard input, a TAB separates the two sentences")
        return text_lines(read_stdin(), "standard input")
    if not texts:
        raise TinydactError("no text given: pass TEXT..., or - to read one text per line from standard input")
    if "-" in texts:
        raise TinydactError("'-' (read standard input) must be the only TEXT")
    if pair is not None and len(texts) != 1:
        raise TinydactError(f"--pair goes with exactly one TEXT, got {len(texts)}")
    if pair is not None and not pair.strip():
        raise TinydactError("--pair is empty")
    return [(texts[0], pair)] if pair is not None else list(texts)



def example_lengths(examples, tokenizer, max_length: int):
    """Token counts after truncation, used to bucket examples of similar length."""
    texts = [e.text_a for e in examples]
    pairs = [e.text_b for e in examples] if examples[0].text_b is not None else None
    return [min(n, max_length) for n in tokenizer.num_tokens(texts, pairs)]


def batch_plan(lengths, batch_size: int, shuffle: bool = False, seed: int = 0):
    """Lists of example indices, one per batch, bucketed by length.

    Examples are sorted by length inside windows of 50 batches, then cut into batches; when
    shuffling, the examples and then the batch order are shuffled (deterministically from
    `seed`), so each batch holds similar lengths and little compute goes to padding."""
    order = list(range(len(lengths)))
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(order)
    window = batch_size * 50
    plan = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: lengths[i])
        plan += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    if shuffle:
        rng.shuffle(plan)
    return plan


def encode_batch(examples, idx, tokenizer, max_length: int):
    """(encoded, labels, indices) for the examples at `idx`, padded to their own longest."""
    texts = [examples[i].text_a for i in idx]
    pairs = None if examples[idx[0]].text_b is None else [examples[i].text_b for i in idx]
    labels = torch.tensor([examples[i].label for i in idx])
    return tokenizer(texts, pairs, max_length=max_length), labels, torch.tensor(idx)
