// model.js (bert.js, safetensors.js, dact.js together) against tests/vectors/model.json: the
// [CLS] states, y_n, h_n, p_n, a_n and both sides of the halting test of every block, and the
// exits, labels and probabilities under both rules, within the tolerances the file states.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { RULES, haltingBounds } from "../dact.js";
import { DACTBert } from "../model.js";

const root = new URL("../../../", import.meta.url);
const read = (path) => readFileSync(new URL(path, root));
const vectors = JSON.parse(read("tests/vectors/model.json"));
const bytes = read("weights/model.safetensors");
const model = DACTBert.fromFiles({
  safetensors: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
  config: JSON.parse(read("weights/config.json")), vocab: read("weights/vocab.txt").toString("utf8"),
  tokenizerConfig: JSON.parse(read("weights/tokenizer_config.json")),
});
const tol = vectors.tolerance;
const worst = { cls_first: 0, cls_checksums_rel: 0, dact: 0, probs: 0 }; // the largest errors seen

function close(kind, got, want, limit, what) {
  const g = [got].flat(2), w = [want].flat(2);
  assert.equal(g.length, w.length, what);
  for (let i = 0; i < w.length; i++) {
    const err = kind === "cls_checksums_rel" ? Math.abs(g[i] - w[i]) / Math.max(1, Math.abs(w[i])) : Math.abs(g[i] - w[i]);
    worst[kind] = Math.max(worst[kind], err);
    assert.ok(err <= limit, `${what}[${i}]: got ${g[i]}, want ${w[i]} (error ${err} > ${limit})`);
  }
}

function checksum(x) {
  let sum = 0, sumSq = 0;
  for (const v of x) { sum += v; sumSq += v * v; }
  return [sum, sumSq];
}

test("model.json describes this checkpoint", () => {
  assert.equal(vectors.num_blocks, model.N);
  assert.equal(vectors.hidden_size, model.bert.H);
  assert.deepEqual(vectors.labels, model.labels);
});

for (const v of vectors.inputs) {
  test(`model.json input ${v.name}: states and DACT values of every block (full depth)`, () => {
    const r = model.run(v.input_ids, { tokenTypeIds: v.token_type_ids, attentionMask: v.attention_mask, halt: false });
    assert.equal(r.blocks, model.N);
    const states = [[v.cls_embedding, r.cls[0], "embedding"], ...v.cls.map((want, n) => [want, r.cls[n + 1], `block ${n + 1}`])];
    for (const [want, got, where] of states) {
      close("cls_first", Array.from(got.slice(0, want.first.length)), want.first, tol.cls_first.abs, `${where} [CLS] first`);
      close("cls_checksums_rel", checksum(got), [want.sum, want.sum_sq], tol.cls_checksums.rel, `${where} [CLS] sum, sum_sq`);
    }
    for (const key of ["y", "h", "p", "a"]) close("dact", r.steps.map((s) => s[key]), v[key], tol.dact.abs, key);
    for (const rule of RULES) {
      const bounds = r.steps.map((s) => { const b = haltingBounds(s.a, s.p, s.d, rule); return [b.lower, b.upper]; });
      close("dact", bounds, v.halting[rule].bounds, tol.dact.abs, `${rule} bounds`);
    }
  });

  test(`model.json input ${v.name}: early exit under both rules`, () => {
    for (const rule of RULES) {
      const want = v.halting[rule];
      const r = model.run(v.input_ids, { tokenTypeIds: v.token_type_ids, attentionMask: v.attention_mask, rule });
      assert.equal(r.blocks, want.blocks, `${rule}: blocks`);
      assert.equal(r.label, want.label, `${rule}: label`);
      assert.equal(model.labels[r.label], want.label_name);
      close("probs", r.probs, want.probs, tol.dact.abs, `${rule} probs`);
      // the same text without its padding, from the JavaScript tokenizer: the same exit
      const c = model.classify(v.text, { pair: v.pair ?? null, rule });
      assert.deepEqual([c.label, c.blocks], [want.label_name, want.blocks], `${rule}: classify()`);
      close("probs", Object.values(c.probs), want.probs, tol.dact.abs, `${rule} classify() probs`);
    }
  });
}

test("the largest errors, against model.json's tolerances", (t) => {
  t.diagnostic(`max errors: ${JSON.stringify(worst)} (tolerances: cls_first ${tol.cls_first.abs}, ` +
    `checksums ${tol.cls_checksums.rel} relative, dact and probs ${tol.dact.abs})`);
});
