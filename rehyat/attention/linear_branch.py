"""The linear branch: key statistics over frame spans, their running sums, and the query read-out.

All accumulation happens in ``accum_dtype(x)`` (fp32 for half/bf16 inputs, fp64 for fp64).
"""

from __future__ import annotations

import itertools

import torch

Tensor = torch.Tensor


def accum_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def span_statistics(fk: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Sums ``S = sum_j fk_j v_j^T`` and ``z = sum_j fk_j`` over all tokens j of a span.

    fk: [B, n, H, F], v: [B, n, H, D]  ->  S: [B, H, F, D], z: [B, H, F]  (accumulation dtype)
    """
    acc = accum_dtype(v)
    fk_a = fk.to(acc)
    return key_value_sum(fk_a, v.to(acc)), fk_a.sum(dim=1)


def key_value_sum(fk: Tensor, v: Tensor) -> Tensor:
    """``sum_n fk_n v_n^T`` per head.  fk: [..., n, H, F], v: [..., n, H, D]  ->  [..., H, F, D].

    One batched matmul on transposed views: BLAS reads the per-head [n, F] / [n, D] slices in place.  An einsum first
    copies fk and v into head-major layout, and a Python loop of per-head matmuls runs short gemms; at the Wan shape
    (12 heads, 1560-token frames, F=256, D=128) this form reaches ~150 GFLOP/s against 85-134 (loop) on 2 cores.
    """
    return torch.matmul(fk.transpose(-3, -2).transpose(-1, -2), v.transpose(-3, -2))


def running_sums(parts: list[tuple[Tensor, Tensor]]) -> list[tuple[Tensor, Tensor]]:
    """Inclusive running sums of a list of ``(S, z)`` pairs: entry i = parts[0] + ... + parts[i].

    A handful of state-sized additions (one per span) instead of a cumsum over per-frame statistics.
    """
    out, run = [], None
    for s, z in parts:
        run = (s, z) if run is None else (run[0] + s, run[1] + z)
        out.append(run)
    return out


def read_out(fq: Tensor, s: Tensor, z: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Linear-branch numerator and denominator for blocks of queries, each block sharing one state.

    fq: [..., n, H, F], s: [..., H, F, D], z: [..., H, F]  ->  a: [..., n, H, D], n_l: [..., n, H]  (accumulation
    dtype), with the same leading dims (e.g. [B] for one block, [B, m] for m chunks of equal length).
    ``out`` (optional, a [..., n, H, D] tensor or view in s's dtype, not differentiable): ``a`` is written into it, so
    a caller that normalises in place (:func:`~rehyat.attention.combine.joint_normalise`) touches no fresh memory.
    """
    fq_a = fq.to(s.dtype)
    if out is None:
        return torch.matmul(fq_a.transpose(-3, -2), s).transpose(-3, -2), row_dot(fq_a, z)
    # One [H, n, F] x [H, F, D] product per block, written straight into the strided view of out, and one row_dot:
    # with more leading dims, matmul and einsum fold them into one batch dim that the strided views cannot express,
    # and they would copy fq and compute into a temporary.
    n_l = fq_a.new_empty(fq_a.shape[:-1])
    for idx in itertools.product(*map(range, fq_a.shape[:-3])):
        torch.matmul(fq_a[idx].transpose(0, 1), s[idx], out=out[idx].transpose(0, 1))
        n_l[idx] = row_dot(fq_a[idx][None], z[idx][None])[0]  # einsum ran 3x slower on the 3-d form
    return out, n_l


def row_dot(x: Tensor, z: Tensor) -> Tensor:
    """``x[..., n, h] . z[..., h]``.  x: [..., n, H, F], z: [..., H, F]  ->  [..., n, H].

    einsum reads the strided [n, F] slices in place; it ran ~2x faster than one ``torch.mv`` per (batch, head) and 3-6x
    faster than mul + sum (torch 2.14, 2 cores: 0.5 vs 1.4 ms for 8190 x 2 x 256 fp32 rows, 23 vs 44 ms for
    32760 x 12 x 256).
    """
    return torch.einsum("...nhf,...hf->...nh", x, z)
