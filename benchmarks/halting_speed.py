"""Does early exit save wall-clock? The same trained model with halting vs full depth
(`--no-halt`), on SST-2 dev, at batch 1 and batch 64: alternating runs, median of >= 5 each.

Prints the accuracy of each mode (identical by the exactness guarantee of DACT.md section 3),
the average blocks run, and the time ratio halting / full depth. Tokenization is done once,
before timing: only `model.predict` is timed.

    python benchmarks/halting_speed.py [--model weights] [--data ../shared/data/glue/SST-2/dev.tsv]
"""

import argparse
import statistics
import time
from pathlib import Path

import torch

from tinydact.data import batch_plan, encode_batch, example_lengths, read_examples
from tinydact.model import load_checkpoint
from tinydact.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "weights"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "glue" / "SST-2" / "dev.tsv"))
    ap.add_argument("--batch-sizes", default="1,64")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N examples (0: all)")
    ap.add_argument("--rule", default="paper")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model, meta = load_checkpoint(args.model)
    tok = Tokenizer.from_pretrained(args.model)
    examples, task, _ = read_examples(args.data, meta.get("task"), meta["labels"])
    examples = examples[: args.limit or None]
    gold = torch.tensor([e.label for e in examples])
    lengths = example_lengths(examples, tok, 128)
    print(f"{args.model}: {len(examples)} examples of {args.data}, {model.num_layers} blocks, "
          f"torch {torch.__version__}, {args.threads} threads, CPU")
    print(f"{'batch':>5} {'mode':>10} {'accuracy':>9} {'avg blocks':>10} {'median s':>9} {'runs (s)'}")
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        encoded = [encode_batch(examples, idx, tok, 128) for idx in batch_plan(lengths, bs)]

        def run(halt):
            pred, blocks = torch.empty_like(gold), torch.empty_like(gold)
            start = time.perf_counter()
            for enc, _, idx in encoded:
                labels, _, layers = model.predict(*enc, halt=halt, rule=args.rule)
                pred[idx], blocks[idx] = labels, layers
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
        assert torch.equal(halt_pred, full_pred), "early exit changed a prediction"
        for halt, pred, blocks in ((True, halt_pred, halt_blocks), (False, full_pred, full_blocks)):
            acc = (pred == gold).float().mean().item()
            runs = " ".join(f"{t:.2f}" for t in times[halt])
            print(f"{bs:>5} {'halting' if halt else 'full':>10} {acc:>9.4f} {blocks.float().mean().item():>10.2f} "
                  f"{statistics.median(times[halt]):>9.3f} {runs}")
        ratio = statistics.median(times[True]) / statistics.median(times[False])
        print(f"{bs:>5} ratio halting/full = {ratio:.3f}   (predictions identical: yes)")


if __name__ == "__main__":
    main()
