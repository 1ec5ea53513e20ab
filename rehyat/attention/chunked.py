"""Parallel chunked form of the hybrid op (training, bidirectional, and parallel causal).

Per chunk: fused softmax over the chunk's window (with its log-sum-exp; small chunks are batched into one call), plus
the linear branch read from prefix (and, bidirectionally, suffix) sums of ``fk v^T`` and ``fk`` over frame spans.
Never materialises an N x N tensor: the largest intermediate is one chunk's (T_c*h) x ((T_c+T_o)*h) score tile inside
the fused kernel.  Cost is linear in the number of frames for a fixed frame size.
"""

from __future__ import annotations

import torch

from .combine import joint_normalise
from .geometry import Chunk, ChunkGeometry
from .linear_branch import accum_dtype, read_out, running_sums, span_statistics
from .rowmax import row_max_logits
from .softmax_lse import default_scale, softmax_with_lse

Tensor = torch.Tensor


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, fq: Tensor | None, fk: Tensor | None) -> None:
    if q.dim() != 4 or k.shape != q.shape[:3] + (q.shape[3],) or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"expected q, k, v of shape [B, N, H, D] with equal B, N, H; got {q.shape}, {k.shape}, {v.shape}")
    if (fq is None) != (fk is None):
        raise ValueError("fq and fk must both be given or both be None")
    if fq is not None and (fq.shape[:3] != q.shape[:3] or fk.shape != fq.shape):
        raise ValueError(f"expected fq, fk of shape [B, N, H, F] matching q; got {fq.shape}, {fk.shape}")


# Query rows (batch x heads x tokens) per batched softmax call.  Small chunks (e.g. 390-token frames at 240x416) leave
# the fused CPU kernel few work items per call; batching them to about this size pays most in training: forward +
# backward at T_c = 1, 12 heads, 21 frames of 390 tokens took 1.71 s batched against 3.11 s one call per chunk
# (forward alone 214 against 229 ms; docs/attention.md), while Wan-size chunks (4680 x 12 rows) stay one per call.
# It also bounds the batched output temporaries to ~this many rows.
ROWS_PER_SOFTMAX_CALL = 32768


def window_views(q: Tensor, k: Tensor, v: Tensor, geom: ChunkGeometry, group: list[Chunk]
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """A group's queries and windows, head-major: q [B*m, H, n_c, D], k and v [B*m, H, n_w, D].

    The m windows are strided views (``unfold``) of k and v, overlapping by T_o frames; nothing is copied when B = 1.
    """
    first, last, m = group[0], group[-1], len(group)
    b, h = q.shape[0], q.shape[2]
    lq = (first.end - first.start) * geom.frame_tokens
    lw = (first.window_end - first.window_start) * geom.frame_tokens
    ws = geom.tokens(first.window_start, last.window_end)

    def windows(x: Tensor) -> Tensor:  # [B, N, H, E] -> [B*m, H, lw, E]
        x = x[:, ws]
        if m > 1:
            x = x.unfold(1, lw, lq).permute(0, 1, 4, 2, 3)  # windows start T_c frames (lq tokens) apart
        return x.reshape(b * m, lw, h, x.shape[-1]).transpose(1, 2)

    qg = q[:, geom.tokens(first.start, last.end)].reshape(b * m, lq, h, q.shape[-1]).transpose(1, 2)
    return qg, windows(k), windows(v)


def window_softmax(q: Tensor, k: Tensor, v: Tensor, geom: ChunkGeometry, group: list[Chunk], scale: float,
                   backend: str | None = None, with_rowmax: bool = False):
    """Softmax of each chunk's queries over its window, for a group from :meth:`ChunkGeometry.batches` in one call.

    q, k, v: [B, N, H, D]  ->  o: [B, m, n_c, H, D], lse: [B, m, n_c, H] for the group's m chunks of n_c query tokens
    (and, with ``with_rowmax``, the exact row maximum of the window logits [B, m, n_c, H], the ``"paper"`` stabiliser).
    """
    b, m = q.shape[0], len(group)
    qg, kw, vw = window_views(q, k, v, geom, group)
    o, lse = softmax_with_lse(qg, kw, vw, scale, backend)
    o, lse = o.transpose(1, 2).unflatten(0, (b, m)), lse.transpose(1, 2).unflatten(0, (b, m))
    if not with_rowmax:
        return o, lse
    return o, lse, row_max_logits(qg, kw, scale).transpose(1, 2).unflatten(0, (b, m))


def chunk_states(fk: Tensor, v: Tensor, geom: ChunkGeometry, causal: bool,
                 include_window: bool = False) -> tuple[Tensor, Tensor]:
    """Every chunk's linear-set state, stacked: ``S [B, C, H, F, D]``, ``z [B, C, H, F]`` (C chunks, accumulation dtype).

    Linear sets as in :meth:`ChunkGeometry.linear_bounds`: a prefix ``[0, lo)`` plus (bidirectional) a suffix
    ``[hi, T)``.  Statistics are taken once per span between consecutive :meth:`~ChunkGeometry.linear_cuts` (about
    two spans per chunk, one matmul each) and summed along the spans: no per-frame statistics, cumsum or flip over
    ``[T, H, F, D]`` tensors.  Prefix and suffix are added, never total minus window, so nothing cancels.  Stacked, a
    run of consecutive chunks reads its states as one view (one batched read-out per softmax group).
    """
    cuts = geom.linear_cuts(causal, include_window)
    spans = [span_statistics(fk[:, geom.tokens(a, b)], v[:, geom.tokens(a, b)]) for a, b in zip(cuts, cuts[1:])]
    bounds = [geom.linear_bounds(ch, causal, include_window) for ch in geom.chunks()]
    if not _needs_grad(fk, v):  # the span statistics are fresh accumulation-dtype tensors of this call
        return _stacked_states_in_place(spans, cuts, bounds)
    return _stacked_states(spans, cuts, bounds)


def _stacked_states(spans: list[tuple[Tensor, Tensor]], cuts: list[int], bounds: list[tuple[int, int]]
                    ) -> tuple[Tensor, Tensor]:
    """The plain form of :func:`chunk_states` (autograd): functional running sums over the spans, one state per chunk.

    Suffix sums are formed only when some linear set has a suffix (``hi < T``: bidirectional with more than one
    chunk), as in :func:`_stacked_states_in_place`."""
    prefix = dict(zip(cuts[1:], running_sums(spans)))  # prefix[b]: frames [0, b)
    has_suffix = any(hi < cuts[-1] for _, hi in bounds)
    suffix = dict(zip(cuts[-2::-1], running_sums(spans[::-1]))) if has_suffix else {}  # suffix[a]: frames [a, T)
    states = []
    for lo, hi in bounds:
        parts = [p for p in (prefix.get(lo), suffix.get(hi)) if p is not None]
        if not parts:  # empty linear set: zeros that stay in the graph, so fk (and a feature map's weights) still
            s0, z0 = spans[0]  # get a (zero) gradient, as DDP without find_unused_parameters requires
            states.append((s0 * 0, z0 * 0))
        else:
            states.append(parts[0] if len(parts) == 1 else (parts[0][0] + parts[1][0], parts[0][1] + parts[1][1]))
    return torch.stack([s for s, _ in states], dim=1), torch.stack([z for _, z in states], dim=1)


def _stacked_states_in_place(spans: list[tuple[Tensor, Tensor]], cuts: list[int], bounds: list[tuple[int, int]]):
    """Inference form of :func:`chunk_states`, touching little fresh memory.

    What it buys (``benchmarks/op_paths.py``, 12 heads, 240x416, 81 frames): the same time as the plain form (0.97-1.02)
    and 36 MiB less live memory per call (86 against 122 MiB, the output included); the gap grows with the frames.

    Fresh pages cost a page fault each on first touch (about 1 us; a 256 KiB state is 64 of them), and the functional
    running sums allocate two states per span.  Here suffix sums go straight into the chunks' slots of the stacked
    output (one running pair, in place), then the spans turn into their own prefix sums in place and each chunk adds
    (or copies) its prefix.  The spans are overwritten.
    """
    s0, z0 = spans[0]
    t, n = cuts[-1], len(bounds)
    s_all = s0.new_zeros(s0.shape[0], n, *s0.shape[1:])
    z_all = z0.new_zeros(z0.shape[0], n, *z0.shape[1:])
    has_suffix = [hi < t for _, hi in bounds]
    run, j = None, len(spans)
    for c in reversed(range(n)):  # hi never decreases with the chunk index
        if not has_suffix[c]:
            continue
        while cuts[j] > bounds[c][1]:
            j -= 1
            s, z = spans[j]
            run = (s.clone(), z.clone()) if run is None else (run[0].add_(s), run[1].add_(z))
        s_all[:, c].copy_(run[0])
        z_all[:, c].copy_(run[1])
    for i in range(1, len(spans)):  # now that the suffixes are taken, spans[i] becomes the prefix over [0, cuts[i+1])
        spans[i][0].add_(spans[i - 1][0])
        spans[i][1].add_(spans[i - 1][1])
    prefix = dict(zip(cuts[1:], spans))
    for c, (lo, _) in enumerate(bounds):
        if lo in prefix:
            s_all[:, c].add_(prefix[lo][0])
            z_all[:, c].add_(prefix[lo][1])
    return s_all, z_all


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors)


def _writes_in_place(v: Tensor, *tensors: Tensor | None) -> bool:
    """Whether results may be written in place (into a preallocated output or a fresh temporary): no autograd, and the
    output dtype is already the accumulation dtype, so nothing is rounded twice."""
    return not _needs_grad(v, *tensors) and v.dtype == accum_dtype(v)


def _softmax_groups(q: Tensor, geom: ChunkGeometry) -> list[list[Chunk]]:
    rows = q.shape[0] * q.shape[2] * min(geom.chunk_frames, geom.num_frames) * geom.frame_tokens
    return geom.batches(max(1, ROWS_PER_SOFTMAX_CALL // rows))


def no_autocast(x: Tensor):
    """The linear branch's statistics, read-out and the joint normaliser run in the accumulation dtype whatever
    autocast says (an autocast matmul would round them to bf16/fp16, and write bf16 into fp32 ``out=`` buffers)."""
    return torch.autocast(x.device.type, enabled=False)


def hybrid_attention(
    q: Tensor, k: Tensor, v: Tensor, fq: Tensor, fk: Tensor, *,
    frame_tokens: int, chunk_frames: int, overlap_frames: int = 0, causal: bool = False, scale: float | None = None,
    softmax_backend: str | None = None, normaliser: str = "kernel",
) -> Tensor:
    """ReHyAt hybrid attention, parallel chunked form.

    q, k, v: [B, N, H, D]; fq, fk: [B, N, H, F] (non-negative features of q and k).  Returns [B, N, H, D] in v's dtype.
    For a query in chunk c the softmax set is frames ``[max(c*T_c - T_o, 0), min((c+1)*T_c, T))``; the linear set is
    every other frame (``causal=False``) or only frames ``< max(c*T_c - T_o, 0)`` (``causal=True``).  Both branches
    share one normaliser: ``y = (sum_S exp(s) v + sum_L (fq.fk) v) / (sum_S exp(s) + sum_L fq.fk)``, ``s = scale q.k``,
    ``scale = D**-0.5`` by default (``normaliser="kernel"``); ``"paper"`` uses ``exp(s - c)`` on the softmax set, ``c``
    the query's max logit over its window (:mod:`rehyat.attention.combine`).  The linear branch and the normaliser
    accumulate in fp32 for half/bf16 inputs and under autocast; the softmax part follows autocast.
    """
    _check_inputs(q, k, v, fq, fk)
    paper = _check_normaliser(normaliser)
    geom = ChunkGeometry.from_tokens(q.shape[1], frame_tokens, chunk_frames, overlap_frames)
    scale = default_scale(q.shape[-1]) if scale is None else scale
    # without autograd, each chunk's result goes straight into its rows of the output (saves a final cat of [B,N,H,D])
    out = torch.empty_like(v) if _writes_in_place(v, q, k, fq, fk) else None
    with no_autocast(v):
        s_all, z_all = chunk_states(fk, v, geom, causal)
    outs = []
    for group in _softmax_groups(q, geom):
        # [B, m, n_c, H, D], [B, m, n_c, H] (+ the paper's stabiliser [B, m, n_c, H])
        o_s, lse, *shift = window_softmax(q, k, v, geom, group, scale, softmax_backend, with_rowmax=paper)
        c0, m = group[0].index, len(group)
        qs = geom.tokens(group[0].start, group[-1].end)
        # one batched read-out for the group's m chunks, straight into their rows of the output in inference
        dst = None if out is None else out[:, qs].unflatten(1, (m, -1))
        with no_autocast(v):
            a_l, n_l = read_out(fq[:, qs].unflatten(1, (m, -1)), s_all[:, c0:c0 + m], z_all[:, c0:c0 + m], out=dst)
            outs.append(joint_normalise(o_s, lse, a_l, n_l, out=dst, shift=shift[0] if shift else None).flatten(1, 2))
    return out if out is not None else torch.cat(outs, dim=1).to(v.dtype)


def _check_normaliser(normaliser: str) -> bool:
    """``True`` for the paper's normaliser (which needs the row maximum), ``False`` for the kernel one."""
    if normaliser not in ("kernel", "paper"):
        raise ValueError(f"normaliser must be 'kernel' or 'paper', got {normaliser!r}")
    return normaliser == "paper"


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
    outs = [window_softmax(q, k, v, geom, group, scale, softmax_backend)[0].flatten(1, 2)
            for group in _softmax_groups(q, geom)]
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
    if causal:  # chunks of equal length share one read-out call
        with no_autocast(v):
            s_all, z_all = chunk_states(fk, v, geom, causal, include_window=True)
        groups = [(g[0].start, g[-1].end, g[0].index, len(g)) for g in geom.batches(geom.num_chunks)]
    else:  # every query's linear set is the whole sequence: one state, one read-out
        with no_autocast(v):
            s, z = span_statistics(fk, v)
        s_all, z_all, groups = s[:, None], z[:, None], [(0, geom.num_frames, 0, 1)]
    out = torch.empty_like(v) if _writes_in_place(v, q, k, fq, fk) else None  # read out and divided in place
    outs = []
    for start, end, c0, m in groups:
        rows = geom.tokens(start, end)
        dst = None if out is None else out[:, rows].unflatten(1, (m, -1))
        with no_autocast(v):
            a_l, n_l = read_out(fq[:, rows].unflatten(1, (m, -1)), s_all[:, c0:c0 + m], z_all[:, c0:c0 + m], out=dst)
            n_safe = torch.where(n_l > 0, n_l, torch.ones_like(n_l)).unsqueeze(-1)
            outs.append((a_l / n_safe if out is None else a_l.div_(n_safe)).flatten(1, 2))
    return out if out is not None else torch.cat(outs, dim=1).to(v.dtype)
