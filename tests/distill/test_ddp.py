import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from rehyat.distill.stage1 import Stage1Config, train_stage1
from rehyat.distill.stage2 import Stage2Config, train_stage2

HERE = Path(__file__).resolve().parent


def test_torchrun_two_gloo_ranks_match_one_process_with_the_global_batch(tmp_path, tiny_dir, synth_data, tiny_s1):
    s1 = tiny_s1 | dict(steps=2, lr=1e-2, guidance_scale=2.0, checkpoint_every=1)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "ddp_worker.py"), str(tmp_path / "ddp"), str(synth_data), json.dumps(s1)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for stage in ("stage1", "stage2"):
        r0 = torch.load(tmp_path / "ddp" / f"{stage}_rank0.pt")
        r1 = torch.load(tmp_path / "ddp" / f"{stage}_rank1.pt")
        for k in r0:
            assert torch.equal(r0[k], r1[k]), f"{stage}: ranks differ at {k}"

    # one process with batch 2 = two ranks with batch 1 (same global samples, gradients averaged)
    single1 = train_stage1(Stage1Config(**(s1 | dict(batch_size=2, out=str(tmp_path / "one" / "s1")))))["model"]
    ref1 = torch.load(tmp_path / "ddp" / "stage1_rank0.pt")
    got1 = {k: v for k, v in single1.named_parameters() if v.requires_grad}
    assert set(got1) == set(ref1)
    for k in ref1:
        torch.testing.assert_close(got1[k].detach(), ref1[k], atol=1e-5, rtol=1e-4, msg=k)
    single2 = train_stage2(Stage2Config(model="tiny", data=str(synth_data), out=str(tmp_path / "one" / "s2"),
                                        max_sequence_length=16, steps=2, lr=1e-3, progress=False, batch_size=2))
    ref2 = torch.load(tmp_path / "ddp" / "stage2_rank0.pt")
    for k, v in single2["model"].named_parameters():
        torch.testing.assert_close(v.detach(), ref2[k], atol=1e-5, rtol=1e-4, msg=k)
    # rank 0 wrote the metrics and checkpoints; every rank wrote its RNG state
    ck = tmp_path / "ddp" / "s2" / "checkpoints"
    latest = ck / (ck / "latest").read_text().strip()
    assert {p.name for p in latest.iterdir()} >= {"state.pt", "rng_rank0.pt", "rng_rank1.pt"}
    summary = json.loads((tmp_path / "ddp" / "s2" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["finished"]
