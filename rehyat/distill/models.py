"""Where the models of both stages come from (local folders only; ``"tiny"`` = the built-in tiny random Wan)."""

from __future__ import annotations

from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}") from None


def load_teacher(spec: str, dtype: torch.dtype = torch.float32, subfolder: str | None = None):
    """The softmax Wan transformer: ``"tiny"`` or a local diffusers Wan folder (pipeline or bare transformer;
    ``subfolder`` picks one transformer of a pipeline, e.g. Wan2.2 A14B's ``transformer_2``).

    Returns ``(transformer, absolute base folder)``; a missing folder raises ``BaseCheckpointNotFoundError`` that says
    what to download and where to put it.
    """
    from rehyat.wan.checkpoint import load_base_transformer, resolve_base_transformer

    if spec == "tiny":
        from rehyat.tiny import tiny_model_dir

        folder = tiny_model_dir()
    elif subfolder:
        folder = Path(spec).expanduser()
    else:
        folder, _ = resolve_base_transformer(spec)
    transformer = load_base_transformer(folder, torch_dtype=dtype, subfolder=subfolder)
    return transformer, str(Path(folder).resolve())


def resolve_student(spec: str) -> Path:
    """A ReHyAt checkpoint folder: ``"tiny"`` = the tiny model's stored ReHyAt checkpoint."""
    if spec == "tiny":
        from rehyat.tiny import tiny_model_dir

        return tiny_model_dir() / "rehyat"
    p = Path(spec).expanduser()
    from rehyat.wan.checkpoint import is_rehyat_checkpoint

    if not is_rehyat_checkpoint(p):
        raise FileNotFoundError(f"{p} is not a ReHyAt checkpoint (neither rehyat_config.json nor a config.json with a "
                                f"'rehyat' entry); pass the `rehyat/` folder a stage-1 run writes, a folder written "
                                f"by save_pretrained, or 'tiny'")
    return p
