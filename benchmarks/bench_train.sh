#!/usr/bin/env bash
# The trainer end to end on a folder of videos: pairs/s, data-wait fraction and (on CUDA) peak memory of
# `timm-uscl pretrain`, plain (simclr preset) and meta (meta_uscl preset), per image size, bf16 + channels_last
# on CUDA. Each run starts with a cold frame cache of its own and logs every step; its last metrics line
# (figures since the start of the epoch in progress: with STEPS past one epoch, a warm-cache epoch) is appended,
# with the preset and size, to $OUT/train.jsonl; the runs' output goes to $OUT/train.log.
#
#   TRAIN_DATA=../shared/data/covid_blues DEVICE=cuda bash benchmarks/bench_train.sh      # GPU, bf16
#   TRAIN_DATA=../shared/data/covid_blues DEVICE=cpu SIZES=64 STEPS=4 bash benchmarks/bench_train.sh
set -uo pipefail
OUT=${OUT:-runs/bench_train}
DEVICE=${DEVICE:-cuda}
SIZES=${SIZES:-64 224}
STEPS=${STEPS:-30}
WORKERS=${WORKERS:-$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))}
PYTHON=${PYTHON:-python3}
: "${TRAIN_DATA:?set TRAIN_DATA to a folder of videos (e.g. ../shared/data/covid_blues)}"
mkdir -p "$OUT"
gpu_flags=()
[ "$DEVICE" = cuda ] && gpu_flags=(--precision bf16)
scratch=$(mktemp -d)
for preset in simclr meta_uscl; do
    for size in $SIZES; do
        run="$scratch/${preset}_${size}"
        echo "== $preset ${size}px, $STEPS steps, $WORKERS workers, $DEVICE ${gpu_flags[*]}" | tee -a "$OUT/train.log"
        $PYTHON -m timm_uscl.cli pretrain --preset "$preset" --data "$TRAIN_DATA" --out "$run" --device "$DEVICE" \
            --image-size "$size" --epochs 1000 --max-steps "$STEPS" --workers "$WORKERS" "${gpu_flags[@]}" \
            --set "cache_dir=$run/frames" --set log_every=1 --no-progress >>"$OUT/train.log" 2>&1 \
            || { echo "failed: see $OUT/train.log"; continue; }
        $PYTHON -c 'import json, sys; last = json.loads(open(sys.argv[1]).read().splitlines()[-1])
print(json.dumps({"preset": sys.argv[2], "size": int(sys.argv[3]), **last}))' \
            "$run/metrics.jsonl" "$preset" "$size" | tee -a "$OUT/train.jsonl"
    done
done
rm -rf "$scratch"
