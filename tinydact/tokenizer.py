"""BERT's WordPiece tokenizer, assembled from a checkpoint's `vocab.txt` with the `tokenizers`
library (the Rust implementation `transformers` also uses), so ids match the official ones.

The pipeline, as in the original BERT:
    normalize      clean control characters, split CJK characters apart, lower-case and strip
                   accents (per `tokenizer_config.json`; "café" -> "cafe" in an uncased model)
    pre-tokenize   split on whitespace and punctuation
    WordPiece      greedy longest-match into vocabulary pieces ("tokenizer" -> "token", "##izer");
                   a word with no match becomes [UNK]
    post-process   [CLS] A [SEP]            token types 0 ... 0
                   [CLS] A [SEP] B [SEP]    token types 0 ... 0 1 ... 1

MPNet's tokenizer is the same WordPiece pipeline with other special tokens, named in the
checkpoint's tokenizer_config.json / special_tokens_map.json (<s> </s> <pad> [UNK] <mask> in
all-mpnet-base-v2), and RoBERTa's pair format, all token types 0 (MPNet has none):
                   <s> A </s>   and   <s> A </s></s> B </s>
"""

import json
import threading
from pathlib import Path
from typing import NamedTuple

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from .errors import TinydactError

# The special tokens by role (the keys of tokenizer_config.json), BERT's by default
SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
REQUIRED = ("pad_token", "unk_token", "cls_token", "sep_token")  # vocab.txt must hold these
PAIR_SEP_TWICE = ("MPNetTokenizer", "MPNetTokenizerFast")  # tokenizer_class with <s> A </s></s> B </s>


class Encoded(NamedTuple):
    """A padded batch, in the order `Bert.forward` takes it: `model(*tok(texts))`."""

    input_ids: torch.Tensor  # (B, T) int64, T = the longest (truncated) input in the batch
    attention_mask: torch.Tensor  # (B, T) 1 for tokens, 0 for padding
    token_type_ids: torch.Tensor  # (B, T) 0 for the first sentence, 1 for the second


def check_special_ids(vocab: list, recorded, vocab_file: Path) -> None:
    """The special tokens' ids a tokenizer_config.json records (`added_tokens_decoder`: id ->
    {"content": token, ...}, as `transformers` writes it; none in older files) must be their
    lines in vocab.txt: a line added or removed above [CLS] moves it, and every id with it."""
    if not isinstance(recorded, dict):
        raise TinydactError(f"{vocab_file.parent / 'tokenizer_config.json'}: added_tokens_decoder must be an object of id -> token")
    for i, entry in recorded.items():
        token = entry.get("content") if isinstance(entry, dict) else None
        if not (str(i).isascii() and str(i).isdigit()) or not isinstance(token, str):  # "²" is a digit, not an id
            raise TinydactError(f"{vocab_file.parent / 'tokenizer_config.json'}: added_tokens_decoder[{i!r}] is not an id with a token")
        if int(i) >= len(vocab) or vocab[int(i)] != token:
            where = f"is token {vocab.index(token)}" if token in vocab else "is missing"
            raise TinydactError(f"{vocab_file}: {token} {where}, tokenizer_config.json records it as token {i} "
                                "(lines of vocab.txt added, removed or moved: every id after them changes)")


class Tokenizer:
    def __init__(self, vocab: list, lowercase=True, strip_accents=None, chinese_chars=True, max_length=512,
                 specials=None, mpnet=False):
        """`vocab`: the tokens in id order (the lines of vocab.txt), the special tokens among them.
        `strip_accents=None` follows `lowercase`, as in BERT: uncased models also drop accents.
        `specials`: role -> token where a model's differ from BERT's (`SPECIALS`); `mpnet`: MPNet's
        pair format (`<s> A </s></s> B </s>`, token types all 0)."""
        ids = {token: i for i, token in enumerate(vocab)}
        self.vocab, self.lowercase, self.strip_accents = list(vocab), lowercase, strip_accents
        self.chinese_chars, self.max_length = chinese_chars, max_length
        self.vocab_size = len(self.vocab)
        self.specials, self.mpnet = {**SPECIALS, **(specials or {})}, mpnet
        cls, sep, pad, unk = (self.specials[k] for k in ("cls_token", "sep_token", "pad_token", "unk_token"))

        tok = HFTokenizer(WordPiece(ids, unk_token=unk))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=chinese_chars, strip_accents=strip_accents, lowercase=lowercase
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0",
            pair=f"{cls}:0 $A:0 {sep}:0 {sep}:0 $B:0 {sep}:0" if mpnet else f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, ids[cls]), (sep, ids[sep])],
        )
        # [CLS] etc. typed in a text are the special tokens, not "[", "cls", "]" (as in `transformers`)
        tok.add_special_tokens([t for t in self.specials.values() if t in ids])
        tok.enable_padding(pad_id=ids[pad], pad_token=pad)  # to the longest in the batch
        self._tok, self._lock = tok, threading.Lock()

    @classmethod
    def from_pretrained(cls, path) -> "Tokenizer":
        """A model directory (or a downloaded model's name, see `home.model_dir`) with
        `vocab.txt` and, optionally, `tokenizer_config.json`."""
        from .home import model_dir

        path = model_dir(path)
        vocab_file, config_file = path / "vocab.txt", path / "tokenizer_config.json"
        if not vocab_file.is_file():
            raise TinydactError(f"no vocab.txt in {path}")
        try:
            with open(vocab_file, encoding="utf-8") as f:  # one token per line; the line number is its id
                vocab = [line.rstrip("\n") for line in f]
        except UnicodeDecodeError as e:
            raise TinydactError(f"vocabulary is not UTF-8 text: {vocab_file} ({e})") from None
        config = {}
        if config_file.is_file():
            try:
                config = json.loads(config_file.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise TinydactError(f"tokenizer config is not valid JSON: {config_file} ({e})") from None
        if not isinstance(config, dict):
            raise TinydactError(f"tokenizer config does not hold a JSON object: {config_file}")
        specials = read_specials(path, config)
        if missing := [specials[role] for role in REQUIRED if specials[role] not in vocab]:
            raise TinydactError(f"{vocab_file} lacks the special token {missing[0]}")
        check_special_ids(vocab, config.get("added_tokens_decoder", {}), vocab_file)
        limit = config.get("model_max_length")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit >= 2):
            raise TinydactError(f"{config_file}: model_max_length must be a number >= 2, got {limit!r}")
        for key in ("do_lower_case", "tokenize_chinese_chars"):
            if not isinstance(config.get(key, True), bool):
                raise TinydactError(f"{config_file}: {key} must be true or false, got {config[key]!r}")
        return cls(
            vocab,
            lowercase=config.get("do_lower_case", True),
            strip_accents=config.get("strip_accents"),
            chinese_chars=config.get("tokenize_chinese_chars", True),
            # HF writes a huge sentinel here when a model sets no limit; BERT's positions end at 512
            max_length=int(min(512, config.get("model_max_length") or 512)),
            specials=specials,
            mpnet=config.get("tokenizer_class") in PAIR_SEP_TWICE,
        )

    def check_fits(self, vocab_size: int, pad_token_id: int, source: str) -> None:
        """A vocabulary must match the embedding it indexes: one line more or less in vocab.txt
        shifts every id after it and changes the answers without a word."""
        if self.vocab_size != vocab_size:
            raise TinydactError(f"{source}: vocab.txt has {self.vocab_size} tokens, the model's embedding {vocab_size}")
        pad = self.specials["pad_token"]
        if self.vocab.index(pad) != pad_token_id:
            raise TinydactError(f"{source}: {pad} is token {self.vocab.index(pad)} in vocab.txt, the config says {pad_token_id}")

    def save(self, path) -> None:
        """Write `vocab.txt` and `tokenizer_config.json` (also readable by `transformers`), the
        latter with the special tokens' ids as `transformers` records them (`added_tokens_decoder`):
        loading checks them against the lines of vocab.txt."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "vocab.txt").write_text("".join(t + "\n" for t in self.vocab), encoding="utf-8")
        config = {
            "tokenizer_class": "MPNetTokenizer" if self.mpnet else "BertTokenizer",
            "do_lower_case": self.lowercase,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": self.chinese_chars,
            "model_max_length": self.max_length,
            "added_tokens_decoder": {str(i): {"content": t.content, "lstrip": False, "normalized": False, "rstrip": False,
                                              "single_word": False, "special": True}
                                     for i, t in sorted(self._tok.get_added_tokens_decoder().items())},
        }
        if self.specials != SPECIALS:  # e.g. MPNet's <s> </s> <pad> [UNK] <mask>
            config.update(self.specials)
        (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    def _encode(self, texts, pairs, max_length):
        """`tokenizers` Encodings, truncated to `max_length` tokens (None: not truncated)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if pairs is not None:
            pairs = [pairs] if isinstance(pairs, str) else list(pairs)
            if len(pairs) != len(texts):
                raise TinydactError(f"{len(texts)} texts but {len(pairs)} second sentences")
        specials = self._tok.post_processor.num_special_tokens_to_add(pairs is not None)  # [CLS] A [SEP] (B [SEP])
        if max_length is not None and max_length <= specials:
            raise TinydactError(f"max_length {max_length} leaves no room for text after {specials} special tokens")
        # truncation is a setting of the one `tokenizers` object: set and used under a lock, so
        # that threads sharing this Tokenizer (a Classifier in a service) never mix settings
        with self._lock:
            if max_length is None:
                self._tok.no_truncation()
            else:
                # longest_first: drop tokens from the end of the longer sentence, as `transformers`
                # does (on a tie with one token to spare, its Rust tokenizer and we keep it in the
                # second sentence, its slow Python tokenizer in the first)
                self._tok.enable_truncation(max_length, strategy="longest_first")
            return self._tok.encode_batch(texts if pairs is None else list(zip(texts, pairs)))

    def __call__(self, texts, pairs=None, max_length=None) -> Encoded:
        """Encode a batch of texts (and optional second sentences), truncated to `max_length`
        (default `self.max_length`) and padded to the longest."""
        encodings = self._encode(texts, pairs, self.max_length if max_length is None else max_length)

        def column(name):
            return torch.tensor([getattr(e, name) for e in encodings], dtype=torch.long)  # (B, T)

        return Encoded(column("ids"), column("attention_mask"), column("type_ids"))

    def num_tokens(self, texts, pairs=None) -> list:
        """Untruncated lengths, [CLS] and [SEP] included (to warn when inputs get cut)."""
        return [sum(e.attention_mask) for e in self._encode(texts, pairs, None)]


def read_specials(path, config: dict) -> dict:
    """The special tokens by role (`SPECIALS`) that a model folder names: in tokenizer_config.json
    (`config`) and, taking precedence as in `transformers`, special_tokens_map.json, where a
    token may also be written {"content": "<mask>", ...}. Roles neither names keep BERT's."""
    named = dict(config)
    file = Path(path) / "special_tokens_map.json"
    if file.is_file():
        try:
            named.update(json.loads(file.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as e:
            raise TinydactError(f"special tokens map is not a valid JSON object: {file} ({e})") from None
    specials = dict(SPECIALS)
    for role in SPECIALS:
        token = named.get(role)
        token = token.get("content") if isinstance(token, dict) else token
        if token is not None and not (isinstance(token, str) and token):
            raise TinydactError(f"{path}: the special token {role} must be a non-empty string, got {token!r}")
        specials[role] = token or specials[role]
    return specials
