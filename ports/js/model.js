// DACT-BERT in plain JavaScript: the BERT encoder, one DACT module after every block, and the
// per-example early exit (a port of DACTBert in tinydact/model.py, one text at a time).
//
// After block n the module reads the block's [CLS] state x (position 0; the pooler is unused):
//   z = ReLU(W1 x + b1),  y_n = softmax(W_y z + b_y),  h_n = sigmoid(w_h z + b_h)
// (checkpoint keys dact_heads.{n-1}.{dense,answer,halt}.{weight,bias}), then the recursion
// updates a_n and p_n, and the text stops as soon as the halting test passes: the blocks
// after it are never run. The answer is a_n at the exit; labels come from config.json.

import { Bert, linear } from "./bert.js";
import { argmax, haltingBounds, update } from "./dact.js";
import { parseSafetensors } from "./safetensors.js";
import { Tokenizer } from "./tokenizer.js";

export class DACTBert {
  /** config: the parsed config.json (with its "dact" section); tensors: Map name -> { shape,
   * data }; tokenizer: a Tokenizer for the checkpoint's vocab.txt. */
  constructor(config, tensors, tokenizer) {
    const dact = config.dact;
    if (!dact || !Array.isArray(dact.labels)) throw new Error("config.json has no 'dact' section: not a DACT-BERT checkpoint");
    if (dact.labels.length < 2) throw new Error("the 'dact' section needs at least 2 labels");
    if ((dact.head_input ?? "cls") !== "cls") throw new Error(`head_input ${dact.head_input} is not implemented here (only "cls")`);
    this.bert = new Bert(config, tensors);
    this.labels = dact.labels;
    this.K = dact.labels.length;
    this.N = this.bert.N;
    this.tokenizer = tokenizer;
    this.maxLength = Math.min(tokenizer.maxLength, config.max_position_embeddings);
    const H = this.bert.H, K = this.K;
    const get = (name, shape) => {
      const t = tensors.get(name);
      if (!t || t.shape.join() !== shape.join()) throw new Error(`missing tensor ${name} of shape [${shape}]`);
      return t.data;
    };
    this.heads = [];
    for (let i = 0; i < this.N; i++) {
      const p = `dact_heads.${i}.`; // block i + 1, 0-based in the checkpoint
      this.heads.push({
        dense: [get(p + "dense.weight", [H, H]), get(p + "dense.bias", [H])],
        answer: [get(p + "answer.weight", [K, H]), get(p + "answer.bias", [K])],
        halt: [get(p + "halt.weight", [1, H]), get(p + "halt.bias", [1])],
      });
    }
  }

  /** From the bytes of model.safetensors (an ArrayBuffer), config.json (parsed), the text
   * of vocab.txt and tokenizer_config.json (parsed, optional). */
  static fromFiles({ safetensors, config, vocab, tokenizerConfig = {} }) {
    return new DACTBert(config, parseSafetensors(safetensors).tensors, Tokenizer.fromFiles(vocab, tokenizerConfig));
  }

  /** Fetch a checkpoint directory (a URL ending in "/") and build the model. */
  static async fromUrl(base) {
    const get = async (name) => {
      const response = await fetch(new URL(name, base));
      if (!response.ok) throw new Error(`cannot fetch ${name} from ${base}: HTTP ${response.status}`);
      return response;
    };
    const [safetensors, config, vocab] = await Promise.all([
      get("model.safetensors").then((r) => r.arrayBuffer()), get("config.json").then((r) => r.json()),
      get("vocab.txt").then((r) => r.text())]);
    const tokenizerConfig = await get("tokenizer_config.json").then((r) => r.json()).catch(() => ({}));
    return DACTBert.fromFiles({ safetensors, config, vocab, tokenizerConfig });
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
   * tokens, truncated }, the fields of tinydact's result dicts. */
  classify(text, { pair = null, rule = "paper", halt = true, onBlock = null } = {}) {
    const enc = this.tokenizer.encode(text.trim(), pair === null ? null : pair.trim(), this.maxLength);
    const r = this.run(enc.inputIds, { tokenTypeIds: enc.tokenTypeIds, rule, halt, onBlock });
    return {
      label: this.labels[r.label], confidence: r.probs[r.label],
      probs: Object.fromEntries(this.labels.map((name, k) => [name, r.probs[k]])),
      blocks: r.blocks, num_blocks: this.N, steps: r.steps, tokens: enc.tokens, truncated: enc.truncated,
    };
  }
}
