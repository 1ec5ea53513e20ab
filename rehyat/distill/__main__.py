"""``python -m rehyat.distill {stage1,stage2,encode,synth-data} ...`` — see ``docs/distill.md``.

Every option of a stage is a flag and a key of its ``--config FILE`` (JSON or YAML); flags override the file.
Multi-GPU / multi-process: ``accelerate launch [--multi_gpu | --use_fsdp ...] --num_processes N -m rehyat.distill
stage2 ...`` (or ``torchrun --nproc_per_node N -m rehyat.distill ...``); one device: ``python -m rehyat.distill``.
``--dry-run`` prints a stage's per-GPU memory plan instead of training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from rehyat.cli import add_debug_flag

from .common import add_dataclass_flags, build_config, config_keys
from .encode import EncodeConfig, encode_dataset
from .stage1 import Stage1Config, train_stage1
from .stage2 import Stage2Config, train_stage2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rehyat.distill", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, cls, help_ in (("stage1", Stage1Config, "attention distillation of φ (teacher forcing)"),
                             ("stage2", Stage2Config, "flow-matching fine-tuning on a latent dataset"),
                             ("encode", EncodeConfig, "encode mp4 files + prompts with the Wan VAE / text encoder")):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--config", default=None, help="JSON or YAML file with any of the options below")
        if name != "encode":
            sp.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
        add_dataclass_flags(sp, cls)
        add_debug_flag(sp)
        sp.set_defaults(_cls=cls)
    sp = sub.add_parser("synth-data", help="write a synthetic smooth-latent dataset (tests, proxy benchmark)")
    sp.add_argument("--out", required=True)
    sp.add_argument("--num-items", type=int, default=8)
    sp.add_argument("--latent-shape", default="16,3,8,8", help="C,F,H,W")
    sp.add_argument("--text-dim", type=int, default=32)
    sp.add_argument("--text-len", type=int, default=8)
    sp.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    from rehyat.cli import run_cli

    args = _parser().parse_args(argv)
    _setup_logging()
    # missing weights / folders, bad options: a message, no traceback (unless --debug)
    try:
        return run_cli(lambda: _run(args), debug=getattr(args, "debug", False), prog="rehyat.distill")
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # the group accelerate created for this process
            dist.destroy_process_group()


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def _setup_logging() -> None:
    """The trainers' progress notes, summary and warnings on stderr (the main process; warnings from every one)."""
    import logging

    log = logging.getLogger("rehyat.distill")
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("rehyat.distill: %(message)s"))
        log.addHandler(h)
        log.propagate = False
    log.setLevel(logging.INFO if _rank() == 0 else logging.WARNING)


def _run(args) -> int:
    if args.cmd == "synth-data":
        from .data import make_synthetic_dataset

        shape = tuple(int(x) for x in args.latent_shape.split(","))
        make_synthetic_dataset(args.out, num_items=args.num_items, latent_shape=shape, text_dim=args.text_dim,
                               text_len=args.text_len, seed=args.seed)
        print(args.out)
        return 0
    cls = args._cls
    names = config_keys(cls)
    cfg = build_config(cls, args.config, {k: v for k, v in vars(args).items() if k in names})
    if getattr(args, "print_config", False):
        print(json.dumps(dataclasses.asdict(cfg), indent=2, default=str))
        return 0
    if args.cmd == "encode":
        rep = encode_dataset(cfg)
        print(json.dumps(rep, indent=2))
        return 0
    summary = (train_stage1 if args.cmd == "stage1" else train_stage2)(cfg)
    summary.pop("model", None)
    if _rank() == 0:
        print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
