// Reading a .safetensors file (https://github.com/huggingface/safetensors), in plain JavaScript.
//
// Layout: 8 bytes, the header's length n as a little-endian unsigned 64-bit integer; n bytes of
// UTF-8 JSON, {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}; then
// the raw data. Offsets count from the first byte after the header; values are little-endian,
// row-major (C order). Every tensor is returned as float32, whatever its stored dtype.

import { TinydactError } from "./errors.js";

/** A float16 number, given as its 16 bits, as a JavaScript number (exactly). */
export function halfToFloat(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f; // 5 bits, bias 15
  const fraction = bits & 0x3ff; // 10 bits
  if (exponent === 0) return sign * fraction * 2 ** -24; // zero and subnormals: fraction · 2^-14 / 1024
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

let HALF_TABLE = null; // all 65536 float16 values, built on first use

/** A bfloat16 number (the top 16 bits of a float32) as a JavaScript number. */
function bfloatToFloat(bits) {
  const view = new DataView(new ArrayBuffer(4));
  view.setUint32(0, bits << 16);
  return view.getFloat32(0);
}

const DTYPES = { F16: 2, BF16: 2, F32: 4, F64: 8 }; // bytes per value of the dtypes read here

/** Parse a safetensors file held in an ArrayBuffer: returns { metadata, tensors } with
 * tensors a Map name -> { dtype, shape, data: Float32Array } in file order. A file that does
 * not follow the layout is a TinydactError naming `source` (the file, as messages show it). */
export function parseSafetensors(buffer, source = "model.safetensors") {
  const bad = (reason) => new TinydactError(`not a valid safetensors file: ${source} (${reason})`);
  const view = new DataView(buffer);
  if (buffer.byteLength < 8) throw bad("shorter than 8 bytes");
  const headerLength = Number(view.getBigUint64(0, true));
  if (8 + headerLength > buffer.byteLength) throw bad("the header runs past the end");
  let header;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array(buffer, 8, headerLength)));
  } catch (e) {
    throw bad(`the header is not UTF-8 JSON: ${e.message}`);
  }
  if (!isObject(header)) throw bad("the header is not a JSON object");
  const start = 8 + headerLength; // data offsets count from here
  const tensors = new Map();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const { dtype, shape, data_offsets: offsets } = isObject(info) ? info : {};
    const size = DTYPES[dtype];
    if (!size) throw bad(`${name}: dtype ${dtype} is not supported (F16, BF16, F32, F64 are)`);
    if (!Array.isArray(shape) || !shape.every(isCount) || !Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      throw bad(`${name}: shape and data_offsets must be lists of non-negative integers`);
    }
    const count = shape.reduce((n, s) => n * s, 1), [begin, end] = offsets;
    if (end - begin !== count * size || start + end > buffer.byteLength) {
      throw bad(`${name}: data_offsets [${begin}, ${end}] do not fit shape [${shape}] of ${dtype}`);
    }
    tensors.set(name, { dtype, shape, data: decode(view, start + begin, count, dtype) });
  }
  return { metadata: header.__metadata__ ?? {}, tensors };
}

const isObject = (x) => typeof x === "object" && x !== null && !Array.isArray(x);
const isCount = (x) => Number.isSafeInteger(x) && x >= 0;

/** `count` little-endian values of `dtype` from byte `offset` on, as a Float32Array. */
function decode(view, offset, count, dtype) {
  const out = new Float32Array(count);
  if (dtype === "F16") {
    if (!HALF_TABLE) HALF_TABLE = Float32Array.from({ length: 65536 }, (_, bits) => halfToFloat(bits));
    for (let i = 0; i < count; i++) out[i] = HALF_TABLE[view.getUint16(offset + 2 * i, true)];
  } else if (dtype === "BF16") {
    for (let i = 0; i < count; i++) out[i] = bfloatToFloat(view.getUint16(offset + 2 * i, true));
  } else if (dtype === "F32") {
    for (let i = 0; i < count; i++) out[i] = view.getFloat32(offset + 4 * i, true);
  } else {
    for (let i = 0; i < count; i++) out[i] = view.getFloat64(offset + 8 * i, true); // rounded to float32
  }
  return out;
}
