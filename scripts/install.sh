#!/usr/bin/env bash
# Installs ReHyAt and its evaluation stack into the active Python environment (use a venv).
#   bash scripts/install.sh          # library, evaluation, human study, reports
#   bash scripts/install.sh --test   # + test tools and the Debian Chromium used by the browser tests (needs root/apt)
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip"
$PIP install -q --upgrade pip
# torch first, pinned: 2.14.1 + torchvision 0.29.1 is the newest pair that installs from the machine's local wheels and
# that torchvision (needed by vbench) supports; a CUDA build that also runs on CPU.
$PIP install -q torch==2.14.1 torchvision==0.29.1
$PIP install -q -e ".[dev]"
# vbench pins transformers==4.33.2 and vbench2 pins diffusers==0.32.1, both incompatible with diffusers 0.42: install
# them without dependencies and add only the runtime packages their used code paths import (scripts/vbench-runtime.txt).
$PIP install -q --no-deps vbench==0.1.5 vbench2==0.1.1
$PIP install -q -r scripts/vbench-runtime.txt
if [ "${1:-}" = "--test" ]; then
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      echo "install Debian's chromium (sudo apt-get install chromium) for the browser tests" >&2
    fi
  fi
fi
