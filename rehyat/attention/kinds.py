"""Registry of attention kinds sharing one calling convention.

``kind(q, k, v, fq=None, fk=None, *, frame_tokens, chunk_frames=1, overlap_frames=0, causal=False, scale=None)``
with q, k, v: [B, N, H, D] and optional features fq, fk: [B, N, H, F].  The evaluation layer sweeps kinds by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .chunked import chunk_local_attention, hybrid_attention, linear_attention
from .geometry import ChunkGeometry
from .recurrent import hybrid_attention_recurrent
from .softmax_lse import default_scale

Tensor = torch.Tensor


@dataclass(frozen=True)
class AttentionKind:
    name: str
    fn: Callable[..., Tensor]
    needs_features: bool
    uses_chunks: bool
    description: str

    def __call__(self, q, k, v, fq=None, fk=None, *, frame_tokens, chunk_frames=1, overlap_frames=0, causal=False,
                 scale=None) -> Tensor:
        return self.fn(q, k, v, fq, fk, frame_tokens=frame_tokens, chunk_frames=chunk_frames,
                       overlap_frames=overlap_frames, causal=causal, scale=scale)


ATTENTION_KINDS: dict[str, AttentionKind] = {}


def register_attention_kind(name: str, *, needs_features: bool, uses_chunks: bool, description: str):
    def deco(fn):
        ATTENTION_KINDS[name] = AttentionKind(name, fn, needs_features, uses_chunks, description)
        return fn

    return deco


def get_attention_kind(name: str) -> AttentionKind:
    try:
        return ATTENTION_KINDS[name]
    except KeyError:
        raise KeyError(f"unknown attention kind {name!r}; registered: {sorted(ATTENTION_KINDS)}") from None


@register_attention_kind("softmax", needs_features=False, uses_chunks=False,
                         description="full bidirectional softmax attention (torch SDPA, best available backend)")
def _softmax(q, k, v, fq=None, fk=None, *, frame_tokens, chunk_frames=1, overlap_frames=0, causal=False, scale=None):
    if causal:
        raise ValueError("the 'softmax' kind is the bidirectional teacher; use 'chunk_local' or 'hybrid' for causal")
    ChunkGeometry.from_tokens(q.shape[1], frame_tokens, chunk_frames, overlap_frames)
    scale = default_scale(q.shape[-1]) if scale is None else scale
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale)
    return out.transpose(1, 2)


@register_attention_kind("hybrid", needs_features=True, uses_chunks=True,
                         description="ReHyAt: chunk(+overlap) softmax and linear elsewhere, one normaliser (parallel)")
def _hybrid(q, k, v, fq, fk, **kw):
    return hybrid_attention(q, k, v, fq, fk, **kw)


@register_attention_kind("hybrid_recurrent", needs_features=True, uses_chunks=True,
                         description="ReHyAt causal, chunk-wise RNN form (constant state)")
def _hybrid_recurrent(q, k, v, fq, fk, *, causal=True, **kw):
    return hybrid_attention_recurrent(q, k, v, fq, fk, causal=True, **kw)


@register_attention_kind("linear", needs_features=True, uses_chunks=False,
                         description="linear attention (SANA-style ReLU features unless fq/fk given)")
def _linear(q, k, v, fq=None, fk=None, **kw):
    return linear_attention(q, k, v, fq, fk, **kw)


@register_attention_kind("chunk_local", needs_features=False, uses_chunks=True,
                         description="the hybrid op without its linear branch (softmax over the chunk window only)")
def _chunk_local(q, k, v, fq=None, fk=None, **kw):
    return chunk_local_attention(q, k, v, None, None, **kw)
