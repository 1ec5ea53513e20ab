"""Functional helpers around :class:`rehyat.wan.model.ReHyAtWanTransformer3DModel` (kept for existing callers).

``convert_wan_to_rehyat(transformer, blocks, **fields)`` is a thin alias of
``ReHyAtWanTransformer3DModel.from_wan(transformer, blocks=blocks, **fields)``: it converts the given dense
``WanTransformer3DModel`` **in place** (its class becomes the ReHyAt subclass; no weight is copied) and returns it.
``revert_to_softmax(t)`` is ``t.to_wan()``.  The mode helpers accept plain Wan models too (always ``"parallel"``).
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch

from rehyat.config import ReHyAtConfig, resolve_blocks

from rehyat.wan.model import MODES, ReHyAtWanTransformer3DModel, is_rehyat
from .processor import ReHyAtWanAttnProcessor

__all__ = ["MODES", "ReHyAtConfig", "convert_wan_to_rehyat", "feature_map_state_dict", "get_rehyat_config",
           "get_rehyat_mode", "is_rehyat", "recurrent_unsupported_reason", "rehyat_mode", "rehyat_processors",
           "resolve_blocks", "revert_to_softmax", "set_rehyat_mode"]


def convert_wan_to_rehyat(transformer, blocks: str | int | Iterable[int] | None = None, *,
                          config: ReHyAtConfig | dict | str | None = None, seed: int | None = None,
                          **fields) -> ReHyAtWanTransformer3DModel:
    """Install ReHyAt on ``attn1`` of the chosen blocks of ``transformer``, in place; returns it.

    ``config`` (a :class:`ReHyAtConfig`, dict or preset name) and ``**fields`` (``chunk_frames=``, ``causal=``, ...)
    as in :meth:`ReHyAtWanTransformer3DModel.from_wan`; ``blocks`` overrides the config's blocks.  The feature maps
    are freshly initialised (``seed``: deterministic, global RNG untouched).  Converting a converted model raises.
    """
    if blocks is not None:
        fields["blocks"] = blocks
    return ReHyAtWanTransformer3DModel.from_wan(transformer, config, seed=seed, **fields)


def revert_to_softmax(transformer):
    """Undo :func:`convert_wan_to_rehyat` in place (:meth:`ReHyAtWanTransformer3DModel.to_wan`); returns it."""
    get_rehyat_config(transformer)
    return transformer.to_wan()


def get_rehyat_config(transformer) -> ReHyAtConfig:
    if not is_rehyat(transformer):
        raise ValueError("transformer is not ReHyAt-converted (use ReHyAtWanTransformer3DModel.from_wan first)")
    return transformer.rehyat_config


def rehyat_processors(transformer) -> dict[int, ReHyAtWanAttnProcessor]:
    """``{block index: processor}`` of the converted blocks (empty for a dense model)."""
    return transformer.rehyat_processors() if is_rehyat(transformer) else {}


def recurrent_unsupported_reason(transformer) -> str | None:
    """Why the constant-memory recurrent forward cannot run on ``transformer`` (``None`` if it can)."""
    if not is_rehyat(transformer):
        return "the transformer is not ReHyAt-converted"
    return transformer.recurrent_unsupported_reason()


def set_rehyat_mode(transformer, mode: str) -> None:
    """Select ``"parallel"`` or ``"recurrent"`` (a plain Wan transformer is always ``"parallel"``)."""
    if is_rehyat(transformer):
        transformer.set_rehyat_mode(mode)
    elif mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    elif mode == "recurrent":
        raise ValueError(f"recurrent mode unavailable: {recurrent_unsupported_reason(transformer)}")


def compile_rehyat(transformer, **compile_kwargs):
    """``torch.compile`` (inductor by default) the projections, QK-norm, RoPE and phi of every converted block, in
    place (:meth:`ReHyAtWanAttnProcessor.enable_compile`; ``compile_kwargs`` go to ``torch.compile``); returns
    ``transformer``.  Weights and ``state_dict`` keys are unchanged, so ``save_pretrained`` works as before.

    For GPUs, where the elementwise passes are memory-bound; on this project's CPU it does not pay (docs/attention.md).
    """
    procs = rehyat_processors(transformer)
    if not procs:
        raise ValueError("no ReHyAt processors to compile: convert the model first (convert_wan_to_rehyat)")
    for proc in procs.values():
        proc.enable_compile(**compile_kwargs)
    return transformer


def get_rehyat_mode(transformer) -> str:
    return transformer.rehyat_mode if is_rehyat(transformer) else "parallel"


@contextlib.contextmanager
def rehyat_mode(transformer, mode: str) -> Iterator[None]:
    """Temporarily switch the mode (restores the previous one)."""
    old = get_rehyat_mode(transformer)
    set_rehyat_mode(transformer, mode)
    try:
        yield
    finally:
        if is_rehyat(transformer):
            transformer.set_rehyat_mode(old)


def feature_map_state_dict(transformer) -> dict[str, torch.Tensor]:
    """The ReHyAt-only entries of ``transformer.state_dict()`` (``blocks.{i}.attn1.processor.*``)."""
    return {k: v for k, v in transformer.state_dict().items() if ".attn1.processor." in k}
