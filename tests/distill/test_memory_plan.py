"""``--dry-run``: the meta-device memory plan, against peaks measured on CPU (benchmarks/memory_plan.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rehyat.distill.memory_plan import ARCHITECTURES, StepSpec, per_gpu, simulate

ROOT = Path(__file__).resolve().parents[2]


def test_plan_agrees_with_a_cpu_measurement_at_reduced_depth_same_width(tmp_path):
    """One 1.3B-width block (1536 wide, FFN 8960, 12 heads): the plan's peak within 15 % of the resident-set peak of
    the same two training steps run for real (stage 2 full fine-tuning, with and without checkpointing; stage 1).
    BENCHMARKS.md has the run at two blocks and 2,304 tokens."""
    out = tmp_path / "mp"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory_plan.py"), "--layers", "1",
                           "--latent", "16,3,16,16", "--text-len", "64", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["case"] for r in rows] == ["stage2", "stage2-checkpointing", "stage1"]
    for r in rows:
        assert abs(r["relative_error"]) <= 0.15, r
    assert proc.returncode == 0


def test_named_architectures_and_parallelism(capsys):
    from rehyat.distill.__main__ import main

    assert main(["stage2", "--dry-run", "--model", "wan2.1-1.3b", "--latent-frames", "2", "--latent-height", "8",
                 "--latent-width", "8", "--max-sequence-length", "16", "--mixed-precision", "no"]) == 0
    text = capsys.readouterr().out
    assert "stage2 memory plan per GPU: wan2.1-1.3b" in text and "PEAK" in text
    plan = json.loads(text[text.index("{"):])
    # Wan2.1-1.3B has 1.42e9 parameters (diffusers' config); the ReHyAt feature maps of 15 blocks add a few percent
    assert 1.42e9 < plan["total_parameters"] < 1.5e9 and plan["trainable_parameters"] == plan["total_parameters"]
    ckpt = plan["plans"]["checkpointing"]
    assert 4 * plan["total_parameters"] <= ckpt["parameters"] < 4.001 * plan["total_parameters"]  # + buffers
    assert ckpt["optimizer_state"] == 2 * ckpt["gradients"] == 8 * plan["trainable_parameters"]

    arch = dict(ARCHITECTURES["wan2.1-14b"], num_layers=2)
    from rehyat.config import get_preset

    sim = simulate(StepSpec("stage2", arch, get_preset("paper-main").replace(blocks="all"), (16, 2, 8, 8), 1, 16))
    one, ddp, fsdp = (per_gpu(sim, p, w, 4) for p, w in (("single", 1), ("ddp", 2), ("fsdp", 8)))
    assert fsdp["parameters"] == pytest.approx(one["parameters"] / 8)
    assert fsdp["optimizer_state"] == pytest.approx(one["optimizer_state"] / 8)
    assert fsdp["fsdp_unsharded"] > 0 and fsdp["peak"] < one["peak"] <= ddp["peak"]


def test_unknown_architecture_is_a_clear_error(capsys):
    from rehyat.distill.__main__ import main

    assert main(["stage1", "--dry-run", "--teacher", "wan9-huge"]) == 2
    err = capsys.readouterr().err
    assert "wan2.1-1.3b" in err and "wan9-huge" in err
