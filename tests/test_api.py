"""The library call's contract beyond the answers: inputs of the wrong type are a TypeError
in the library's own words, a bare tuple is refused as ambiguous (a pair lives inside a
list), and one Classifier shared by several threads answers each call as it would alone."""

import random
import threading

import pytest

import tinydact
from conftest import TINY_WORDS
from tinydact.errors import TinydactError


@pytest.fixture(scope="module")
def clf(early_model_dir):
    return tinydact.load(early_model_dir)


@pytest.mark.parametrize("path", [123, 1.5, b"weights", ["weights"]])
def test_load_refuses_a_path_of_another_type(path):
    with pytest.raises(TypeError, match=f"path must be a model folder or a model's name .*, got {type(path).__name__}"):
        tinydact.load(path)


@pytest.mark.parametrize("inputs, got", [(None, "got NoneType"), (5, "got int"), (b"a film", "got bytes"),
                                         ({"a": "b"}, "got dict"), ([None], "input 1 .* got NoneType"),
                                         (["good", 3], "input 2 .* got int"), ([("good",)], r"got \(str\)"),
                                         ([("good", "film", "plot")], r"got \(str, str, str\)"),
                                         ([("good", None)], r"got \(str, NoneType\)"), ([["good", "film"]], "got list")])
def test_inputs_of_the_wrong_type_are_a_type_error(clf, inputs, got):
    with pytest.raises(TypeError, match=got):
        clf(inputs)


def test_a_pair_is_a_tuple_inside_a_list_and_a_bare_tuple_is_ambiguous(clf):
    (pair,) = clf([("good film", "the plot was dull")])
    assert (pair["text"], pair["pair"]) == ("good film", "the plot was dull")
    two = clf(["good film", "the plot was dull"])
    assert [r["text"] for r in two] == ["good film", "the plot was dull"] and "pair" not in two[0]
    with pytest.raises(TypeError, match=r"bare tuple of 2 is ambiguous: pass a list of texts, \['a', 'b'\], or a list"):
        clf(("good film", "the plot was dull"))
    assert clf("good film") == clf(["good film"]) == clf(iter(["good film"]))  # a text alone, any iterable
    with pytest.raises(TinydactError, match="text 1 is empty"):  # a value error, not a type error: stays ours
        clf([" "])


def random_inputs(rng, n):
    """Texts and pairs of 1 to 120 words: some beyond the model's 64 tokens, so truncation counts."""
    def text():
        return " ".join(rng.choices(TINY_WORDS, k=rng.choice([1, 3, 10, 40, 120])))
    return [(text(), text()) if rng.random() < 0.3 else text() for _ in range(n)]


def in_threads(calls, f, threads=8):
    """[f(*call) for call in calls], the calls shared out among `threads` threads at once."""
    results, errors = [None] * len(calls), []

    def worker(k):
        try:
            for i in range(k, len(calls), threads):
                results[i] = f(*calls[i])
        except Exception as e:
            errors.append(e)

    running = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in running:
        t.start()
    for t in running:
        t.join()
    assert not errors, errors[0]
    return results


def test_one_classifier_shared_by_threads_answers_as_alone(clf):
    rng = random.Random(0)
    calls = [(random_inputs(rng, rng.randint(1, 12)), rng.choice([1, 3, 32]), rng.choice(["paper", "tight"]), rng.random() < 0.8)
             for _ in range(160)]
    alone = [clf(inputs, batch_size=b, rule=rule, halt=halt) for inputs, b, rule, halt in calls]  # one thread
    assert any(r["truncated"] for rs in alone for r in rs) and len({r["blocks"] for rs in alone for r in rs}) > 1
    shared = in_threads(calls, lambda inputs, b, rule, halt: clf(inputs, batch_size=b, rule=rule, halt=halt))
    differ = [i for i in range(len(calls)) if shared[i] != alone[i]]  # labels, probs bit for bit, blocks
    assert not differ, f"{len(differ)} of {len(calls)} calls answered differently in threads"


def test_one_tokenizer_shared_by_threads_truncates_each_call_as_asked(clf):
    tok, rng = clf.tokenizer, random.Random(1)
    calls = [([x if isinstance(x, str) else x[0] for x in random_inputs(rng, 4)], rng.choice([None, 5, 16, 64])) for _ in range(200)]
    alone = [tok(texts, max_length=m) for texts, m in calls]
    shared = in_threads(calls, lambda texts, m: tok(texts, max_length=m))
    assert all(x[0].shape == y[0].shape and all((a == b).all() for a, b in zip(x, y)) for x, y in zip(shared, alone))
