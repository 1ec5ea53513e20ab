"""Wan text-to-video pipelines with a ReHyAt transformer, loaded from local folders only.

The pipeline object is diffusers' own ``WanPipeline`` (scheduler, classifier-free guidance, negative prompt,
generators, VAE decode, Wan2.2's ``transformer_2`` / ``boundary_ratio`` / ``expand_timesteps``); only its
transformer(s) are ReHyAt models.  Their forward runs in ``"parallel"`` or ``"recurrent"`` mode
(:meth:`ReHyAtWanTransformer3DModel.set_rehyat_mode`), so the pipeline code is unchanged.  ``mode="stream"`` checks
that the pipeline can be sampled chunk by chunk (:func:`rehyat.wan.stream.stream_video`; a clear error otherwise) and
puts its transformers in recurrent mode.

``load_pipeline(path)`` accepts

* a converted pipeline folder (``pipe.save_pretrained`` after :func:`rehyat.wan.convert_pipeline`): its
  ``model_index.json`` names ``rehyat.wan.model.ReHyAtWanTransformer3DModel``, so this is just
  ``WanPipeline.from_pretrained(path)``;
* a ReHyAt transformer folder (either checkpoint layout, :mod:`rehyat.wan.checkpoint`): the base Wan pipeline folder
  it records (or ``base_model=``) supplies the VAE, text encoder, tokenizer, scheduler and — for feature-map
  adapters — the dense transformer weights;
* a plain diffusers Wan folder (``model_index.json``): the softmax baseline, unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanPipeline

from .checkpoint import (BaseCheckpointNotFoundError, _missing_base_message, is_rehyat_checkpoint, load_rehyat,
                         resolve_base_model)
from rehyat.wan.model import MODES, is_rehyat

from .stream import LONG_VIDEO_HINT, check_streamable

PIPELINE_MODES = (*MODES, "stream")  # stream: a sampling schedule (rehyat.wan.stream) on recurrent-mode transformers
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
    ``vae_dtype`` (float32, as diffusers' Wan example recommends).  ``mode="recurrent"`` and ``"stream"`` need a fully
    converted causal model.
    """
    if mode not in PIPELINE_MODES:
        raise ValueError(f"mode must be one of {PIPELINE_MODES}, got {mode!r}")
    path = Path(path).expanduser()
    if is_rehyat_checkpoint(path):
        base = check_pipeline_folder(resolve_base_model(path, base_model))
        transformer = load_rehyat(path, base, torch_dtype=torch_dtype)
    else:
        base, transformer = check_pipeline_folder(path), None
    vae = AutoencoderKLWan.from_pretrained(base, subfolder="vae", torch_dtype=vae_dtype, local_files_only=True)
    kw = {"transformer": transformer} if transformer is not None else {}
    pipe = WanPipeline.from_pretrained(base, vae=vae, torch_dtype=torch_dtype, local_files_only=True, **kw)
    transformers = [t for t in (pipe.transformer, getattr(pipe, "transformer_2", None)) if t is not None]
    if any(is_rehyat(t) for t in transformers):
        for t in transformers:
            if not is_rehyat(t):
                raise ValueError(f"{path}: one transformer of the pipeline is ReHyAt, another is dense; convert both "
                                 f"(rehyat.wan.convert_pipeline)")
    elif mode != "parallel":
        raise ValueError(f"{path} is a plain (softmax) Wan model; mode={mode!r} needs a ReHyAt model with every block "
                         f"converted and causal attention: {LONG_VIDEO_HINT}")
    set_pipeline_mode(pipe, mode)
    if device is not None:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=not progress)
    return pipe


def set_pipeline_mode(pipe, mode: str) -> None:
    """``"parallel"`` / ``"recurrent"``: every ReHyAt transformer of ``pipe`` in that mode.  ``"stream"``: check that
    the pipeline streams (:class:`~rehyat.wan.stream.StreamUnsupportedError` naming why not), then recurrent mode.
    A dense pipeline takes ``"parallel"`` only."""
    if mode not in PIPELINE_MODES:
        raise ValueError(f"mode must be one of {PIPELINE_MODES}, got {mode!r}")
    if mode == "stream":
        check_streamable(pipe)
    transformers = [t for t in (pipe.transformer, getattr(pipe, "transformer_2", None)) if t is not None]
    if not any(is_rehyat(t) for t in transformers):
        if mode != "parallel":
            raise ValueError(f"mode={mode!r} needs a ReHyAt transformer with every block converted and causal "
                             f"attention: {LONG_VIDEO_HINT}")
        return
    for t in transformers:
        t.set_rehyat_mode("recurrent" if mode == "stream" else mode)
