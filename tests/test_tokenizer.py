"""tinydact's tokenizer gives the ids `transformers` gives (its Rust-backed BertTokenizerFast and
its pure-Python BertTokenizer) from the same vocab.txt, on strings that trip tokenizers up.

The real vocabularies: the shipped model's (weights/vocab.txt and tokenizer_config.json, in
every clone) and MiniLM's original files (../shared, beside the dev checkout only)."""

import json
import shutil

import pytest
import torch
import transformers
from conftest import MINILM, needs_minilm, shipped_weights

from tinydact.errors import TinydactError
from tinydact.tokenizer import Tokenizer

TRICKY = [
    "Hello, world!",
    "café naïve Ångström façade Élan",  # accents: stripped by an uncased model
    "don't stop-believing... (really?!) $5.00 #1 @user e-mail: a.b@c.org",
    "東京は日本の首都です。中文测试 한국어",  # CJK characters become words of their own
    "emoji 🙂🚀 and unknownwordzzqx",  # no vocabulary piece: [UNK]
    "a" * 150 + " " + "supercalifragilisticexpialidocious",  # over 100 characters: one [UNK]
    "  leading\tand\ntrailing   ",
    "a\u00a0b\u2003c\u3000d",  # no-break, em and ideographic spaces
    "   ",  # whitespace only: nothing between [CLS] and [SEP]
    "",
    "zero\u200bwidth con\x00trol\ufffdchars",
    "MiXeD CaSe ÉCOLE [MASK] typed [SEP] specials",
]
SECONDS = ["the second one", "", "Ångström " * 20, "x", "短い", "?!", "  ", "b", "c", "d", "e", "f"]


def transformers_tokenizers(vocab_dir, **options):
    """transformers' fast (Rust) and slow (Python) BERT tokenizers on the same vocab.txt."""
    fast = transformers.BertTokenizerFast.from_pretrained(str(vocab_dir))  # reads tokenizer_config.json
    try:  # transformers >= 5 keeps the pure-Python one under this name
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as Slow
    except ImportError:
        Slow = transformers.BertTokenizer
    slow = Slow(str(vocab_dir / "vocab.txt"), **options)
    return {"fast": fast, "slow": slow}


def assert_same(ours, theirs, texts, pairs=None, max_length=None):
    encoded = ours(texts, pairs, max_length)
    for name, tok in theirs.items():
        if name == "slow" and pairs is not None and max_length is not None:
            # Truncating a pair, the two transformers tokenizers break ties differently: with an
            # odd number of tokens left for two equally long sentences, the Rust one (and we)
            # keep the extra token in the second sentence, the Python one in the first.
            continue
        ref = tok(texts, pairs, padding=True, truncation=max_length is not None, max_length=max_length,
                  return_token_type_ids=True, return_attention_mask=True)
        for field in encoded._fields:
            assert getattr(encoded, field).tolist() == ref[field], (name, field)


# ---------------------------------------------------------------------------------------------
# The real vocabularies (uncased): the shipped model's, and MiniLM's original files
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["weights", pytest.param("minilm", marks=needs_minilm)])
def real(request, tmp_path_factory):
    """(ours, transformers' fast and slow tokenizers) on the same vocab.txt and
    tokenizer_config.json (copied alone: no tokenizer.json for transformers to take instead)."""
    source = shipped_weights() if request.param == "weights" else MINILM
    vocab_dir = tmp_path_factory.mktemp(f"{request.param}_vocab")
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(source / name, vocab_dir)
    return Tokenizer.from_pretrained(source), transformers_tokenizers(vocab_dir)


def test_real_settings_come_from_its_files(real):
    ours, _ = real
    assert (ours.vocab_size, ours.max_length, ours.lowercase) == (30522, 512, True)


@pytest.mark.parametrize("text", TRICKY)
def test_real_ids_match_transformers_on_tricky_strings(real, text):
    assert_same(*real, [text])


def test_real_batch_of_pairs_matches_transformers(real):
    assert_same(*real, TRICKY, SECONDS)


@pytest.mark.parametrize("max_length", [3, 5, 8, 16])
def test_real_truncation_of_singles_and_pairs_matches_transformers(real, max_length):
    assert_same(*real, TRICKY, None, max_length)
    if max_length > 3:  # a pair needs [CLS], 2 x [SEP] and at least one token
        assert_same(*real, TRICKY, SECONDS, max_length)


def test_real_num_tokens_counts_untruncated_tokens_with_specials(real):
    ours, theirs = real
    long = ["word " * 600, "short"]
    assert ours.num_tokens(long) == [602, 3]
    assert ours(long).input_ids.shape == (2, 512)  # the default max_length truncates
    assert ours.num_tokens(TRICKY, SECONDS) == [len(ids) for ids in theirs["fast"](TRICKY, SECONDS)["input_ids"]]


@needs_minilm
def test_minilm_output_feeds_the_model():
    from tinydact.bert import Bert

    ours = Tokenizer.from_pretrained(MINILM)
    model = Bert.from_pretrained(MINILM)
    with torch.inference_mode():
        hidden = model(*ours(["a sentence", "a much longer sentence than that"], ["and a pair", "b"]))
    assert hidden.shape == (2, 10, 384)  # [CLS] a much longer sentence than that [SEP] b [SEP]


# ---------------------------------------------------------------------------------------------
# A hand-made vocabulary: no shared files needed
# ---------------------------------------------------------------------------------------------

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "un", "##believ", "##able",
              "cafe", "café", "Café", "naive", ",", "!", ".", "東", "京",
              *"abcdefghijklmnopqrstuvwxyz", *("##" + c for c in "abcdefghijklmnopqrstuvwxyz")]  # fmt: skip


def tiny_dir(tmp_path, **config):
    path = tmp_path / "tiny"
    path.mkdir(parents=True)
    (path / "vocab.txt").write_text("".join(t + "\n" for t in TINY_VOCAB), encoding="utf-8")
    if config:
        (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


def test_tiny_vocab_wordpiece_by_hand(tmp_path):
    tok = Tokenizer.from_pretrained(tiny_dir(tmp_path))
    assert (tok.vocab_size, tok.max_length) == (len(TINY_VOCAB), 512)
    ids = tok(["The cat, unbelievable! CAFÉ"], ["sat zq"])
    pieces = [TINY_VOCAB[i] for i in ids.input_ids[0]]
    assert pieces == ["[CLS]", "the", "cat", ",", "un", "##believ", "##able", "!", "cafe", "[SEP]",
                      "sat", "z", "##q", "[SEP]"]  # fmt: skip
    assert ids.token_type_ids[0].tolist() == [0] * 10 + [1] * 4
    assert ids.input_ids.dtype == ids.attention_mask.dtype == ids.token_type_ids.dtype == torch.int64


@pytest.mark.parametrize(
    "config", [{}, {"do_lower_case": False}, {"do_lower_case": True, "strip_accents": False}], ids=str
)
def test_tiny_vocab_matches_transformers_cased_and_uncased(tmp_path, config):
    path = tiny_dir(tmp_path, **config)
    ours = Tokenizer.from_pretrained(path)
    theirs = transformers_tokenizers(path, **config)
    for text in TRICKY + ["Café café CAFÉ Naive"]:
        assert_same(ours, theirs, [text])
    assert_same(ours, theirs, TRICKY, SECONDS)
    assert_same(ours, theirs, TRICKY, SECONDS, max_length=7)


@pytest.mark.parametrize("a, b", [(10, 10), (10, 3), (3, 10), (9, 8), (1, 20)])
@pytest.mark.parametrize("max_length", [4, 9, 12])
def test_pair_truncation_takes_from_the_longer_sentence_as_transformers_fast_does(tmp_path_factory, a, b, max_length):
    path = tiny_dir(tmp_path_factory.mktemp("pair"))
    ours, theirs = Tokenizer.from_pretrained(path), transformers_tokenizers(path)
    assert_same(ours, theirs, ["the " * a], ["cat " * b], max_length)


def test_max_length_comes_from_the_config_capped_at_512(tmp_path):
    assert Tokenizer.from_pretrained(tiny_dir(tmp_path / "a", model_max_length=128)).max_length == 128
    assert Tokenizer.from_pretrained(tiny_dir(tmp_path / "b", model_max_length=int(1e30))).max_length == 512


def test_saved_tokenizer_reloads_identically_here_and_in_transformers(tmp_path):
    tok = Tokenizer.from_pretrained(tiny_dir(tmp_path, do_lower_case=False, model_max_length=64))
    tok.save(tmp_path / "saved")
    again = Tokenizer.from_pretrained(tmp_path / "saved")
    assert (again.vocab, again.lowercase, again.max_length) == (TINY_VOCAB, False, 64)
    for before, after in zip(tok(TRICKY, SECONDS), again(TRICKY, SECONDS)):
        assert torch.equal(before, after)
    assert_same(again, transformers_tokenizers(tmp_path / "saved", do_lower_case=False), TRICKY, SECONDS, 64)


def test_missing_directory_and_vocab_are_named(tmp_path):
    with pytest.raises(TinydactError, match="not found: .*nope"):
        Tokenizer.from_pretrained(tmp_path / "nope")
    with pytest.raises(TinydactError, match=f"no vocab.txt in {tmp_path}"):
        Tokenizer.from_pretrained(tmp_path)


def test_bad_config_and_vocab_without_specials_are_named(tmp_path):
    path = tiny_dir(tmp_path)
    (path / "tokenizer_config.json").write_text("{nope")
    with pytest.raises(TinydactError, match="tokenizer_config.json"):
        Tokenizer.from_pretrained(path)
    (path / "tokenizer_config.json").unlink()
    (path / "vocab.txt").write_text("[PAD]\n[CLS]\n[SEP]\nthe\n")
    with pytest.raises(TinydactError, match=r"vocab.txt lacks the special token \[UNK\]"):
        Tokenizer.from_pretrained(path)


def test_mismatched_pairs_and_too_small_max_length_are_errors(tmp_path):
    tok = Tokenizer.from_pretrained(tiny_dir(tmp_path))
    with pytest.raises(TinydactError, match="2 texts but 1"):
        tok(["a", "b"], ["c"])
    with pytest.raises(TinydactError, match="max_length 3"):
        tok(["a"], ["b"], max_length=3)
