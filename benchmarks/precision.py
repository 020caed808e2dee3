"""float32 against bfloat16, side by side in one run: encoder speed (tinydact and
`transformers`, each in both dtypes), early-exit evaluation of a DACT-BERT on SST-2 dev at
batch 1 and 64 (time, accuracy, blocks, predictions changed), and training throughput
(tokens/s, the DACT loss with AdamW, bfloat16 under torch.autocast with float32 weights).

    python benchmarks/precision.py [--bert MODEL] [--model DACT_MODEL] [--data DEV_TSV] [--name NAME --results FOLDER]
    python benchmarks/precision.py --device cuda --dtypes float32,bfloat16,float16 ...   # on a GPU

`--dtypes` lists the columns, float32 first (float16 runs on CUDA only; training is measured
in float32 and bfloat16 alone, as `tinydact train --dtype` offers).

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
from tinydact.api import resolve_device
from tinydact.checkpoint import backbone_dtype
from tinydact.data import read_examples
from tinydact.dact import dact_loss
from tinydact.errors import TinydactError
from tinydact.evaluate import evaluate
from tinydact.home import model_dir, shipped_model
from tinydact.checkpoint import load_checkpoint, new_from_bert
from tinydact.options import TRAIN_DTYPES, check_dtype
from tinydact.tokenizer import Tokenizer
from tinydact.train import adamw


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


def gpu_description(device) -> list:
    """The GPU's name and the CUDA torch was built with (nothing on a CPU)."""
    if device.type != "cuda":
        return []
    return [f"GPU: {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"]


def synchronize(device) -> None:
    if device.type == "cuda":  # CUDA runs asynchronously: wait for the queued work before reading the clock
        torch.cuda.synchronize(device)


def median_time(fn, repeats: int, calls: int, device=torch.device("cpu")) -> float:
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize(device)
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def encoder_rows(bert_path: Path, repeats: int, dtypes: list, device) -> list:
    """Forward time of each encoder in each dtype (median), ours and `transformers`' SDPA."""
    from transformers import BertModel

    from tinydact.bert import Bert

    rows = []
    for batch, tokens in ((1, 16), (32, 64)):
        ids = torch.randint(1000, 20000, (batch, tokens), generator=torch.Generator().manual_seed(0)).to(device)
        mask, types = torch.ones_like(ids), torch.zeros_like(ids)
        times = {}
        for dtype in dtypes:
            torch_dtype = backbone_dtype(dtype, device)
            ours = Bert.from_pretrained(bert_path).to(device, torch_dtype)
            theirs = BertModel.from_pretrained(str(bert_path), attn_implementation="sdpa", dtype=torch_dtype).to(device).eval()
            fns = {"tinydact": lambda: ours.pool(ours(ids, mask, types)),
                   "transformers": lambda: theirs(input_ids=ids, attention_mask=mask, token_type_ids=types)}
            with torch.inference_mode():
                for fn in fns.values():
                    fn(), fn()  # warm-up
                calls = max(1, round(0.2 / median_time(fns["tinydact"], 1, 2, device)))
                for name, fn in fns.items():
                    times[name, dtype] = median_time(fn, repeats, calls, device)
        for name in ("tinydact", "transformers"):
            rows.append({"what": f"{name} encoder, {batch} x {tokens} tokens", "unit": "ms",
                         **{dtype: times[name, dtype] * 1e3 for dtype in dtypes}})
        rows.append({"what": f"tinydact / transformers, {batch} x {tokens}", "unit": "ratio",
                     **{dtype: times["tinydact", dtype] / times["transformers", dtype] for dtype in dtypes}})
    return rows


def eval_rows(path: Path, data: Path, dtypes: list, device) -> tuple:
    """Early-exit evaluation of the DACT-BERT at `path` in each dtype, batch 1 and 64."""
    tokenizer = Tokenizer.from_pretrained(path)
    rows, notes, predictions = [], [], {}
    for batch_size in (1, 64):
        for dtype in dtypes:
            model, meta = load_checkpoint(path)
            model.to(device).bert.to(backbone_dtype(dtype, device))
            examples = read_examples(data, meta.get("task"), meta["labels"])[0]
            r = evaluate(model, examples, tokenizer, batch_size, 64, device=device)
            full = evaluate(model, examples, tokenizer, 64, 64, halt=False, device=device)
            predictions[batch_size, dtype] = r["predictions"]
            if r["predictions"] != full["predictions"]:
                notes.append(f"MISMATCH: halting and full depth disagree in {dtype} at batch {batch_size}")
            rows.append({"what": f"eval batch {batch_size}: seconds", dtype: r["seconds"]})
            rows.append({"what": f"eval batch {batch_size}: accuracy", dtype: r["accuracy"]})
            rows.append({"what": f"eval batch {batch_size}: average blocks", dtype: r["avg_blocks"]})
    merged = {}
    for row in rows:
        merged.setdefault(row["what"], {"what": row["what"], "unit": ""}).update(row)
    for dtype in dtypes[1:]:
        changed = sum(a != b for a, b in zip(predictions[64, "float32"], predictions[64, dtype]))
        notes.append(f"predictions changed by {dtype} (batch 64): {changed} of {len(predictions[64, 'float32'])}; "
                     "halting equals full depth in each dtype: " + ("no" if any("MISMATCH" in n for n in notes) else "yes"))
    return list(merged.values()), notes


def training_rows(bert_path: Path, steps: int, dtypes: list, device) -> list:
    """Tokens per second of DACT-loss training steps (batch 32 x 32 tokens, AdamW), in the
    dtypes `tinydact train` offers."""
    ids = torch.randint(1000, 20000, (32, 32), generator=torch.Generator().manual_seed(0)).to(device)
    mask, types, labels = torch.ones_like(ids), torch.zeros_like(ids), torch.randint(0, 2, (32,)).to(device)
    rate = {}
    for dtype in (d for d in dtypes if d in TRAIN_DTYPES):
        torch.manual_seed(0)
        model = new_from_bert(bert_path, 2).to(device).train()
        optimizer = adamw(model.parameters())  # as tinydact train: fused where available

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
                a, p, _, _ = model(ids, mask, types)
                loss = dact_loss(a[:, -1], labels, p, 0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        step(), step()  # warm-up
        rate[dtype] = ids.numel() / median_time(step, steps, 1, device)
    return [{"what": "training, batch 32 x 32 tokens", "unit": "tokens/s", **rate}]


def dtype_list(text: str) -> list:
    """--dtypes: names of options.DTYPES separated by commas, float32 first (the ratios' base)."""
    dtypes = [check_dtype(d.strip()) for d in text.split(",")]
    if dtypes[0] != "float32" or len(set(dtypes)) != len(dtypes):
        raise TinydactError(f"--dtypes lists distinct dtypes, float32 first, got {text!r}")
    return dtypes


def table(rows: list, dtypes: list) -> list:
    """The markdown table: a column per dtype, then each dtype's ratio to float32."""
    lines = ["| | " + " | ".join(dtypes) + " | " + " | ".join(f"{d} / float32" for d in dtypes[1:]) + " |",
             "|---|" + "---|" * (2 * len(dtypes) - 1)]
    for r in rows:
        unit = f" ({r['unit']})" if r["unit"] not in ("", "ratio") else ""
        cells = [f"{r[d]:.4g}" if d in r else "" for d in dtypes]
        ratios = ["" if r["unit"] == "ratio" or d not in r else f"{r[d] / r['float32']:.2f}" if r["float32"] else "nan"
                  for d in dtypes[1:]]
        lines.append(f"| {r['what']}{unit} | " + " | ".join(cells + ratios) + " |")
    return lines


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
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="the dtypes compared, float32 first (float16: CUDA only)")
    args = ap.parse_args()
    if args.name and not args.results:
        ap.error("--name needs --results, the folder to write into")
    torch.set_num_threads(args.threads)
    device, dtypes = resolve_device(args.device), dtype_list(args.dtypes)
    bert = model_dir(args.bert) if args.bert else default_path("models/all-MiniLM-L6-v2", "pass --bert")
    data = Path(args.data) if args.data else default_path("data/glue/SST-2", "pass --data") / "dev.tsv"
    dact_model = model_dir(args.model) if args.model else shipped_model()

    lines = cpu_description() + gpu_description(device)
    rows = encoder_rows(bert, args.repeats, dtypes, device) + training_rows(bert, args.train_steps, dtypes, device)
    more, notes = eval_rows(dact_model, data, dtypes, device)
    rows += more
    lines += [f"encoder and training: {bert.name}; evaluation: {dact_model} on {data} (max length 64)", "",
              *table(rows, dtypes), "", *notes]
    print("\n".join(lines))
    if args.name:
        from results_files import write_results

        write_results(args.name, rows, lines, args.results)


if __name__ == "__main__":
    try:
        main()
    except TinydactError as e:
        sys.exit(f"Error: {e}")
