#!/usr/bin/env bash
# mypy over the package as it is imported (timm_uscl.training.*, not training.*), then tests, benchmarks and
# scripts against it. training/, configs/ and hub_cards/ install inside timm_uscl (pyproject's package-dir), a
# layout mypy cannot map, so .typecheck/ holds the installed layout as links (rebuilt each run, gitignored) and
# [tool.mypy] checks that. Paths in the report are given back as the repository's. Extra arguments go to mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .typecheck
mkdir -p .typecheck/timm_uscl
for entry in timm_uscl/*.py; do ln -s "../../$entry" ".typecheck/$entry"; done
for sub in training configs hub_cards; do ln -s "../../$sub" ".typecheck/timm_uscl/$sub"; done
.venv/bin/python -m mypy "$@" 2>&1 | sed -e 's#^\.typecheck/timm_uscl/\(training\|configs\|hub_cards\)/#\1/#' \
  -e 's#^\.typecheck/timm_uscl/#timm_uscl/#'
