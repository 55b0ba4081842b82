#!/usr/bin/env bash
# The reproduction table: pretrain Meta-USCL, USCL and SimCLR with the same data and budget (COVID-BLUES
# videos only), then evaluate them and a random-init baseline on POCUS and BUSI (transfer across hospitals,
# devices and organs: no evaluation video is ever seen in pretraining). Every step resumes, so re-running
# the script after an interruption continues where it stopped.
#
#   EPOCHS=300 SIZE=64 DEVICE=cuda bash scripts/reproduce.sh         # the paper's budget (GPU)
#   EPOCHS=8 EVAL_EPOCHS=10 FRAMES=4 bash scripts/reproduce.sh       # the CPU budget of benchmarks/RESULTS.md
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/repro}
EPOCHS=${EPOCHS:-300}
SIZE=${SIZE:-64}
DEVICE=${DEVICE:-auto}
WORKERS=${WORKERS:-2}
EVAL_EPOCHS=${EVAL_EPOCHS:-30}
FRAMES=${FRAMES:-16}
EVAL_DEVICE=${EVAL_DEVICE:-$([ "$DEVICE" = auto ] && echo cpu || echo "$DEVICE")}
CLI=${CLI:-.venv/bin/timm-uscl}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"

for preset in meta_uscl uscl simclr; do
  if [ -f "$OUT/$preset/config.yaml" ] && ! grep -qx "epochs: $EPOCHS" "$OUT/$preset/config.yaml"; then
    echo "reproduce.sh: $OUT/$preset was run with another budget than EPOCHS=$EPOCHS; use another OUT" >&2
    exit 1
  fi
  [ -f "$OUT/$preset/summary.json" ] && continue
  $CLI pretrain --preset "$preset" --data "$DATA/covid_blues" --out "$OUT/$preset" --epochs "$EPOCHS" \
    --image-size "$SIZE" --device "$DEVICE" --workers "$WORKERS" --resume --no-progress
done

evaluate() {  # name model [extra args]
  local name=$1 model=$2; shift 2
  [ -f "$OUT/eval_$name.json" ] && return 0
  $CLI evaluate "$model" --tasks pocus busi busi_seg --image-size "$SIZE" --epochs "$EVAL_EPOCHS" \
    --frames-per-video "$FRAMES" --device "$EVAL_DEVICE" --data-root "$DATA" --no-progress \
    --out "$OUT/eval_$name.json" --markdown "$OUT/eval_$name.md" "$@"
}
for preset in meta_uscl uscl simclr; do
  evaluate "$preset" "local-dir:$OUT/$preset/export" --card "$OUT/$preset/export"
done
evaluate random resnet18_uscl --random-init

"$PYTHON" -m timm_uscl.training.evaluation.repro "$OUT" | tee "$OUT/table.md"
