#!/usr/bin/env bash
# Installs ReHyAt and its evaluation stack into the active Python environment (use a venv).
#   bash scripts/install.sh          # library, evaluation, human study, reports
#   bash scripts/install.sh --vbench # + what the VBench / VBench-2.0 model dimensions import (docs/evaluation.md)
#   bash scripts/install.sh --test   # + --vbench, test tools and the Debian Chromium used by the browser tests (root/apt)
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
# pip would then list ~200 unmet vbench/vbench2 pins under a resolver "ERROR" after every install: expected and
# harmless, so those installs skip the check (--no-warn-conflicts); `pip check` still shows them.
echo "install.sh: vbench/vbench2 go in with --no-deps (their pins conflict with diffusers 0.42); pip's conflict list for them is expected and suppressed"
$PIP install -q --no-deps --no-warn-conflicts vbench==0.1.5 vbench2==0.1.1
$PIP install -q --no-warn-conflicts -r scripts/vbench-runtime.txt
if [ "${1:-}" = "--vbench" ] || [ "${1:-}" = "--test" ]; then
  # the model dimensions' imports that can share this venv (scripts/vbench-dimensions.txt); pyiqa without its
  # training/dev requirements (opencv-python, bitsandbytes, datasets, tensorboard, ...): MUSIQ needs none of them
  $PIP install -q --no-warn-conflicts -r scripts/vbench-dimensions.txt
  $PIP install -q --no-deps --no-warn-conflicts pyiqa==0.1.16
fi
if [ "${1:-}" = "--test" ]; then
  # the optional 'export' extra (onnx, onnxscript, onnxruntime): tests/export exports and runs the chunk-step graphs
  $PIP install -q --no-warn-conflicts -e ".[export]"
  # the optional 'executorch' extra (tests/export/test_export_executorch.py; ~10 s, ~160 MB): executorch 1.5.1 requires
  # coremltools, scikit-learn, hypothesis, expecttest, parameterized, kgb, hydra-core, pytorch-tokenizers, ... that
  # its export (exir, XNNPACK partitioner) and runtime paths never import; install it without dependencies, then the
  # rest of the extra (pyproject.toml): what those paths do import
  $PIP install -q --no-deps --no-warn-conflicts executorch==1.5.1
  $PIP install -q --no-warn-conflicts "torchao>=0.18,<0.19" "ruamel.yaml>=0.17" "tabulate>=0.9" "flatbuffers>=24"
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      echo "install Debian's chromium (sudo apt-get install chromium) for the browser tests" >&2
    fi
  fi
  # pdflatex + booktabs/graphicx/geometry (Debian's texlive-latex-base + texlive-latex-recommended, ~80 MB): the report
  # tests compile the LaTeX tables and PDF figures that reports.build writes.
  if ! command -v pdflatex >/dev/null 2>&1 || ! kpsewhich booktabs.sty >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        texlive-latex-base texlive-latex-recommended >/dev/null
    else
      echo "install Debian's texlive-latex-base texlive-latex-recommended (sudo apt-get install ...) for the LaTeX tests" >&2
    fi
  fi
  # PostgreSQL server binaries (Debian's postgresql): the human-study tests start and stop their own server.
  if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
      echo "install Debian's postgresql (sudo apt-get install postgresql) for the PostgreSQL store tests" >&2
    fi
  fi
fi
