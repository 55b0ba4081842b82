#!/usr/bin/env bash
# The prepared device run (issue 12.5): ONE command on the lent GPU, from the repository root, with the bundle of
# scripts/device/build_bundle.py carried (device tool: carry [".device_bundle"], timeout_s 600):
#
#   bash scripts/device/run.sh                                  # the paper's budget: 300 epochs at 64²
#   EPOCHS=100 EVAL_EPOCHS=10 BUDGET_S=420 bash scripts/device/run.sh
#   DEVICE=cpu EPOCHS=1 SIZE=32 ... bash scripts/device/run.sh  # the dry run on CPU (tests/scripts/test_device_run.py)
#
# It pretrains Meta-USCL (per-view BatchNorm, the reference), USCL and SimCLR from the frame store, evaluates them
# and random init with the reference protocol (POCUS, BUSI, BUSI segmentation; fine-tune and linear probe), and
# writes into $OUT at most 8 files of at most 15 MiB: results.json, results.md, folds.png, run.log, the Meta-USCL
# backbone (fp16, 2 parts) and the resume state of a run cut short (2 parts). Copy them into $BUNDLE/resume/
# (build_bundle.py --resume-from DIR) and the next lease continues where this one stopped.
#
# Environment (default): BUNDLE (.device_bundle)  OUT (runs/device_out; the device tool sets it)  DEVICE (cuda)
#   EPOCHS (300)  SIZE (64, the bundle's)  BATCH (32)  META_BATCH (32)  EVAL_EPOCHS (30)  FRAMES (16, the bundle's)
#   FOLDS ("0 1 2 3 4")  TASKS ("pocus busi busi_seg")  METHODS ("meta_uscl uscl simclr")  JOINT (1: a joint-
#   BatchNorm Meta-USCL run when time is left)  MAX_ITEMS (unset, the bundle's)  BUDGET_S (540: no stage runs past
#   it, so everything is written before the tool's 600 s)  BENCH_BATCHES (300)  CHECKPOINT_EVERY (50 steps)
#   WORK (runs/device_work)  INSTALL (auto: the package and the bundle's wheels into /tmp/site unless
#   timm_uscl.training already imports; 0: never)  PYTHON (python3)
set -uo pipefail
cd "$(dirname "$0")/../.."
export RUN_START=${RUN_START:-$(date +%s)}
export BUNDLE=${BUNDLE:-.device_bundle} OUT=${OUT:-runs/device_out} PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-540}
export BUDGET_S
mkdir -p "$OUT"

install() {  # the device image has torch, timm, ... but not this package nor segmentation-models-pytorch
    local site=/tmp/site
    $PYTHON -m pip install -q --no-deps --no-build-isolation --no-index --target "$site" . || return 1
    if compgen -G "$BUNDLE/wheels/*.whl" >/dev/null; then
        $PYTHON -m pip install -q --no-deps --no-index --target "$site" "$BUNDLE"/wheels/*.whl || return 1
    fi
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
}

{
    echo "device run: $(date -u +%FT%TZ) budget ${BUDGET_S}s bundle $BUNDLE out $OUT"
    if [ "${INSTALL:-auto}" = 1 ] || { [ "${INSTALL:-auto}" = auto ] \
        && ! $PYTHON -c "import timm_uscl.training.data.store_module" 2>/dev/null; }; then
        install || { echo "install failed"; exit 1; }
    fi
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    $PYTHON -c "import torch, timm, timm_uscl.training.engine, timm_uscl.training.evaluation.run, \
segmentation_models_pytorch as smp; print('torch', torch.__version__, 'timm', timm.__version__, 'smp', smp.__version__)" \
        || { echo "the package does not import on this machine (see above): nothing was run"; exit 1; }
    timeout --signal=INT --kill-after=20 $((BUDGET_S + 40)) $PYTHON scripts/device/run_device.py
} 2>&1 | tee "$OUT/run.log"
exit "${PIPESTATUS[0]}"
