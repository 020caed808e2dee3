"""Write tests/vectors/model.json: model-level test vectors for ports of the shipped DACT-BERT.

    python tests/vectors/make_model_vectors.py           # rewrite model.json
    python tests/vectors/make_model_vectors.py --check   # exit 1 if model.json is out of date

Computed from weights/ (loaded with `tinydact.checkpoint.load_checkpoint`, float32, CPU) for four
inputs: two single sentences of different lengths encoded as one padded batch, one more single
sentence, and one sentence pair. For each input: the token ids, attention mask and token type
ids; the [CLS] state after the embeddings and after every block (its first 8 values, and the
sum and sum of squares of the whole vector as checksums); y_n, h_n, p_n, a_n of every block
(full depth, `DACTBert.forward`); both sides of the halting test at every block; and the exit
block, label and probabilities under both rules (`DACTBert.predict`). Then `tokenizer_cases`:
token ids of the Python tokenizer on tricky strings (accents, punctuation, CJK, emoji, long
words, control characters, typed special tokens, truncation, pairs).

The file records the sha256 of the weights, config and vocabulary it was computed from:
regenerate it whenever weights/ changes (tests/test_ports.py fails until then).
See PORTING.md §7 for what the fields mean and the tolerances a port should meet.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = HERE / "model.json"
WEIGHTS = ROOT / "weights"
VERSION = 1
FIRST = 8  # how many leading values of each [CLS] state are written out
# Every halting decision before the last block is clear by at least this much, so that a
# float32 port (which rounds differently) reaches the same exits.
MIN_HALT_GAP = 1e-4

# The tolerances a float32 port should meet (PORTING.md §7); `measured_js` is what ports/js
# reaches (written here by hand from the line `node --test ports/js` prints: "max errors").
TOLERANCE = {
    "cls_first": {"abs": 1e-4, "note": "each of the first values of a [CLS] state: |got - want| <= 1e-4"},
    "cls_checksums": {"rel": 1e-4, "note": "sum and sum_sq: |got - want| <= 1e-4 * max(1, |want|)"},
    "dact": {"abs": 1e-5, "note": "y, h, p, a, bounds and the exit probabilities: |got - want| <= 1e-5"},
    "exits": "blocks and label exactly equal, under both rules",
    "measured_js": {"cls_first": 1.1e-6, "cls_checksums_rel": 5.9e-6, "dact": 2.6e-6, "probs": 3.7e-7,
                    "note": "ports/js against this file; most of it is PyTorch's own float32 rounding: against a "
                            "float64 run of the model the port's y_n and a_n are within 9e-8, PyTorch float32's within 2.6e-6"},
}

# (name, batch, text, pair): inputs sharing a batch are encoded together, padded to the longest
INPUTS = [
    ("short_in_batch", "batch_1", "a gripping, beautiful film", None),
    ("long_in_batch", "batch_1", "it's not that it is bad, it just never comes alive", None),
    ("single", "single", "a film that wants to be profound but settles for pretty", None),
    ("pair", "pair", "the movie was long", "but i never looked at my watch"),
]

# (text, pair or None, max_length or None): the Python tokenizer's ids, for a port's tokenizer
TOKENIZER_CASES = [
    ("Café naïve résumé, Ångström and CRÈME BRÛLÉE — déjà vu", None, None),
    ("n\u0303 (decomposed) vs ñ; Tiếng Việt; مَرْحَبًا; नमस्ते; Hangul 한국어", None, None),
    ("Hello!!! What's up?? (e.g., U.S.A.) $5,000 & 50% off... #1 @home ~x~ `q` a+b=c <b> |p| ^_^ {x}[y]\\z/", None, None),
    ("«quoted» „German“ ‘single’ – en — em … ¿Qué? ¡Hola! 。、 € £ ¥ © ® ™ ° ± × ÷", None, None),
    ("我爱北京天安门 and 日本語のテキスト, ｶﾀｶﾅ, 𠀀𠀁 (CJK extension B), 中文English混合", None, None),
    ("I love it 😀👍🏽 ❤️ family: 👨‍👩‍👧 ☃ ♞ 🤖robot", None, None),
    ("supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis "
     + "a" * 100 + " " + "b" * 101 + " " + "ß" * 60 + " " + "é" * 101, None, None),
    ("tab\there\nnewline\r\n  multiple   spaces\u00a0nbsp\u200bzero\u200dwidth\u0000nul\u0007bell\ufffdrepl"
     "\u00adsoft\u2028linesep\u3000ideographic\ufeffbom\u0085nel\u000bvt\u001fus\ue000private\U0010fffdplane16"
     "\U000e0001tag a\u0378b (U+0378 is unassigned: kept, the word becomes [UNK])", None, None),
    ("ΟΔΟΣ ΣΊΣΥΦΟΣ İstanbul Straße ﬁne ǅemal ＡＢＣ Ⅻ ＩＶ", None, None),
    ("hello [SEP] world [MASK] [cls] [UNK]x [CLS][PAD]", None, None),
    ("3.14159 1,000,000 2nd 21st 10:30pm 1/2 ½ ² x² H₂O 5km/h", None, None),
    ("", None, None),
    ("the quick brown fox jumps over the lazy dog while the cat watches from the warm window sill", None, 12),
    ("The cat sat on the mat.", "Le chat était assis sur le tapis!", None),
    ("a fairly long first sentence that goes on and on", "and a short second", 12),
    ("one two three four five six", "seven eight nine ten eleven twelve", 10),
    ("one two three four five six", "seven eight nine ten eleven twelve", 11),
    ("short", "a much longer second sentence that needs cutting down to size", 9),
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def f32(x) -> float:
    """A float32 value written with the fewest digits that read back as the same float32."""
    return float(str(np.float32(x)))


def f32s(t) -> list:
    """A tensor of float32 values as (nested) lists of `f32` numbers."""
    return [f32s(u) for u in t] if t.dim() > 0 else f32(t)


def checksum(v: torch.Tensor) -> dict:
    """The first FIRST values of a (H,) state, and its sum and sum of squares (in float64)."""
    v64 = v.double()
    return {"first": f32s(v[:FIRST]), "sum": float(f"{v64.sum().item():.10g}"), "sum_sq": float(f"{(v64 * v64).sum().item():.10g}")}


def run_batch(model, tokenizer, labels, items):
    """The vectors of a batch of inputs (name, text, pair) encoded together."""
    from tinydact.dact import halting_bounds
    from tinydact.options import RULES

    texts = [t for _, t, _ in items]
    pairs = None if items[0][2] is None else [p for _, _, p in items]
    enc = tokenizer(texts, pairs)
    N = model.num_blocks
    with torch.no_grad():
        x = model.bert.embed(enc.input_ids, enc.token_type_ids)  # (B, T, H)
        xs = model.head_inputs(*enc)  # (B, N, H)
        a, p, y, h = model.forward(*enc)  # (B, N, K), (B, N), (B, N, K), (B, N)
    out = [dict(name=name, text=text, **({"pair": pair} if pair is not None else {})) for name, text, pair in items]
    for rule in RULES:
        pred, probs, blocks = model.predict(*enc, rule=rule)
        for i, o in enumerate(out):
            bounds = [halting_bounds(a[i : i + 1, n], p[i : i + 1, n], N - 1 - n, rule) for n in range(N)]
            for n, (lower, upper, _) in enumerate(bounds[:-1]):  # decisions before the last block
                top2 = torch.topk(a[i, n], 2).values
                gap = abs(lower.item() - upper.item())
                assert gap >= MIN_HALT_GAP or top2[0] == top2[1], f"{o['name']}: borderline halting decision at block {n + 1}"
            o.setdefault("halting", {})[rule] = {
                "blocks": int(blocks[i]), "label": int(pred[i]), "label_name": labels[int(pred[i])],
                "probs": f32s(probs[i]), "bounds": [[f32(lo.item()), f32(up.item())] for lo, up, _ in bounds],
            }
    for i, o in enumerate(out):
        o.update(input_ids=enc.input_ids[i].tolist(), attention_mask=enc.attention_mask[i].tolist(),
                 token_type_ids=enc.token_type_ids[i].tolist(), cls_embedding=checksum(x[i, 0]),
                 cls=[checksum(xs[i, n]) for n in range(N)], y=f32s(y[i]), h=f32s(h[i]), p=f32s(p[i]), a=f32s(a[i]))
        o["halting"] = o.pop("halting")  # last: the outcome after the states
    return out


def build_vectors() -> dict:
    from tinydact.checkpoint import load_checkpoint
    from tinydact.tokenizer import Tokenizer

    model, meta = load_checkpoint(WEIGHTS)
    model = model.float().eval()
    tokenizer = Tokenizer.from_pretrained(WEIGHTS)
    inputs = []
    for batch in dict.fromkeys(b for _, b, _, _ in INPUTS):
        items = [(name, text, pair) for name, b, text, pair in INPUTS if b == batch]
        for o in run_batch(model, tokenizer, meta["labels"], items):
            inputs.append({"batch": batch, **o})
    cases = []
    for text, pair, max_length in TOKENIZER_CASES:
        enc = tokenizer(text, pair, max_length=max_length)
        case = {"text": text, **({"pair": pair} if pair is not None else {}), **({"max_length": max_length} if max_length else {})}
        case.update(input_ids=enc.input_ids[0].tolist(), token_type_ids=enc.token_type_ids[0].tolist())
        cases.append(case)
    cfg = model.bert.config
    return {
        "version": VERSION,
        "description": "Model-level test vectors for ports of the DACT-BERT in weights/, computed in float32 by "
                       "tests/vectors/make_model_vectors.py. See PORTING.md.",
        "weights_sha256": {f: sha256(WEIGHTS / f) for f in ("model.safetensors", "config.json", "vocab.txt", "tokenizer_config.json")},
        "num_blocks": cfg.num_hidden_layers, "hidden_size": cfg.hidden_size, "labels": meta["labels"],
        "tolerance": TOLERANCE,
        "fields": {
            "inputs[].batch": "inputs with the same batch were encoded and run together (padded to the longest)",
            "input_ids, attention_mask, token_type_ids": "the encoded (padded) row",
            "cls_embedding": "the [CLS] row after the embedding LayerNorm",
            "cls": "per block n = 1..N: the [CLS] state after block n (what DACT module n reads): "
                   f"first = its first {FIRST} values, sum and sum_sq over all hidden_size values",
            "y, h, p, a": "per block, full depth (all N blocks run): y_n (K), h_n, p_n, a_n (K)",
            "halting.<rule>.bounds": "per block: [a_n[c*] (1-p_n)^d, the runner-up's upper bound] at full depth",
            "halting.<rule>.blocks, label, probs": "with early exit: blocks run, predicted class (0-based), a_n at the exit",
            "tokenizer_cases": "text (and pair), max_length when not the default 512: the Python tokenizer's ids",
        },
        "inputs": inputs,
        "tokenizer_cases": cases,
    }


def to_json_text(vectors) -> str:
    """One line per field of each input and per tokenizer case."""

    def dump(value):
        return json.dumps(value, separators=(", ", ": "), ensure_ascii=False)

    lines = ["{"]
    keys = list(vectors)
    for key in keys:
        value = vectors[key]
        end = "," if key != keys[-1] else ""
        if key == "inputs":
            items = [" {\n" + ",\n".join(f"    {dump(k)}: {dump(v)}" for k, v in item.items()) + "\n  }" for item in value]
            lines.append('  "inputs": [\n  ' + ",\n  ".join(items) + f"\n  ]{end}")
        elif key == "tokenizer_cases":
            lines.append('  "tokenizer_cases": [\n' + ",\n".join(f"    {dump(c)}" for c in value) + f"\n  ]{end}")
        else:
            lines.append(f"  {dump(key)}: {dump(value)}{end}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv):
    torch.set_num_threads(1)
    text = to_json_text(build_vectors())
    if "--check" in argv:
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run python {Path(__file__).relative_to(ROOT)}")
            return 1
        print(f"{OUT} is up to date")
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
