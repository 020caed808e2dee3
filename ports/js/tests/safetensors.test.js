// safetensors.js: float16 decoding, and the file layout on a small file built here.
import assert from "node:assert/strict";
import { test } from "node:test";
import { halfToFloat, parseSafetensors } from "../safetensors.js";
import { erf, gelu } from "../bert.js";

test("float16 bits decode to the numbers they stand for", () => {
  const cases = [[0x0000, 0], [0x3c00, 1], [0xc000, -2], [0x3555, 0.333251953125], [0x7bff, 65504],
    [0x0001, 2 ** -24], [0x03ff, 1023 * 2 ** -24], [0x0400, 2 ** -14], [0x7c00, Infinity], [0xfc00, -Infinity]];
  for (const [bits, value] of cases) assert.equal(halfToFloat(bits), value, bits.toString(16));
  assert.ok(Object.is(halfToFloat(0x8000), -0));
  assert.ok(Number.isNaN(halfToFloat(0x7e00)));
  // every finite float16 is exactly a float32, and the order of the bit patterns is the order of the numbers
  let previous = -Infinity;
  for (let bits = 0; bits < 0x7c00; bits++) {
    const x = halfToFloat(bits);
    assert.equal(Math.fround(x), x);
    assert.ok(x > previous || bits === 0);
    previous = x;
  }
});

/** A safetensors file: 8-byte little-endian header length, JSON header, raw data. */
function makeFile(header, data) {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out.buffer;
}

test("a small file with F32, F16 and BF16 tensors", () => {
  const data = new Uint8Array(8 + 6 + 4);
  const view = new DataView(data.buffer);
  view.setFloat32(0, 1.5, true);
  view.setFloat32(4, -0.25, true);
  [0x3c00, 0xc000, 0x3800].forEach((bits, i) => view.setUint16(8 + 2 * i, bits, true)); // 1, -2, 0.5
  view.setUint16(14, 0x3f80, true); // bfloat16 1
  view.setUint16(16, 0xc040, true); // bfloat16 -3
  const header = {
    __metadata__: { format: "pt" }, a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
    b: { dtype: "F16", shape: [1, 3], data_offsets: [8, 14] }, c: { dtype: "BF16", shape: [2], data_offsets: [14, 18] },
  };
  const { metadata, tensors } = parseSafetensors(makeFile(header, data));
  assert.deepEqual(metadata, { format: "pt" });
  assert.deepEqual([...tensors.keys()], ["a", "b", "c"]);
  assert.deepEqual(Array.from(tensors.get("a").data), [1.5, -0.25]);
  assert.deepEqual(tensors.get("b").shape, [1, 3]);
  assert.deepEqual(Array.from(tensors.get("b").data), [1, -2, 0.5]);
  assert.deepEqual(Array.from(tensors.get("c").data), [1, -3]);
  header.b.data_offsets = [8, 12];
  assert.throws(() => parseSafetensors(makeFile(header, data)), /do not fit/);
  // integers are read (for the model to refuse by name), with their dtype; float8 is not read
  header.b = { dtype: "I8", shape: [2], data_offsets: [8, 10] };
  view.setInt8(8, -7);
  assert.deepEqual(Array.from(parseSafetensors(makeFile(header, data)).tensors.get("b").data), [-7, 0x3c]);
  assert.equal(parseSafetensors(makeFile(header, data)).tensors.get("b").dtype, "I8");
  header.b = { dtype: "I64", shape: [1], data_offsets: [8, 16] };
  assert.equal(parseSafetensors(makeFile(header, data)).tensors.get("b").dtype, "I64");
  header.b = { dtype: "F8_E4M3", shape: [1], data_offsets: [8, 9] };
  assert.throws(() => parseSafetensors(makeFile(header, data)), /dtype F8_E4M3 is not supported/);
});

test("erf and the exact GELU", () => {
  // values of math.erf (Python); the series is good to about 1e-15
  const values = [[0, 0], [0.1, 0.1124629160182849], [0.5, 0.5204998778130465], [1, 0.8427007929497149],
    [2, 0.9953222650189527], [3.5, 0.9999992569016276], [5.9, 0.9999999999999999], [-1.3, -0.9340079449406524]];
  for (const [x, want] of values) assert.ok(Math.abs(erf(x) - want) <= 2e-16 + 1e-15 * Math.abs(want), `erf(${x}) = ${erf(x)}`);
  assert.equal(erf(7), 1);
  assert.equal(erf(-7), -1);
  assert.ok(Math.abs(gelu(1) - 0.8413447460685429) < 1e-15); // 1 · Φ(1)
  assert.ok(Math.abs(gelu(-3) - -0.00404969409489031) < 1e-15);
});
