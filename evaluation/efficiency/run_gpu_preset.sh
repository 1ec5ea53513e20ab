#!/usr/bin/env bash
# The gpu preset as one prepared command (< 10 min on one H100/H200), then one 1.3B-width block eager vs torch.compile:
#   bash evaluation/efficiency/run_gpu_preset.sh [OUT_DIR] [WHEEL_DIR]
# WHEEL_DIR (optional): a folder of wheels for an offline machine (torch 2.14.1 CUDA build, diffusers 0.42.1 and the
# project's dependencies, e.g. made with `pip download -d wheels torch==2.14.1 -r <(pip freeze)` on a connected machine);
# they are installed with --no-index before the run.  Without it the active environment is used as is.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-runs/efficiency-gpu}"
WHEELS="${2:-}"
if [ -n "$WHEELS" ]; then
  python -m pip install -q --no-index --find-links "$WHEELS" torch==2.14.1 diffusers==0.42.1
  python -m pip install -q --no-index --find-links "$WHEELS" --no-build-isolation -e .
fi
python - <<'PY'
import torch, sys
if not torch.cuda.is_available():
    sys.exit("no CUDA device visible to torch %s" % torch.__version__)
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
PY
timeout 600 python -m evaluation.run --suite efficiency --preset gpu --device cuda --out "$OUT" --quiet
cat "$OUT/efficiency/table.md"
# eager vs compiled (rehyat.wan.compile_rehyat: projections, QK-norm, RoPE and phi in one inductor region), 480x832
timeout 300 python benchmarks/wan_model.py --device cuda --parts block --frames 81 161 --height 480 --width 832 \
  --repeats 5 --warmup 2 --compile --no-block-tracker --out "$OUT/block_compile.jsonl" | tee "$OUT/block_compile.md"
