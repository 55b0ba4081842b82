#!/usr/bin/env bash
# The prepared device checks, in sections (SECTIONS, default all of them, in this order):
#   graphs  issue 12.4: the CUDA tests of the graph-captured steps (graphs equal eager; tests/training/meta/
#           test_graphs.py), then eager vs CUDA graphs at 64², 32 pairs, fp32 and bf16 + channels_last
#           (targets on an H100/H200: meta <= 12 ms, plain <= 4 ms per step). Every step forwards each view
#           apart (bn_views=per_view, the reference's BatchNorm batching); the -joint variants one batch.
#   meta    issue 4: a Meta-USCL iteration against a plain SimCLR step on one GPU, in one run
#           (benchmarks/bench_meta.py), bf16 + channels_last and fp32, 64² and 224², 32 pairs (the paper's batch)
#           and 128 pairs at 224² (a batch that fills the GPU); pairs/s = pairs / wall time of a step; peak memory.
#   train   where the device can decode videos, the trainer end to end (benchmarks/bench_train.sh: pairs/s,
#           data-wait fraction, peak memory).
# Writes everything to $OUT (default runs/gpu_suite). The device image has its own torch and timm: the package is
# installed there without dependencies, into /tmp/site.
#
#   OUT=/tmp/out bash benchmarks/gpu_suite.sh                  # everything (more than one 10-minute call)
#   SECTIONS=graphs OUT=$OUT bash benchmarks/gpu_suite.sh      # issue 12.4 only (about 3 minutes)
set -uo pipefail
OUT=${OUT:-runs/gpu_suite}
SECTIONS=${SECTIONS:-graphs meta train}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHON=${PYTHON:-python3}

{ nvidia-smi; $PYTHON -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name())"; } \
    >"$OUT/device.txt" 2>&1
$PYTHON -m pip install -q --no-deps --no-build-isolation --target /tmp/site . >"$OUT/install.log" 2>&1 \
    || { echo "install failed, see install.log"; exit 1; }
export PYTHONPATH=/tmp/site

bench() {  # name, then bench_meta.py arguments
    local name=$1; shift
    echo "== $name: $*"
    timeout 200 $PYTHON benchmarks/bench_meta.py --device cuda "$@" 2>&1 | grep -v -i warning | tee "$OUT/$name.txt"
}
wants() { [[ " $SECTIONS " == *" $1 "* ]]; }

if wants graphs; then
    # --noconftest: the suite's conftest needs the Hub stub's and the clip maker's dependencies, these tests do not;
    # run from /tmp so that the source folder timm_uscl/ does not shadow the installed package
    if $PYTHON -c "import pytest" >/dev/null 2>&1; then
        echo "== graphs_tests"
        repo=$(pwd)
        (cd /tmp && timeout 300 $PYTHON -m pytest -q -rs --noconftest -p no:cacheprovider --rootdir "$repo" \
            "$repo/tests/training/meta/test_graphs.py") 2>&1 | tail -30 | tee "$OUT/graphs_tests.txt"
    else
        echo "graphs tests skipped: pytest is not importable on the device" | tee "$OUT/graphs_tests.txt"
    fi
    skip="meta-jvp meta-dbl approx naive"
    bench graphs_fp32_b32 --sizes 64 --steps 20 --warmup 3 --graphs --skip $skip
    bench graphs_bf16_b32 --bf16 --channels-last --sizes 64 --steps 20 --warmup 3 --graphs --skip $skip
fi
if wants meta; then
    bench fp32_b32 --sizes 64 224 --steps 10 --warmup 3 --skip naive
    bench bf16_b32 --bf16 --channels-last --sizes 64 224 --steps 10 --warmup 3
    bench bf16_b128 --bf16 --channels-last --sizes 224 --batch 128 --steps 10 --warmup 3 --skip naive approx
fi
if wants train; then
    # The trainer end to end (data wait) needs datasets + torchcodec (+ FFmpeg) importable on the device and videos
    # in $TRAIN_DATA, e.g. a copy of COVID-BLUES in the git-ignored .device_data/ carried with the call.
    TRAIN_DATA=${TRAIN_DATA:-.device_data/covid_blues}
    if [ -d "$TRAIN_DATA" ] && $PYTHON -c "import datasets, torchcodec.decoders" >/dev/null 2>&1; then
        TRAIN_DATA=$TRAIN_DATA DEVICE=cuda OUT=$OUT timeout 400 bash benchmarks/bench_train.sh
    else
        echo "trainer section skipped: it needs $TRAIN_DATA and datasets + torchcodec (+ FFmpeg) importable" \
            | tee "$OUT/train_skipped.txt"
    fi
fi
echo "done: $(ls "$OUT")"
