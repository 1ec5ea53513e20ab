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
    """A registered attention kind and what callers need to know about it without calling it.

    ``needs_features``: takes phi features (``fq, fk``).  ``uses_chunks``: T_c / T_o change what it computes.
    ``causal_only`` / ``bidirectional_only``: the directions it exists in.  ``causal_matters``: ``causal`` changes
    its sets (so labels name it).  ``sets(q_frames, num_frames, chunk_frames, overlap_frames, causal)``: the frame
    masks ``(softmax_set, linear_set)``, each ``[nq, num_frames]`` bool, of queries in frames ``q_frames: [nq]`` —
    the sets the kind's weights live on (one joint normaliser over both).
    """

    name: str
    fn: Callable[..., Tensor]
    needs_features: bool
    uses_chunks: bool
    description: str
    sets: Callable[..., tuple[Tensor, Tensor]]
    causal_only: bool = False
    bidirectional_only: bool = False
    causal_matters: bool = True
    uses_normaliser: bool = False  # a joint softmax + linear normaliser, so ReHyAtConfig.normaliser applies

    def __call__(self, q, k, v, fq=None, fk=None, *, frame_tokens, chunk_frames=1, overlap_frames=0, causal=False,
                 scale=None, softmax_backend=None, normaliser="kernel") -> Tensor:
        kw = dict(normaliser=normaliser) if self.uses_normaliser else {}
        return self.fn(q, k, v, fq, fk, frame_tokens=frame_tokens, chunk_frames=chunk_frames,
                       overlap_frames=overlap_frames, causal=causal, scale=scale, softmax_backend=softmax_backend, **kw)

    def run(self, config, q, k, v, fq=None, fk=None, *, frame_tokens, scale=None) -> Tensor:
        """Call with the chunking (and softmax backend) of a :class:`rehyat.config.ReHyAtConfig`."""
        return self(q, k, v, fq, fk, frame_tokens=frame_tokens, chunk_frames=config.chunk_frames,
                    overlap_frames=config.overlap_frames, causal=self.effective_causal(config.causal),
                    scale=scale, softmax_backend=config.softmax_backend, normaliser=config.normaliser)

    def effective_causal(self, causal: bool) -> bool:
        return True if self.causal_only else (False if self.bidirectional_only else bool(causal))

    def label(self, config) -> str:
        """The ``model`` field of stored records: ``hybrid_tc3_to1`` (+ ``_causal``), ``linear`` (+ ``_causal``)."""
        name = self.name
        if self.uses_chunks:
            name += f"_tc{config.chunk_frames}_to{config.overlap_frames}"
        causal = self.effective_causal(config.causal)
        if causal and self.causal_matters and not self.causal_only:
            name += "_causal"
        if self.uses_normaliser and config.normaliser != "kernel":
            name += f"_{config.normaliser}"
        return name

    def token_masks(self, q_tokens: Tensor, num_frames: int, frame_tokens: int, chunk_frames: int,
                    overlap_frames: int, causal: bool) -> tuple[Tensor, Tensor]:
        """:attr:`sets` expanded to tokens: ``(softmax_set, linear_set)`` each ``[nq, num_frames * frame_tokens]``."""
        soft, lin = self.sets(q_tokens // frame_tokens, num_frames, chunk_frames, overlap_frames,
                              self.effective_causal(causal))
        return soft.repeat_interleave(frame_tokens, 1), lin.repeat_interleave(frame_tokens, 1)


ATTENTION_KINDS: dict[str, AttentionKind] = {}


def register_attention_kind(name: str, *, needs_features: bool, uses_chunks: bool, description: str, sets,
                            causal_only: bool = False, bidirectional_only: bool = False, causal_matters: bool = True,
                            uses_normaliser: bool = False):
    def deco(fn):
        if name in ATTENTION_KINDS and ATTENTION_KINDS[name].fn is not fn:
            raise ValueError(f"attention kind {name!r} is already registered")
        ATTENTION_KINDS[name] = AttentionKind(name, fn, needs_features, uses_chunks, description, sets, causal_only,
                                              bidirectional_only, causal_matters, uses_normaliser)
        return fn

    return deco


def get_attention_kind(name: str) -> AttentionKind:
    try:
        return ATTENTION_KINDS[name]
    except KeyError:
        raise KeyError(f"unknown attention kind {name!r}; registered: {sorted(ATTENTION_KINDS)}") from None


# ---------------------------------------------------------------------------------------------------- frame sets
def _window(q_frames: Tensor, num_frames: int, chunk_frames: int, overlap_frames: int) -> tuple[Tensor, Tensor]:
    """Per query frame, the ``[start, end)`` frames of its chunk's softmax window (chunk plus T_o previous frames)."""
    c = q_frames // chunk_frames
    return (c * chunk_frames - overlap_frames).clamp_min(0)[:, None], ((c + 1) * chunk_frames).clamp_max(
        num_frames)[:, None]


def _frames(q_frames: Tensor, num_frames: int) -> Tensor:
    return torch.arange(num_frames, device=q_frames.device)[None]


def _hybrid_sets(q_frames, num_frames, chunk_frames, overlap_frames, causal):
    kf = _frames(q_frames, num_frames)
    ws, we = _window(q_frames, num_frames, chunk_frames, overlap_frames)
    in_win = (kf >= ws) & (kf < we)
    return in_win, ((kf < ws) if causal else ~in_win)


def _chunk_local_sets(q_frames, num_frames, chunk_frames, overlap_frames, causal):
    soft, _ = _hybrid_sets(q_frames, num_frames, chunk_frames, overlap_frames, causal)
    return soft, torch.zeros_like(soft)


def _linear_sets(q_frames, num_frames, chunk_frames, overlap_frames, causal):
    """Every key, or chunk-causal (keys up to the end of the query's chunk)."""
    kf = _frames(q_frames, num_frames)
    _, we = _window(q_frames, num_frames, chunk_frames, 0)
    lin = (kf < we) if causal else torch.ones_like(kf, dtype=torch.bool).expand(len(q_frames), -1)
    return torch.zeros_like(lin), lin


def _softmax_sets(q_frames, num_frames, chunk_frames, overlap_frames, causal):
    soft = torch.ones(len(q_frames), num_frames, dtype=torch.bool, device=q_frames.device)
    return soft, torch.zeros_like(soft)


@register_attention_kind("softmax", needs_features=False, uses_chunks=False, sets=_softmax_sets,
                         bidirectional_only=True,
                         description="full bidirectional softmax attention (torch SDPA, best available backend)")
def _softmax(q, k, v, fq=None, fk=None, *, frame_tokens, chunk_frames=1, overlap_frames=0, causal=False, scale=None,
             softmax_backend=None):
    if causal:
        raise ValueError("the 'softmax' kind is the bidirectional teacher; use 'chunk_local' or 'hybrid' for causal")
    ChunkGeometry.from_tokens(q.shape[1], frame_tokens, chunk_frames, overlap_frames)
    scale = default_scale(q.shape[-1]) if scale is None else scale
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale)
    return out.transpose(1, 2)


@register_attention_kind("hybrid", needs_features=True, uses_chunks=True, sets=_hybrid_sets, uses_normaliser=True,
                         description="ReHyAt: chunk(+overlap) softmax and linear elsewhere, one normaliser (parallel)")
def _hybrid(q, k, v, fq, fk, **kw):
    return hybrid_attention(q, k, v, fq, fk, **kw)


@register_attention_kind("hybrid_recurrent", needs_features=True, uses_chunks=True, sets=_hybrid_sets,
                         causal_only=True, uses_normaliser=True,
                         description="ReHyAt causal, chunk-wise RNN form (constant state)")
def _hybrid_recurrent(q, k, v, fq, fk, *, causal=True, **kw):
    return hybrid_attention_recurrent(q, k, v, fq, fk, causal=True, **kw)


@register_attention_kind("linear", needs_features=True, uses_chunks=False, sets=_linear_sets,
                         description="linear attention (SANA-style ReLU features unless fq/fk given)")
def _linear(q, k, v, fq=None, fk=None, softmax_backend=None, **kw):
    return linear_attention(q, k, v, fq, fk, **kw)


@register_attention_kind("chunk_local", needs_features=False, uses_chunks=True, sets=_chunk_local_sets,
                         causal_matters=False,
                         description="the hybrid op without its linear branch (softmax over the chunk window only)")
def _chunk_local(q, k, v, fq=None, fk=None, **kw):
    return chunk_local_attention(q, k, v, None, None, **kw)
