#!/usr/bin/env bash
# The whole check, as CI runs it: lint and format (ruff), types (mypy), then the test suite.
# Assumes scripts/setup.sh has built .venv. Extra arguments go to pytest (e.g. -x, -k meta).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
bash scripts/mypy.sh
.venv/bin/python -m pytest -q "$@"
