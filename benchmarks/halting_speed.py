"""Does early exit save wall-clock? The same trained model with halting vs full depth
(`--no-halt`), on SST-2 dev, at batch 1 and batch 64: alternating runs, median of >= 5 each.

Prints the accuracy of each mode (identical by the exactness guarantee of docs/dact.md §3),
the average blocks run, and the time ratio halting / full depth. Tokenization is done once,
before timing: only `model.predict` is timed.

    python benchmarks/halting_speed.py [--model DIR] [--data DEV_TSV] [--device cuda --dtype bfloat16]

In float32 the two modes' predictions must be identical (the run stops if not); with the
backbone in bfloat16 or float16 its rounding depends on the batch's shape, so the number of
predictions that differ is printed instead (README, "Reduced precision").

Defaults: the model shipped in weights/, and data/glue/SST-2/dev.tsv in $TINYDACT_HOME or
~/.cache/tinydact (`tinydact download glue SST-2`).
"""

import argparse
import statistics
import sys
import time

import torch

from results_files import default_path  # benchmarks/results_files.py
from tinydact.api import resolve_device
from tinydact.data import batch_plan, encode_batch, example_lengths, read_examples
from tinydact.errors import TinydactError
from tinydact.home import model_dir, shipped_model
from tinydact.checkpoint import backbone_dtype, load_checkpoint
from tinydact.options import DTYPES, RULES
from tinydact.tokenizer import Tokenizer


def halting_against_full(model, examples, gold, lengths, tok, bs: int, args, device) -> None:
    """Time `model.predict` over `examples` at batch size `bs` with halting and at full depth,
    alternating, and print each mode's accuracy, blocks and times, and their ratio."""
    encoded = [([t.to(device) for t in enc], y, idx) for enc, y, idx in
               (encode_batch(examples, idx, tok, 128) for idx in batch_plan(lengths, bs))]

    def run(halt):
        pred, blocks = torch.empty_like(gold), torch.empty_like(gold)
        start = time.perf_counter()
        for enc, _, idx in encoded:
            labels, _, used = model.predict(*enc, halt=halt, rule=args.rule)
            pred[idx], blocks[idx] = labels.cpu(), used.cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, pred, blocks

    with torch.inference_mode():
        run(True), run(False)  # warm-up
        times = {True: [], False: []}
        for _ in range(args.repeats):
            for halt in (True, False):  # alternate, so drifts in machine speed hit both
                seconds, pred, blocks = run(halt)
                times[halt].append(seconds)
                results = (pred, blocks)
                if halt:
                    halt_pred, halt_blocks = results
                else:
                    full_pred, full_blocks = results
    differ = (halt_pred != full_pred).sum().item()
    assert differ == 0 or args.dtype != "float32", "early exit changed a prediction"
    for halt, pred, blocks in ((True, halt_pred, halt_blocks), (False, full_pred, full_blocks)):
        acc = (pred == gold).float().mean().item()
        runs = " ".join(f"{t:.2f}" for t in times[halt])
        print(f"{bs:>5} {'halting' if halt else 'full':>10} {acc:>9.4f} {blocks.float().mean().item():>10.2f} "
              f"{statistics.median(times[halt]):>9.3f} {runs}")
    ratio = statistics.median(times[True]) / statistics.median(times[False])
    same = "yes" if differ == 0 else f"no, {differ} of {len(gold)} differ"
    print(f"{bs:>5} ratio halting/full = {ratio:.3f}   (predictions identical: {same})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="DACT-BERT checkpoint directory or downloaded model name "
                                                  "(default: the shipped model, weights/)")
    ap.add_argument("--data", default=None, help="dev TSV (default: data/glue/SST-2/dev.tsv in the tinydact home)")
    ap.add_argument("--batch-sizes", default="1,64")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N examples (0: all)")
    ap.add_argument("--rule", default="paper", choices=RULES)
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads (default 2: halting_speed_2threads.txt; halting_speed_1thread.txt used --threads 1)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--dtype", default="float32", choices=DTYPES, help="the backbone's dtype (float16: CUDA only)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    path = shipped_model() if args.model is None else model_dir(args.model)
    if args.model is None:
        print(f"model: using the shipped model, {path}")
    data = args.data or default_path("data/glue/SST-2", "run `tinydact download glue SST-2` or pass --data") / "dev.tsv"

    model, meta = load_checkpoint(path)
    model.to(device).bert.to(backbone_dtype(args.dtype, device))
    tok = Tokenizer.from_pretrained(path)
    examples, task, _ = read_examples(data, meta.get("task"), meta["labels"])
    examples = examples[: args.limit or None]
    gold = torch.tensor([e.label for e in examples])
    lengths = example_lengths(examples, tok, 128)
    print(f"{path}: {len(examples)} examples of {data}, {model.num_blocks} blocks, "
          f"torch {torch.__version__}, {args.dtype}, {args.threads} threads, {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}")
    print(f"{'batch':>5} {'mode':>10} {'accuracy':>9} {'avg blocks':>10} {'median s':>9} {'runs (s)'}")
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        halting_against_full(model, examples, gold, lengths, tok, bs, args, device)


if __name__ == "__main__":
    try:
        main()
    except TinydactError as e:  # a missing file, a wrong checkpoint: one line, no traceback
        sys.exit(f"Error: {e}")
