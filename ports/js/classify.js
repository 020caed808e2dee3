// Classify texts with the JavaScript port, from Node (>= 18), like `tinydact classify`:
//
//   node ports/js/classify.js "a gripping, beautiful film" "a dull, lifeless mess"
//   node ports/js/classify.js --rule tight --explain "not the best film of the year, but fun"
//   node ports/js/classify.js --model DIR --json TEXT...      (DIR: a tinydact checkpoint folder)
//
// Each line: label, confidence, blocks run, time, text. --explain adds each block's y_n, h_n,
// p_n, a_n and both sides of the halting test. A mistake of the user's (an unknown option, a
// bad --rule or --model, a broken checkpoint, an empty text) prints one line, `Error: ...`, and
// exits 1, as tinydact's command line does; any other exception is a bug and shows its stack.
import { createHash } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { RULES, checkRule } from "./dact.js";
import { TinydactError } from "./errors.js";
import { DACTBert, checkInput, vocabText } from "./model.js";

const USAGE = `usage: node ports/js/classify.js [--rule ${RULES.join("|")}] [--no-halt] [--explain] [--json] [--model DIR] ` +
  "[--pair TEXT_B] [--] TEXT...";
const SHIPPED = fileURLToPath(new URL("../../weights", import.meta.url)); // the model in weights/
const VALUES = ["--model", "--rule", "--pair"], FLAGS = ["--explain", "--json", "--no-halt", "--help", "-h"];

/** The command line -> { texts, options }, options by name without the dashes. An option
 * takes its value as the next argument or after "="; "--" ends the options. */
function parseArgs(argv) {
  const texts = [], options = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      texts.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      texts.push(arg);
      continue;
    }
    const eq = arg.indexOf("="), name = eq < 0 ? arg : arg.slice(0, eq);
    if (VALUES.includes(name)) {
      const value = eq < 0 ? argv[++i] : arg.slice(eq + 1);
      if (value === undefined) throw new TinydactError(`option ${name} requires an argument`);
      options[name.slice(2)] = value;
    } else if (FLAGS.includes(name)) {
      if (eq >= 0) throw new TinydactError(`option ${name} does not take a value`);
      options[name.replace(/^-+/, "")] = true;
    } else {
      throw new TinydactError(`no such option: ${name} (a TEXT that starts with "-" goes after --)`);
    }
  }
  return { texts, options };
}

/** The inputs, as tinydact/cli.py's classify_inputs checks them: [text, pair or null] each. */
function inputs(texts, pair) {
  if (!texts.length) throw new TinydactError("no text given: pass TEXT...");
  if (texts.includes("-")) throw new TinydactError("'-' (read standard input) is not supported by this port: pass each TEXT as an argument");
  if (pair === undefined) return texts.map((t) => [t, null]);
  if (texts.length !== 1) throw new TinydactError(`--pair goes with exactly one TEXT, got ${texts.length}`);
  if (!pair.trim()) throw new TinydactError("--pair is empty");
  return [[texts[0], pair]];
}

/** A checkpoint folder from --model (relative to the current directory; "~/" is the home
 * directory), checked as tinydact/home.py and api.py check it, and the model in it. */
function loadModel(name) {
  const dir = resolve(name.replace(/^~(?=$|\/)/, homedir()));
  const kind = statSync(dir, { throwIfNoEntry: false });
  if (!kind) throw new TinydactError(`model directory not found: ${name} (this port takes a checkpoint folder, not a downloaded model's name)`);
  if (!kind.isDirectory()) throw new TinydactError(`${dir} is a file; --model takes a model directory`);
  const missing = ["config.json", "model.safetensors", "vocab.txt"].filter((f) => !statSync(join(dir, f), { throwIfNoEntry: false })?.isFile());
  if (missing.length) throw new TinydactError(`${dir} is not a complete tinydact checkpoint: it has no ${missing.join(", ")}`);
  const read = (file) => {
    try {
      return readFileSync(join(dir, file));
    } catch (e) {
      throw new TinydactError(`cannot read ${join(dir, file)} (${e.code ?? e.message})`);
    }
  };
  const json = (file, what) => {
    try {
      return JSON.parse(read(file).toString("utf8"));
    } catch (e) {
      throw e instanceof TinydactError ? e : new TinydactError(`${what} is not valid JSON: ${join(dir, file)} (${e.message})`);
    }
  };
  const bytes = read("model.safetensors"), vocab = read("vocab.txt");
  const hasTokenizerConfig = statSync(join(dir, "tokenizer_config.json"), { throwIfNoEntry: false });
  return DACTBert.fromFiles({
    safetensors: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
    config: json("config.json", "config file"), vocab: vocabText(vocab, join(dir, "vocab.txt")),
    vocabSha256: createHash("sha256").update(vocab).digest("hex"),
    tokenizerConfig: hasTokenizerConfig ? json("tokenizer_config.json", "tokenizer config") : {}, path: dir,
  });
}

function main(argv) {
  const { texts, options } = parseArgs(argv);
  if (options.help || options.h) return console.log(USAGE);
  const rule = checkRule(options.rule ?? "paper");
  const items = inputs(texts, options.pair).map(([text, pair], i) => checkInput(text, pair, i + 1)); // before any answer
  let t0 = performance.now();
  const model = loadModel(options.model ?? SHIPPED);
  if (!options.json) console.error(`loaded ${options.model ?? SHIPPED} in ${(performance.now() - t0).toFixed(0)} ms`);

  const f = (x) => x.toFixed(4);
  items.forEach(([text, pair], i) => {
    t0 = performance.now();
    const r = model.classify(text, { pair, rule, halt: !options["no-halt"], index: i + 1 });
    const ms = performance.now() - t0;
    if (options.json) {
      console.log(JSON.stringify({ text, ...(pair === null ? {} : { pair }), label: r.label, confidence: r.confidence,
        probs: r.probs, blocks: r.blocks, num_blocks: r.num_blocks, truncated: r.truncated, ms, ...(options.explain ? { steps: r.steps } : {}) }));
      return;
    }
    const shown = pair === null ? text : `${text}  [SEP]  ${pair}`;
    console.log(`${r.label.padEnd(9)} ${r.confidence.toFixed(2)}  blocks ${r.blocks}/${r.num_blocks}  ${ms.toFixed(0)} ms  ${shown}`);
    if (options.explain) {
      console.log("    n  y_n            h_n     p_n     a_n            lower      upper   d  decision");
      for (const s of r.steps) {
        const decision = s.stop ? "stop" : "go on";
        console.log(`    ${s.n}  ${s.y.map(f).join(" ")}  ${f(s.h)}  ${f(s.p)}  ${s.a.map(f).join(" ")}  ${f(s.lower)} ${s.passes ? ">" : "≤"} ${f(s.upper)}  ${s.d}  ${decision}`);
      }
    }
  });
}

try {
  main(process.argv.slice(2));
} catch (e) {
  if (!(e instanceof TinydactError)) throw e; // a bug in the port: keep the stack trace
  console.error(`Error: ${e.message.replaceAll("\n", " ")}`);
  process.exitCode = 1;
}
