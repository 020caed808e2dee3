"""Shared fixtures: the optional ../shared folder beside the dev checkout (TINYDACT_HOME points
there, so library, tutorials and benchmarks find its models and data), and a tiny random DACT-BERT checkpoint
built by hand (a 40-token vocabulary, 4 blocks of width 32), so that model, CLI and training
tests run in a user's clone without any download."""

import os
from pathlib import Path

import pytest
import torch

# One thread per process, for this process and the ones the tests start (CLI, tutorials,
# torchrun): on a 2-core machine, several processes each spinning 2 OpenMP threads slow each
# other down many times over, and single-threaded runs are the same from one machine to
# another.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MINILM = SHARED / "models" / "all-MiniLM-L6-v2"
GLUE = SHARED / "data" / "glue"
if SHARED.is_dir():
    os.environ.setdefault("TINYDACT_HOME", str(SHARED))

TINY_WORDS = ["good", "great", "fun", "bad", "awful", "dull", "film", "movie", "a", "the", "is", "was",
              "not", "very", "plot", "acting", "##s", "##ly", ".", ",", "it", "and", "but", "story"]
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + TINY_WORDS


def needs_minilm():
    if not (MINILM / "model.safetensors").is_file():
        pytest.skip("../shared/models/all-MiniLM-L6-v2 is not here (it only exists beside the dev checkout)")
    return MINILM


@pytest.fixture
def minilm_dir():
    return needs_minilm()


def tiny_config(layers=4):
    from tinydact.bert import BertConfig

    return BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)


def make_tiny_checkpoint(path, seed=0, layers=4, halt_bias=None, labels=("negative", "positive")):
    """Save a random tiny DACT-BERT (with its vocabulary) to `path`; returns the model."""
    from tinydact.bert import Bert
    from tinydact.checkpoint import save_checkpoint
    from tinydact.model import DACTBert
    from tinydact.tokenizer import Tokenizer

    torch.manual_seed(seed)
    kw = {} if halt_bias is None else {"halt_bias": halt_bias}
    model = DACTBert(Bert(tiny_config(layers)), len(labels), **kw).eval()
    save_checkpoint(model, Tokenizer(TINY_VOCAB, max_length=64), path, list(labels), "sst2")
    return model


@pytest.fixture
def tiny_model_dir(tmp_path):
    path = tmp_path / "tiny-dact"
    make_tiny_checkpoint(path)
    return path


TINY_TSV = """sentence\tlabel
good film \t1
a great movie \t1
the acting was very good \t1
fun , fun and fun \t1
great story \t1
it is good but dull \t0
bad film \t0
an awful movie \t0
the plot was dull \t0
not good . \t0
awful acting and a bad story \t0
the film is not fun \t0
"""


@pytest.fixture
def tiny_tsv(tmp_path):
    path = tmp_path / "tiny.tsv"
    path.write_text(TINY_TSV)
    return path


VECTORS = Path(__file__).parent / "vectors"


def load_vector_script(name: str):
    """tests/vectors/<name>.py as a module (the scripts that write the port vectors)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, VECTORS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def same_content(x, y, rel: float, abs: float, path: str = "") -> None:
    """Equal structure, strings and ints; floats equal to `rel` (or `abs` near zero)."""
    assert type(x) is type(y), path
    if isinstance(x, dict):
        assert list(x) == list(y), path
        for k in x:
            same_content(x[k], y[k], rel, abs, f"{path}.{k}")
    elif isinstance(x, list):
        assert len(x) == len(y), path
        for i, (u, v) in enumerate(zip(x, y)):
            same_content(u, v, rel, abs, f"{path}[{i}]")
    elif isinstance(x, float):
        assert x == pytest.approx(y, rel=rel, abs=abs), path
    else:
        assert x == y, path
