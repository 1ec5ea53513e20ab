"""Dense O(N^2) oracle of the hybrid op with explicit masks. For tests only.

The joint normaliser is written as one softmax over the union of both key sets, where a linear-set key contributes
the logit ``log(fq . fk)`` instead of ``s = scale q . k``: ``exp(log(fq . fk)) = fq . fk``, so this is exactly
``(sum_S exp(s) v + sum_L (fq . fk) v) / (sum_S exp(s) + sum_L fq . fk)`` and is stable for any logit magnitude.
"""

from __future__ import annotations

import torch

from .geometry import ChunkGeometry
from .linear_branch import accum_dtype
from .softmax_lse import default_scale

Tensor = torch.Tensor


def hybrid_masks(geom: ChunkGeometry, causal: bool, device=None) -> tuple[Tensor, Tensor]:
    """Boolean token masks ``softmax_set, linear_set``: [N, N] (query, key)."""
    t = geom.num_frames
    frame_soft = torch.zeros(t, t, dtype=torch.bool, device=device)
    frame_lin = torch.zeros(t, t, dtype=torch.bool, device=device)
    for ch in geom.chunks():
        frame_soft[ch.start : ch.end, ch.window_start : ch.window_end] = True
        if causal:
            frame_lin[ch.start : ch.end, : ch.window_start] = True
        else:
            frame_lin[ch.start : ch.end] = ~frame_soft[ch.start : ch.end]
    expand = lambda m: m.repeat_interleave(geom.frame_tokens, 0).repeat_interleave(geom.frame_tokens, 1)  # noqa: E731
    return expand(frame_soft), expand(frame_lin)


def masked_joint_attention(
    q: Tensor, k: Tensor, v: Tensor, fq: Tensor | None, fk: Tensor | None,
    softmax_set: Tensor, linear_set: Tensor, scale: float,
) -> Tensor:
    """Dense joint attention for arbitrary [N, N] masks. q, k, v: [B, N, H, D]; fq, fk: [B, N, H, F] or None."""
    acc = accum_dtype(v)
    qa, ka, va = (x.to(acc).transpose(1, 2) for x in (q, k, v))  # [B, H, N, D]
    s = torch.matmul(qa, ka.transpose(-1, -2)) * scale
    logits = torch.where(softmax_set, s, torch.full_like(s, float("-inf")))
    if fq is not None and linear_set.any():
        kern = torch.matmul(fq.to(acc).transpose(1, 2), fk.to(acc).transpose(1, 2).transpose(-1, -2))
        positive = kern > 0
        log_kern = torch.where(positive, torch.log(torch.where(positive, kern, torch.ones_like(kern))), float("-inf"))
        logits = torch.where(linear_set, log_kern, logits)
    p = torch.softmax(logits, dim=-1)
    return torch.matmul(p, va).transpose(1, 2).to(v.dtype)


def hybrid_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, fq: Tensor, fk: Tensor, *,
    frame_tokens: int, chunk_frames: int, overlap_frames: int = 0, causal: bool = False, scale: float | None = None,
) -> Tensor:
    """Oracle with the exact signature and semantics of :func:`rehyat.attention.hybrid_attention`."""
    geom = ChunkGeometry.from_tokens(q.shape[1], frame_tokens, chunk_frames, overlap_frames)
    scale = default_scale(q.shape[-1]) if scale is None else scale
    soft, lin = hybrid_masks(geom, causal, q.device)
    return masked_joint_attention(q, k, v, fq, fk, soft, lin, scale)
