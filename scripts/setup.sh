#!/usr/bin/env bash
# Set up a fresh machine: system FFmpeg (torchcodec needs its shared libraries) and .venv with
# torch 2.14.1 + torchvision 0.29.1 (from the local wheel folders) and timm-uscl with its extras.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so\.'; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_install() {  # quiet on success (the image's pip config warns about absent index folders), loud on failure
  local log; log=$(mktemp)
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check "$@" >"$log" 2>&1; then
    cat "$log"; rm -f "$log"; exit 1
  fi
  grep -v "^WARNING: Location" "$log" || true; rm -f "$log"
}
pip_install torch==2.14.1 torchvision==0.29.1
pip_install -e ".[train,dev]"
.venv/bin/python -c "import timm_uscl, timm_uscl.training, torchcodec; print('timm-uscl ready:', timm_uscl.__version__)"
