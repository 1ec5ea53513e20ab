"""Wan text-to-video pipelines with a ReHyAt transformer, loaded from local folders only.

The pipeline object is diffusers' own ``WanPipeline`` (scheduler, classifier-free guidance, negative prompt,
generators, VAE decode); only its ``transformer`` is ReHyAt-converted.  Its forward runs in ``"parallel"`` or
``"recurrent"`` mode (:func:`rehyat.wan.convert.set_rehyat_mode`), so the pipeline code is unchanged.

``load_pipeline(path)`` accepts

* a ReHyAt checkpoint folder (``rehyat_config.json``): the base Wan folder it records (or ``base_model=``) supplies
  the VAE, text encoder, tokenizer, scheduler and — for ``"feature_maps"`` checkpoints — the transformer weights;
* a plain diffusers Wan folder (``model_index.json``): the softmax baseline, unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanPipeline

from .checkpoint import (BaseCheckpointNotFoundError, _missing_base_message, is_rehyat_checkpoint, load_rehyat,
                         resolve_base_model)
from .convert import is_rehyat, set_rehyat_mode

_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")


def check_pipeline_folder(folder: str | os.PathLike | None) -> Path:
    """A local diffusers Wan pipeline folder, or :class:`BaseCheckpointNotFoundError` naming what is missing."""
    if folder is None:
        raise BaseCheckpointNotFoundError(_missing_base_message(
            "/path/to/Wan2.1-T2V-1.3B-Diffusers", "no base pipeline folder given"))
    folder = Path(folder).expanduser()
    if not (folder / "model_index.json").is_file():
        why = f"{folder} does not exist" if not folder.exists() else f"{folder} has no model_index.json"
        raise BaseCheckpointNotFoundError(_missing_base_message(str(folder), why))
    missing = [c for c in _COMPONENTS if not (folder / c).is_dir()]
    if missing:
        raise BaseCheckpointNotFoundError(_missing_base_message(str(folder), f"{folder} lacks {missing}"))
    return folder


def load_pipeline(path: str | os.PathLike, *, base_model: str | os.PathLike | None = None, mode: str = "parallel",
                  torch_dtype: torch.dtype | None = None, vae_dtype: torch.dtype = torch.float32,
                  device: str | torch.device | None = None, progress: bool = False) -> WanPipeline:
    """A ``WanPipeline`` from a ReHyAt checkpoint or a plain Wan folder (see module docstring); offline only.

    ``torch_dtype`` applies to the transformer and text encoder (e.g. ``torch.bfloat16`` on GPU); the VAE stays in
    ``vae_dtype`` (float32, as diffusers' Wan example recommends).  ``mode="recurrent"`` needs a fully converted causal
    model.
    """
    path = Path(path).expanduser()
    if is_rehyat_checkpoint(path):
        base = check_pipeline_folder(resolve_base_model(path, base_model))
        transformer = load_rehyat(path, base, torch_dtype=torch_dtype)
    else:
        base, transformer = check_pipeline_folder(path), None
    vae = AutoencoderKLWan.from_pretrained(base, subfolder="vae", torch_dtype=vae_dtype, local_files_only=True)
    kw = {"transformer": transformer} if transformer is not None else {}
    pipe = WanPipeline.from_pretrained(base, vae=vae, torch_dtype=torch_dtype, local_files_only=True, **kw)
    if is_rehyat(pipe.transformer):
        set_rehyat_mode(pipe.transformer, mode)
    elif mode != "parallel":
        raise ValueError(f"{path} is a plain (softmax) Wan model; mode={mode!r} needs a ReHyAt checkpoint")
    if device is not None:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=not progress)
    return pipe
