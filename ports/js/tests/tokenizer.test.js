// tokenizer.js against the Python tokenizer's ids on tricky strings (tests/vectors/model.json's
// tokenizer_cases: accents, punctuation, CJK, emoji, long words, control characters, typed
// special tokens, truncation, pairs) and on the model inputs.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { Tokenizer, readVocab } from "../tokenizer.js";

const root = new URL("../../../", import.meta.url);
const read = (path) => readFileSync(new URL(path, root), "utf8");
const vectors = JSON.parse(read("tests/vectors/model.json"));
const tokenizer = Tokenizer.fromFiles(read("weights/vocab.txt"), JSON.parse(read("weights/tokenizer_config.json")));

for (const c of vectors.tokenizer_cases) {
  test(`tokenizer case ${JSON.stringify(c.text.slice(0, 40))}${c.pair ? " + pair" : ""}`, () => {
    const enc = tokenizer.encode(c.text, c.pair ?? null, c.max_length ?? tokenizer.maxLength);
    assert.deepEqual(enc.inputIds, c.input_ids, `tokens: ${enc.tokens.join(" ")}`);
    assert.deepEqual(enc.tokenTypeIds, c.token_type_ids);
  });
}

test("the model inputs encode to the ids in model.json (without the padding)", () => {
  for (const v of vectors.inputs) {
    const n = v.attention_mask.filter((m) => m === 1).length;
    const enc = tokenizer.encode(v.text, v.pair ?? null);
    assert.deepEqual(enc.inputIds, v.input_ids.slice(0, n), v.name);
    assert.deepEqual(enc.tokenTypeIds, v.token_type_ids.slice(0, n), v.name);
  }
});

test("vocab.txt lines, truncation flag, and the max_length check", () => {
  assert.deepEqual(readVocab("a\nb\r\nc\n"), ["a", "b", "c"]);
  assert.deepEqual(readVocab("a\n\nb"), ["a", "", "b"]);
  assert.equal(tokenizer.maxLength, 512);
  assert.equal(tokenizer.encode("one two three", null, 4).truncated, true);
  assert.equal(tokenizer.encode("one two", null, 4).truncated, false);
  assert.throws(() => tokenizer.encode("one", "two", 3), /no room/);
});
