"""FSDP (accelerate's FSDP2 plugin) with two CPU processes: stage 2 trains, saves sharded checkpoints, resumes,
keeps an EMA and exports one consolidated ReHyAt model — equal to one process with the global batch.

accelerate 1.15 never turns a CPU run into FSDP by itself (``AcceleratorState`` enables FSDP only for accelerator
device types; a ``cpu=True`` run stays MULTI_CPU and its model would be wrapped in DDP): ``rehyat.distill.engine``
switches the state to FSDP explicitly, so this runs accelerate's own FSDP2 code on gloo."""

import json
import os
import subprocess
import sys

import torch

from rehyat.distill.stage2 import Stage2Config, consolidate_checkpoint, train_stage2
from rehyat.wan.checkpoint import load_rehyat


def _launch(args, timeout=600):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--use_fsdp", "--fsdp_version", "2",
           "--num_processes", "2", "--main_process_port", "29641", "-m", "rehyat.distill", *args]
    proc = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def test_fsdp_two_cpu_processes_train_save_resume_export(tmp_path, synth_data):
    out = tmp_path / "fsdp"
    args = ["stage2", "--model", "tiny", "--data", str(synth_data), "--max-sequence-length", "16", "--steps", "3",
            "--lr", "1e-3", "--no-progress", "--checkpoint-every", "1", "--ema", "--ema-decay", "0.9",
            "--out", str(out)]
    first = _launch(args + ["--stop-after", "2"])
    assert "switching its state to FSDP" in first.stderr
    ck = out / "checkpoints" / "step_00000002"
    # sharded: one DCP file per process for the model and for the optimiser
    assert sorted(p.name for p in (ck / "pytorch_model_fsdp_0").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert sorted(p.name for p in (ck / "optimizer_0").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert json.loads((ck / "rehyat_state.json").read_text())["distributed_type"] == "DistributedType.FSDP"
    _launch(args)  # resumes at step 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["resumed_from"] == 2 and summary["distributed_type"] == \
        "DistributedType.FSDP" and summary["world_size"] == 2

    # one process with the global batch, same EMA
    one = train_stage2(Stage2Config(model="tiny", data=str(synth_data), out=str(tmp_path / "one"), steps=3, lr=1e-3,
                                    max_sequence_length=16, progress=False, batch_size=2, ema=True, ema_decay=0.9))
    ref = one["model"].state_dict()
    got = load_rehyat(out / "rehyat").state_dict()  # consolidated from the shards at the end
    assert set(got) == set(ref)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], atol=1e-5, rtol=1e-4, msg=k)
    ema, ema_ref = load_rehyat(out / "rehyat_ema").state_dict(), load_rehyat(tmp_path / "one" / "rehyat_ema").state_dict()
    for k in ref:
        torch.testing.assert_close(ema[k], ema_ref[k], atol=1e-5, rtol=1e-4, msg=k)
    assert any(not torch.equal(ema[k], got[k]) for k in got)  # the EMA is not the last weights

    # the sharded checkpoint alone (no process group) consolidates to the same model
    merged = load_rehyat(consolidate_checkpoint(out, tmp_path / "merged")).state_dict()
    for k in got:
        assert torch.equal(merged[k], got[k]), k
