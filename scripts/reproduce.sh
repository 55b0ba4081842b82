#!/usr/bin/env bash
# The reproduction table in one resumable command (see `timm-uscl reproduce --help` and benchmarks/RESULTS.md):
# pretrain Meta-USCL, USCL and SimCLR on COVID-BLUES at the paper's budget, evaluate them and random init on POCUS
# and BUSI, print the paired comparison. The run root lives outside the work tree (~/.cache/timm-uscl/repro, or
# --root / $TIMM_USCL_REPRO); rerun the same command after an interruption to continue, `... status` to watch.
#
#   bash scripts/reproduce.sh                      # the paper's budget: 300 epochs, 64 px, on this machine's CPU
#   bash scripts/reproduce.sh status               # stages done, running and left, with an ETA
#   bash scripts/reproduce.sh --epochs 8 --root /tmp/repro8    # a short trial in its own root
set -euo pipefail
cd "$(dirname "$0")/.."
export TIMM_USCL_DATA=${TIMM_USCL_DATA:-../shared/data}
exec .venv/bin/timm-uscl reproduce "$@"
