"""The library call: classify texts with a DACT-BERT, from Python.

    >>> import tinydact
    >>> clf = tinydact.load()                        # the model shipped in weights/
    >>> clf(["a gripping, beautiful film"])
    [{'text': 'a gripping, beautiful film', 'label': 'positive', 'confidence': 0.99...,
      'probs': {'negative': 0.00..., 'positive': 0.99...}, 'blocks': 1, 'num_blocks': 6,
      'truncated': False}]

Inputs: a text, or a list of texts and pairs, a pair being a tuple `(text_a, text_b)` inside
the list: `clf("a film")`, `clf(["a film", "a book"])` (two texts), `clf([("a film",
"it was good")])` (one pair). A bare tuple, `clf(("a film", "a book"))`, could mean either
and is a TypeError, as are inputs of other types; an empty text is a TinydactError. A
`Classifier` may be called from several threads at once (a service): each call gives what it
would alone.

One result per input, in input order: `label`, `confidence` (its probability in a_n at the
exit), `probs` (label -> probability), `blocks` (blocks run), `num_blocks` (N), `truncated`
(the text had more tokens than the model takes), and `pair` for a pair. With
`explain=True`, `steps` holds one dict per block run (`DACTBert.predict`'s trace: y_n, h_n,
p_n, a_n and both sides of the halting test). `tinydact classify` prints these results.
"""

import os

import torch

from .checkpoint import backbone_dtype, checked_tokenizer, load_checkpoint
from .data import FORMATS, readable
from .errors import TinydactError
from .home import model_dir, shipped_model
from .options import check_rule
from .tokenizer import Tokenizer


class Classifier:
    """A loaded DACT-BERT with its tokenizer and labels; call it on texts."""

    def __init__(self, model, tokenizer: Tokenizer, labels: list, task: str | None, device: torch.device, dtype: str = "float32"):
        self.model, self.tokenizer, self.labels, self.task, self.device, self.dtype = model, tokenizer, labels, task, device, dtype
        self.num_blocks = model.num_blocks
        self.max_length = min(tokenizer.max_length, model.bert.config.max_position_embeddings)
        # True / False for a task of known format (pairs or single sentences), None otherwise
        self.pair_task = FORMATS[task].text_b is not None if task in FORMATS else None

    def input_warning(self, inputs) -> str | None:
        """A warning when the inputs are pairs and the model was trained on single sentences,
        or the other way round (None when they fit, or the task's format is unknown)."""
        pairs = [isinstance(x, tuple) for x in inputs]
        if self.pair_task is False and any(pairs):
            return f"this model was trained on single sentences (task {self.task}); the second sentence is read as BERT's segment B anyway"
        if self.pair_task and not all(pairs):
            return f"this model was trained on sentence pairs (task {self.task}); give the second sentence with --pair or after a TAB"
        return None

    def __call__(self, inputs, halt: bool = True, rule: str = "paper", explain: bool = False, batch_size: int = 32) -> list:
        """Classify `inputs`: a text, or a list of texts and (text_a, text_b) pairs."""
        items = as_list(inputs)
        items = [check_input(x, i) for i, x in enumerate(items, start=1)]
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise TinydactError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        check_rule(rule)
        results = []
        for batch in runs_of_one_kind(items, batch_size):
            results += self._batch(batch, halt, rule, explain)
        return results

    def _batch(self, batch, halt, rule, explain) -> list:
        enc, truncated = self.encode(batch)
        trace = [] if explain else None
        pred, probs, blocks = self.model.predict(*(t.to(self.device) for t in enc), halt=halt, rule=rule, trace=trace)
        results = [self.result(x, probs[j], int(blocks[j]), truncated[j]) for j, x in enumerate(batch)]
        for r, steps in zip(results, trace or ()):
            r["steps"] = steps
        return results

    def encode(self, batch):
        """The tokens of a batch of checked inputs (`check_input`), all texts or all pairs:
        (`Encoded` padded to the longest, whether each input was truncated)."""
        a = [x[0] for x in batch]
        b = [x[1] for x in batch] if batch[0][1] is not None else None
        tokens = self.tokenizer.num_tokens(a, b)
        return self.tokenizer(a, b, max_length=self.max_length), [n > self.max_length for n in tokens]

    def result(self, x, probs, blocks: int, truncated: bool) -> dict:
        """The answer for input x = (text_a, text_b or None) whose a_n at the exit is `probs` (K,)."""
        if not torch.isfinite(probs).all():
            raise TinydactError("the model's answer is not a finite number (NaN or infinity) for an input of this batch")
        k = int(probs.argmax())
        return {"text": x[0], **({"pair": x[1]} if x[1] is not None else {}), "label": self.labels[k],
                "confidence": probs[k].item(), "probs": dict(zip(self.labels, probs.tolist())),
                "blocks": blocks, "num_blocks": self.num_blocks, "truncated": truncated}


def as_list(inputs) -> list:
    """The inputs of a call as a list: a text alone, or the texts and pairs of an iterable. A
    bare tuple is refused: ("a", "b") may mean one pair or two texts."""
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, tuple):
        raise TypeError(f"a bare tuple of {len(inputs)} is ambiguous: pass a list of texts, ['a', 'b'], or a list "
                        "of (text_a, text_b) pairs, [('a', 'b')]")
    if isinstance(inputs, (bytes, bytearray, dict)) or not hasattr(inputs, "__iter__"):
        raise TypeError(f"expected a text or a list of texts and (text_a, text_b) pairs, got {type(inputs).__name__}")
    return list(inputs)


def check_input(x, i: int):
    """(text_a, text_b or None) from a text or a pair, stripped; an empty text is an error."""
    if not (isinstance(x, str) or isinstance(x, tuple) and len(x) == 2 and all(isinstance(t, str) for t in x)):
        got = f"({', '.join(type(t).__name__ for t in x)})" if isinstance(x, tuple) else type(x).__name__
        raise TypeError(f"input {i} is neither a text nor a (text_a, text_b) pair of texts: got {got}")
    pair = x if isinstance(x, tuple) else (x, None)
    for t in pair:
        if t is not None and any(0xD800 <= ord(c) <= 0xDFFF for c in t):  # undecodable bytes in argv arrive as these
            raise TinydactError(f"text {i} is not valid UTF-8 text")
    if any(t is not None and not readable(t) for t in pair):
        raise TinydactError(f"text {i} is empty (nothing to read)" if pair[1] is None else f"text {i} has an empty sentence")
    return tuple(None if t is None else t.strip() for t in pair)


def runs_of_one_kind(items, size: int):
    """Consecutive runs of at most `size` inputs, each all pairs or all single texts (the
    tokenizer encodes a batch one way or the other), so results come out in input order."""
    batch = []
    for x in items:
        if batch and (len(batch) == size or (batch[-1][1] is None) != (x[1] is None)):
            yield batch
            batch = []
        batch.append(x)
    if batch:
        yield batch


def resolve_device(name) -> torch.device:
    """`auto` -> CUDA when available, else CPU. An explicit `cuda` without CUDA is an error."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TinydactError(f"unknown device {name!r}: expected cpu, cuda or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise TinydactError(f"--device {name}: CUDA is not available here (torch {torch.__version__}, {build})")
    return device


def load(path=None, device="cpu", dtype="float32") -> Classifier:
    """A `Classifier` for the DACT-BERT checkpoint at `path` (a directory or a downloaded
    model's name; None: the model shipped in weights/), on `device` ("cpu", "cuda", "auto").
    `dtype` is the backbone's: "float32", "bfloat16" (or "float16" on CUDA); the DACT modules,
    the recursion and the halting test stay in float32, so the exit is as exact as in float32
    relative to the model that is run."""
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"tinydact.load: path must be a model folder or a model's name (a str or a Path), "
                        f"got {type(path).__name__}")
    path = shipped_model() if path is None else model_dir(path)
    missing = [f for f in ("config.json", "model.safetensors", "vocab.txt") if not (path / f).is_file()]
    if missing:
        raise TinydactError(f"{path} is not a complete tinydact checkpoint: it has no {', '.join(missing)}")
    try:
        model, meta = load_checkpoint(path)
        tokenizer = checked_tokenizer(path, model, meta.get("vocab_sha256"))
    except (TypeError, ValueError, KeyError, RuntimeError) as e:  # e.g. a config value of the wrong type
        raise TinydactError(f"{path}: cannot load the checkpoint ({type(e).__name__}: {e})".replace("\n", " ")) from None
    device = resolve_device(device)
    model.bert.to(device, backbone_dtype(dtype, device))
    return Classifier(model.to(device), tokenizer, meta["labels"], meta.get("task"), device, dtype)
