#!/usr/bin/env bash
# Everything the issues ask of a GPU, in one run of a few minutes:
#   0. the card's measured bf16 matrix rate (TFLOP/s), to read the others as a fraction of it;
#   1. training throughput, achieved GFLOP/s and peak GPU memory of the GPU config, bf16 and
#      fp16 (AMP) vs fp32, with and without input feeding;
#   2. a short training run of the GPU config with AMP: tokens/s, peak memory, val BLEU;
#   3. beam-5 translation of the test set with the model it trained (load excluded).
# Usage: bash scripts/gpu_check.sh [SECONDS_OF_TRAINING]   (MULTI30K_DIR as for `make demo`)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-180}
python=${PYTHON:-python3}
dir=$(bash scripts/prepare_data.sh)
run=${RUN:-runs/gpu_check}
config=configs/multi30k_de_en_gpu.yaml
data="data.train=$dir/train data.valid=$dir/val"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

echo "== 0. the card's bf16 matrix rate =="
$python - <<'PY'
import time, torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = torch.randn_like(a)
for _ in range(3):
    a @ b
torch.cuda.synchronize()
start, n = time.perf_counter(), 20
for _ in range(n):
    a @ b
torch.cuda.synchronize()
print(f"bf16 8192^3 matmul: {2 * 8192**3 * n / (time.perf_counter() - start) / 1e12:.0f} TFLOP/s")
PY

echo "== 1. training throughput (tokens/s, GFLOP/s, peak memory) =="
$python scripts/bench_train.py $config $data --steps 100 --warmup 20 --precisions fp32 bf16 fp16
$python scripts/bench_train.py $config $data model.input_feed=false --steps 100 --warmup 20 \
    --precisions bf16 fp16

echo "== 2. ${seconds}s of AMP training, then val BLEU =="
rm -rf "$run"
$python -m nmt train $config --out "$run" $data train.max_time=$seconds train.valid_every=100000
$python - "$run" <<'PY'
import json, sys, torch
events = [json.loads(l) for l in open(f"{sys.argv[1]}/metrics.jsonl")]
train = [e for e in events if e["event"] == "train"][1:]  # the first interval includes warm-up
valid = [e for e in events if e["event"] == "valid"][-1]
tps = sum(e["tok_per_s"] for e in train) / max(len(train), 1)
print(f"train tok/s={tps:.0f} steps={valid['step']} val_bleu={valid['bleu']} val_ppl={valid['ppl']}")
PY

echo "== 3. beam-5 translation of test_2016_flickr =="
$python scripts/bench_translate.py "$run" --device cuda --precisions fp32 bf16 fp16 \
    --src "$dir/test_2016_flickr.de.gz" --ref "$dir/test_2016_flickr.en.gz"
start=$(date +%s.%N)
$python -m nmt translate "$run" -i "$dir/test_2016_flickr.de.gz" -o "$run/test.hyp.en" --beam 5 --device cuda
end=$(date +%s.%N)
echo "sentences/s (whole command, model load included): $(echo "1000 / ($end - $start)" | bc -l | cut -c1-6)"
$python -m nmt evaluate --hyp "$run/test.hyp.en" --ref "$dir/test_2016_flickr.en.gz"
