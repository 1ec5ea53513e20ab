"""The causal hybrid chunk step on fixed shapes, from standard ops only: the form exporters understand.

:func:`rehyat.attention.hybrid_attention_step` is the eager step: its tail grows from 0 to ``T_o`` frames over the
first chunks, a ragged last chunk is shorter, and its softmax calls PyTorch-internal fused kernels.  A static graph
needs one shape for every chunk, so here the softmax window always has ``T_o + T_c`` frame *slots* — the ``T_o`` tail
slots, then the ``T_c`` chunk slots — and ``window_valid [T_o + T_c]`` (1 = a real frame, 0 = an empty slot) says
which hold real frames:

* first chunks: the tail slots not yet filled hold zeros and are marked 0; their keys get the logit ``-inf``, so an
  all-zero tail never enters the softmax (nor the paper normaliser's row max), and their key features are zeroed
  before they could be flushed into ``S, z``;
* a ragged last chunk: its frames fill the first chunk slots, the rest are padding marked 0 (queries there produce
  values the caller discards).  The state after a ragged chunk is not that of the eager step — it is the last chunk
  of a video, so nothing continues from it.

Everything else is the eager step's arithmetic: the softmax branch as ``masked scores -> softmax -> matmul`` (fp32;
the mask is a 0 / -inf key column inside the score GEMM), its log-sum-exp read off the softmax at the arg-max key
(``lse = m - log p_max``), the paper normaliser's stabiliser the exact row max ``m`` of the (masked) window scores, and the linear read-out, joint normaliser and key statistics from :mod:`rehyat.attention`
itself (:func:`~rehyat.attention.linear_branch.read_out`, :func:`~rehyat.attention.combine.joint_normalise`,
:func:`~rehyat.attention.linear_branch.span_statistics`).  ``tests/export/test_export_step.py`` checks chains of steps
against the eager step.

Tail update: the window's last ``T_o`` slots become the next tail (a static slice) and its first ``T_c`` slots are
flushed into ``S, z`` (masked).  For full chunks that is exactly the eager rule (a frame enters ``S, z`` when it leaves
every later window): the valid slots are contiguous and end at the window's last slot, so the last ``T_o`` slots hold
the last ``min(T_o, frames seen)`` real frames.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from rehyat.attention import HybridState
from rehyat.attention.combine import joint_normalise
from rehyat.attention.linear_branch import accum_dtype, read_out, span_statistics
from rehyat.attention.softmax_lse import default_scale

Tensor = torch.Tensor


@dataclass
class FixedState:
    """One layer's recurrent state in fixed shapes (``n_t = T_o * frame_tokens`` tail tokens, right-aligned).

    ``s [B, H, F, D]`` and ``z [B, H, F]`` (fp32; fp64 for fp64): sums over flushed frames, as in
    :class:`~rehyat.attention.HybridState`; ``tail_k, tail_v [B, n_t, H, D]``, ``tail_fk [B, n_t, H, F]``: the last
    ``T_o`` frame slots of the previous window (empty slots hold zeros).  ``T_o = 0``: the tails have ``n_t = 0``
    tokens and the graphs have no tail inputs.
    """

    s: Tensor
    z: Tensor
    tail_k: Tensor
    tail_v: Tensor
    tail_fk: Tensor

    def tensors(self) -> tuple[Tensor, ...]:
        return tuple(getattr(self, f) for f in STATE_FIELDS)

    @classmethod
    def zeros(cls, batch: int, heads: int, head_dim: int, features: int, tail_tokens: int,
              dtype: torch.dtype = torch.float32, device=None) -> "FixedState":
        """The state before the first chunk: all zeros (its window marks every tail slot empty)."""
        acc = accum_dtype(torch.empty(0, dtype=dtype))
        kw = dict(device=device)
        return cls(s=torch.zeros(batch, heads, features, head_dim, dtype=acc, **kw),
                   z=torch.zeros(batch, heads, features, dtype=acc, **kw),
                   tail_k=torch.zeros(batch, tail_tokens, heads, head_dim, dtype=dtype, **kw),
                   tail_v=torch.zeros(batch, tail_tokens, heads, head_dim, dtype=dtype, **kw),
                   tail_fk=torch.zeros(batch, tail_tokens, heads, features, dtype=dtype, **kw))

    @classmethod
    def from_hybrid(cls, state: HybridState, tail_tokens: int) -> "FixedState":
        """An eager :class:`~rehyat.attention.HybridState` (tail of ``<= n_t`` tokens) right-aligned into fixed slots."""
        def pad(t: Tensor) -> Tensor:
            return torch.cat([t.new_zeros(t.shape[0], tail_tokens - t.shape[1], *t.shape[2:]), t], dim=1)

        return cls(state.s, state.z, pad(state.tail_k), pad(state.tail_v), pad(state.tail_fk))


STATE_FIELDS = tuple(f.name for f in fields(FixedState))  # the per-layer state tensors, in graph order


def window_valid(tail_frames: int, chunk_frames: int, overlap_frames: int, valid_chunk_frames: int | None = None,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """The ``[T_o + T_c]`` slot mask of a chunk step: ``tail_frames`` real frames right-aligned in the ``T_o`` tail
    slots (``min(T_o, frames before the chunk)``), then ``valid_chunk_frames`` (default ``T_c``; fewer for a ragged
    last chunk) real frames at the start of the ``T_c`` chunk slots."""
    n = chunk_frames if valid_chunk_frames is None else valid_chunk_frames
    if not (0 <= tail_frames <= overlap_frames and 1 <= n <= chunk_frames):
        raise ValueError(f"need 0 <= tail frames {tail_frames} <= T_o={overlap_frames} and 1 <= chunk frames {n} <= "
                         f"T_c={chunk_frames}")
    m = torch.zeros(overlap_frames + chunk_frames, dtype=dtype)
    m[overlap_frames - tail_frames:overlap_frames + n] = 1
    return m


def _cat(tail: Tensor, chunk: Tensor) -> Tensor:
    return torch.cat([tail, chunk], dim=1) if tail.shape[1] else chunk


def fixed_hybrid_step(q: Tensor, k: Tensor, v: Tensor, fq: Tensor, fk: Tensor, state: FixedState, valid: Tensor, *,
                      frame_tokens: int, scale: float | None = None, normaliser: str = "kernel"
                      ) -> tuple[Tensor, FixedState]:
    """One chunk of the causal hybrid op on fixed shapes (module docstring).

    q, k, v: ``[B, n_c, H, D]`` and fq, fk: ``[B, n_c, H, F]`` for the ``T_c = n_c / frame_tokens`` chunk slots;
    ``state``: the layer's :class:`FixedState` (``n_t = T_o * frame_tokens`` tail tokens); ``valid``: ``[T_o + T_c]``
    slot mask (:func:`window_valid`).  Returns the chunk's output ``[B, n_c, H, D]`` (v's dtype) and the new state
    (same shapes).
    """
    if normaliser not in ("kernel", "paper"):
        raise ValueError(f"normaliser must be 'kernel' or 'paper', got {normaliser!r}")
    scale = default_scale(q.shape[-1]) if scale is None else scale
    acc = accum_dtype(v)
    n_t = state.tail_k.shape[1]
    win_k, win_v, win_fk = _cat(state.tail_k, k), _cat(state.tail_v, v), _cat(state.tail_fk, fk)
    n_w = win_k.shape[1]
    slots = valid.shape[0]
    if slots * frame_tokens != n_w:
        raise ValueError(f"window_valid has {slots} slots but the window holds {n_w} = tail {n_t} + chunk "
                         f"{k.shape[1]} tokens of {frame_tokens} per frame")
    token_valid = valid.to(acc)[:, None].expand(slots, frame_tokens).reshape(n_w)  # [n_w]

    # Softmax branch over the window.  The key mask rides in the score GEMM: q' = [scale q, 1], k' = [k, b] with
    # b = 0 for real keys and -inf for empty slots, so q' k'^T is already masked (no second [B, H, n_c, n_w] tensor
    # for a bias or a where).  The log-sum-exp is read off the softmax at its arg-max key j (p_j = exp(m - lse)):
    # m = q'_i . k'_j recomputed from the gathered key (as rehyat.attention.rowmax does), lse = m - log p_j — so the
    # scores have a single consumer (the softmax may run in place) and no separate logsumexp pass is needed
    # (onnxruntime ran one ~10x slower than its softmax).  m is also the paper normaliser's stabiliser.
    b, h = q.shape[0], q.shape[2]
    key_bias = torch.where(token_valid > 0.5, torch.zeros_like(token_valid), torch.full_like(token_valid, -torch.inf))
    qh = torch.cat([q.to(acc).transpose(1, 2) * scale, q.new_ones(b, h, q.shape[1], 1, dtype=acc)], dim=-1)
    kh = torch.cat([win_k.to(acc).transpose(1, 2), key_bias.view(1, 1, n_w, 1).expand(b, h, n_w, 1)], dim=-1)
    probs = torch.softmax(torch.matmul(qh, kh.transpose(-1, -2)), dim=-1)  # [B, H, n_c, n_w]
    top = probs.argmax(dim=-1, keepdim=True)  # [B, H, n_c, 1]: a real key (empty slots have p = 0)
    row_max = (qh * torch.gather(kh, 2, top.expand(b, h, top.shape[2], kh.shape[-1]))).sum(-1)  # [B, H, n_c]
    lse = row_max - torch.log(torch.gather(probs, -1, top).squeeze(-1))
    o_s = torch.matmul(probs, win_v.to(acc).transpose(1, 2))
    shift = row_max.transpose(1, 2) if normaliser == "paper" else None

    a_l, n_l = read_out(fq, state.s, state.z)
    out = joint_normalise(o_s.transpose(1, 2), lse.transpose(1, 2), a_l, n_l, shift=shift).to(v.dtype)

    # the first T_c slots leave every later window: into (S, z), empty slots masked out
    flush = n_w - n_t
    fk_flush = win_fk[:, :flush] * token_valid[:flush].to(win_fk.dtype)[None, :, None, None]
    s_add, z_add = span_statistics(fk_flush, win_v[:, :flush])
    new = FixedState(s=state.s + s_add, z=state.z + z_add,
                     tail_k=win_k[:, flush:], tail_v=win_v[:, flush:], tail_fk=win_fk[:, flush:])
    return out, new


__all__ = ["FixedState", "STATE_FIELDS", "fixed_hybrid_step", "window_valid"]
