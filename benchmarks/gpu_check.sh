#!/usr/bin/env bash
# The CUDA paths on a GPU machine, in one short run (a few minutes on one GPU):
#   1. the device tests (exactness of early exit, classify/eval/train, save/load, CPU vs CUDA);
#   2. the whole recipe on SST-2 with bf16 autocast, capped at 200 steps a phase, then eval;
#   3. the halting speed benchmark on the GPU (the shipped model, SST-2 dev).
# Needs the project installed (pip install -e ".[dev]") and $TINYDACT_HOME (default
# ~/.cache/tinydact) holding models/all-MiniLM-L6-v2 and data/glue/SST-2
# (tinydact download sentence-transformers/all-MiniLM-L6-v2; tinydact download glue SST-2).
set -euo pipefail
cd "$(dirname "$0")/.."
HOME_DIR=${TINYDACT_HOME:-$HOME/.cache/tinydact}
G=$HOME_DIR/data/glue/SST-2
OUT=$(mktemp -d)
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0))"

echo "== 1. device tests"
python -m pytest -q -rs tests/test_devices.py tests/test_early_exit_exact.py

echo "== 2. the recipe on SST-2, bfloat16 autocast, 200 steps a phase"
start=$(date +%s)
tinydact train --model all-MiniLM-L6-v2 --train "$G/train.tsv" --dev "$G/dev.tsv" --out "$OUT/sst2" --tau 0.16 \
    --max-length 64 --max-steps 200 --eval-every 200 --device cuda --dtype bfloat16 --quiet
echo "recipe: $(( $(date +%s) - start )) s"
tinydact eval --model "$OUT/sst2/final" --data "$G/dev.tsv" --max-length 64 --device cuda
tinydact eval --model "$OUT/sst2/final" --data "$G/dev.tsv" --max-length 64 --device cuda --no-halt
for dtype in bfloat16 float16; do
    tinydact eval --model weights --data "$G/dev.tsv" --max-length 64 --device cuda --dtype $dtype
done

echo "== 3. halting speed on the GPU"
python benchmarks/halting_speed.py --device cuda --repeats 5 --data "$G/dev.tsv"
rm -rf "$OUT"
