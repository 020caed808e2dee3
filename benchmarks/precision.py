"""float32 against bfloat16, side by side in one run: encoder speed (tinydact and
`transformers`, each in both dtypes), early-exit evaluation of a DACT-BERT on SST-2 dev at
batch 1 and 64 (time, accuracy, blocks, predictions changed), and training throughput
(tokens/s, the DACT loss with AdamW, bfloat16 under torch.autocast with float32 weights).

    python benchmarks/precision.py [--bert MODEL] [--model DACT_MODEL] [--data DEV_TSV] [--name NAME --results FOLDER]

bfloat16 pays off only where the hardware multiplies it: AVX512-BF16 or AMX on a CPU (the
first lines say which flags this CPU has), and on GPUs. Elsewhere it is slower, and the
ratios below say so. Defaults: models/all-MiniLM-L6-v2 and data/glue/SST-2 in the tinydact
home for the encoder and training, the shipped model (weights/) for the evaluation.
"""

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from results_files import default_path  # benchmarks/results_files.py
from tinydact.data import read_examples
from tinydact.dact import dact_loss
from tinydact.errors import TinydactError
from tinydact.evaluate import evaluate
from tinydact.home import model_dir, shipped_model
from tinydact.checkpoint import load_checkpoint, new_from_bert
from tinydact.tokenizer import Tokenizer
from tinydact.train import adamw

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def cpu_description() -> list:
    """The CPU's name and its bfloat16 instructions, from /proc/cpuinfo and torch."""
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("unknown CPU", platform.processor()):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    bf16 = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    onednn = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: "unknown")()
    return [f"CPU: {name}, {torch.get_num_threads()} threads; bfloat16 flags: {', '.join(bf16) or 'none'}; "
            f"oneDNN bfloat16 support: {onednn}; torch {torch.__version__}"]


def median_time(fn, repeats: int, calls: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def encoder_rows(bert_path: Path, repeats: int) -> list:
    """Forward time of each encoder in each dtype (median), ours and `transformers`' SDPA."""
    from transformers import BertModel

    from tinydact.bert import Bert

    rows = []
    for batch, tokens in ((1, 16), (32, 64)):
        ids = torch.randint(1000, 20000, (batch, tokens), generator=torch.Generator().manual_seed(0))
        mask, types = torch.ones_like(ids), torch.zeros_like(ids)
        times = {}
        for dtype, torch_dtype in DTYPES.items():
            ours = Bert.from_pretrained(bert_path).to(torch_dtype)
            theirs = BertModel.from_pretrained(str(bert_path), attn_implementation="sdpa", dtype=torch_dtype).eval()
            fns = {"tinydact": lambda: ours.pool(ours(ids, mask, types)),
                   "transformers": lambda: theirs(input_ids=ids, attention_mask=mask, token_type_ids=types)}
            with torch.inference_mode():
                for fn in fns.values():
                    fn(), fn()  # warm-up
                calls = max(1, round(0.2 / median_time(fns["tinydact"], 1, 2)))
                for name, fn in fns.items():
                    times[name, dtype] = median_time(fn, repeats, calls)
        for name in ("tinydact", "transformers"):
            rows.append({"what": f"{name} encoder, {batch} x {tokens} tokens", "float32": times[name, "float32"] * 1e3,
                         "bfloat16": times[name, "bfloat16"] * 1e3, "unit": "ms"})
        rows.append({"what": f"tinydact / transformers, {batch} x {tokens}", "float32": times["tinydact", "float32"] / times["transformers", "float32"],
                     "bfloat16": times["tinydact", "bfloat16"] / times["transformers", "bfloat16"], "unit": "ratio"})
    return rows


def eval_rows(path: Path, data: Path) -> tuple:
    """Early-exit evaluation of the DACT-BERT at `path` in each dtype, batch 1 and 64."""
    tokenizer = Tokenizer.from_pretrained(path)
    rows, notes, predictions = [], [], {}
    for batch_size in (1, 64):
        for dtype, torch_dtype in DTYPES.items():
            model, meta = load_checkpoint(path)
            model.bert.to(torch_dtype)
            examples = read_examples(data, meta.get("task"), meta["labels"])[0]
            r = evaluate(model, examples, tokenizer, batch_size, 64)
            full = evaluate(model, examples, tokenizer, 64, 64, halt=False)
            predictions[batch_size, dtype] = r["predictions"]
            if r["predictions"] != full["predictions"]:
                notes.append(f"MISMATCH: halting and full depth disagree in {dtype} at batch {batch_size}")
            rows.append({"what": f"eval batch {batch_size}: seconds", dtype: r["seconds"]})
            rows.append({"what": f"eval batch {batch_size}: accuracy", dtype: r["accuracy"]})
            rows.append({"what": f"eval batch {batch_size}: average blocks", dtype: r["avg_blocks"]})
    merged = {}
    for row in rows:
        merged.setdefault(row["what"], {"what": row["what"], "unit": ""}).update(row)
    changed = sum(a != b for a, b in zip(predictions[64, "float32"], predictions[64, "bfloat16"]))
    notes.append(f"predictions changed by bfloat16 (batch 64): {changed} of {len(predictions[64, 'float32'])}; "
                 "halting equals full depth in each dtype: " + ("no" if any("MISMATCH" in n for n in notes) else "yes"))
    return list(merged.values()), notes


def training_rows(bert_path: Path, steps: int) -> list:
    """Tokens per second of DACT-loss training steps (batch 32 x 32 tokens, AdamW)."""
    ids = torch.randint(1000, 20000, (32, 32), generator=torch.Generator().manual_seed(0))
    mask, types, labels = torch.ones_like(ids), torch.zeros_like(ids), torch.randint(0, 2, (32,))
    rate = {}
    for dtype in DTYPES:
        torch.manual_seed(0)
        model = new_from_bert(bert_path, 2).train()
        optimizer = adamw(model.parameters())  # as tinydact train: fused where available

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
                a, p, _, _ = model(ids, mask, types)
                loss = dact_loss(a[:, -1], labels, p, 0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        step(), step()  # warm-up
        rate[dtype] = ids.numel() / median_time(step, steps, 1)
    return [{"what": "training, batch 32 x 32 tokens", "float32": rate["float32"], "bfloat16": rate["bfloat16"], "unit": "tokens/s"}]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bert", default=None, help="BERT directory or downloaded model name (default: models/all-MiniLM-L6-v2)")
    ap.add_argument("--model", default=None, help="DACT-BERT checkpoint to evaluate (default: the shipped model)")
    ap.add_argument("--data", default=None, help="dev TSV (default: data/glue/SST-2/dev.tsv in the tinydact home)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2: precision_cpu_epyc.md was measured at 2)")
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats per encoder measurement (median)")
    ap.add_argument("--train-steps", type=int, default=6, help="timed training steps per dtype (median)")
    ap.add_argument("--name", default=None, help="also write NAME.md and NAME.csv into --results")
    ap.add_argument("--results", default=None, help="folder for --name's files (benchmarks/results holds the published ones)")
    args = ap.parse_args()
    if args.name and not args.results:
        ap.error("--name needs --results, the folder to write into")
    torch.set_num_threads(args.threads)
    bert = model_dir(args.bert) if args.bert else default_path("models/all-MiniLM-L6-v2", "pass --bert")
    data = Path(args.data) if args.data else default_path("data/glue/SST-2", "pass --data") / "dev.tsv"
    dact_model = model_dir(args.model) if args.model else shipped_model()

    lines = cpu_description()
    rows = encoder_rows(bert, args.repeats) + training_rows(bert, args.train_steps)
    more, notes = eval_rows(dact_model, data)
    rows += more
    lines += [f"encoder and training: {bert.name}; evaluation: {dact_model} on {data} (max length 64)", "",
              "| | float32 | bfloat16 | bfloat16 / float32 |", "|---|---|---|---|"]
    for r in rows:
        ratio = r["bfloat16"] / r["float32"] if r["float32"] else float("nan")
        unit = f" {r['unit']}" if r["unit"] and r["unit"] != "ratio" else ""
        lines.append(f"| {r['what']}{' (' + r['unit'] + ')' if unit else ''} | {r['float32']:.4g} | {r['bfloat16']:.4g} | "
                     + (f"{ratio:.2f} |" if r["unit"] != "ratio" else "|"))
    lines += ["", *notes]
    print("\n".join(lines))
    if args.name:
        from results_files import write_results

        write_results(args.name, rows, lines, args.results)


if __name__ == "__main__":
    try:
        main()
    except TinydactError as e:
        sys.exit(f"Error: {e}")
