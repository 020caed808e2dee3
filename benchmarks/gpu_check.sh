#!/usr/bin/env bash
# The CUDA paths on a GPU machine, in one run of about 5 minutes on one GPU, every result
# in $OUT (7 files: summary.md, steps.log, pytest.txt, train_logs.jsonl, eval.jsonl,
# halting_speed.txt, precision.md). Each step has its own time limit; a step that fails is
# recorded and the next one runs; the run ends with a PASS/FAIL/SKIP table of the steps.
#   env        GPU, driver, torch, CUDA
#   install    pip install --no-deps --no-build-isolation -e . (skipped when already installed here)
#   tests      the device tests, with the CUDA cases required to run, not skip
#   classify   the shipped model on the device, labels and blocks equal to the CPU's
#   train      the whole recipe, bfloat16 autocast, $STEPS steps a phase, from the shipped
#              model's backbone (weights/ without its DACT modules: new heads)
#   eval       the shipped model in float32, bfloat16, float16, early exit and --no-halt;
#              the trained model in float32 and bfloat16
#   halting    benchmarks/halting_speed.py in each dtype: early exit vs full depth, batch 1 and 64
#   precision  benchmarks/precision.py: tinydact vs transformers on the same weights, eval and
#              training throughput, in each dtype
#
#     bash benchmarks/gpu_check.sh [DATA]            # DATA: a folder with SST-2's train.tsv and dev.tsv
#
# DATA defaults to gpu-data/ at the repository root: a few thousand SST-2 training rows and
# the whole dev set (about 0.6 MB), small enough to travel with the checkout. Make it once
# beside ../shared (every 8th training row, so about 8,400) and keep git from tracking it:
#     mkdir -p gpu-data && S=../shared/data/glue/SST-2 && cp $S/dev.tsv gpu-data/ &&
#     awk 'NR == 1 || NR % 8 == 2' $S/train.tsv > gpu-data/train.tsv &&
#     echo /gpu-data/ >> "$(git rev-parse --git-common-dir)/info/exclude"
# Settings (environment): OUT (default: a new temporary folder), DEVICE (cuda; cpu for a dry
# run: float16 must then fail with its one error line, which counts as a pass), STEPS (200),
# REPEATS (5, halting speed), LIMIT (0: every dev row, halting speed), THREADS (2, torch's
# CPU threads in the benchmarks), BUDGET (420 s: no step starts after it, and none runs more
# than 30 s past it), PYTHON (python3).
set -u
cd "$(dirname "$0")/.."
DATA=${1:-${DATA:-gpu-data}}
export DATA DEVICE=${DEVICE:-cuda} STEPS=${STEPS:-200} REPEATS=${REPEATS:-5} LIMIT=${LIMIT:-0} THREADS=${THREADS:-2}
export OUT=${OUT:-$(mktemp -d)} WORK=$(mktemp -d) PY=${PYTHON:-python3} PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
BUDGET=${BUDGET:-420}
DTYPES="float32 bfloat16 float16"
mkdir -p "$OUT"
LOG=$OUT/steps.log
RESULTS=()
: >"$LOG"

step() {  # step NAME LIMIT_S COMMAND...: run it under `timeout`, its output in steps.log
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    if ((SECONDS >= BUDGET)); then
        RESULTS+=("| $name | SKIP | | not started: the ${BUDGET} s budget is spent |")
        echo "== $name: SKIP (budget spent)"
        return
    fi
    ((limit > BUDGET + 30 - SECONDS)) && limit=$((BUDGET + 30 - SECONDS))
    echo "== $name (limit ${limit} s): $*" >>"$LOG"
    timeout -k 10 "$limit" bash -c '"$@"' "$name" "$@" >>"$WORK/step.log" 2>&1
    rc=$?
    cat "$WORK/step.log" >>"$LOG"
    local verdict=PASS why=""
    ((rc == 124 || rc == 137)) && verdict=FAIL why="timed out after ${limit} s"
    ((rc != 0 && rc != 124 && rc != 137)) && verdict=FAIL why="exit $rc: $(grep -v '^\s*$' "$WORK/step.log" | tail -1 | cut -c1-150)"
    RESULTS+=("| $name | $verdict | $((SECONDS - t0)) s | ${why//|/\\|} |")
    echo "== $name: $verdict ($((SECONDS - t0)) s) $why"
    if [[ $verdict == FAIL ]]; then tail -15 "$WORK/step.log" | sed 's/^/    /'; fi
    : >"$WORK/step.log"
}

cuda_only() {  # cuda_only DTYPE COMMAND...: on a CPU a float16 run must end in its one error line
    local dtype=$1
    shift
    if [[ $DEVICE == cuda || $dtype != float16 ]]; then "$@"; return; fi
    if "$@" >"$WORK/f16.log" 2>&1; then echo "float16 ran on the CPU"; return 1; fi
    cat "$WORK/f16.log"
    grep -q "^Error: float16 runs on CUDA only" "$WORK/f16.log" && echo "float16 refused on the CPU, as it should be"
}

env_line() {
    if [[ $DEVICE == cuda ]]; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    else
        lscpu | grep "Model name"
    fi
    "$PY" -c "import torch, sys; print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA', torch.version.cuda,
'| available', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
}

install() {  # the steps after it import tinydact from this tree (PYTHONPATH) even if this fails
    if env -u PYTHONPATH "$PY" -c "import pathlib, tinydact; assert pathlib.Path(tinydact.__file__).parent.samefile('tinydact')" 2>/dev/null; then
        echo "tinydact already installed from this tree"
    else
        "$PY" -m pip install --no-deps --no-build-isolation -e .
    fi
}

backbone() {  # weights/ without its DACT modules: a plain BERT folder, for new heads and for transformers
    ls "$DATA/train.tsv" "$DATA/dev.tsv" || return 1
    "$PY" - <<'EOF'
import json, os, shutil
from pathlib import Path
from safetensors.torch import load_file, save_file
src, dst = Path("weights"), Path(os.environ["WORK"]) / "backbone"
dst.mkdir()
config = json.loads((src / "config.json").read_text())
config.pop("dact")
(dst / "config.json").write_text(json.dumps(config, indent=2))
tensors = {k: v for k, v in load_file(src / "model.safetensors").items() if not k.startswith("dact_heads.")}
save_file(tensors, dst / "model.safetensors")
for name in ("vocab.txt", "tokenizer_config.json"):
    shutil.copy(src / name, dst / name)
print(f"{dst}: {len(tensors)} tensors of the shipped backbone")
EOF
}

tests() {
    "$PY" -m pytest -q -rs -m "not slow" tests/test_devices.py tests/test_early_exit_exact.py tests/test_precision.py >"$OUT/pytest.txt" 2>&1
    local rc=$?
    tail -3 "$OUT/pytest.txt"
    if [[ $DEVICE == cuda ]] && grep -q "no CUDA device" "$OUT/pytest.txt"; then echo "CUDA cases skipped on a GPU machine"; return 1; fi
    grep -q " passed" "$OUT/pytest.txt" || return 1
    return $rc
}

classify() {
    local texts=("a gripping, beautiful film" "a dull, lifeless mess" "not the best film of the year, but fun")
    "$PY" -m tinydact classify "${texts[@]}" --device "$DEVICE" | tee "$WORK/on-device.txt" || return 1
    "$PY" -m tinydact classify "${texts[@]}" --device cpu >"$WORK/on-cpu.txt" || return 1
    diff <(awk '{print $1, $3, $4}' "$WORK/on-device.txt") <(awk '{print $1, $3, $4}' "$WORK/on-cpu.txt") && echo "labels and blocks as on the CPU"
}

train() {
    "$PY" -m tinydact train --model "$WORK/backbone" --train "$DATA/train.tsv" --dev "$DATA/dev.tsv" --out "$WORK/sst2" \
        --tau 0.16 --max-length 64 --max-steps "$STEPS" --eval-every "$STEPS" --device "$DEVICE" --dtype bfloat16 --quiet
    local rc=$?
    for phase in phase1 heads joint; do  # one JSON object per logged step, tagged with its phase
        sed "s/^{/{\"phase\": \"$phase\", /" "$WORK/sst2/$phase/log.jsonl"
    done >"$OUT/train_logs.jsonl" 2>/dev/null
    tail -1 "$OUT/train_logs.jsonl" 2>/dev/null
    return $rc
}

evaluate() {  # evaluate MODEL_NAME MODEL_DIR DTYPE: early exit and --no-halt, one JSON line each into eval.jsonl
    local name=$1 model=$2 dtype=$3 halt
    for halt in "" --no-halt; do
        "$PY" -m tinydact eval --model "$model" --data "$DATA/dev.tsv" --max-length 64 --device "$DEVICE" --dtype "$dtype" \
            --json $halt >"$WORK/eval.json" || return 1
        "$PY" -c "import json, sys; r = json.load(open(sys.argv[1])); r.update(model=sys.argv[2], dtype=sys.argv[3]); print(json.dumps(r))" \
            "$WORK/eval.json" "$name" "$dtype" | tee -a "$OUT/eval.jsonl"
    done
}

halting() {
    cuda_only "$1" "$PY" benchmarks/halting_speed.py --device "$DEVICE" --dtype "$1" --data "$DATA/dev.tsv" --repeats "$REPEATS" \
        --limit "$LIMIT" --threads "$THREADS" 2>&1 | tee -a "$OUT/halting_speed.txt"
    return "${PIPESTATUS[0]}"
}

precision() {
    local dtypes=float32,bfloat16
    [[ $DEVICE == cuda ]] && dtypes+=,float16
    "$PY" benchmarks/precision.py --device "$DEVICE" --dtypes $dtypes --bert "$WORK/backbone" --data "$DATA/dev.tsv" \
        --threads "$THREADS" --repeats "$REPEATS" --name precision --results "$WORK" || return 1
    cp "$WORK/precision.md" "$OUT/precision.md"
}

export -f cuda_only env_line install backbone tests classify train evaluate halting precision

step env 60 env_line
cp "$LOG" "$WORK/env.txt"
step install 120 install
step backbone 60 backbone
step tests 180 tests
step classify 60 classify
for dtype in $DTYPES; do step "eval shipped $dtype" 60 cuda_only "$dtype" evaluate shipped weights "$dtype"; done
step train 150 train
for dtype in float32 bfloat16; do step "eval trained $dtype" 60 evaluate trained "$WORK/sst2/final" "$dtype"; done
for dtype in $DTYPES; do step "halting speed $dtype" 90 halting "$dtype"; done
step precision 150 precision

{
    echo "# GPU check: $(date -u +%Y-%m-%dT%H:%MZ), device $DEVICE, data $DATA, $STEPS steps a phase"
    echo
    grep -v "^==" "$WORK/env.txt" | sed 's/^/    /'
    echo
    echo "| step | result | time | note |"
    echo "|---|---|---|---|"
    printf '%s\n' "${RESULTS[@]}"
    echo
    echo "total: $SECONDS s (budget $BUDGET s)"
    echo
    echo "## tests"
    tail -1 "$OUT/pytest.txt" 2>/dev/null
    echo
    echo "## training: the recipe in bfloat16 autocast, $STEPS steps a phase, dev at the end of each phase"
    "$PY" - "$OUT/train_logs.jsonl" "$OUT/eval.jsonl" <<'EOF'
import json, sys


def rows(path):
    try:
        return [json.loads(line) for line in open(path)]
    except (OSError, ValueError):
        return []


for r in rows(sys.argv[1]):
    dev = r.get("dev", {})
    print(f"    {r['phase']:<7} step {r['step']}: train loss {r['train_loss']:.4f}, dev accuracy {dev.get('accuracy', float('nan')):.4f}, "
          f"dev blocks {dev.get('avg_blocks', float('nan')):.2f}")
print("\n## eval on the dev set (max length 64, batch 64; shipped: weights/, trained: the recipe above)")
print("| model | dtype | mode | accuracy | avg blocks | FLOPs ratio | seconds | exits after block 1..N |")
print("|---|---|---|---|---|---|---|---|")
for r in rows(sys.argv[2]):
    print(f"| {r['model']} | {r['dtype']} | {'early exit' if r['halt'] else 'full depth'} | {r['accuracy']:.4f} | "
          f"{r['avg_blocks']:.2f} | {r['flops_ratio']:.2f} | {r['seconds']:.2f} | {' / '.join(map(str, r['histogram']))} |")
EOF
    echo
    echo "## halting speed (median seconds over the dev set; ratio early exit / full depth)"
    grep -E "^(/|model|batch|Error| +[0-9]+ )" "$OUT/halting_speed.txt" 2>/dev/null | sed 's/^/    /'
    echo
    echo "## precision.py"
    cat "$OUT/precision.md" 2>/dev/null
} >"$OUT/summary.md"
cat "$OUT/summary.md"
rm -rf "$WORK"
! grep -q "| FAIL |" "$OUT/summary.md"
