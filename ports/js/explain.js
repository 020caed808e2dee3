// The explainer page (explain.html): load the shipped model, classify a sentence block by
// block, and show y_n, h_n, p_n, a_n and the two sides of the halting test closing in.
import { TinydactError } from "./errors.js";
import { DACTBert } from "./model.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const WEIGHTS = new URL("../../weights/", location.href);
const f = (x, digits = 4) => x.toFixed(digits);
const COLORS = { lower: "#137333", upper: "#b3261e", top: "#1a73e8" };
let model = null;

function rule() {
  return document.querySelector('input[name="rule"]:checked').value;
}

/** The label-probability pairs of a vector, e.g. "neg 0.0074 pos 0.9926". */
function perLabel(v) {
  return v.map((x, k) => `${model.labels[k].slice(0, 3)} ${f(x)}`).join("  ");
}

function table(steps, skipped) {
  const head = "<tr><th>block n</th><th>y<sub>n</sub></th><th>h<sub>n</sub></th><th>p<sub>n</sub></th>" +
    "<th>a<sub>n</sub></th><th>top can fall to</th><th></th><th>runner-up can rise to</th><th>d</th><th>decision</th></tr>";
  const rows = [...steps, ...skipped].map((s, i) => {
    const ran = i < steps.length;
    const cls = !ran ? "skipped" : s.stop ? "stop" : "";
    const decision = !ran ? "not run" : s.stop ? (s.d === 0 ? "stop (last block)" : "stop") : "go on";
    if (!s.y) return `<tr class="skipped"><td>${s.n}</td><td colspan="8"></td><td>${decision}</td></tr>`;
    return `<tr class="${cls}"><td>${s.n}</td><td>${perLabel(s.y)}</td><td>${f(s.h)}</td><td>${f(s.p)}</td>` +
      `<td>${perLabel(s.a)}</td><td>${f(s.lower)}</td><td class="${s.passes ? "pass" : "fail"}">${s.passes ? "&gt;" : "≤"}</td>` +
      `<td>${f(s.upper)}</td><td>${s.d}</td><td>${decision}</td></tr>`;
  });
  $("table").innerHTML = head + rows.join("");
}

/** An SVG line chart of both sides of the test per block; blocks not run are greyed. */
function chart(steps, skipped, N) {
  const W = 900, H = 270, left = 50, right = 190, top = 14, bottom = 36;
  const all = [...steps, ...skipped.filter((s) => s.y)];
  const yMax = Math.max(1, ...all.map((s) => Math.min(s.upper, 2)));
  const x = (n) => left + ((n - 1) / Math.max(1, N - 1)) * (W - left - right);
  const y = (v) => top + (1 - Math.min(v, yMax) / yMax) * (H - top - bottom);
  const parts = [];
  const stopAt = steps.length;
  if (stopAt < N) { // the blocks not run
    const x0 = (x(stopAt) + x(stopAt + 1)) / 2;
    parts.push(`<rect x="${x0}" y="${top}" width="${x(N) + 20 - x0}" height="${H - top - bottom}" fill="#eee"/>`);
    parts.push(`<text x="${(x0 + x(N) + 20) / 2}" y="${top + 16}" text-anchor="middle" fill="#888" font-size="13">not run</text>`);
  }
  for (let v = 0; v <= yMax + 1e-9; v += 0.25) {
    parts.push(`<line x1="${left}" x2="${x(N) + 20}" y1="${y(v)}" y2="${y(v)}" stroke="#e3e3e3"/>`);
    parts.push(`<text x="${left - 8}" y="${y(v) + 4}" text-anchor="end" font-size="11" fill="#666">${v.toFixed(2)}</text>`);
  }
  for (let n = 1; n <= N; n++) {
    parts.push(`<text x="${x(n)}" y="${H - bottom + 16}" text-anchor="middle" font-size="12" fill="#444">${n}</text>`);
  }
  parts.push(`<text x="${(left + x(N)) / 2}" y="${H - 4}" text-anchor="middle" font-size="12" fill="#444">block n</text>`);
  const line = (points, key, dashed) => {
    if (!points.length) return;
    const d = points.map((s, i) => `${i ? "L" : "M"}${x(s.n).toFixed(1)},${y(s[key]).toFixed(1)}`).join(" ");
    parts.push(`<path d="${d}" fill="none" stroke="${COLORS[key]}" stroke-width="2.5" ${dashed ? 'stroke-dasharray="5 4" opacity="0.45"' : ""}/>`);
    for (const s of points) {
      parts.push(`<circle cx="${x(s.n)}" cy="${y(s[key])}" r="4" fill="${COLORS[key]}" ${dashed ? 'opacity="0.45"' : ""}/>`);
    }
  };
  const ghost = [steps[steps.length - 1], ...skipped.filter((s) => s.y)];
  for (const key of ["upper", "lower", "top"]) {
    line(steps, key, false);
    if (ghost.length > 1) line(ghost, key, true);
  }
  parts.push(`<line x1="${x(stopAt)}" x2="${x(stopAt)}" y1="${top}" y2="${H - bottom}" stroke="#137333" stroke-dasharray="3 3"/>`);
  parts.push(`<text x="${x(stopAt) + 6}" y="${H - bottom - 8}" font-size="12" fill="#137333">stops after block ${stopAt}</text>`);
  const legend = [["top", "a_n[top]"], ["lower", "top can fall to"], ["upper", "runner-up can rise to"]];
  legend.forEach(([key, text], i) => {
    parts.push(`<line x1="${W - right + 28}" x2="${W - right + 52}" y1="${top + 20 + 22 * i}" y2="${top + 20 + 22 * i}" stroke="${COLORS[key]}" stroke-width="3"/>`);
    parts.push(`<text x="${W - right + 58}" y="${top + 24 + 22 * i}" font-size="12">${text}</text>`);
  });
  parts.push(`<text x="${W - right + 28}" y="${top + 100}" font-size="12" fill="#444">stop when the green</text>`);
  parts.push(`<text x="${W - right + 28}" y="${top + 116}" font-size="12" fill="#444">line is above the red</text>`);
  $("chart").innerHTML = parts.join("");
}

async function run(text) {
  const r = rule();
  $("status").textContent = "running…";
  await new Promise((resolve) => setTimeout(resolve, 0)); // let the page show it
  const t0 = performance.now();
  let result;
  try {
    result = model.classify(text, { rule: r });
  } catch (e) { // an input the model refuses, e.g. only spaces or zero-width characters
    if (!(e instanceof TinydactError)) throw e;
    $("status").textContent = e.message;
    $("result").textContent = JSON.stringify({ error: e.message });
    return;
  }
  const ms = performance.now() - t0;
  // ?repeat=R classifies the text R more times, for timing from outside (browser_check.py
  // --time): under headless Chromium's virtual time the page's own clock stands still
  for (let i = 0; i < Number(params.get("repeat") || 0); i++) model.classify(text, { rule: r });
  const steps = result.steps.map((s) => ({ ...s, top: Math.max(...s.a) }));
  let skipped = [];
  for (let n = steps.length + 1; n <= model.N; n++) skipped.push({ n });
  if ($("skipped").checked && skipped.length) { // run all blocks, only to show the rest greyed
    skipped = model.classify(text, { rule: r, halt: false }).steps.slice(steps.length).map((s) => ({ ...s, top: Math.max(...s.a) }));
  }
  $("summary").innerHTML = `<b>${result.label}</b> ${f(result.confidence, 3)} — stopped after block ` +
    `<b>${result.blocks}</b> of ${result.num_blocks} (${r} rule, ${ms >= 1 ? `${ms.toFixed(0)} ms, ` : ""}${result.tokens.length} tokens)`;
  chart(steps, skipped, model.N);
  table(steps, skipped);
  $("status").textContent = `tokens: ${result.tokens.join(" ")}`;
  const out = $("result");
  out.dataset.ms = ms.toFixed(1);
  out.dataset.rule = r;
  out.textContent = JSON.stringify({ label: result.label, confidence: result.confidence, blocks: result.blocks });
}

async function main() {
  if (params.get("rule") === "tight") document.querySelector('input[value="tight"]').checked = true;
  if (params.get("skipped")) $("skipped").checked = true;
  if (params.has("text")) $("text").value = params.get("text");
  try {
    const t0 = performance.now();
    model = await DACTBert.fromUrl(WEIGHTS);
    $("status").textContent = `model loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s`;
  } catch (e) {
    $("status").textContent = `could not load the model from ${WEIGHTS}: ${e.message} (serve the repository root, see the top of explain.html)`;
    $("result").textContent = JSON.stringify({ error: e.message });
    return;
  }
  $("run").disabled = false;
  $("form").addEventListener("submit", (e) => {
    e.preventDefault();
    if ($("text").value.trim()) run($("text").value);
  });
  for (const el of document.querySelectorAll('input[name="rule"], #skipped')) {
    el.addEventListener("change", () => $("text").value.trim() && run($("text").value));
  }
  if (params.has("text")) await run(params.get("text"));
}

main();
