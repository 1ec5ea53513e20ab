"""Joint normalisation of the softmax and linear branches.

``y = (sum_S exp(s) v + a_L) / (sum_S exp(s) + n_L)``.  With the softmax branch's normalised output ``o_S`` and
log-sum-exp ``lse_S`` and the linear branch's ``o_L = a_L / n_L``::

    y = sigmoid(-w) * o_S + sigmoid(w) * o_L,      w = log n_L - lse_S

Normalisers (``ReHyAtConfig.normaliser``):

* ``"kernel"``: ``fq . fk`` stands in for ``exp(s)`` itself, so no stabiliser changes the result (``shift`` = 0).
* ``"paper"``: the paper's literal form, the stabiliser ``c`` (the query's max logit over its softmax window) inside the
  exponential only, ``y = (sum_S exp(s - c) v + a_L) / (sum_S exp(s - c) + n_L)``: then ``w = log n_L - (lse_S - c)``,
  i.e. ``shift = c`` (:func:`rehyat.attention.rowmax.row_max_logits`).

``n_L == 0`` (empty linear set or all-zero features) gives ``w = -inf`` and ``y = o_S`` exactly, with finite gradients.
Everything here runs in the accumulation dtype whatever autocast says (the callers disable it).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def joint_normalise(o_s: Tensor, lse_s: Tensor, a_l: Tensor, n_l: Tensor, out: Tensor | None = None,
                    shift: Tensor | None = None) -> Tensor:
    """o_s: [B, n, H, D], lse_s: [B, n, H], a_l: [B, n, H, D], n_l: [B, n, H]  ->  [B, n, H, D] (dtype of a_l).

    ``shift`` ([B, n, H], optional): the stabiliser of the ``"paper"`` normaliser (see the module docstring).

    ``out`` (a [B, n, H, D] view of a preallocated output, a_l's dtype; not differentiable) receives the result in
    place: two passes over it and no temporaries.  ``out`` may be ``a_l`` itself (read out straight into the output).
    """
    acc = a_l.dtype
    positive = n_l > 0
    n_safe = torch.where(positive, n_l, torch.ones_like(n_l))
    log_n = torch.where(positive, torch.log(n_safe), torch.full_like(n_l, float("-inf")))
    w = log_n - lse_s.to(acc) if shift is None else log_n - (lse_s.to(acc) - shift.to(acc))
    # per-row coefficients first, so the [B, n, H, D] tensors are touched by one mul and one fused multiply-add
    c_s = torch.sigmoid(-w).unsqueeze(-1)
    c_l = (torch.sigmoid(w) / n_safe).unsqueeze(-1)
    if out is not None:
        return torch.mul(a_l, c_l, out=out).addcmul_(o_s, c_s)  # a_l first: it may alias out
    return torch.addcmul(o_s.to(acc) * c_s, a_l, c_l)
