#!/usr/bin/env bash
# Everything the issues ask of a GPU, in one run of about five minutes:
#   0. the card's measured bf16 matrix rate (TFLOP/s), to read the others as a fraction of it;
#   1. training throughput, achieved GFLOP/s and peak GPU memory of the GPU config: fp32 and
#      AMP bf16/fp16 with input feeding, and AMP without it; from a profile of 5 more steps,
#      kernels launched per step and the fraction of the time the GPU is busy in them;
#   2. a short AMP training run of the GPU config: tokens/s, peak memory, val BLEU;
#   3. beam-5 and greedy translation of the test set with the model it trained.
# Each section runs even if an earlier one failed; a failure is printed, and the script's
# exit status is that of the last failure. With $OUT set, the whole log is kept there.
# Usage: bash scripts/gpu_check.sh [SECONDS_OF_TRAINING]   (MULTI30K_DIR as for `make demo`)
# On a machine without `datasets` and `sentencex` (nmt translate splits sentences with it),
# install their wheels into python3's own environment (pip install --no-index --no-deps
# WHEELS; `../shared/gpu/prepare-wheels.sh sentencex` fetches them), not with --target into
# a folder outside it: `datasets` then pickles those modules by value for its
# fingerprints, and fails.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-90}
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
[ -n "${OUT:-}" ] && exec > >(tee "$OUT/gpu_check.log") 2>&1
dir=$(bash scripts/prepare_data.sh) || exit 2
run=${RUN:-runs/gpu_check}
config=${CONFIG:-configs/multi30k_de_en_gpu.yaml}  # CONFIG: a smaller one for a dry run
data="data.train=$dir/train data.valid=$dir/val"
export python run config data dir seconds
status=0
section() {  # section NAME SECONDS COMMAND...: runs it with a time limit, reports a failure
    local name=$1 limit=$2
    shift 2
    echo "== $name =="
    # a child bash, so that the time limit also covers this script's functions
    timeout "$limit" bash -c '"$@"' section "$@" || { status=$?; echo "!! $name failed (exit $status)"; }
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
$python -c "import torch, datasets, pyarrow; print('torch', torch.__version__, torch.cuda.get_device_name(), 'datasets', datasets.__version__, 'pyarrow', pyarrow.__version__)"

matrix_rate() {
    $python - <<'PY'
import torch
a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
for _ in range(3):
    a @ b
times = []
for _ in range(10):
    start.record()
    a @ b
    end.record()
    end.synchronize()
    times.append(start.elapsed_time(end) / 1e3)
seconds = sorted(times)[len(times) // 2]
print(f"bf16 8192^3 matmul, random data, median of 10: {2 * 8192**3 / seconds / 1e12:.0f} TFLOP/s")
PY
}
export -f matrix_rate
section "0. the card's bf16 matrix rate" 60 matrix_rate

bench="$python scripts/bench_train.py $config $data"  # then KEY=VALUE overrides, then options
steps="--steps 60 --warmup 15"
section "1a. training throughput, input feeding" 150 $bench $steps --precisions fp32 bf16 fp16
section "1b. training throughput, no input feeding" 90 $bench model.input_feed=false $steps \
    --precisions bf16 fp16
train_and_validate() {
    rm -rf "$run"
    $python -m nmt train $config --out "$run" $data train.max_time="$seconds" \
        train.valid_every=100000 train.log_every=50 || return
    $python - "$run" <<'PY'
import json, sys, torch
events = [json.loads(l) for l in open(f"{sys.argv[1]}/metrics.jsonl")]
train = [e for e in events if e["event"] == "train"][1:]  # the first interval includes warm-up
valid = [e for e in events if e["event"] == "valid"][-1]
tps = sum(e["tok_per_s"] for e in train) / max(len(train), 1)
print(f"train tok/s={tps:.0f} steps={valid['step']} val_bleu={valid['bleu']} val_ppl={valid['ppl']}")
PY
}
export -f train_and_validate
section "2. ${seconds}s of AMP training, then val BLEU" $((seconds + 120)) train_and_validate

translate_test() {
    $python scripts/bench_translate.py "$run" --device cuda --precisions fp32 bf16 fp16 \
        --batch-sents 256 --src "$dir/test_2016_flickr.de.gz" --ref "$dir/test_2016_flickr.en.gz"
    $python -m nmt translate "$run" -i "$dir/test_2016_flickr.de.gz" -o "$run/test.hyp.en" \
        --beam 5 --device cuda || return
    $python -m nmt evaluate --hyp "$run/test.hyp.en" --ref "$dir/test_2016_flickr.en.gz"
}
export -f translate_test
section "3. beam-5 and greedy translation of test_2016_flickr" 120 translate_test
exit $status
