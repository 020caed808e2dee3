// DACT in plain JavaScript, one example at a time: a port of tinydact/reference.py.
//
// The forward recursion, the loss, its gradient written out by hand, and the exact halting
// test under both rules. Numbers are JavaScript's (float64). Symbols as in docs/dact.md, for
// one example with N steps and K classes:
//   y  N arrays of K numbers   y[n-1] = y_n, the answer of step n (a probability vector)
//   h  N numbers               h[n-1] = h_n, the halting value of step n, in [0, 1]
//   a  N arrays of K numbers   a[n-1] = a_n, the accumulated answer (a_0 = 0 is not stored)
//   p  N numbers               p[n-1] = p_n = h_1 · … · h_n (p_0 = 1 is not stored)

import { checkChoice } from "./errors.js";

export const A_MIN = 1e-8; // the task term clamps a_N[label] from below at 1e-8
export const RULES = ["paper", "tight"];

/** `rule` if it is a halting rule, else the error tinydact/options.py's check_rule raises. */
export const checkRule = (rule) => checkChoice(rule, RULES, "the halting rule");

/** One step: a_n = p_{n-1} · y_n + (1 − p_{n-1}) · a_{n-1} and p_n = h_n · p_{n-1}. */
export function update(aPrev, pPrev, yN, hN) {
  const a = yN.map((y, k) => pPrev * y + (1 - pPrev) * aPrev[k]);
  return { a, p: hN * pPrev };
}

/** The whole recursion from a_0 = 0, p_0 = 1: returns { a: a_1..a_N, p: p_1..p_N }. */
export function forward(y, h) {
  let aN = y[0].map(() => 0); // a_0 = 0
  let pN = 1; // p_0 = 1
  const a = [], p = [];
  for (let n = 0; n < h.length; n++) {
    ({ a: aN, p: pN } = update(aN, pN, y[n], h[n]));
    a.push(aN);
    p.push(pN);
  }
  return { a, p };
}

/** L = −log(max(a_N[label], 1e-8)) + τ · Σ_{n=1..N} p_n, for one example. */
export function loss(y, h, label, tau) {
  const { a, p } = forward(y, h);
  const task = -Math.log(Math.max(a[a.length - 1][label], A_MIN));
  const ponder = tau * p.reduce((s, x) => s + x, 0); // p_0 = 1 is not counted
  return task + ponder;
}

/** ∂L/∂y and ∂L/∂h by reverse mode through the recursion: { dy (N × K), dh (N) }. */
export function backward(y, h, label, tau) {
  const N = h.length, K = y[0].length;
  const fwd = forward(y, h);
  // row n holds a_n and p_n for n = 0..N (row 0: the start values a_0 = 0, p_0 = 1)
  const a = [new Array(K).fill(0), ...fwd.a];
  const p = [1, ...fwd.p];
  const ga = a.map(() => new Array(K).fill(0)); // ga[n] = ∂L/∂a_n
  const gp = new Array(N + 1).fill(0); // gp[n] = ∂L/∂p_n
  const dy = y.map(() => new Array(K).fill(0));
  const dh = new Array(N).fill(0);
  // Task term −log(max(a_N[label], 1e-8)): ∂/∂a_N[label] = −1 / a_N[label] where
  // a_N[label] ≥ 1e-8 (torch.clamp passes the gradient at equality), 0 below.
  if (a[N][label] >= A_MIN) ga[N][label] = -1 / a[N][label];
  // Ponder term τ · Σ_{n=1..N} p_n: ∂/∂p_n = τ for n = 1..N.
  for (let n = 1; n <= N; n++) gp[n] = tau;
  for (let n = N; n >= 1; n--) {
    // undo a_n = p_{n-1} · y_n + (1 − p_{n-1}) · a_{n-1}
    for (let k = 0; k < K; k++) {
      dy[n - 1][k] = p[n - 1] * ga[n][k]; //                 ∂a_n[k]/∂y_n[k] = p_{n-1}
      ga[n - 1][k] += (1 - p[n - 1]) * ga[n][k]; //          ∂a_n[k]/∂a_{n-1}[k] = 1 − p_{n-1}
      gp[n - 1] += ga[n][k] * (y[n - 1][k] - a[n - 1][k]); // ∂a_n[k]/∂p_{n-1} = y_n[k] − a_{n-1}[k]
    }
    // undo p_n = h_n · p_{n-1} (gp[n] is complete: step n + 1 was undone first)
    dh[n - 1] = p[n - 1] * gp[n]; //                          ∂p_n/∂h_n = p_{n-1}
    gp[n - 1] += h[n - 1] * gp[n]; //                         ∂p_n/∂p_{n-1} = h_n
  }
  return { dy, dh };
}

/** The index of the largest entry; ties go to the first class. */
export function argmax(v) {
  let best = 0;
  for (let k = 1; k < v.length; k++) if (v[k] > v[best]) best = k;
  return best;
}

/** (1 − p)^d for an integer d ≥ 0, by repeated multiplication. */
function shrinkFactor(p, d) {
  let s = 1;
  for (let i = 0; i < d; i++) s *= 1 - p;
  return s;
}

/** Both sides of the halting test after step n, with d = N − n steps left, and its verdict.
 * c* is the top class of a_n, c' the runner-up (K ≥ 2). Whatever the d remaining steps give,
 *   a_N[c*] ≥ lower = a_n[c*] · (1 − p_n)^d
 *   a_N[c]  ≤ upper = a_n[c'] + p_n · d                  (paper rule), or
 *   a_N[c]  ≤ upper = 1 − (1 − a_n[c']) · (1 − p_n)^d    (tight rule), for c ≠ c*.
 * passes = lower > upper; the tight verdict is computed as (a_n[c*] − a_n[c'])(1 − p_n)^d >
 * 1 − (1 − p_n)^d, the same inequality, so that an exact tie gives exactly 0 on the left. */
export function haltingBounds(aN, pN, d, rule = "paper") {
  checkRule(rule);
  const sorted = [...aN].sort((u, v) => v - u);
  const top = sorted[0], second = sorted[1];
  const shrink = shrinkFactor(pN, d);
  const lower = top * shrink;
  if (rule === "paper") {
    const upper = second + pN * d;
    return { lower, upper, passes: lower > upper };
  }
  return { lower, upper: 1 - (1 - second) * shrink, passes: (top - second) * shrink > 1 - shrink };
}

/** May the example stop after step n (d = N − n steps left)? Always at d = 0 and when K = 1. */
export function canHalt(aN, pN, d, rule = "paper") {
  checkRule(rule);
  if (d === 0 || aN.length === 1) return true;
  return haltingBounds(aN, pN, d, rule).passes;
}

/** The 1-based step after which inference stops, and its prediction argmax a_n. */
export function haltingStep(y, h, rule = "paper") {
  const { a, p } = forward(y, h);
  const N = h.length;
  for (let n = 1; n <= N; n++) {
    if (canHalt(a[n - 1], p[n - 1], N - n, rule)) return { step: n, prediction: argmax(a[n - 1]) };
  }
  throw new Error("unreachable: every example stops at n = N");
}
