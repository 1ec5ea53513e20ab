"""Launched by test_ddp.py under ``torchrun --standalone --nproc_per_node 2`` (gloo, CPU): two steps of each stage,
then every rank saves its trainable tensors so the test can check that ranks agree and match a 1-process run."""

import json
import sys

import torch

from rehyat.distill.stage1 import Stage1Config, train_stage1
from rehyat.distill.stage2 import Stage2Config, train_stage2


def main(out: str, data: str, s1: str) -> None:
    torch.set_num_threads(1)
    # One process group for both stages (re-creating a gloo group in the same processes is racy); the trainers join
    # an existing group and leave it alone.
    torch.distributed.init_process_group("gloo")
    r1 = train_stage1(Stage1Config(**json.loads(s1), out=f"{out}/s1"))
    rank = int(__import__("os").environ["RANK"])
    torch.save({k: v.detach().clone() for k, v in r1["model"].named_parameters() if v.requires_grad},
               f"{out}/stage1_rank{rank}.pt")
    r2 = train_stage2(Stage2Config(model="tiny", data=data, out=f"{out}/s2", max_sequence_length=16, steps=2,
                                   lr=1e-3, progress=False, checkpoint_every=1))
    torch.save({k: v.detach().clone() for k, v in r2["model"].named_parameters()}, f"{out}/stage2_rank{rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
