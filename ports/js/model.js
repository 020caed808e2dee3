// DACT-BERT in plain JavaScript: the BERT encoder, one DACT module after every block, and the
// per-example early exit (a port of DACTBert in tinydact/model.py, one text at a time).
//
// After block n the module reads the block's [CLS] state x (position 0; the pooler is unused):
//   z = ReLU(W1 x + b1),  y_n = softmax(W_y z + b_y),  h_n = sigmoid(w_h z + b_h)
// (checkpoint keys dact_heads.{n-1}.{dense,answer,halt}.{weight,bias}), then the recursion
// updates a_n and p_n, and the text stops as soon as the halting test passes: the blocks
// after it are never run. The answer is a_n at the exit; labels come from config.json.

import { Bert, checkUnexpected, getter, linear, readConfig } from "./bert.js";
import { argmax, haltingBounds, update } from "./dact.js";
import { TinydactError, repr } from "./errors.js";
import { parseSafetensors } from "./safetensors.js";
import { Tokenizer } from "./tokenizer.js";

const HEAD_PREFIX = "dact_heads."; // checkpoint keys of the DACT heads; the backbone keeps HF names

/** The label names of the tasks of known format, class 0 first (tinydact/data.py's FORMATS): the
 * file says 0 and 1, only this order gives them meaning. Other tasks ("plain") are not checked. */
const TASK_LABELS = {
  sst2: ["negative", "positive"], cola: ["unacceptable", "acceptable"], rte: ["entailment", "not_entailment"],
  qnli: ["entailment", "not_entailment"], mrpc: ["not_equivalent", "equivalent"], qqp: ["not_duplicate", "duplicate"],
  mnli: ["contradiction", "entailment", "neutral"],
};

export class DACTBert {
  /** config: the parsed config.json (with its "dact" section); tensors: Map name -> { shape,
   * data }; tokenizer: a Tokenizer for the checkpoint's vocab.txt; path: the checkpoint
   * folder, as error messages name it. Checked as tinydact/checkpoint.py's load_checkpoint
   * checks: the labels (a known task's in its order), every tensor finite and floating-point,
   * no tensor unexpected, the vocabulary the size of the embedding. (The vocabulary's
   * fingerprint is checked by fromFiles, which has the file's digest.) */
  constructor(config, tensors, tokenizer, path = "") {
    const where = (file) => (path ? `${path}/${file}` : file), source = where("model.safetensors");
    if (typeof config !== "object" || config === null || Array.isArray(config)) {
      throw new TinydactError(`config file does not hold a JSON object: ${where("config.json")}`);
    }
    const dact = config.dact;
    if (typeof dact !== "object" || dact === null || !Object.keys(dact).length) {
      throw new TinydactError(`${path || "the checkpoint"} is a plain BERT checkpoint, not a DACT-BERT one (no 'dact' section in config.json)`);
    }
    const labels = checkLabels(dact, where("config.json"));
    // checkpoints without the key read [CLS]; tinydact's "mean" is not ported
    if ((dact.head_input ?? "cls") !== "cls") {
      throw new TinydactError(`${where("config.json")}: head_input ${repr(dact.head_input)} is not implemented in this port (only 'cls')`);
    }
    readConfig(config); // the config's own errors first, as in Python
    for (const [name, t] of tensors) {
      if (!allFinite(t.data)) {
        throw new TinydactError(`${source}: tensor ${repr(name)} holds values that are not finite numbers (a diverged training?)`);
      }
    }
    this.bert = new Bert(config, new Map([...tensors].filter(([name]) => !name.startsWith(HEAD_PREFIX))), source);
    tokenizer.checkFits(this.bert.V, this.bert.padTokenId, path || "checkpoint");
    this.labels = labels;
    this.K = labels.length;
    this.N = this.bert.N;
    this.tokenizer = tokenizer;
    this.maxLength = Math.min(tokenizer.maxLength, this.bert.maxPositions);
    const H = this.bert.H, K = this.K, used = new Set(), get = getter(tensors, source, used);
    this.heads = [];
    for (let i = 0; i < this.N; i++) {
      const p = `${HEAD_PREFIX}${i}.`; // block i + 1, 0-based in the checkpoint
      this.heads.push({
        dense: [get(p + "dense.weight", [H, H]), get(p + "dense.bias", [H])],
        answer: [get(p + "answer.weight", [K, H]), get(p + "answer.bias", [K])],
        halt: [get(p + "halt.weight", [1, H]), get(p + "halt.bias", [1])],
      });
    }
    checkUnexpected(new Map([...tensors].filter(([name]) => name.startsWith(HEAD_PREFIX))), used, source);
  }

  /** From the bytes of model.safetensors (an ArrayBuffer), config.json (parsed), the text
   * of vocab.txt, the sha256 of vocab.txt's bytes in hex (vocabSha256: needed when config.json
   * records one, see sha256Hex) and tokenizer_config.json (parsed, optional); `path` names the
   * folder in error messages. */
  static fromFiles({ safetensors, config, vocab, vocabSha256 = null, tokenizerConfig = {}, path = "" }) {
    const where = (file) => (path ? `${path}/${file}` : file);
    const tensors = parseSafetensors(safetensors, where("model.safetensors")).tensors;
    const tokenizer = Tokenizer.fromFiles(vocab, tokenizerConfig, where("tokenizer_config.json"), where("vocab.txt"));
    const model = new DACTBert(config, tensors, tokenizer, path);
    checkVocab(config.dact.vocab_sha256, vocabSha256, where);
    return model;
  }

  /** Fetch a checkpoint directory (a URL ending in "/") and build the model. */
  static async fromUrl(base) {
    const get = async (name, optional = false) => {
      const response = await fetch(new URL(name, base));
      if (optional && response.status === 404) return null;
      if (!response.ok) throw new TinydactError(`cannot fetch ${name} from ${base}: HTTP ${response.status}`);
      return response;
    };
    const json = async (name, what, optional = false) => {
      const response = await get(name, optional);
      if (response === null) return {};
      const text = await response.text();
      try {
        return JSON.parse(text);
      } catch (e) {
        throw new TinydactError(`${what} is not valid JSON: ${new URL(name, base)} (${e.message})`);
      }
    };
    const [safetensors, config, vocab, tokenizerConfig] = await Promise.all([
      get("model.safetensors").then((r) => r.arrayBuffer()), json("config.json", "config file"),
      get("vocab.txt").then((r) => r.arrayBuffer()), json("tokenizer_config.json", "tokenizer config", true)]);
    const vocabSha256 = config?.dact?.vocab_sha256 == null ? null : await sha256Hex(vocab); // only digest what is checked
    return DACTBert.fromFiles({ safetensors, config, vocab: vocabText(vocab, new URL("vocab.txt", base)), vocabSha256,
      tokenizerConfig, path: String(base).replace(/\/$/, "") });
  }

  /** DACT module n (1-based) on a [CLS] state x (H): { y: y_n (K numbers), h: h_n }. */
  head(n, x) {
    const { dense, answer, halt } = this.heads[n - 1], H = this.bert.H;
    const z = linear(x, 1, ...dense, H, H).map((v) => Math.max(v, 0)); // ReLU
    const logits = Array.from(linear(z, 1, ...answer, H, this.K));
    const max = Math.max(...logits);
    const e = logits.map((l) => Math.exp(l - max));
    const total = e.reduce((s, v) => s + v, 0);
    const haltLogit = linear(z, 1, ...halt, H, 1)[0];
    return { y: e.map((v) => v / total), h: 1 / (1 + Math.exp(-haltLogit)) };
  }

  /** Run encoded ids block by block. With halt, stop after the first block whose halting test
   * passes under `rule`; without, run all N. Returns { label (index), probs (a_n at the exit),
   * blocks, steps, cls } with one step per block run (n, d, y, h, p, a, lower, upper, passes,
   * stop) and cls the [CLS] state after the embeddings and after each block run. */
  run(inputIds, { tokenTypeIds = null, attentionMask = null, rule = "paper", halt = true, onBlock = null } = {}) {
    const { N, bert } = this;
    let x = bert.embed(inputIds, tokenTypeIds);
    const cls = [x.slice(0, bert.H)];
    let a = new Array(this.K).fill(0), p = 1; // a_0 = 0, p_0 = 1
    const steps = [];
    for (let n = 1; n <= N; n++) {
      x = bert.block(n - 1, x, attentionMask);
      cls.push(x.slice(0, bert.H)); // position 0: the [CLS] state
      const { y, h } = this.head(n, cls[n]);
      ({ a, p } = update(a, p, y, h));
      const d = N - n;
      const { lower, upper, passes } = haltingBounds(a, p, d, rule);
      const stop = d === 0 || this.K === 1 || (halt && passes);
      steps.push({ n, d, y, h, p, a, lower, upper, passes, stop });
      if (onBlock) onBlock(steps[steps.length - 1]);
      if (stop) break;
    }
    const probs = steps[steps.length - 1].a;
    return { label: argmax(probs), probs, blocks: steps.length, steps, cls };
  }

  /** Classify a text (or a pair): { label, confidence, probs, blocks, num_blocks, steps,
   * tokens, truncated }, the fields of tinydact's result dicts. A text with nothing to read,
   * an unknown rule or an answer that is not a finite number is a TinydactError, as in
   * tinydact/api.py; `index` numbers the text in those messages. */
  classify(text, { pair = null, rule = "paper", halt = true, onBlock = null, index = 1 } = {}) {
    [text, pair] = checkInput(text, pair, index);
    const enc = this.tokenizer.encode(text, pair, this.maxLength);
    const r = this.run(enc.inputIds, { tokenTypeIds: enc.tokenTypeIds, rule, halt, onBlock });
    if (!r.probs.every(Number.isFinite)) {
      throw new TinydactError(`the model's answer is not a finite number (NaN or infinity) for text ${index}`);
    }
    return {
      label: this.labels[r.label], confidence: r.probs[r.label],
      probs: Object.fromEntries(this.labels.map((name, k) => [name, r.probs[k]])),
      blocks: r.blocks, num_blocks: this.N, steps: r.steps, tokens: enc.tokens, truncated: enc.truncated,
    };
  }
}

/** The label names of config.json's `dact` section (tinydact/checkpoint.py's check_labels):
 * distinct, as many as num_labels, and for a task of known format its names in its order
 * (swapped names would flip every answer). `file` names config.json in messages. */
function checkLabels(dact, file) {
  const labels = dact.labels;
  if (!Array.isArray(labels) || labels.length !== dact.num_labels || labels.length < 2 ||
      !labels.every((x) => typeof x === "string" && x) || new Set(labels).size !== labels.length) {
    throw new TinydactError(`${file}: the 'dact' section needs num_labels >= 2 and as many distinct label names`);
  }
  const task = dact.task ?? null;
  if (task !== null && typeof task !== "string") throw new TinydactError(`${file}: the 'dact' section's task must be a string`);
  const names = Object.hasOwn(TASK_LABELS, task) ? TASK_LABELS[task] : null;
  if (names !== null && (labels.length !== names.length || labels.some((x, k) => x !== names[k]))) {
    throw new TinydactError(`${file}: task ${task}'s labels are ${pyList(names)} in this order (class 0 first), ` +
      `the 'dact' section says ${pyList(labels)}`);
  }
  return labels;
}

const pyList = (xs) => `[${xs.map(repr).join(", ")}]`; // as Python prints a list of strings

/** The sha256 of some bytes (an ArrayBuffer or Uint8Array) in hex, what `sha256sum` prints,
 * with the Web Crypto API (browsers, and Node 20 as globalThis.crypto). Browsers offer it only
 * to pages of a secure origin: elsewhere a fingerprint cannot be checked, and the model is refused. */
export async function sha256Hex(bytes) {
  if (!globalThis.crypto?.subtle) {
    throw new TinydactError("cannot check the vocabulary's sha256 (config.json's dact.vocab_sha256): this browser offers " +
      "crypto.subtle only to pages served over https:// or from localhost");
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** vocab.txt must be the file the model was saved with (tinydact/checkpoint.py's check_vocab):
 * a line added, removed or changed keeps its length but shifts token ids. `fingerprint`:
 * config.json's dact.vocab_sha256 (none in an older checkpoint: not checked); `sha256`: the
 * digest of the vocab.txt at hand. */
function checkVocab(fingerprint, sha256, where) {
  if (fingerprint == null) return;
  if (typeof fingerprint !== "string" || fingerprint.length !== 64) {
    throw new TinydactError(`${where("config.json")}: the 'dact' section's vocab_sha256 must be a sha256 in hex`);
  }
  if (typeof sha256 !== "string") {
    throw new TypeError("this checkpoint records its vocabulary's sha256: pass vocabSha256, the sha256 of vocab.txt's bytes in hex");
  }
  if (sha256 !== fingerprint) {
    throw new TinydactError(`${where("vocab.txt")} is not the vocabulary this model was saved with (its sha256 differs ` +
      "from config.json's dact.vocab_sha256): token ids would not match; restore the original file");
  }
}

/** Whether every number of an array is finite (a plain loop: `every` is slow on 22M values). */
function allFinite(data) {
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) return false;
  return true;
}

/** Whether a text has something to read: a letter, digit, symbol or punctuation mark, not only
 * spaces, control or zero-width characters (which the tokenizer drops); tinydact/data.py's,
 * except that U+FFFD is not a symbol here: the tokenizer drops it too, and Node turns bytes of
 * the command line that are not UTF-8 into it. */
export const readable = (text) => /[\p{L}\p{N}\p{S}\p{P}]/u.test(text.replaceAll("\ufffd", ""));

/** [text, pair] stripped, or the TinydactError tinydact/api.py's check_input raises: text `i`
 * must be a string (pair a string or null), valid UTF-16 (no lone surrogate, which is what
 * undecodable bytes become), and readable. */
export function checkInput(text, pair, i) {
  if (typeof text !== "string" || !(pair === null || typeof pair === "string")) {
    throw new TinydactError(`text ${i} is neither a text nor a (text_a, text_b) pair of texts`);
  }
  const both = pair === null ? [text] : [text, pair];
  if (both.some((t) => /\p{Cs}/u.test(t))) throw new TinydactError(`text ${i} is not valid UTF-8 text`);
  if (!both.every(readable)) throw new TinydactError(pair === null ? `text ${i} is empty (nothing to read)` : `text ${i} has an empty sentence`);
  return [text.trim(), pair === null ? null : pair.trim()];
}

/** The bytes of vocab.txt (an ArrayBuffer or Uint8Array) as text, refused when not UTF-8. */
export function vocabText(bytes, file) {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (e) {
    throw new TinydactError(`vocabulary is not UTF-8 text: ${file} (${e.message})`);
  }
}
