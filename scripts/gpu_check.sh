#!/usr/bin/env bash
# Everything the GPU issue asks of one GPU, in one run of at most 8 minutes (the sections'
# limits add up to 470 s):
#   0. the card's measured bf16 matrix rate (TFLOP/s), to read the others as a fraction of it;
#   1. training throughput of the GPU config in bf16 (target pieces + EOS per second, padding
#      not counted), GFLOP/s, peak memory, kernels per step and GPU busy: input feeding eager
#      and with CUDA graphs (train.cuda_graphs), the parallel decoder eager and with graphs;
#   2. the same steps trained eagerly and with graphs: validation loss and BLEU side by side;
#      the graph run's model translates test_2016_flickr (beam 5, detokenized, cased BLEU);
#   3. translation speed of that model, beam 5 and greedy, fp32 and bf16, eager search and
#      search with a captured decode step (--graphs), BLEU of each.
# Each section runs even if an earlier one failed, under its own time limit; a failure is
# printed, and the script's exit status is that of the last failure. With $OUT set, the
# whole log is kept there.
#
# Usage: bash scripts/gpu_check.sh [STEPS]   (STEPS: section 2's training steps, default 1000)
# Dry run on a CPU (every section starts; the CUDA ones stop at "no CUDA GPU"):
#   CONFIG=configs/tiny.yaml bash scripts/gpu_check.sh 20
# On the device machine the data and missing wheels travel with the call: copy Multi30k
# into the ignored data/ folder (mkdir -p data && cp -r ../shared/data/multi30k data/), fetch
# wheels with ../shared/gpu/prepare-wheels.sh (datasets, sentencex and what they need) and
# carry ["data/multi30k", ".whl"]; the command then installs them into python3's own
# environment first (pip install --no-index --no-deps .whl/*.whl): with --target outside it,
# `datasets` pickles those modules by value for its fingerprints, and fails. The whole
# command (timeout_s about 500: the sections' limits add up to 470 s):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl \
#     && PYTHONPATH=$PWD MULTI30K_DIR=data/multi30k bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
steps=${1:-1000}
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
[ -n "${OUT:-}" ] && exec > >(tee "$OUT/gpu_check.log") 2>&1
dir=$(bash scripts/prepare_data.sh) || exit 2
config=${CONFIG:-configs/multi30k_de_en_gpu.yaml}  # CONFIG: a smaller one for a dry run
data="data.train=$dir/train data.valid=$dir/val data.test=$dir/test_2016_flickr"
parallel="model.decoder=parallel model.input_feed=false model.dec_layers=2"
export python config data dir steps
status=0
section() {  # section NAME SECONDS COMMAND...: runs it with a time limit, reports a failure
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date -u +%H:%M:%S)) =="
    # a child bash, so that the time limit also covers this script's functions
    timeout "$limit" bash -c '"$@"' section "$@" || { status=$?; echo "!! $name failed (exit $status)"; }
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
$python -c "import torch, datasets; print('torch', torch.__version__, 'datasets', datasets.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA GPU')"

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
section "0. the card's bf16 matrix rate" 20 matrix_rate

bench="$python scripts/bench_train.py $config $data"  # then KEY=VALUE overrides, then options
timed="--steps 40 --warmup 10 --precisions bf16"
section "1a. training, input feeding, eager" 45 $bench train.cuda_graphs=false $timed
section "1b. training, input feeding, CUDA graphs" 60 $bench train.cuda_graphs=true $timed
section "1c. training, parallel decoder, eager" 35 $bench $parallel train.cuda_graphs=false $timed
section "1d. training, parallel decoder, CUDA graphs" 45 $bench $parallel train.cuda_graphs=true \
    $timed

train_for_steps() {  # train_for_steps RUN GRAPHS: $steps steps, one validation at the end
    rm -rf "$1"
    $python -m nmt train "$config" --out "$1" $data train.max_steps="$steps" \
        train.valid_every="$steps" train.log_every=$((steps < 100 ? steps : 100)) \
        train.cuda_graphs="$2" || return
    $python - "$1" <<'PY'
import json, sys
events = [json.loads(line) for line in open(f"{sys.argv[1]}/metrics.jsonl")]
train = [e for e in events if e["event"] == "train"]
valid = [e for e in events if e["event"] == "valid"][-1]
timed = train[1:] or train  # the first interval includes warm-up and captures
tps = sum(e["tok_per_s"] for e in timed) / len(timed)
print(f"{sys.argv[1]}: steps={valid['step']} train_s={train[-1]['elapsed']} tok/s={tps:.0f} "
      f"val_loss={valid['loss']} val_ppl={valid['ppl']} val_bleu={valid['bleu']}")
PY
}
test_bleu() {  # test_bleu RUN: beam 5 on test_2016_flickr with the graph run's model
    $python -m nmt translate "$1" -i "$dir/test_2016_flickr.de.gz" -o "$1/test.hyp.en" \
        --beam 5 --device cuda || return
    $python -m nmt evaluate --hyp "$1/test.hyp.en" --ref "$dir/test_2016_flickr.en.gz"
}
export -f train_for_steps test_bleu
section "2a. $steps steps with CUDA graphs" 90 train_for_steps runs/gpu_graphs true
section "2b. the same $steps steps eagerly" 110 train_for_steps runs/gpu_eager false
section "2c. test BLEU of the graph run's model" 25 test_bleu runs/gpu_graphs

translate_speed() {  # the graph run's model, or the eager run's if that one failed
    local run=runs/gpu_graphs
    [ -f $run/best.pt ] || run=runs/gpu_eager
    $python scripts/bench_translate.py $run --device cuda --precisions fp32 bf16 \
        --beams 5 1 --batch-sents 1000 --graphs \
        --src "$dir/test_2016_flickr.de.gz" --ref "$dir/test_2016_flickr.en.gz"
}
export -f translate_speed
section "3. translation speed, eager and captured search" 40 translate_speed
exit $status
