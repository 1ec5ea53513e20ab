"""Dense O(N^2) oracle of the hybrid op with explicit masks. For tests only.

The joint normaliser is written as one softmax over the union of both key sets, where a linear-set key contributes
the logit ``log(fq . fk)`` instead of ``s = scale q . k``: ``exp(log(fq . fk)) = fq . fk``, so this is exactly
``(sum_S exp(s) v + sum_L (fq . fk) v) / (sum_S exp(s) + sum_L fq . fk)`` and is stable for any logit magnitude.  The
``"paper"`` normaliser subtracts each row's max over its softmax set from the softmax logits only (the stabiliser in
the exponential, the linear terms unscaled).

The sets are derived here from their definition in frame indices (paper §1.2-1.5), independently of
:class:`~rehyat.attention.geometry.ChunkGeometry`, which the fast paths use: a geometry mistake cannot move oracle and
fast path together.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from .linear_branch import accum_dtype
from .softmax_lse import default_scale

Tensor = torch.Tensor


def frame_sets(num_frames: int, chunk_frames: int, overlap_frames: int, causal: bool) -> tuple[Tensor, Tensor]:
    """Boolean frame masks ``softmax_set, linear_set``: [T, T] (query frame, key frame), from the definition.

    A query in frame f belongs to chunk ``c = f // T_c``; its softmax set is the key frames j with
    ``max(c*T_c - T_o, 0) <= j < (c+1)*T_c`` (its chunk plus T_o earlier frames); its linear set is every other key
    frame (bidirectional) or only ``j < max(c*T_c - T_o, 0)`` (causal).
    """
    soft = torch.zeros(num_frames, num_frames, dtype=torch.bool)
    lin = torch.zeros(num_frames, num_frames, dtype=torch.bool)
    for f in range(num_frames):
        c = f // chunk_frames
        lo, hi = max(c * chunk_frames - overlap_frames, 0), (c + 1) * chunk_frames
        for j in range(num_frames):
            soft[f, j] = lo <= j < hi
            lin[f, j] = j < lo if causal else not soft[f, j]
    return soft, lin


def hybrid_masks(geom, causal: bool, device=None) -> tuple[Tensor, Tensor]:
    """Boolean token masks ``softmax_set, linear_set``: [N, N] (query, key) for ``geom``'s four numbers
    (``num_frames``, ``frame_tokens``, ``chunk_frames``, ``overlap_frames``; only the numbers are read)."""
    soft, lin = frame_sets(geom.num_frames, geom.chunk_frames, geom.overlap_frames, causal)
    ft = geom.frame_tokens
    expand = lambda m: m.repeat_interleave(ft, 0).repeat_interleave(ft, 1).to(device)  # noqa: E731
    return expand(soft), expand(lin)


def masked_joint_attention(
    q: Tensor, k: Tensor, v: Tensor, fq: Tensor | None, fk: Tensor | None,
    softmax_set: Tensor, linear_set: Tensor, scale: float, normaliser: str = "kernel",
) -> Tensor:
    """Dense joint attention for arbitrary [N, N] masks. q, k, v: [B, N, H, D]; fq, fk: [B, N, H, F] or None."""
    acc = accum_dtype(v)
    qa, ka, va = (x.to(acc).transpose(1, 2) for x in (q, k, v))  # [B, H, N, D]
    s = torch.matmul(qa, ka.transpose(-1, -2)) * scale
    logits = torch.where(softmax_set, s, torch.full_like(s, float("-inf")))
    if normaliser == "paper":  # c_t: the row's max logit over its softmax set, subtracted in the exponential only
        logits = logits - logits.amax(-1, keepdim=True).clamp_min(torch.finfo(acc).min)
    elif normaliser != "kernel":
        raise ValueError(f"normaliser must be 'kernel' or 'paper', got {normaliser!r}")
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
    normaliser: str = "kernel",
) -> Tensor:
    """Oracle with the exact signature and semantics of :func:`rehyat.attention.hybrid_attention`."""
    if q.shape[1] % frame_tokens:
        raise ValueError(f"sequence length {q.shape[1]} is not a multiple of frame_tokens={frame_tokens}")
    scale = default_scale(q.shape[-1]) if scale is None else scale
    if chunk_frames < 1 or overlap_frames < 0:
        raise ValueError(f"need chunk_frames >= 1 and overlap_frames >= 0, got {chunk_frames}, {overlap_frames}")
    layout = SimpleNamespace(num_frames=q.shape[1] // frame_tokens, frame_tokens=frame_tokens,
                             chunk_frames=chunk_frames, overlap_frames=overlap_frames)
    soft, lin = hybrid_masks(layout, causal, q.device)
    return masked_joint_attention(q, k, v, fq, fk, soft, lin, scale, normaliser)
