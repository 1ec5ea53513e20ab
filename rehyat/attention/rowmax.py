"""The exact row maximum of the softmax logits, which the paper's normaliser needs and the fused kernels do not return.

The fused softmax kernels return ``lse = log sum_j exp(s_ij)`` but not ``m_i = max_j s_ij``; ``lse`` only brackets it
(``lse - log n <= m <= lse``).  So the maximum is computed from the scores themselves, in query blocks (never more
than :data:`ROWMAX_BLOCK_ELEMENTS` scores alive) and without autograd; the differentiable value is then re-formed as
``scale * q_i . k_{argmax_i}`` from the gathered key, which equals the maximum and has the maximum's (sub)gradient —
one-hot at the arg-max — while storing only the indices for backward.  Cost: one extra ``q k^T`` pass, ``2 n_q n_k D``
FLOPs per head (``rehyat.cost`` counts it as ``softmax_rowmax``).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

ROWMAX_BLOCK_ELEMENTS = 1 << 22  # 16 MiB of fp32 scores per block: bounded working memory, long enough GEMMs


def row_max_logits(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """``max_j scale * q_i . k_j`` per row.  q: [..., nq, D], k: [..., nk, D] -> [..., nq] (fp32 / fp64)."""
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    nq, nk = q.shape[-2], k.shape[-2]
    lead = q.shape[:-2].numel()
    step = max(1, ROWMAX_BLOCK_ELEMENTS // max(1, lead * nk))
    with torch.no_grad(), torch.autocast(q.device.type, enabled=False):
        ka = k.to(acc).transpose(-1, -2)
        vals, idx = [], []
        for i in range(0, nq, step):
            s = torch.matmul(q[..., i:i + step, :].to(acc), ka)
            mv, mi = s.max(dim=-1)
            vals.append(mv)
            idx.append(mi)
        m = torch.cat(vals, dim=-1) * scale
        arg = torch.cat(idx, dim=-1)
    if not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)):
        return m
    with torch.autocast(q.device.type, enabled=False):
        k_top = torch.gather(k.to(acc), -2, arg.unsqueeze(-1).expand(*arg.shape, k.shape[-1]))  # [..., nq, D]
        return (q.to(acc) * k_top).sum(-1) * scale
