// Bad input, refused as tinydact refuses it: through the real entry point (node classify.js, as
// a user runs it: exit 1 and exactly one `Error: ...` line on stderr, nothing on stdout) and
// through the library (a TinydactError with the same words). The checkpoints are tiny ones
// written here (H = 4, 2 blocks), each broken in one way; each is written as tinydact's
// save_checkpoint writes one (task sst2, the vocabulary's sha256 in config.json, the special
// tokens' ids in tokenizer_config.json).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createServer } from "node:http";
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { TinydactError } from "../errors.js";
import { DACTBert, sha256Hex } from "../model.js";

const CLASSIFY = fileURLToPath(new URL("../classify.js", import.meta.url));
const temp = mkdtempSync(join(tmpdir(), "tinydact-js-"));
after(() => rmSync(temp, { recursive: true, force: true }));

const VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film", "a", "##s", ".", ","];
const vocabFile = (vocab) => vocab.map((t) => t + "\n").join("");
const SHA256 = createHash("sha256").update(vocabFile(VOCAB)).digest("hex");
const SPECIAL_IDS = Object.fromEntries(VOCAB.slice(0, 5).map((t, i) => [i, { content: t, special: true }]));
const H = 4, I = 8, N = 2, K = 2;

/** The tensors of a tiny DACT-BERT, name -> [shape, values] (values from a fixed sine). */
function tinyTensors(V) {
  const shapes = {
    "embeddings.word_embeddings.weight": [V, H], "embeddings.position_embeddings.weight": [16, H],
    "embeddings.token_type_embeddings.weight": [2, H], "embeddings.LayerNorm.weight": [H], "embeddings.LayerNorm.bias": [H],
    "pooler.dense.weight": [H, H], "pooler.dense.bias": [H],
  };
  for (let i = 0; i < N; i++) {
    const p = `encoder.layer.${i}.`;
    for (const m of ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]) {
      Object.assign(shapes, { [`${p}${m}.weight`]: [H, H], [`${p}${m}.bias`]: [H] });
    }
    Object.assign(shapes, {
      [`${p}attention.output.LayerNorm.weight`]: [H], [`${p}attention.output.LayerNorm.bias`]: [H],
      [`${p}intermediate.dense.weight`]: [I, H], [`${p}intermediate.dense.bias`]: [I],
      [`${p}output.dense.weight`]: [H, I], [`${p}output.dense.bias`]: [H],
      [`${p}output.LayerNorm.weight`]: [H], [`${p}output.LayerNorm.bias`]: [H],
      [`dact_heads.${i}.dense.weight`]: [H, H], [`dact_heads.${i}.dense.bias`]: [H],
      [`dact_heads.${i}.answer.weight`]: [K, H], [`dact_heads.${i}.answer.bias`]: [K],
      [`dact_heads.${i}.halt.weight`]: [1, H], [`dact_heads.${i}.halt.bias`]: [1],
    });
  }
  let seed = 0;
  return Object.fromEntries(Object.entries(shapes).map(([name, shape]) => {
    const values = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => 0.5 * Math.sin(++seed));
    return [name, [shape, values]];
  }));
}

/** A safetensors file from name -> [shape, values, dtype]: F32 for a Float32Array, else the
 * dtype of the typed array (Int8Array: I8, Uint8Array: BOOL, BigInt64Array: I64). */
function safetensorsBytes(tensors) {
  const header = {}, parts = [];
  let offset = 0;
  const dtypes = { Float32Array: "F32", Int8Array: "I8", Uint8Array: "BOOL", BigInt64Array: "I64" };
  for (const [name, [shape, values]] of Object.entries(tensors)) {
    const bytes = new Uint8Array(values.buffer);
    header[name] = { dtype: dtypes[values.constructor.name], shape, data_offsets: [offset, offset + bytes.length] };
    parts.push(bytes);
    offset += bytes.length;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 8 + json.length);
  return out;
}

/** Write a tiny checkpoint folder; `broken` changes its parts first: { config, vocab, tensors,
 * tokenizerConfig } (objects it may edit), and may return file contents to write instead. */
let count = 0;
function checkpoint(broken = () => {}) {
  const dir = join(temp, `model${++count}`);
  const parts = {
    config: { vocab_size: VOCAB.length, hidden_size: H, num_hidden_layers: N, num_attention_heads: 2, intermediate_size: I,
      max_position_embeddings: 16, type_vocab_size: 2, pad_token_id: 0,
      dact: { num_labels: K, labels: ["negative", "positive"], task: "sst2", vocab_sha256: SHA256 } },
    vocab: [...VOCAB], tensors: tinyTensors(VOCAB.length),
    tokenizerConfig: { do_lower_case: true, model_max_length: 16, added_tokens_decoder: structuredClone(SPECIAL_IDS) },
  };
  const files = {
    "config.json": () => JSON.stringify(parts.config), "vocab.txt": () => vocabFile(parts.vocab),
    "model.safetensors": () => safetensorsBytes(parts.tensors), "tokenizer_config.json": () => JSON.stringify(parts.tokenizerConfig),
    ...broken(parts),
  };
  mkdirSync(dir);
  for (const [name, contents] of Object.entries(files)) if (contents !== null) writeFileSync(join(dir, name), contents());
  return dir;
}

function classify(...args) {
  const r = spawnSync(process.execPath, [CLASSIFY, ...args], { encoding: "utf8" });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The command fails as a user mistake: exit 1, no output, exactly the line `Error: <message>`. */
function refused(args, message) {
  const r = classify(...args);
  assert.equal(r.stdout, "", `stdout of ${args.join(" ")}`);
  const lines = r.stderr.split("\n").filter(Boolean);
  assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0], new RegExp(`^Error: ${message}$`));
  assert.equal(r.status, 1);
}

/** The library refuses the same checkpoint folder with a TinydactError of the same words. */
function libraryRefuses(dir, message) {
  assert.throws(() => DACTBert.fromFiles(filesOf(dir)), (e) => e instanceof TinydactError && new RegExp(`^${message}$`).test(e.message));
}

/** The arguments of DACTBert.fromFiles for the checkpoint folder `dir`. */
function filesOf(dir, path = dir) {
  const read = (f) => readFileSync(join(dir, f)), bytes = read("model.safetensors");
  return { safetensors: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength), path,
    config: JSON.parse(read("config.json")), vocab: read("vocab.txt").toString(),
    vocabSha256: createHash("sha256").update(read("vocab.txt")).digest("hex"), tokenizerConfig: JSON.parse(read("tokenizer_config.json")) };
}

const esc = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

test("a tiny checkpoint classifies (so the refusals below are not of a checkpoint that never worked)", () => {
  const dir = checkpoint();
  const r = classify("--model", dir, "--json", "a good film", "--", "-bad films.");
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, "");
  const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => l.text), ["a good film", "-bad films."]);
  for (const l of lines) assert.ok(["negative", "positive"].includes(l.label) && Number.isFinite(l.confidence));
});

const TEXTS = [["empty", [""], "text 1 is empty \\(nothing to read\\)"],
  ["whitespace only", ["  \t\n "], "text 1 is empty \\(nothing to read\\)"],
  ["zero-width only", ["\u200b\u200d\ufeff"], "text 1 is empty \\(nothing to read\\)"],
  ["control characters only", ["\x01\x02\x7f"], "text 1 is empty \\(nothing to read\\)"],
  ["only U+FFFD (what bytes that are not UTF-8 become)", ["\ufffd \ufffd"], "text 1 is empty \\(nothing to read\\)"],
  ["the second of three empty", ["good", " ", "bad"], "text 2 is empty \\(nothing to read\\)"],
  ["an empty second sentence", ["good", "--pair", "\u200b"], "text 1 has an empty sentence"],
  ["an empty first sentence of a pair", ["\u200b", "--pair", "good"], "text 1 has an empty sentence"],
  ["--pair of spaces", ["good", "--pair", "   "], "--pair is empty"],
  ["--pair with two texts", ["good", "bad", "--pair", "x"], "--pair goes with exactly one TEXT, got 2"],
  ["standard input", ["-"], "'-' \\(read standard input\\) is not supported by this port: pass each TEXT as an argument"],
  ["no text", [], "no text given: pass TEXT..."]];
for (const [what, args, message] of TEXTS) {
  test(`classify.js refuses a text: ${what}`, () => refused(args, message));
}

const ARGS = [["--rule loose", ["--rule", "loose", "hi"], "the halting rule must be one of paper, tight, got 'loose'"],
  ["--rule=loose", ["--rule=loose", "hi"], "the halting rule must be one of paper, tight, got 'loose'"],
  ["--rule without a value", ["hi", "--rule"], "option --rule requires an argument"],
  ["an unknown option", ["--batch-size", "4", "hi"], "no such option: --batch-size \\(a TEXT that starts with \"-\" goes after --\\)"],
  ["a text that looks like an option", ["-5 stars"], "no such option: -5 stars \\(a TEXT that starts with \"-\" goes after --\\)"],
  ["a flag given a value", ["--json=yes", "hi"], "option --json does not take a value"],
  ["--model that does not exist", ["--model", join(temp, "nothing"), "hi"], `model directory not found: ${esc(join(temp, "nothing"))} .*`],
  ["--model ~nosuchuser/x", ["--model", "~nosuchuser/x", "hi"], "model directory not found: ~nosuchuser/x .*"],
  ["--model a file", ["--model", CLASSIFY, "hi"], `${esc(CLASSIFY)} is a file; --model takes a model directory`]];
for (const [what, args, message] of ARGS) {
  test(`classify.js refuses a bad argument: ${what}`, () => refused(args, message));
}

const INF = (parts) => { parts.tensors["dact_heads.1.halt.bias"][1][0] = Infinity; };
const CHECKPOINTS = [
  ["a NaN weight", (parts) => { parts.tensors["encoder.layer.1.output.dense.weight"][1][5] = NaN; },
    "MODEL/model.safetensors: tensor 'encoder.layer.1.output.dense.weight' holds values that are not finite numbers \\(a diverged training\\?\\)"],
  ["an infinite weight", INF,
    "MODEL/model.safetensors: tensor 'dact_heads.1.halt.bias' holds values that are not finite numbers \\(a diverged training\\?\\)"],
  ["a vocab.txt one line short", (parts) => { parts.vocab.pop(); },
    `MODEL: vocab.txt has ${VOCAB.length - 1} tokens, the model's embedding ${VOCAB.length}`],
  ["a vocab.txt one line long", (parts) => { parts.vocab.push("extra"); },
    `MODEL: vocab.txt has ${VOCAB.length + 1} tokens, the model's embedding ${VOCAB.length}`],
  ["[PAD] where the config does not say (an older checkpoint: no ids, no fingerprint)", (parts) => {
    parts.vocab.splice(0, 2, "[UNK]", "[PAD]");
    delete parts.tokenizerConfig.added_tokens_decoder;
    delete parts.config.dact.vocab_sha256;
  },
    "MODEL: \\[PAD\\] is token 1 in vocab.txt, the config says 0"],
  ["a vocab.txt without [CLS]", (parts) => { parts.vocab[2] = "cls"; }, "vocab.txt lacks the special token \\[CLS\\]"],
  ["a missing tensor", (parts) => { delete parts.tensors["dact_heads.0.answer.bias"]; },
    "MODEL/model.safetensors: missing key 'dact_heads.0.answer.bias'"],
  ["a tensor of the wrong shape", (parts) => { parts.tensors["embeddings.LayerNorm.bias"][0] = [2, 2]; },
    "MODEL/model.safetensors: key 'embeddings.LayerNorm.bias' has shape \\(2,2\\), the model expects \\(4\\)"],
  ["no 'dact' section", (parts) => { delete parts.config.dact; },
    "MODEL is a plain BERT checkpoint, not a DACT-BERT one \\(no 'dact' section in config.json\\)"],
  ["labels that disagree with num_labels", (parts) => { parts.config.dact.num_labels = 3; },
    "MODEL/config.json: the 'dact' section needs num_labels >= 2 and as many distinct label names"],
  ["a size given as a string", (parts) => { parts.config.hidden_size = "4"; },
    "config field 'hidden_size' must be a non-negative integer, got '4'"],
  ["a bad model_max_length", (parts) => { parts.tokenizerConfig.model_max_length = 1; },
    "MODEL/tokenizer_config.json: model_max_length must be a number >= 2, got 1"],
  // checkpoints that would load and answer wrongly: what the files can tell is checked
  ["two lines of vocab.txt swapped", (parts) => { parts.vocab.splice(5, 2, "bad", "good"); },
    "MODEL/vocab.txt is not the vocabulary this model was saved with \\(its sha256 differs from config.json's " +
    "dact.vocab_sha256\\): token ids would not match; restore the original file"],
  ["one line of vocab.txt changed", (parts) => { parts.vocab[7] = "movie"; },
    "MODEL/vocab.txt is not the vocabulary this model was saved with \\(its sha256 differs .*"],
  ["a vocab_sha256 that is not a sha256", (parts) => { parts.config.dact.vocab_sha256 = SHA256.slice(1); },
    "MODEL/config.json: the 'dact' section's vocab_sha256 must be a sha256 in hex"],
  ["a vocab_sha256 that is a number", (parts) => { parts.config.dact.vocab_sha256 = 12; },
    "MODEL/config.json: the 'dact' section's vocab_sha256 must be a sha256 in hex"],
  ["[CLS] moved (the ids tokenizer_config.json records)", (parts) => { parts.vocab.splice(1, 2, "[CLS]", "[UNK]"); },
    "MODEL/vocab.txt: \\[UNK\\] is token 2, tokenizer_config.json records it as token 1 \\(lines of vocab.txt added, " +
    "removed or moved: every id after them changes\\)"],
  ["a special token recorded past the end", (parts) => { parts.tokenizerConfig.added_tokens_decoder = { 99: { content: "[SEP]" } }; },
    "MODEL/vocab.txt: \\[SEP\\] is token 3, tokenizer_config.json records it as token 99 .*"],
  ["a special token that vocab.txt lacks", (parts) => { parts.tokenizerConfig.added_tokens_decoder[5] = { content: "[FOO]" }; },
    "MODEL/vocab.txt: \\[FOO\\] is missing, tokenizer_config.json records it as token 5 .*"],
  ["added_tokens_decoder a list", (parts) => { parts.tokenizerConfig.added_tokens_decoder = []; },
    "MODEL/tokenizer_config.json: added_tokens_decoder must be an object of id -> token"],
  ["added_tokens_decoder without a token", (parts) => { parts.tokenizerConfig.added_tokens_decoder[2] = {}; },
    "MODEL/tokenizer_config.json: added_tokens_decoder\\['2'\\] is not an id with a token"],
  ["added_tokens_decoder with a name for an id", (parts) => { parts.tokenizerConfig.added_tokens_decoder = { cls: { content: "[CLS]" } }; },
    "MODEL/tokenizer_config.json: added_tokens_decoder\\['cls'\\] is not an id with a token"],
  ["an int8 weight", (parts) => { const t = parts.tensors["encoder.layer.0.output.dense.weight"]; t[1] = Int8Array.from(t[1], (v) => 100 * v); },
    "MODEL/model.safetensors: key 'encoder.layer.0.output.dense.weight' holds int8 values, the model's weights are " +
    "floating-point \\(a quantized checkpoint\\? save it in float32, float16 or bfloat16\\)"],
  ["a bool DACT head", (parts) => { parts.tensors["dact_heads.1.halt.bias"][1] = new Uint8Array([1]); },
    "MODEL/model.safetensors: key 'dact_heads.1.halt.bias' holds bool values, the model's weights are floating-point .*"],
  ["an int64 embedding", (parts) => { const t = parts.tensors["embeddings.word_embeddings.weight"]; t[1] = new BigInt64Array(t[1].length); },
    "MODEL/model.safetensors: key 'embeddings.word_embeddings.weight' holds int64 values, the model's weights are floating-point .*"],
  ["a block more than the config's", (parts) => { parts.tensors["encoder.layer.2.output.dense.bias"] = [[H], new Float32Array(H)]; },
    "MODEL/model.safetensors: unexpected key 'encoder.layer.2.output.dense.bias' \\(not part of a BERT encoder\\)"],
  ["a DACT head more than the blocks", (parts) => { parts.tensors["dact_heads.2.halt.bias"] = [[1], new Float32Array(1)]; },
    "MODEL/model.safetensors: unexpected key 'dact_heads.2.halt.bias'"],
  ["no pooler", (parts) => { delete parts.tensors["pooler.dense.bias"]; }, "MODEL/model.safetensors: missing key 'pooler.dense.bias'"],
  ["the labels of SST-2 swapped", (parts) => { parts.config.dact.labels.reverse(); },
    "MODEL/config.json: task sst2's labels are \\['negative', 'positive'\\] in this order \\(class 0 first\\), " +
    "the 'dact' section says \\['positive', 'negative'\\]"],
  ["other labels for SST-2", (parts) => { parts.config.dact.labels = ["bad", "good"]; },
    "MODEL/config.json: task sst2's labels are \\['negative', 'positive'\\] in this order \\(class 0 first\\), " +
    "the 'dact' section says \\['bad', 'good'\\]"],
  ["a task that is a number", (parts) => { parts.config.dact.task = 2; }, "MODEL/config.json: the 'dact' section's task must be a string"]];
for (const [what, broken, message] of CHECKPOINTS) {
  test(`a checkpoint with ${what} is refused, by classify.js and by the library`, () => {
    const dir = checkpoint(broken), words = message.replaceAll("MODEL", esc(dir));
    refused(["--model", dir, "good"], words);
    libraryRefuses(dir, words);
  });
}

const header = (json) => () => {
  const bytes = new TextEncoder().encode(json), out = new Uint8Array(8 + bytes.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(bytes.length), true);
  out.set(bytes, 8);
  return out;
};
const FILES = [
  ["no model.safetensors", { "model.safetensors": null }, "MODEL is not a complete tinydact checkpoint: it has no model.safetensors"],
  ["no config.json nor vocab.txt", { "config.json": null, "vocab.txt": null },
    "MODEL is not a complete tinydact checkpoint: it has no config.json, vocab.txt"],
  ["a safetensors header that is not JSON", { "model.safetensors": header("{not json") },
    "not a valid safetensors file: MODEL/model.safetensors \\(the header is not UTF-8 JSON: .*\\)"],
  ["a safetensors header that is a list", { "model.safetensors": header("[1, 2]") },
    "not a valid safetensors file: MODEL/model.safetensors \\(the header is not a JSON object\\)"],
  ["a safetensors header without offsets", { "model.safetensors": header('{"a": {"dtype": "F32", "shape": [1]}}') },
    "not a valid safetensors file: MODEL/model.safetensors \\(a: shape and data_offsets must be lists of non-negative integers\\)"],
  ["a safetensors file cut short", { "model.safetensors": () => new Uint8Array([200, 0, 0, 0, 0, 0, 0, 0, 123]) },
    "not a valid safetensors file: MODEL/model.safetensors \\(the header runs past the end\\)"],
  ["a safetensors file of 3 bytes", { "model.safetensors": () => "abc" },
    "not a valid safetensors file: MODEL/model.safetensors \\(shorter than 8 bytes\\)"],
  ["a config.json that is not JSON", { "config.json": () => "{" }, "config file is not valid JSON: MODEL/config.json \\(.*\\)"],
  ["a config.json that is a list", { "config.json": () => "[]" }, "config file does not hold a JSON object: MODEL/config.json"],
  ["a tokenizer_config.json that is not JSON", { "tokenizer_config.json": () => "{" },
    "tokenizer config is not valid JSON: MODEL/tokenizer_config.json \\(.*\\)"],
  ["a vocab.txt that is not UTF-8", { "vocab.txt": () => Buffer.from([0x5b, 0x50, 0xff, 0x0a]) },
    "vocabulary is not UTF-8 text: MODEL/vocab.txt \\(.*\\)"]];
for (const [what, files, message] of FILES) {
  test(`classify.js refuses a checkpoint folder with ${what}`, () => {
    const dir = checkpoint(() => files);
    refused(["--model", dir, "good"], message.replaceAll("MODEL", esc(dir)));
  });
}

// what an older or a plainer checkpoint may be, and still load
const ACCEPTED = [
  ["no vocab_sha256 (saved before fingerprints)", (parts) => { delete parts.config.dact.vocab_sha256; }],
  ["no added_tokens_decoder (saved before ids were recorded)", (parts) => { delete parts.tokenizerConfig.added_tokens_decoder; }],
  ["no task, labels in any order", (parts) => { delete parts.config.dact.task; parts.config.dact.labels.reverse(); }],
  ["a plain task, labels in any order", (parts) => { parts.config.dact.task = "plain"; parts.config.dact.labels = ["yes", "no"]; }],
  ["the keys bert.py skips", (parts) => {
    Object.assign(parts.tensors, { "embeddings.position_ids": [[16], new BigInt64Array(16)],
      "bert.embeddings.position_ids": [[16], new BigInt64Array(16)], "cls.predictions.bias": [[VOCAB.length], new Float32Array(VOCAB.length)] });
  }]];
for (const [what, change] of ACCEPTED) {
  test(`a checkpoint with ${what} loads, by classify.js and by the library`, () => {
    const dir = checkpoint(change);
    const r = classify("--model", dir, "--json", "a good film");
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).label, DACTBert.fromFiles(filesOf(dir)).classify("a good film").label);
  });
}

test("the library needs the vocabulary's digest to check a fingerprint, and never skips the check", () => {
  const dir = checkpoint();
  assert.throws(() => DACTBert.fromFiles({ ...filesOf(dir), vocabSha256: null }), (e) => e instanceof TypeError && /pass vocabSha256/.test(e.message));
  assert.equal(DACTBert.fromFiles(filesOf(dir)).labels.join(), "negative,positive");
});

test("the library refuses what the command line refuses, with the same words", () => {
  const model = DACTBert.fromFiles(filesOf(checkpoint(), ""));
  const refuses = (f, message) => assert.throws(f, (e) => e instanceof TinydactError && e.message === message);
  for (const text of ["", "   ", "\u200b", "\x00\x01\u2060"]) refuses(() => model.classify(text), "text 1 is empty (nothing to read)");
  refuses(() => model.classify("good", { pair: " " }), "text 1 has an empty sentence");
  refuses(() => model.classify("good \ud800"), "text 1 is not valid UTF-8 text");
  refuses(() => model.classify(123), "text 1 is neither a text nor a (text_a, text_b) pair of texts");
  refuses(() => model.classify(null), "text 1 is neither a text nor a (text_a, text_b) pair of texts");
  refuses(() => model.classify("good", { pair: ["x"] }), "text 1 is neither a text nor a (text_a, text_b) pair of texts");
  refuses(() => model.classify("good", { rule: "loose" }), "the halting rule must be one of paper, tight, got 'loose'");
  refuses(() => model.classify("good", { index: 7, rule: "loose" }), "the halting rule must be one of paper, tight, got 'loose'");
  refuses(() => model.classify("", { index: 7 }), "text 7 is empty (nothing to read)");
  assert.equal(model.classify(" good film ").tokens.join(" "), "[CLS] good film [SEP]");
  // weights that are finite but overflow: the answer is NaN, refused rather than printed as null
  model.heads[0].answer[1].fill(Infinity);
  refuses(() => model.classify("good"), "the model's answer is not a finite number (NaN or infinity) for text 1");
});

test("fromUrl (the browser's way in) checks the fingerprint with crypto.subtle, with the same words", async () => {
  const good = checkpoint(), swapped = checkpoint((parts) => { parts.vocab.splice(5, 2, "bad", "good"); });
  assert.equal(await sha256Hex(readFileSync(join(good, "vocab.txt"))), SHA256);
  const server = createServer((request, response) => { // the checkpoint folders under temp, by URL
    try {
      response.end(readFileSync(join(temp, decodeURIComponent(new URL(request.url, "http://x").pathname))));
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise((done) => server.listen(0, "127.0.0.1", done));
  const base = (dir) => `http://127.0.0.1:${server.address().port}/${dir.slice(temp.length + 1)}/`;
  try {
    assert.equal((await DACTBert.fromUrl(base(good))).classify("a good film").label,
      DACTBert.fromFiles(filesOf(good)).classify("a good film").label);
    await assert.rejects(DACTBert.fromUrl(base(swapped)), (e) => e instanceof TinydactError &&
      e.message === `${base(swapped)}vocab.txt is not the vocabulary this model was saved with (its sha256 differs from ` +
      "config.json's dact.vocab_sha256): token ids would not match; restore the original file");
  } finally {
    server.close();
  }
});
