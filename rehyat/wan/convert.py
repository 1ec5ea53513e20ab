"""Convert any subset of a ``WanTransformer3DModel``'s self-attention layers to ReHyAt, in place.

Only ``blocks[i].attn1`` of the chosen blocks gets a :class:`~rehyat.wan.processor.ReHyAtWanAttnProcessor`; every
other module (cross-attention ``attn2`` included, all weights, all other processors) is left untouched.  Conversion
also

* registers a forward pre-hook on the transformer that writes the frame geometry ``(latent frames, tokens per frame)``
  into the ReHyAt processors — no diffusers source is patched;
* records the :class:`ReHyAtConfig` on the transformer (``transformer.rehyat_config``);
* routes the transformer's ``forward`` through :func:`_rehyat_forward`, which runs diffusers' own
  ``WanTransformer3DModel.forward`` in ``"parallel"`` mode and :func:`rehyat.wan.recurrent.recurrent_forward` in
  ``"recurrent"`` mode (see :func:`set_rehyat_mode`).
"""

from __future__ import annotations

import contextlib
import types
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator, Sequence

import torch
from diffusers import WanTransformer3DModel

from .processor import ReHyAtWanAttnProcessor

MODES = ("parallel", "recurrent")


@dataclass
class ReHyAtConfig:
    """What was converted and how.  Stored in checkpoints (``rehyat_config.json``)."""

    blocks: list[int]
    chunk_frames: int = 3
    overlap_frames: int = 1
    causal: bool = False
    feature_map: str = "polynomial"
    feature_map_kwargs: dict = field(default_factory=dict)
    linear_scale: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ReHyAtConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def resolve_blocks(blocks: str | int | Iterable[int] | None, num_layers: int) -> list[int]:
    """Block indices to convert.

    ``"all"`` / ``None``: every block.  An ``int`` n: n blocks spread evenly over depth, ``[i * L // n for i in
    range(n)]`` (15 of 30 -> 0, 2, ..., 28); the paper does not say which blocks it converts, so pass an explicit list
    to reproduce a specific choice.  A sequence: exactly those indices (negative indices count from the end).
    """
    if blocks is None or (isinstance(blocks, str) and blocks == "all"):
        return list(range(num_layers))
    if isinstance(blocks, str):
        raise ValueError(f"blocks must be 'all', an int or a sequence of indices, got {blocks!r}")
    if isinstance(blocks, int):
        if not 0 <= blocks <= num_layers:
            raise ValueError(f"cannot convert {blocks} of {num_layers} blocks")
        return [i * num_layers // blocks for i in range(blocks)] if blocks else []
    out = []
    for b in blocks:
        b = int(b)
        if not -num_layers <= b < num_layers:
            raise IndexError(f"block index {b} out of range for {num_layers} blocks")
        out.append(b % num_layers)
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate block indices in {list(blocks)}")
    return sorted(out)


def is_rehyat(transformer) -> bool:
    return getattr(transformer, "rehyat_config", None) is not None


def get_rehyat_config(transformer) -> ReHyAtConfig:
    cfg = getattr(transformer, "rehyat_config", None)
    if cfg is None:
        raise ValueError("transformer is not ReHyAt-converted (call convert_wan_to_rehyat first)")
    return cfg


def rehyat_processors(transformer) -> dict[int, ReHyAtWanAttnProcessor]:
    """``{block index: processor}`` of the converted blocks."""
    return {i: b.attn1.processor for i, b in enumerate(transformer.blocks)
            if isinstance(b.attn1.processor, ReHyAtWanAttnProcessor)}


def set_geometry_from_shape(transformer, shape: Sequence[int]) -> None:
    """Write ``(latent frames, tokens per frame)`` of a ``(B, C, F, H, W)`` latent into every ReHyAt processor."""
    _, _, f, h, w = shape
    pt, ph, pw = transformer.config.patch_size
    for proc in rehyat_processors(transformer).values():
        proc.set_geometry(f // pt, (h // ph) * (w // pw))


def _geometry_pre_hook(module, args, kwargs):
    hs = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    set_geometry_from_shape(module, hs.shape)
    return None


def _rehyat_forward(self, hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image=None,
                    return_dict: bool = True, attention_kwargs=None):
    """Forward of a converted transformer: diffusers' forward (parallel) or the chunk-wise recurrent sweep."""
    if getattr(self, "_rehyat_mode", "parallel") == "recurrent":
        from .recurrent import recurrent_forward

        return recurrent_forward(self, hidden_states, timestep, encoder_hidden_states,
                                 encoder_hidden_states_image=encoder_hidden_states_image, return_dict=return_dict,
                                 attention_kwargs=attention_kwargs)
    return type(self).forward(self, hidden_states, timestep, encoder_hidden_states,
                              encoder_hidden_states_image=encoder_hidden_states_image, return_dict=return_dict,
                              attention_kwargs=attention_kwargs)


def convert_wan_to_rehyat(
    transformer: WanTransformer3DModel, blocks: str | int | Iterable[int] | None = "all", *,
    chunk_frames: int = 3, overlap_frames: int = 1, causal: bool = False, feature_map: str = "polynomial",
    feature_map_kwargs: dict | None = None, seed: int | None = None, softmax_backend: str | None = None,
    linear_scale: bool = False,
) -> WanTransformer3DModel:
    """Install ReHyAt on ``attn1`` of the chosen blocks of ``transformer`` (in place; returns it).

    The feature maps are freshly initialised (``seed`` makes that deterministic without touching the global RNG);
    load trained ones with :func:`rehyat.wan.checkpoint.load_rehyat`.  They are created on the device and in the
    dtype of each block's ``to_q`` weight.  Converting an already converted transformer raises.
    """
    if not isinstance(transformer, WanTransformer3DModel):
        raise TypeError(f"expected a diffusers WanTransformer3DModel, got {type(transformer).__name__}")
    if is_rehyat(transformer):
        raise ValueError("transformer is already ReHyAt-converted")
    idx = resolve_blocks(blocks, len(transformer.blocks))
    cfg = ReHyAtConfig(blocks=idx, chunk_frames=int(chunk_frames), overlap_frames=int(overlap_frames),
                       causal=bool(causal), feature_map=feature_map, feature_map_kwargs=dict(feature_map_kwargs or {}),
                       linear_scale=bool(linear_scale))
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng:
        if seed is not None:
            torch.manual_seed(seed)
        for i in idx:
            attn = transformer.blocks[i].attn1
            w = attn.to_q.weight
            proc = ReHyAtWanAttnProcessor(
                attn.heads, attn.inner_dim // attn.heads, chunk_frames=cfg.chunk_frames,
                overlap_frames=cfg.overlap_frames, causal=cfg.causal, feature_map=cfg.feature_map,
                feature_map_kwargs=cfg.feature_map_kwargs, softmax_backend=softmax_backend,
                linear_scale=cfg.linear_scale,
            ).to(device=w.device, dtype=w.dtype)
            attn.set_processor(proc)
    transformer.rehyat_config = cfg
    transformer._rehyat_mode = "parallel"
    transformer._rehyat_hook = transformer.register_forward_pre_hook(_geometry_pre_hook, with_kwargs=True)
    transformer.forward = types.MethodType(_rehyat_forward, transformer)
    return transformer


def revert_to_softmax(transformer) -> WanTransformer3DModel:
    """Undo :func:`convert_wan_to_rehyat` in place: dense ``WanAttnProcessor`` everywhere, hook and forward removed
    (the feature maps are dropped).  Returns the transformer."""
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    get_rehyat_config(transformer)
    for i in rehyat_processors(transformer):
        transformer.blocks[i].attn1.set_processor(WanAttnProcessor())
    transformer._rehyat_hook.remove()
    for name in ("_rehyat_hook", "_rehyat_mode", "forward"):
        transformer.__dict__.pop(name, None)
    transformer.rehyat_config = None
    return transformer


def recurrent_unsupported_reason(transformer) -> str | None:
    """Why the constant-memory recurrent forward cannot run on ``transformer`` (``None`` if it can)."""
    if not is_rehyat(transformer):
        return "the transformer is not ReHyAt-converted"
    cfg = get_rehyat_config(transformer)
    missing = sorted(set(range(len(transformer.blocks))) - set(cfg.blocks))
    if missing:
        return (f"blocks {missing} keep dense softmax attention; the recurrent (constant-memory) form needs every "
                f"block converted — partially converted models run in parallel mode")
    if not cfg.causal:
        return "the model is bidirectional (causal=False); the recurrent form exists only for causal models"
    return None


def set_rehyat_mode(transformer, mode: str) -> None:
    """Select ``"parallel"`` (diffusers' forward with the hybrid op) or ``"recurrent"`` (chunk-wise sweep)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "recurrent":
        reason = recurrent_unsupported_reason(transformer)
        if reason:
            raise ValueError(f"recurrent mode unavailable: {reason}")
    elif not is_rehyat(transformer):
        return  # a plain Wan transformer is always "parallel"
    transformer._rehyat_mode = mode


def get_rehyat_mode(transformer) -> str:
    return getattr(transformer, "_rehyat_mode", "parallel")


@contextlib.contextmanager
def rehyat_mode(transformer, mode: str) -> Iterator[None]:
    """Temporarily switch the mode (restores the previous one)."""
    old = get_rehyat_mode(transformer)
    set_rehyat_mode(transformer, mode)
    try:
        yield
    finally:
        if is_rehyat(transformer):
            transformer._rehyat_mode = old


def feature_map_state_dict(transformer) -> dict[str, torch.Tensor]:
    """The ReHyAt-only entries of ``transformer.state_dict()`` (``blocks.{i}.attn1.processor.*``)."""
    return {k: v for k, v in transformer.state_dict().items() if ".attn1.processor." in k}
