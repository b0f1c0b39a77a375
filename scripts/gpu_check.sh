#!/usr/bin/env bash
# Everything the issues ask of a GPU, in one run of a few minutes:
#   1. training throughput and peak GPU memory of the GPU config, bf16 and fp16 (AMP) vs fp32;
#   2. a short training run of the GPU config with AMP: tokens/s, peak memory, val BLEU;
#   3. beam-5 translation of the test set with the model it trained.
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

echo "== 1. training throughput (tokens/s, peak memory) =="
$python scripts/bench_train.py $config $data --steps 100 --warmup 20 --precisions fp32 bf16 fp16

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
start=$(date +%s.%N)
$python -m nmt translate "$run" -i "$dir/test_2016_flickr.de.gz" -o "$run/test.hyp.en" --beam 5 --device cuda
end=$(date +%s.%N)
echo "sentences/s (whole command, model load included): $(echo "1000 / ($end - $start)" | bc -l | cut -c1-6)"
$python -m nmt evaluate --hyp "$run/test.hyp.en" --ref "$dir/test_2016_flickr.en.gz"
