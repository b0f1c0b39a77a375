#!/usr/bin/env bash
# The evaluation a paper table needs, in one command: translate Multi30k
# test_2016_flickr with a run's model (greedy and beam 5), score both with
# SacreBLEU (greedy as the baseline of the paired test) and write
# RUN/report.md and RUN/report.html.
# Usage: scripts/evaluate_multi30k.sh RUN_DIR        (MULTI30K_DIR as for `make demo`)
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:?usage: scripts/evaluate_multi30k.sh RUN_DIR}
nmt=${NMT:-.venv/bin/nmt}
dir=$(bash scripts/prepare_data.sh)
split=test_2016_flickr

"$nmt" translate "$run" -i "$dir/$split.de.gz" -o "$run/$split.greedy.en" --beam 1
"$nmt" translate "$run" -i "$dir/$split.de.gz" -o "$run/$split.beam5.en" --beam 5
for format in markdown html; do
    ext=$([ "$format" = markdown ] && echo md || echo html)
    "$nmt" -q evaluate --hyp "$run/$split.greedy.en" --hyp "$run/$split.beam5.en" \
        --ref "$dir/$split.en.gz" --src "$dir/$split.de.gz" --format "$format" -o "$run/report.$ext"
done
echo "wrote $run/report.md and $run/report.html"
