// Classify texts with the JavaScript port, from Node (>= 18), like `tinydact classify`:
//
//   node ports/js/classify.js "a gripping, beautiful film" "a dull, lifeless mess"
//   node ports/js/classify.js --rule tight --explain "not the best film of the year, but fun"
//   node ports/js/classify.js --model DIR --json TEXT...      (DIR: a tinydact checkpoint folder)
//
// Each line: label, confidence, blocks run, time, text. --explain adds each block's y_n, h_n,
// p_n, a_n and both sides of the halting test.
import { readFileSync } from "node:fs";
import { DACTBert } from "./model.js";

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i < 0 ? fallback : args.splice(i, 2)[1];
};
const flag = (name) => (args.includes(name) ? (args.splice(args.indexOf(name), 1), true) : false);
const dir = new URL(option("--model", "../../weights") + "/", new URL(".", import.meta.url));
const rule = option("--rule", "paper");
const [explain, json, noHalt] = [flag("--explain"), flag("--json"), flag("--no-halt")];
if (!args.length) {
  console.error("usage: node ports/js/classify.js [--rule paper|tight] [--no-halt] [--explain] [--json] [--model DIR] TEXT...");
  process.exit(2);
}

let t0 = performance.now();
const read = (name) => readFileSync(new URL(name, dir));
const bytes = read("model.safetensors");
let tokenizerConfig = {};
try {
  tokenizerConfig = JSON.parse(read("tokenizer_config.json"));
} catch { /* optional */ }
const model = DACTBert.fromFiles({
  safetensors: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
  config: JSON.parse(read("config.json")), vocab: read("vocab.txt").toString("utf8"), tokenizerConfig,
});
const loadMs = performance.now() - t0;
if (!json) console.error(`loaded ${dir.pathname} in ${loadMs.toFixed(0)} ms`);

const f = (x) => x.toFixed(4);
for (const text of args) {
  t0 = performance.now();
  const r = model.classify(text, { rule, halt: !noHalt });
  const ms = performance.now() - t0;
  if (json) {
    console.log(JSON.stringify({ text, label: r.label, confidence: r.confidence, probs: r.probs, blocks: r.blocks,
      num_blocks: r.num_blocks, truncated: r.truncated, ms, ...(explain ? { steps: r.steps } : {}) }));
    continue;
  }
  console.log(`${r.label.padEnd(9)} ${r.confidence.toFixed(2)}  blocks ${r.blocks}/${r.num_blocks}  ${ms.toFixed(0)} ms  ${text}`);
  if (explain) {
    console.log("    n  y_n            h_n     p_n     a_n            lower      upper   d  decision");
    for (const s of r.steps) {
      const decision = s.stop ? "stop" : "go on";
      console.log(`    ${s.n}  ${s.y.map(f).join(" ")}  ${f(s.h)}  ${f(s.p)}  ${s.a.map(f).join(" ")}  ${f(s.lower)} ${s.passes ? ">" : "≤"} ${f(s.upper)}  ${s.d}  ${decision}`);
    }
  }
}
