// The BERT encoder in plain JavaScript, float32 (Float32Array), one sequence at a time: a port
// of tinydact/bert.py. Written for reading, not speed: matrix-vector loops.
//
// Shapes: T tokens, H hidden size, nh heads of hs = H / nh values, I intermediate size.
// A sequence of states is one Float32Array of T·H numbers, row t = token t.
// Weights keep PyTorch's nn.Linear layout [out, in]: y[o] = b[o] + Σ_i W[o·in + i] · x[i].
// Sums are accumulated in JavaScript numbers (float64) and stored as float32.
//
// Three details break parity with the official weights when missed (as in bert.py):
// (1) post-LayerNorm, x = LN(x + attn(x)) then x = LN(x + mlp(x)); (2) GELU with the exact
// erf; (3) LayerNorm eps 1e-12 (from config.json) with the biased variance.

import { TinydactError, repr } from "./errors.js";
import { DTYPES, FLOAT_DTYPES } from "./safetensors.js";

/** erf(x) to about 1e-15 (JavaScript has no Math.erf). For |x| < 6 the series
 *   erf(x) = 2/√π · e^(−x²) · Σ_{k≥0} 2^k x^(2k+1) / (1·3·…·(2k+1)),
 * whose terms are all positive (no cancellation); beyond, erf(x) = ±1 in float64. */
export function erf(x) {
  const ax = Math.abs(x);
  if (ax >= 6) return Math.sign(x);
  let term = ax, sum = ax;
  for (let k = 1; term > 1e-17 * sum; k++) {
    term *= (2 * ax * ax) / (2 * k + 1);
    sum += term;
  }
  return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * Math.exp(-ax * ax) * sum;
}

/** Exact GELU: x · Φ(x) = x · (1 + erf(x / √2)) / 2. */
export function gelu(x) {
  return 0.5 * x * (1 + erf(x / Math.SQRT2));
}

/** y = x Wᵀ + b for `rows` rows of x: x (rows·nIn), W [nOut, nIn], b (nOut) -> (rows·nOut). */
export function linear(x, rows, W, b, nIn, nOut) {
  const y = new Float32Array(rows * nOut);
  for (let t = 0; t < rows; t++) {
    const xt = t * nIn;
    for (let o = 0; o < nOut; o++) {
      const wo = o * nIn;
      let s = b[o];
      for (let i = 0; i < nIn; i++) s += W[wo + i] * x[xt + i];
      y[t * nOut + o] = s;
    }
  }
  return y;
}

/** LayerNorm of each row of x (rows·H), in place: (x − mean) / √(var + eps) · g + b, with the
 * biased variance (divided by H, not H − 1). */
function layerNorm(x, rows, H, g, b, eps) {
  for (let t = 0; t < rows; t++) {
    const r = t * H;
    let mean = 0, variance = 0;
    for (let i = 0; i < H; i++) mean += x[r + i];
    mean /= H;
    for (let i = 0; i < H; i++) variance += (x[r + i] - mean) ** 2;
    const scale = 1 / Math.sqrt(variance / H + eps);
    for (let i = 0; i < H; i++) x[r + i] = (x[r + i] - mean) * scale * g[i] + b[i];
  }
  return x;
}

/** BertConfig's fields and defaults (bert-base-uncased's), as in tinydact/bert.py. */
const DEFAULTS = {
  vocab_size: 30522, hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, intermediate_size: 3072,
  max_position_embeddings: 512, type_vocab_size: 2, layer_norm_eps: 1e-12, hidden_dropout_prob: 0.1,
  attention_probs_dropout_prob: 0.1, pad_token_id: 0,
};
const FLOATS = ["layer_norm_eps", "hidden_dropout_prob", "attention_probs_dropout_prob"];

/** The fields of a parsed config.json, with their defaults, checked as BertConfig.from_dict
 * checks them: a variant not implemented here, or a size that is not a count, is an error. */
export function readConfig(d) {
  const act = d.hidden_act ?? "gelu", pos = d.position_embedding_type ?? "absolute";
  if (act !== "gelu") throw new TinydactError(`unsupported hidden_act ${repr(act)}: tinydact implements BERT's exact 'gelu'`);
  if (pos !== "absolute") throw new TinydactError(`unsupported position_embedding_type ${repr(pos)}: only 'absolute' is implemented`);
  const cfg = { ...DEFAULTS };
  for (const k of Object.keys(DEFAULTS)) {
    if (!(k in d)) continue;
    const v = d[k], float = FLOATS.includes(k);
    if (!(typeof v === "number" && Number.isFinite(v) && v >= 0 && (float || Number.isInteger(v)))) {
      throw new TinydactError(`config field ${repr(k)} must be a non-negative ${float ? "number" : "integer"}, got ${repr(v)}`);
    }
    cfg[k] = v;
  }
  const sizes = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "type_vocab_size"];
  if (Math.min(...sizes.map((k) => cfg[k])) < 1) {
    throw new TinydactError("config sizes (vocab_size, hidden_size, num_hidden_layers, ...) must be at least 1");
  }
  if (cfg.hidden_size % cfg.num_attention_heads) {
    throw new TinydactError(`hidden_size ${cfg.hidden_size} is not divisible by num_attention_heads ${cfg.num_attention_heads}`);
  }
  return cfg;
}

/** A checkpoint tensor of an expected shape and a floating-point dtype, with bert.py's words
 * (copy_exactly's) for a missing key, a wrong shape or integers where the model has floats;
 * `source` names the file. Each name asked for is added to `used`. */
export function getter(tensors, source, used = new Set()) {
  return (name, shape) => {
    const t = tensors.get(name);
    if (!t) throw new TinydactError(`${source}: missing key ${repr(name)}`);
    if (t.shape.join() !== shape.join()) {
      throw new TinydactError(`${source}: key ${repr(name)} has shape (${t.shape}), the model expects (${shape})`);
    }
    if (!FLOAT_DTYPES.includes(t.dtype)) { // the reader gives float32 values, which would hide int8 weights
      throw new TinydactError(`${source}: key ${repr(name)} holds ${DTYPES[t.dtype][1]} values, the model's ` +
        "weights are floating-point (a quantized checkpoint? save it in float32, float16 or bfloat16)");
    }
    used.add(name);
    return t.data;
  };
}

// Keys of official checkpoints that are not the encoder's, skipped as bert.py skips them (after
// removing the "bert." prefix of pre-training checkpoints): the pre-training heads and a buffer.
const IGNORED_PREFIXES = ["cls."], IGNORED_KEYS = ["embeddings.position_ids"];

/** Every key of `tensors` must be one the model read (`used`) or one bert.py ignores: an
 * unexpected key is an error, as in load_bert_weights (a checkpoint of another shape of model
 * must not load with some of its tensors left out). */
export function checkUnexpected(tensors, used, source, hint = "") {
  for (const key of tensors.keys()) {
    const name = key.replace(/^bert\./, "");
    if (used.has(key) || IGNORED_KEYS.includes(name) || IGNORED_PREFIXES.some((p) => name.startsWith(p))) continue;
    throw new TinydactError(`${source}: unexpected key ${repr(key)}${hint}`);
  }
}

export class Bert {
  /** config: a parsed config.json (Hugging Face keys); tensors: a Map name -> { dtype, shape,
   * data } holding Hugging Face BertModel names (embeddings.*, encoder.layer.{i}.*, pooler.*),
   * and no other (see checkUnexpected); source: the weights file, as error messages name it. */
  constructor(config, tensors, source = "model.safetensors") {
    const cfg = readConfig(config);
    this.H = cfg.hidden_size;
    this.nh = cfg.num_attention_heads;
    this.hs = this.H / this.nh;
    this.I = cfg.intermediate_size;
    this.N = cfg.num_hidden_layers;
    this.V = cfg.vocab_size;
    this.padTokenId = cfg.pad_token_id;
    this.maxPositions = cfg.max_position_embeddings;
    this.eps = cfg.layer_norm_eps;
    const H = this.H, I = this.I, used = new Set(), get = getter(tensors, source, used);
    this.word = get("embeddings.word_embeddings.weight", [this.V, H]);
    this.position = get("embeddings.position_embeddings.weight", [this.maxPositions, H]);
    this.tokenType = get("embeddings.token_type_embeddings.weight", [cfg.type_vocab_size, H]);
    this.embLN = [get("embeddings.LayerNorm.weight", [H]), get("embeddings.LayerNorm.bias", [H])];
    this.blocks = [];
    for (let i = 0; i < this.N; i++) {
      const p = `encoder.layer.${i}.`;
      const lin = (name, nOut, nIn) => [get(`${p}${name}.weight`, [nOut, nIn]), get(`${p}${name}.bias`, [nOut])];
      const ln = (name) => [get(`${p}${name}.weight`, [H]), get(`${p}${name}.bias`, [H])];
      this.blocks.push({
        query: lin("attention.self.query", H, H), key: lin("attention.self.key", H, H),
        value: lin("attention.self.value", H, H), out: lin("attention.output.dense", H, H),
        ln1: ln("attention.output.LayerNorm"), fc: lin("intermediate.dense", I, H),
        proj: lin("output.dense", H, I), ln2: ln("output.LayerNorm"),
      });
    }
    get("pooler.dense.weight", [H, H]), get("pooler.dense.bias", [H]); // checked as bert.py does, unused
    checkUnexpected(tensors, used, source, " (not part of a BERT encoder)");
  }

  /** Token + position + token-type embeddings, summed, then LayerNorm: (T·H). Position ids
   * are 0..T−1; token types 0 for the first sentence, 1 for the second. */
  embed(inputIds, tokenTypeIds) {
    const T = inputIds.length, H = this.H;
    if (T > this.maxPositions) throw new TinydactError(`input has ${T} tokens; this model takes at most ${this.maxPositions}`);
    const x = new Float32Array(T * H);
    for (let t = 0; t < T; t++) {
      if (!(inputIds[t] >= 0 && inputIds[t] < this.V)) throw new TinydactError(`token id ${inputIds[t]} is outside the vocabulary`);
      const w = inputIds[t] * H, pos = t * H, type = (tokenTypeIds ? tokenTypeIds[t] : 0) * H;
      for (let i = 0; i < H; i++) x[t * H + i] = this.word[w + i] + this.position[pos + i] + this.tokenType[type + i];
    }
    return layerNorm(x, T, H, ...this.embLN, this.eps);
  }

  /** Multi-head self-attention over x (T·H): softmax(Q Kᵀ / √hs) V per head, then the output
   * projection. mask[j] = 0 marks a padded key: it gets weight exactly 0 (it is skipped). */
  attention(b, x, T, mask) {
    const { H, nh, hs } = this;
    const q = linear(x, T, ...b.query, H, H), k = linear(x, T, ...b.key, H, H), v = linear(x, T, ...b.value, H, H);
    const y = new Float32Array(T * H);
    const scale = 1 / Math.sqrt(hs);
    const weights = new Float64Array(T);
    for (let head = 0; head < nh; head++) {
      const c = head * hs; // head `head` holds columns c .. c + hs − 1 of Q, K and V
      for (let i = 0; i < T; i++) {
        let max = -Infinity;
        for (let j = 0; j < T; j++) {
          if (mask && !mask[j]) continue;
          let s = 0;
          for (let d = 0; d < hs; d++) s += q[i * H + c + d] * k[j * H + c + d];
          weights[j] = s * scale;
          if (weights[j] > max) max = weights[j];
        }
        let total = 0;
        for (let j = 0; j < T; j++) {
          weights[j] = mask && !mask[j] ? 0 : Math.exp(weights[j] - max); // softmax, padded keys 0
          total += weights[j];
        }
        for (let d = 0; d < hs; d++) {
          let s = 0;
          for (let j = 0; j < T; j++) s += weights[j] * v[j * H + c + d];
          y[i * H + c + d] = s / total;
        }
      }
    }
    return linear(y, T, ...b.out, H, H);
  }

  /** Block n (0-based) on x (T·H): post-LayerNorm attention and MLP, returns the new (T·H). */
  block(n, x, mask) {
    const b = this.blocks[n], T = x.length / this.H, H = this.H, I = this.I;
    const a = this.attention(b, x, T, mask);
    for (let i = 0; i < a.length; i++) a[i] += x[i]; // residual
    layerNorm(a, T, H, ...b.ln1, this.eps); // (1) LayerNorm after the residual sum
    const h = linear(a, T, ...b.fc, H, I);
    for (let i = 0; i < h.length; i++) h[i] = gelu(h[i]); // (2) exact GELU
    const y = linear(h, T, ...b.proj, I, H);
    for (let i = 0; i < y.length; i++) y[i] += a[i];
    return layerNorm(y, T, H, ...b.ln2, this.eps);
  }
}
