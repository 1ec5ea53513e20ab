"""Recurrent (chunk-wise RNN) form of the causal hybrid op, for constant-memory sampling.

State per layer: ``S [B,H,F,D]``, ``z [B,H,F]`` (sums over frames that have left every later softmax window) and the
keys / values / key features of the last ``T_o`` frames (the overlap tail).  A frame is added to ``S, z`` exactly when
it leaves the softmax window of every later chunk, so nothing is counted twice (the paper's printed update, which adds
the whole window each step, double-counts when ``T_o > 0``; see docs).  The state size does not depend on how many
chunks have been seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .chunked import _check_normaliser, no_autocast
from .combine import joint_normalise
from .rowmax import row_max_logits
from .geometry import ChunkGeometry
from .linear_branch import accum_dtype, read_out, span_statistics
from .softmax_lse import default_scale, softmax_with_lse

Tensor = torch.Tensor


@dataclass
class HybridState:
    """Opaque recurrent state of one causal hybrid attention layer."""

    s: Tensor  # [B, H, F, D] sum of fk v^T over flushed frames (accumulation dtype)
    z: Tensor  # [B, H, F]    sum of fk over flushed frames
    tail_k: Tensor  # [B, n_tail, H, D] keys of the last <= T_o frames still inside the next softmax window
    tail_v: Tensor  # [B, n_tail, H, D]
    tail_fk: Tensor  # [B, n_tail, H, F]
    frames_seen: int = 0

    @classmethod
    def empty(cls, like_k: Tensor, like_v: Tensor, like_fk: Tensor) -> "HybridState":
        b, _, h, d = like_k.shape
        f, dv = like_fk.shape[-1], like_v.shape[-1]
        acc = accum_dtype(like_v)
        return cls(
            s=like_v.new_zeros(b, h, f, dv, dtype=acc),
            z=like_v.new_zeros(b, h, f, dtype=acc),
            tail_k=like_k.new_zeros(b, 0, h, d),
            tail_v=like_v.new_zeros(b, 0, h, dv),
            tail_fk=like_fk.new_zeros(b, 0, h, f),
        )

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.s, self.z, self.tail_k, self.tail_v, self.tail_fk))


def _parts(tail: Tensor, chunk: Tensor, start: int, end: int) -> list[Tensor]:
    """Non-empty views of tokens ``[start, end)`` of ``cat([tail, chunk], dim=1)``, without concatenating."""
    n = tail.shape[1]
    pieces = [tail[:, start:min(end, n)], chunk[:, max(start - n, 0):max(end - n, 0)]]
    return [p for p in pieces if p.shape[1]] or [chunk[:, :0]]


def hybrid_attention_step(
    q: Tensor, k: Tensor, v: Tensor, fq: Tensor, fk: Tensor, state: HybridState | None, *,
    frame_tokens: int, overlap_frames: int = 0, scale: float | None = None, softmax_backend: str | None = None,
    normaliser: str = "kernel",
) -> tuple[Tensor, HybridState]:
    """Process one chunk of the causal hybrid op.

    q, k, v: [B, n_c, H, D] and fq, fk: [B, n_c, H, F] for the ``n_c / frame_tokens`` frames of the current chunk.
    Returns the chunk's output [B, n_c, H, D] (v's dtype) and the new state.  Chaining steps over consecutive chunks
    of ``chunk_frames`` frames equals ``hybrid_attention(..., causal=True)`` with the same ``normaliser``.  The state
    (``S``, ``z``) accumulates in fp32 (fp64 for fp64) whatever autocast says.
    """
    if q.shape[1] % frame_tokens:
        raise ValueError(f"chunk length {q.shape[1]} is not a multiple of frame_tokens={frame_tokens}")
    if overlap_frames < 0:
        raise ValueError(f"overlap_frames must be >= 0, got {overlap_frames}")
    paper = _check_normaliser(normaliser)
    state = HybridState.empty(k, v, fk) if state is None else state
    scale = default_scale(q.shape[-1]) if scale is None else scale

    win_k = torch.cat([state.tail_k, k], dim=1)
    win_v = torch.cat([state.tail_v, v], dim=1)
    qh, kh = q.transpose(1, 2), win_k.transpose(1, 2)
    o_s, lse = softmax_with_lse(qh, kh, win_v.transpose(1, 2), scale, softmax_backend)
    shift = row_max_logits(qh, kh, scale).transpose(1, 2) if paper else None
    with no_autocast(v):
        a_l, n_l = read_out(fq, state.s, state.z)
        out = joint_normalise(o_s.transpose(1, 2), lse.transpose(1, 2), a_l, n_l, shift=shift).to(v.dtype)

    # Frames of the window that no later chunk's softmax window will contain move into (S, z).  The key features are
    # only needed for that, so they are not concatenated: the flushed part is read from the tail and the chunk in place.
    keep = min(overlap_frames * frame_tokens, win_k.shape[1])
    flush = win_k.shape[1] - keep
    s_new, z_new = state.s, state.z
    with no_autocast(v):
        for fk_part, v_part in zip(_parts(state.tail_fk, fk, 0, flush), _parts(state.tail_v, v, 0, flush)):
            s_part, z_part = span_statistics(fk_part, v_part)
            s_new, z_new = s_new + s_part, z_new + z_part
    new_state = HybridState(
        s=s_new,
        z=z_new,
        # own copies: a slice would keep the whole (T_o + T_c)-frame window's storage alive between chunks
        tail_k=win_k[:, flush:].clone(),
        tail_v=win_v[:, flush:].clone(),
        tail_fk=torch.cat(_parts(state.tail_fk, fk, flush, win_k.shape[1]), dim=1),
        frames_seen=state.frames_seen + q.shape[1] // frame_tokens,
    )
    return out, new_state


def hybrid_attention_recurrent(
    q: Tensor, k: Tensor, v: Tensor, fq: Tensor, fk: Tensor, *,
    frame_tokens: int, chunk_frames: int, overlap_frames: int = 0, causal: bool = True, scale: float | None = None,
    softmax_backend: str | None = None, normaliser: str = "kernel",
) -> Tensor:
    """Whole-sequence causal hybrid attention computed chunk by chunk with :func:`hybrid_attention_step`."""
    if not causal:
        raise ValueError("the recurrent form exists only for the causal hybrid op (causal=True)")
    geom = ChunkGeometry.from_tokens(q.shape[1], frame_tokens, chunk_frames, overlap_frames)
    state, outs = None, []
    for ch in geom.chunks():
        sl = geom.tokens(ch.start, ch.end)
        out, state = hybrid_attention_step(
            q[:, sl], k[:, sl], v[:, sl], fq[:, sl], fk[:, sl], state,
            frame_tokens=frame_tokens, overlap_frames=overlap_frames, scale=scale, softmax_backend=softmax_backend,
            normaliser=normaliser,
        )
        outs.append(out)
    return torch.cat(outs, dim=1)
