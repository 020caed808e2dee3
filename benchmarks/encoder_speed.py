"""Forward-pass speed of tinydact's encoder vs `transformers.BertModel`, same weights, CPU.

    python benchmarks/encoder_speed.py [MODEL]

MODEL is a BERT directory or the name of a downloaded model; by default models/all-MiniLM-L6-v2
in $TINYDACT_HOME or ~/.cache/tinydact (`tinydact download sentence-transformers/all-MiniLM-L6-v2`).
An MPNet (e.g. all-mpnet-base-v2) is timed against `transformers.MPNetModel`, whose attention
has only its eager implementation.

fp32, torch.inference_mode, 2 threads. Both models are warmed up, then timed in alternation
(so a slow spell on a shared machine hits both), and each reports the median of its repeats.
Prints, per shape, both medians and the ratio tinydact / transformers (below 1: we are faster),
and the load average before and after: wall-clock times on a busy machine are only rough.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from results_files import default_path  # noqa: E402  (benchmarks/results_files.py)
from tinydact.bert import Bert  # noqa: E402
from tinydact.errors import TinydactError  # noqa: E402
from tinydact.home import model_dir  # noqa: E402

SHAPES = [(1, 16), (32, 64)]  # (batch, tokens)


def seconds_per_call(forward, calls):
    start = time.perf_counter()
    for _ in range(calls):
        forward()
    return (time.perf_counter() - start) / calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=None,
                        help="BERT directory or downloaded model name (default: models/all-MiniLM-L6-v2 in the tinydact home)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads (default 2: the published encoder_speed.txt was timed at 2 on a quiet 2-core machine)")
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats per model and shape (median reported)")
    parser.add_argument("--hf-attention", nargs="+", default=["sdpa", "eager"], help="transformers attn_implementation(s)")
    args = parser.parse_args()
    if args.model is None:
        path = default_path("models/all-MiniLM-L6-v2", "run `tinydact download sentence-transformers/all-MiniLM-L6-v2` "
                                                       "or pass a BERT directory")
    else:
        path = model_dir(args.model)

    from transformers import BertModel, MPNetModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = Bert.from_pretrained(path)
    mpnet = ours.config.model_type == "mpnet"  # MPNet: no token types, eager attention only
    reference, impls = (MPNetModel, ["eager"]) if mpnet else (BertModel, args.hf_attention)
    theirs = {impl: reference.from_pretrained(str(path), attn_implementation=impl).eval() for impl in impls}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, model {path.name}")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")

    for batch, tokens in SHAPES:
        ids = torch.randint(1000, ours.config.vocab_size, (batch, tokens))  # real word pieces, no specials
        mask = torch.ones(batch, tokens, dtype=torch.long)  # full attention mask, passed to both
        types = {} if mpnet else {"token_type_ids": torch.zeros(batch, tokens, dtype=torch.long)}
        # BertModel's forward also runs its pooler, so ours is timed with `pool` too
        forwards = {"tinydact": lambda: ours.pool(ours(ids, mask, types.get("token_type_ids")))}
        for impl, model in theirs.items():
            forwards[f"transformers {impl}"] = lambda m=model: m(input_ids=ids, attention_mask=mask, **types)
        with torch.inference_mode():
            for forward in forwards.values():  # warm-up, and size each repeat to about 0.2 s
                forward()
            calls = max(1, round(0.2 / seconds_per_call(forwards["tinydact"], 3)))
            names, times = list(forwards), {name: [] for name in forwards}
            for repeat in range(args.repeats):  # alternate the models, and rotate who goes first
                for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                    times[name].append(seconds_per_call(forwards[name], calls))
        medians = {name: statistics.median(t) for name, t in times.items()}
        print(f"\nbatch {batch} x {tokens} tokens ({args.repeats} repeats of {calls} calls, median per call)")
        for name, median in medians.items():
            print(f"  {name:<22} {median * 1e3:8.2f} ms")
        for impl in theirs:
            ratio = medians["tinydact"] / medians[f"transformers {impl}"]
            print(f"  ratio tinydact / transformers {impl}: {ratio:.2f}")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    try:
        main()
    except TinydactError as e:  # a missing file, a wrong checkpoint: one line, no traceback
        sys.exit(f"Error: {e}")
