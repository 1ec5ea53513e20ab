"""The linear branch: per-frame key statistics, their prefix/suffix sums, and the query read-out.

All accumulation happens in ``accum_dtype(x)`` (fp32 for half/bf16 inputs, fp64 for fp64).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def accum_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def frame_statistics(fk: Tensor, v: Tensor, frame_tokens: int) -> tuple[Tensor, Tensor]:
    """Per-frame sums ``S_f = sum_j fk_j v_j^T`` and ``z_f = sum_j fk_j`` over the tokens j of frame f.

    fk: [B, N, H, F], v: [B, N, H, D]  ->  S: [B, T, H, F, D], z: [B, T, H, F]  (accumulation dtype)
    """
    b, n, h, f = fk.shape
    t = n // frame_tokens
    acc = accum_dtype(v)
    fk_t = fk.to(acc).reshape(b, t, frame_tokens, h, f)
    v_t = v.to(acc).reshape(b, t, frame_tokens, h, v.shape[-1])
    s = torch.einsum("btnhf,btnhd->bthfd", fk_t, v_t)
    z = fk_t.sum(dim=2)
    return s, z


def exclusive_prefix(x: Tensor, dim: int = 1) -> Tensor:
    """P[f] = sum_{f' < f} x[f'], with one extra entry P[T] = total.  [B, T, ...] -> [B, T+1, ...]."""
    zero = torch.zeros_like(x.narrow(dim, 0, 1))
    return torch.cat([zero, x.cumsum(dim)], dim=dim)


def exclusive_suffix(x: Tensor, dim: int = 1) -> Tensor:
    """Q[f] = sum_{f' >= f} x[f'], with Q[T] = 0.  [B, T, ...] -> [B, T+1, ...].  No subtraction, so no cancellation."""
    zero = torch.zeros_like(x.narrow(dim, 0, 1))
    return torch.cat([x.flip(dim).cumsum(dim).flip(dim), zero], dim=dim)


def read_out(fq: Tensor, s: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """Linear-branch numerator and denominator for a block of queries sharing one state.

    fq: [B, n, H, F], s: [B, H, F, D], z: [B, H, F]  ->  a: [B, n, H, D], n_l: [B, n, H]  (accumulation dtype)
    """
    fq_a = fq.to(s.dtype)
    a = torch.einsum("bnhf,bhfd->bnhd", fq_a, s)
    n_l = torch.einsum("bnhf,bhf->bnh", fq_a, z)
    return a, n_l
