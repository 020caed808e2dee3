// Reading a .safetensors file (https://github.com/huggingface/safetensors), in plain JavaScript.
//
// Layout: 8 bytes, the header's length n as a little-endian unsigned 64-bit integer; n bytes of
// UTF-8 JSON, {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}; then
// the raw data. Offsets count from the first byte after the header; values are little-endian,
// row-major (C order). Every tensor is returned as float32, whatever its stored dtype, with
// that dtype beside it: integer and bool tensors are read too, so that the model can refuse
// them by name (a quantized int8 file would otherwise be cast to wrong weights without a word).

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

/** The dtypes read here: bytes per value, and the name PyTorch gives them (as messages show it). */
export const DTYPES = {
  F16: [2, "float16"], BF16: [2, "bfloat16"], F32: [4, "float32"], F64: [8, "float64"], BOOL: [1, "bool"],
  U8: [1, "uint8"], I8: [1, "int8"], I16: [2, "int16"], U16: [2, "uint16"], I32: [4, "int32"], U32: [4, "uint32"],
  I64: [8, "int64"], U64: [8, "uint64"],
};
export const FLOAT_DTYPES = ["F16", "BF16", "F32", "F64"];

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
    const size = Object.hasOwn(DTYPES, dtype) && DTYPES[dtype][0];
    if (!size) throw bad(`${name}: dtype ${dtype} is not supported (${Object.keys(DTYPES).join(", ")} are)`);
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

const INTEGER_GETTERS = {
  BOOL: DataView.prototype.getUint8, U8: DataView.prototype.getUint8, I8: DataView.prototype.getInt8,
  I16: DataView.prototype.getInt16, U16: DataView.prototype.getUint16, I32: DataView.prototype.getInt32,
  U32: DataView.prototype.getUint32, I64: DataView.prototype.getBigInt64, U64: DataView.prototype.getBigUint64,
};

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
  } else if (dtype === "F64") {
    for (let i = 0; i < count; i++) out[i] = view.getFloat64(offset + 8 * i, true); // rounded to float32
  } else { // integers and bools, read only to be refused by name: values beyond 2^24 are rounded
    const size = DTYPES[dtype][0], get = INTEGER_GETTERS[dtype];
    for (let i = 0; i < count; i++) out[i] = Number(get.call(view, offset + size * i, true));
  }
  return out;
}
