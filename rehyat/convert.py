"""``python -m rehyat.convert``: a dense local Wan folder -> a ReHyAt folder, ready for stage-1 distillation.

    python -m rehyat.convert --model /models/Wan2.1-T2V-1.3B-Diffusers --preset paper-main --out /models/rehyat-main
    python -m rehyat.convert --model /models/Wan2.2-T2V-A14B-Diffusers --preset long-video --out DIR  # both experts

A pipeline folder (``model_index.json``) gives a pipeline folder: every Wan transformer (Wan2.2 A14B: ``transformer``
and ``transformer_2``) becomes a ``ReHyAtWanTransformer3DModel``, the other components are written as they are, and
``model_index.json`` names the ReHyAt class, so ``WanPipeline.from_pretrained(DIR)`` loads it.  A bare transformer
folder gives a transformer folder (``ReHyAtWanTransformer3DModel.from_pretrained(DIR)``).  The feature maps are
freshly initialised (``--seed``): distil them (``python -m rehyat.distill stage1``) before judging quality.
Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from rehyat.cli import add_debug_flag, run_cli
from rehyat.config import add_config_arguments, config_from_arguments

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m rehyat.convert", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="local dense Wan folder (pipeline or bare transformer)")
    ap.add_argument("--out", required=True, help="output folder (must not exist, or be empty)")
    ap.add_argument("--seed", type=int, default=0, help="feature-map initialisation seed")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="weight dtype (default: as stored)")
    add_config_arguments(ap)
    add_debug_flag(ap)
    return ap


def convert_folder(model: str | Path, out: str | Path, config, *, seed: int = 0,
                   torch_dtype: torch.dtype | None = None) -> Path:
    """Convert the dense Wan folder ``model`` into ``out`` (see the module docstring); returns ``out``."""
    from diffusers import WanPipeline

    from rehyat.wan import ReHyAtWanTransformer3DModel, convert_pipeline
    from rehyat.wan.checkpoint import missing_model_error

    src, dst = Path(model).expanduser(), Path(out).expanduser()
    if dst.exists() and any(dst.iterdir()):
        raise ValueError(f"{dst} exists and is not empty; choose a new --out folder")
    if (src / "model_index.json").is_file():
        pipe = WanPipeline.from_pretrained(src, torch_dtype=torch_dtype, local_files_only=True)
        convert_pipeline(pipe, config, seed=seed)
        pipe.save_pretrained(dst, safe_serialization=True)
    elif (src / "config.json").is_file():
        model = ReHyAtWanTransformer3DModel.from_wan(src, config, seed=seed, torch_dtype=torch_dtype)
        model.save_pretrained(dst, safe_serialization=True)
    else:
        raise missing_model_error(src, "a dense diffusers Wan folder (model_index.json, or a transformer config.json)")
    return dst


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        cfg = config_from_arguments(args)
        out = convert_folder(args.model, args.out, cfg, seed=args.seed,
                             torch_dtype=DTYPES[args.dtype] if args.dtype else None)
        print(f"[rehyat.convert] wrote {out} ({cfg.label}, blocks {cfg.blocks}); feature maps are untrained — "
              f"distil them with `python -m rehyat.distill stage1`")
        return 0

    return run_cli(run, debug=args.debug, prog="rehyat.convert")


if __name__ == "__main__":
    sys.exit(main())
