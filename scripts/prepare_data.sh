#!/usr/bin/env bash
# Prints the folder that holds Multi30k (train, val, test_2016_flickr; .de.gz/.en.gz).
# Uses $MULTI30K_DIR when it has the files; otherwise downloads the raw files
# from the Multi30k dataset's public repository into data/multi30k/.
set -euo pipefail
dir=${MULTI30K_DIR:-../shared/data/multi30k}
splits="train val test_2016_flickr"
have_all() { for s in $splits; do for l in de en; do [ -s "$1/$s.$l.gz" ] || return 1; done; done; }

if have_all "$dir"; then echo "$dir"; exit 0; fi
dir=data/multi30k
if ! have_all "$dir"; then
    mkdir -p "$dir"
    base=https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw
    for s in $splits; do for l in de en; do
        echo "downloading $s.$l.gz" >&2
        curl -fsSL --retry 3 -o "$dir/$s.$l.gz.part" "$base/$s.$l.gz"
        mv "$dir/$s.$l.gz.part" "$dir/$s.$l.gz"
    done; done
fi
echo "$dir"
