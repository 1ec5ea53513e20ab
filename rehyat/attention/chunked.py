"""Parallel chunked form of the hybrid op (training, bidirectional, and parallel causal).

Per chunk: fused softmax over the chunk's window (with its log-sum-exp), plus the linear branch read from
chunk-level prefix (and, bidirectionally, suffix) sums of ``fk v^T`` and ``fk``.  Never materialises an N x N tensor:
the largest intermediate is one chunk's (T_c*h) x ((T_c+T_o)*h) score tile inside the fused kernel.  Cost is linear in
the number of frames for a fixed frame size.
"""

from __future__ import annotations

import torch

from .combine import joint_normalise
from .geometry import Chunk, ChunkGeometry
from .linear_branch import accum_dtype, exclusive_prefix, exclusive_suffix, frame_statistics, read_out
from .softmax_lse import default_scale, softmax_with_lse

Tensor = torch.Tensor


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, fq: Tensor | None, fk: Tensor | None) -> None:
    if q.dim() != 4 or k.shape != q.shape[:3] + (q.shape[3],) or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"expected q, k, v of shape [B, N, H, D] with equal B, N, H; got {q.shape}, {k.shape}, {v.shape}")
    if (fq is None) != (fk is None):
        raise ValueError("fq and fk must both be given or both be None")
    if fq is not None and (fq.shape[:3] != q.shape[:3] or fk.shape != fq.shape):
        raise ValueError(f"expected fq, fk of shape [B, N, H, F] matching q; got {fq.shape}, {fk.shape}")


def window_softmax(q: Tensor, k: Tensor, v: Tensor, geom: ChunkGeometry, ch: Chunk, scale: float,
                   backend: str | None = None) -> tuple[Tensor, Tensor]:
    """Softmax of chunk ``ch``'s queries over its window.  Returns o: [B, n_c, H, D], lse: [B, n_c, H]."""
    qs, ws = geom.tokens(ch.start, ch.end), geom.tokens(ch.window_start, ch.window_end)
    o, lse = softmax_with_lse(q[:, qs].transpose(1, 2), k[:, ws].transpose(1, 2), v[:, ws].transpose(1, 2), scale, backend)
    return o.transpose(1, 2), lse.transpose(1, 2)


def linear_states(fk: Tensor, v: Tensor, geom: ChunkGeometry, causal: bool, include_window: bool = False):
    """Yield, per chunk, the linear-set state ``(S [B,H,F,D], z [B,H,F])``.

    causal: frames before the window; bidirectional: every frame outside the window (prefix + suffix, no
    subtraction).  ``include_window`` moves the window into the linear set (pure linear attention; causal then means
    every frame up to the end of the query's own chunk).
    """
    s_f, z_f = frame_statistics(fk, v, geom.frame_tokens)
    s_pre, z_pre = exclusive_prefix(s_f), exclusive_prefix(z_f)
    if not causal:
        s_suf, z_suf = exclusive_suffix(s_f), exclusive_suffix(z_f)
    for ch in geom.chunks():
        lo = ch.window_end if include_window else ch.window_start
        s, z = s_pre[:, lo], z_pre[:, lo]
        if not causal:
            hi = ch.window_start if include_window else ch.window_end
            s, z = (s_suf[:, 0], z_suf[:, 0]) if include_window else (s + s_suf[:, hi], z + z_suf[:, hi])
        yield ch, s, z


def hybrid_attention(
    q: Tensor, k: Tensor, v: Tensor, fq: Tensor, fk: Tensor, *,
    frame_tokens: int, chunk_frames: int, overlap_frames: int = 0, causal: bool = False, scale: float | None = None,
    softmax_backend: str | None = None,
) -> Tensor:
    """ReHyAt hybrid attention, parallel chunked form.

    q, k, v: [B, N, H, D]; fq, fk: [B, N, H, F] (non-negative features of q and k).  Returns [B, N, H, D] in v's dtype.
    For a query in chunk c the softmax set is frames ``[max(c*T_c - T_o, 0), min((c+1)*T_c, T))``; the linear set is
    every other frame (``causal=False``) or only frames ``< max(c*T_c - T_o, 0)`` (``causal=True``).  Both branches
    share one normaliser: ``y = (sum_S exp(s) v + sum_L (fq.fk) v) / (sum_S exp(s) + sum_L fq.fk)``, ``s = scale q.k``,
    ``scale = D**-0.5`` by default.  Accumulates in fp32 for half/bf16 inputs.
    """
    _check_inputs(q, k, v, fq, fk)
    geom = ChunkGeometry.from_tokens(q.shape[1], frame_tokens, chunk_frames, overlap_frames)
    scale = default_scale(q.shape[-1]) if scale is None else scale
    outs = []
    for ch, s, z in linear_states(fk, v, geom, causal):
        o_s, lse = window_softmax(q, k, v, geom, ch, scale, softmax_backend)
        a_l, n_l = read_out(fq[:, geom.tokens(ch.start, ch.end)], s, z)
        outs.append(joint_normalise(o_s, lse, a_l, n_l))
    return torch.cat(outs, dim=1).to(v.dtype)


def chunk_local_attention(
    q: Tensor, k: Tensor, v: Tensor, fq: Tensor | None = None, fk: Tensor | None = None, *,
    frame_tokens: int, chunk_frames: int, overlap_frames: int = 0, causal: bool = False, scale: float | None = None,
    softmax_backend: str | None = None,
) -> Tensor:
    """The hybrid op without its linear branch: each chunk attends (softmax) to its window only.

    ``causal`` does not change the result: the window never reaches past the query's own chunk.
    """
    _check_inputs(q, k, v, fq, fk)
    geom = ChunkGeometry.from_tokens(q.shape[1], frame_tokens, chunk_frames, overlap_frames)
    scale = default_scale(q.shape[-1]) if scale is None else scale
    outs = [window_softmax(q, k, v, geom, ch, scale, softmax_backend)[0] for ch in geom.chunks()]
    return torch.cat(outs, dim=1).to(v.dtype)


def linear_attention(
    q: Tensor, k: Tensor, v: Tensor, fq: Tensor | None = None, fk: Tensor | None = None, *,
    frame_tokens: int, chunk_frames: int = 1, overlap_frames: int = 0, causal: bool = False, scale: float | None = None,
) -> Tensor:
    """Linear attention ``y = sum_j (fq.fk_j) v_j / sum_j fq.fk_j`` (SANA-style ReLU features when fq/fk are None).

    Bidirectional: every key.  Causal: chunk-causal, keys of every frame up to the end of the query's chunk (SANA-Video's
    block-causal form).  Rows whose denominator is 0 return 0.
    """
    _check_inputs(q, k, v, fq, fk)
    if fq is None:
        fq, fk = torch.relu(q), torch.relu(k)
    geom = ChunkGeometry.from_tokens(q.shape[1], frame_tokens, chunk_frames, 0)
    outs = []
    for ch, s, z in linear_states(fk, v, geom, causal, include_window=True):
        a_l, n_l = read_out(fq[:, geom.tokens(ch.start, ch.end)], s, z)
        n_safe = torch.where(n_l > 0, n_l, torch.ones_like(n_l))
        outs.append(a_l / n_safe.unsqueeze(-1))
    return torch.cat(outs, dim=1).to(v.dtype)
