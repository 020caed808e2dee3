// dact.js against tests/vectors/dact.json (every case), with the error measure of PORTING.md §4.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { RULES, backward, canHalt, forward, haltingStep, loss } from "../dact.js";

const vectors = JSON.parse(readFileSync(new URL("../../../tests/vectors/dact.json", import.meta.url), "utf8"));

/** max |got − want| / max |want| over an array (an all-zero `want` must be matched exactly). */
function relError(got, want) {
  const g = [got].flat(2), w = [want].flat(2);
  assert.equal(g.length, w.length);
  const scale = Math.max(...w.map(Math.abs));
  const err = Math.max(...g.map((x, i) => Math.abs(x - w[i])));
  return scale === 0 ? (err === 0 ? 0 : Infinity) : err / scale;
}

test("dact.json has the cases PORTING.md describes", () => {
  assert.equal(vectors.version, 2);
  assert.equal(vectors.cases.length, 48);
});

for (const c of vectors.cases) {
  test(`dact.json case ${c.name}`, () => {
    const { a, p } = forward(c.y, c.h);
    const { dy, dh } = backward(c.y, c.h, c.label, c.tau);
    for (const [name, got, want] of [["a", a, c.a], ["p", p, c.p], ["dy", dy, c.dy], ["dh", dh, c.dh]]) {
      assert.ok(relError(got, want) <= 1e-12, `${name}: error ${relError(got, want)}`);
    }
    const L = loss(c.y, c.h, c.label, c.tau);
    assert.ok(Math.abs(L - c.loss) <= 1e-12 * Math.abs(c.loss), `loss ${L} != ${c.loss}`);
    for (const rule of RULES) {
      const { step, prediction } = haltingStep(c.y, c.h, rule);
      assert.equal(step, c.halting_step[rule], `${rule} halting step`);
      assert.equal(prediction, c.prediction[rule], `${rule} prediction`);
    }
  });
}

test("the halting test: always at d = 0 and with K = 1; an exact tie never stops early", () => {
  for (const rule of RULES) {
    assert.ok(canHalt([0.5, 0.5], 1, 0, rule));
    assert.ok(canHalt([1], 0.9, 5, rule));
    assert.ok(!canHalt([0.4, 0.4, 0.2], 0, 3, rule));
  }
  // p = 0.44, d = 1: the tight rule stops where the paper rule does not (tests/test_dact_math.py)
  assert.ok(!canHalt([0.9, 0.1], 0.44, 1, "paper") && canHalt([0.9, 0.1], 0.44, 1, "tight"));
  assert.throws(() => canHalt([0.5, 0.5], 0.5, 1, "loose"), /^TinydactError: the halting rule must be one of paper, tight, got 'loose'$/);
});
