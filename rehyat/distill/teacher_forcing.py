"""Layer-wise teacher forcing for stage 1.

A converted block's :class:`~rehyat.wan.processor.ReHyAtWanAttnProcessor` is switched (in place, by class swap — the
same object, so ``phi_q`` / ``phi_k`` keep their parameter names ``blocks.{i}.attn1.processor.phi_*``) to
:class:`DistillWanAttnProcessor`.  In ``"distill"`` mode its forward

1. computes Wan's post-RoPE ``q, k, v`` exactly as the ReHyAt processor does (projections, RMSNorm across heads, RoPE);
2. computes the **teacher** output: dense softmax attention (SDPA) of those ``q, k, v``;
3. computes the **student** output from the *detached* ``q, k, v`` with this block's ``phi_q, phi_k`` (the chosen
   attention kind: ``hybrid`` = ReHyAt, or the ``linear`` / ``chunk_local`` baselines), the loss against the teacher
   output (per-head outputs before ``to_out``, LoLCATs-style) and — by default — its backward right away, so the
   student graph of one block is freed before the next block runs;
4. returns the **teacher** output through ``to_out``.

Downstream blocks therefore see exactly the teacher's activations, every block's loss depends on its own φ only, and
all converted blocks train in one teacher forward.  ``"teacher"`` mode does 1, 2, 4 (used to replay sampling
trajectories), ``"eval"`` adds error statistics without gradients, ``"student"`` (or no settings) is the plain
ReHyAt forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from rehyat.attention import get_attention_kind
from rehyat.wan.processor import ReHyAtWanAttnProcessor, wan_self_attention_qkv

Tensor = torch.Tensor
STUDENT_KINDS = ("hybrid", "linear", "chunk_local")
LOSSES = ("l1", "mse")
MODES = ("student", "teacher", "distill", "eval", "init_scale")


@dataclass
class DistillSettings:
    """Shared by every distilling processor of one model; the trainer flips ``mode`` and reads the statistics."""

    student_kind: str = "hybrid"
    loss: str = "l1"
    output_weight: float = 1.0
    xent_weight: float = 0.0
    xent_queries: int = 64
    backward: bool = True
    loss_scale: float = 1.0  # multiplies the loss before backward (e.g. 1 / number of micro-batches)
    mode: str = "distill"
    generator: torch.Generator | None = None  # query subsampling of the xent term
    on_qkv: object = None  # optional callback(block, q, k, v) with the post-RoPE tensors (analysis, proxy benchmark)
    # Experimental: a learned per-head log-scale gamma_h on the linear branch (fk -> exp(gamma_h) fk).  The Wan
    # processor has no such parameter yet, so a model trained with it cannot be exported (see docs/distill.md).
    linear_scale: bool = False
    stats: dict = field(default_factory=dict)  # block -> {"loss", "out_loss", "xent", "sq_err", "sq_ref", "n"}

    def __post_init__(self):
        if self.student_kind not in STUDENT_KINDS:
            raise ValueError(f"student_kind must be one of {STUDENT_KINDS}, got {self.student_kind!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")

    def reset(self) -> None:
        self.stats = {}

    def _acc(self, block: int, **vals) -> None:
        st = self.stats.setdefault(block, {})
        for k, v in vals.items():
            st[k] = st.get(k, 0.0) + float(v)


def _frame_masks(kind: str, q_frames: Tensor, num_frames: int, frame_tokens: int, chunk_frames: int,
                 overlap_frames: int, causal: bool) -> tuple[Tensor, Tensor]:
    """Token masks ``softmax_set, linear_set`` [nq, N] for queries in frames ``q_frames`` (same sets as the op)."""
    kf = torch.arange(num_frames, device=q_frames.device).repeat_interleave(frame_tokens)[None]  # [1, N]
    c = q_frames // chunk_frames
    ws = (c * chunk_frames - overlap_frames).clamp_min(0)[:, None]
    we = ((c + 1) * chunk_frames).clamp_max(num_frames)[:, None]
    in_win = (kf >= ws) & (kf < we)
    if kind == "hybrid":
        return in_win, ((kf < ws) if causal else ~in_win)
    if kind == "chunk_local":
        return in_win, torch.zeros_like(in_win)
    # linear: every key, or chunk-causal (keys up to the end of the query's chunk)
    lin = (kf < we) if causal else torch.ones_like(in_win)
    return torch.zeros_like(in_win), lin


def student_log_weights(q: Tensor, k: Tensor, fq: Tensor | None, fk: Tensor | None, kind: str, proc, idx: Tensor
                        ) -> tuple[Tensor, Tensor]:
    """``(teacher scores s [B, H, nq, N], student log-weights [B, H, nq, N])`` for query tokens ``idx``.

    Student weights: ``exp(s)`` on its softmax set, ``fq . fk`` on its linear set, one joint normaliser — the weights
    the op applies to ``v`` (``tests/distill`` checks ``exp(log_w) @ v`` against the op).
    """
    scale = q.shape[-1] ** -0.5
    acc = torch.promote_types(q.dtype, torch.float32)
    qs = q[:, idx].to(acc).transpose(1, 2)  # [B, H, nq, D]
    kt = k.to(acc).transpose(1, 2)
    s = torch.matmul(qs, kt.transpose(-1, -2)) * scale  # [B, H, nq, N]
    nf = q.shape[1] // proc.frame_tokens
    soft, lin = _frame_masks(kind, idx // proc.frame_tokens, nf, proc.frame_tokens, proc.chunk_frames,
                             proc.overlap_frames, proc.causal)
    logits = torch.where(soft, s, torch.full_like(s, float("-inf")))
    if fq is not None and bool(lin.any()):
        kern = torch.matmul(fq[:, idx].to(acc).transpose(1, 2), fk.to(acc).transpose(1, 2).transpose(-1, -2))
        logits = torch.where(lin, torch.log(kern.clamp_min(1e-30)), logits)
    return s, torch.log_softmax(logits, dim=-1)


def attention_xent(q: Tensor, k: Tensor, fq: Tensor | None, fk: Tensor | None, kind: str, proc, idx: Tensor
                   ) -> Tensor:
    """Hedgehog / LoLCATs cross-entropy ``-sum_j a_true log clamp(a_pred, 1e-12)`` for query tokens ``idx``.

    ``a_true = softmax(q k^T / sqrt(D))`` (no grad).  Costs [B, H, len(idx), N], never N x N.
    """
    s, log_pred = student_log_weights(q, k, fq, fk, kind, proc, idx)
    p_true = torch.softmax(s.detach(), dim=-1)
    return -(p_true * log_pred.clamp_min(math.log(1e-12))).sum(-1).mean()


class DistillWanAttnProcessor(ReHyAtWanAttnProcessor):
    """See the module docstring.  Created only by :func:`enable_distillation` (class swap of a ReHyAt processor)."""

    _distill: DistillSettings | None
    _distill_block: int

    def forward(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                attention_mask: Tensor | None = None, rotary_emb: tuple[Tensor, Tensor] | None = None,
                **kwargs) -> Tensor:
        d = getattr(self, "_distill", None)
        if d is None or d.mode == "student":
            return super().forward(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb, **kwargs)
        if d.mode not in MODES:
            raise ValueError(f"unknown distillation mode {d.mode!r}")
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("DistillWanAttnProcessor is a self-attention processor without masks")
        query, key, value = wan_self_attention_qkv(attn, hidden_states, rotary_emb)
        if d.on_qkv is not None:
            d.on_qkv(self._distill_block, query, key, value)
        teacher = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2),
                                                 value.transpose(1, 2)).transpose(1, 2)
        if d.mode == "init_scale":
            with torch.no_grad():
                self._init_scale_stats(d, query, key)
        elif d.mode == "distill":
            with torch.enable_grad():
                self._student_step(d, query.detach(), key.detach(), value.detach(), teacher.detach(), train=True)
        elif d.mode == "eval":
            with torch.no_grad():
                self._student_step(d, query, key, value, teacher, train=False)
        out = teacher.flatten(2, 3).type_as(query)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)

    def student_output(self, kind_name: str, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor | None,
                                                                                           Tensor | None]:
        if self.frame_tokens is None:
            raise RuntimeError("frame geometry unknown (call the converted transformer, its pre-hook sets it)")
        kind = get_attention_kind(kind_name)
        fq = fk = None
        if kind.needs_features:
            fq, fk = self.features(q, k)
        y = kind(q, k, v, fq, fk, frame_tokens=self.frame_tokens, chunk_frames=self.chunk_frames,
                 overlap_frames=self.overlap_frames, causal=self.causal)
        return y, fq, fk

    def _init_scale_stats(self, d: DistillSettings, q: Tensor, k: Tensor) -> None:
        """Per head: mean over (sampled) queries of ``log sum_L exp(s) - log sum_L fq.fk`` — the log-scale at which
        the linear branch carries the teacher's out-of-window mass (used to initialise ``linear_log_scale``)."""
        n = q.shape[1]
        idx = torch.randperm(n, generator=d.generator)[: min(n, max(d.xent_queries, 256))].to(q.device)
        fq, fk = self.phi_q(q), self.phi_k(k)
        s, _ = student_log_weights(q, k, fq, fk, "hybrid", self, idx)
        nf = n // self.frame_tokens
        _, lin = _frame_masks("hybrid", idx // self.frame_tokens, nf, self.frame_tokens, self.chunk_frames,
                              self.overlap_frames, self.causal)
        if not bool(lin.any()):
            return
        acc = s.dtype
        kern = torch.matmul(fq[:, idx].to(acc).transpose(1, 2), fk.to(acc).transpose(1, 2).transpose(-1, -2))
        neg = torch.full_like(s, float("-inf"))
        lse_l = torch.logsumexp(torch.where(lin, s, neg), dim=-1)
        log_nl = torch.logsumexp(torch.where(lin, torch.log(kern.clamp_min(1e-30)), neg), dim=-1)
        gap = (lse_l - log_nl)  # [B, H, nq]; rows without a linear set are -inf - -inf = nan
        ok = torch.isfinite(gap)
        per_head = torch.where(ok, gap, torch.zeros_like(gap)).sum((0, 2)) / ok.sum((0, 2)).clamp_min(1)
        d._acc(self._distill_block, n=1)
        st = d.stats[self._distill_block]
        st["gap"] = st.get("gap", 0) + per_head.double().cpu()

    def _student_step(self, d: DistillSettings, q: Tensor, k: Tensor, v: Tensor, y_t: Tensor, train: bool) -> None:
        y_s, fq, fk = self.student_output(d.student_kind, q, k, v)
        diff = y_s.float() - y_t.float()
        out_loss = diff.abs().mean() if d.loss == "l1" else diff.pow(2).mean()
        loss = d.output_weight * out_loss
        xent = torch.zeros((), device=q.device)
        if d.xent_weight > 0:
            n = q.shape[1]
            nq = min(d.xent_queries, n)
            g = d.generator
            idx = (torch.randperm(n, generator=g)[:nq] if g is not None else torch.randperm(n)[:nq]).to(q.device)
            xent = attention_xent(q, k, fq, fk, d.student_kind, self, idx)
            loss = loss + d.xent_weight * xent
        if train and d.backward and loss.requires_grad:
            (loss * d.loss_scale).backward()
        d._acc(self._distill_block, loss=loss.detach(), out_loss=out_loss.detach(), xent=xent.detach(),
               sq_err=diff.detach().pow(2).sum(), sq_ref=y_t.detach().float().pow(2).sum(), n=1)


def enable_distillation(transformer, settings: DistillSettings) -> dict[int, DistillWanAttnProcessor]:
    """Switch every ReHyAt processor of a converted transformer to teacher forcing (in place); returns them."""
    from rehyat.wan.convert import rehyat_processors

    procs = rehyat_processors(transformer)
    if not procs:
        raise ValueError("no ReHyAt processor found (convert the teacher with convert_wan_to_rehyat first)")
    for i, p in procs.items():
        p.__class__ = DistillWanAttnProcessor
        p._distill = settings
        p._distill_block = i
        if settings.linear_scale and not p.linear_scale:
            raise ValueError("linear_scale distillation needs a transformer converted with linear_scale=True")
    return procs


def disable_distillation(transformer) -> None:
    """Back to plain ReHyAt processors (same objects, same parameters)."""
    from rehyat.wan.convert import rehyat_processors

    for p in rehyat_processors(transformer).values():
        if isinstance(p, DistillWanAttnProcessor):
            p._distill = None
            p.__class__ = ReHyAtWanAttnProcessor
            for a in ("_distill", "_distill_block"):
                p.__dict__.pop(a, None)
