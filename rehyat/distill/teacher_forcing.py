"""Layer-wise teacher forcing for stage 1.

:func:`enable_distillation` installs a :class:`DistillWanAttnProcessor` wrapper around each converted block's
:class:`~rehyat.wan.processor.ReHyAtWanAttnProcessor` with ``set_processor``.  The wrapper shares the wrapped
processor's parameter, buffer and submodule registries (the same dicts), so ``phi_q`` / ``phi_k`` keep their names
``blocks.{i}.attn1.processor.phi_*`` and ``.to()`` / optimisers see one set of tensors; :func:`disable_distillation`
puts the wrapped processor back.  In ``"distill"`` mode its forward

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

import torch.nn as nn

from rehyat.attention import get_attention_kind
from rehyat.wan.processor import ReHyAtWanAttnProcessor, project_out, wan_self_attention_qkv

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
    backward_fn: object = None  # callable(loss) doing the backward (stage 1: accelerator.backward); None: .backward()
    # "eval" mode extras (stage-1 diagnostics): the linear branch's share of the joint normaliser over `diag_queries`
    # sampled query rows, and the chunk-local softmax baseline's error on the same inputs.
    diagnose: bool = False
    diag_queries: int = 256
    record_stats: bool = True  # False: no host sync per block (the meta-device memory plan cannot read values)
    mode: str = "distill"
    generator: torch.Generator | None = None  # query subsampling of the xent term
    on_qkv: object = None  # optional callback(block, q, k, v) with the post-RoPE tensors (analysis, proxy benchmark)
    # Experimental: a learned per-head log-scale gamma_h on the linear branch (fk -> exp(gamma_h) fk).  The Wan
    # processor has no such parameter yet, so a model trained with it cannot be exported (see docs/distill.md).
    linear_scale: bool = False
    # block -> {"loss", "out_loss", "xent", "sq_err", "sq_ref", "n"} (+ "share_sum", "share_rows", "sq_err_cl" when
    # diagnosing)
    stats: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.student_kind not in STUDENT_KINDS:
            raise ValueError(f"student_kind must be one of {STUDENT_KINDS}, got {self.student_kind!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")

    def reset(self) -> None:
        self.stats = {}

    def _acc(self, block: int, **vals) -> None:
        if not self.record_stats:
            return
        st = self.stats.setdefault(block, {})
        for k, v in vals.items():
            st[k] = st.get(k, 0.0) + float(v)


def student_log_weights(q: Tensor, k: Tensor, fq: Tensor | None, fk: Tensor | None, kind: str, proc, idx: Tensor
                        ) -> tuple[Tensor, Tensor]:
    """``(teacher scores s [B, H, nq, N], student log-weights [B, H, nq, N])`` for query tokens ``idx``.

    Student weights: ``exp(s)`` on its softmax set (``exp(s - c)`` with ``proc.normaliser == "paper"``, ``c`` the
    row's max over that set), ``fq . fk`` on its linear set, one joint normaliser — the weights the op applies to
    ``v`` (``tests/distill`` checks ``exp(log_w) @ v`` against the op).  ``proc``: anything with ``frame_tokens``,
    ``chunk_frames``, ``overlap_frames``, ``causal`` (and optionally ``normaliser``; default ``"kernel"``).
    """
    scale = q.shape[-1] ** -0.5
    acc = torch.promote_types(q.dtype, torch.float32)
    qs = q[:, idx].to(acc).transpose(1, 2)  # [B, H, nq, D]
    kt = k.to(acc).transpose(1, 2)
    s = torch.matmul(qs, kt.transpose(-1, -2)) * scale  # [B, H, nq, N]
    nf = q.shape[1] // proc.frame_tokens
    soft, lin = get_attention_kind(kind).token_masks(idx, nf, proc.frame_tokens, proc.chunk_frames,
                                                     proc.overlap_frames, proc.causal)
    logits = torch.where(soft, s, torch.full_like(s, float("-inf")))
    if getattr(proc, "normaliser", "kernel") == "paper" and get_attention_kind(kind).uses_normaliser:
        logits = logits - logits.amax(-1, keepdim=True).clamp_min(torch.finfo(acc).min)
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


@dataclass(frozen=True)
class CallLayout:
    """The chunking of one call: frame tokens of this call, T_c, T_o and direction of the wrapped processor."""

    frame_tokens: int
    chunk_frames: int
    overlap_frames: int
    causal: bool
    normaliser: str = "kernel"


class DistillWanAttnProcessor(nn.Module):
    """See the module docstring.  Installed by :func:`enable_distillation` around a ReHyAt processor ``inner``."""

    def __init__(self, inner: ReHyAtWanAttnProcessor, settings: DistillSettings, block: int):
        super().__init__()
        # One registry for both objects: same parameter names, same tensors, whatever .to() or load_state_dict do.
        self._parameters, self._buffers, self._modules = inner._parameters, inner._buffers, inner._modules
        self.__dict__["inner"] = inner  # not a submodule (its children are already ours)
        self._distill = settings
        self._distill_block = block

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("inner")
            if inner is None:
                raise
            return getattr(inner, name)

    def forward(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                attention_mask: Tensor | None = None, rotary_emb: tuple[Tensor, Tensor] | None = None,
                frame_geometry: tuple[int, int] | None = None, **kwargs) -> Tensor:
        d = self._distill
        if d.mode == "student":
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb,
                              frame_geometry=frame_geometry, **kwargs)
        if d.mode not in MODES:
            raise ValueError(f"unknown distillation mode {d.mode!r}")
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("DistillWanAttnProcessor is a self-attention processor without masks")
        _, frame_tokens = self.inner.geometry(hidden_states, rotary_emb, frame_geometry)
        layout = CallLayout(frame_tokens, self.inner.chunk_frames, self.inner.overlap_frames, self.inner.causal,
                            self.inner.config.normaliser)
        query, key, value = wan_self_attention_qkv(attn, hidden_states, rotary_emb)
        if d.on_qkv is not None:
            d.on_qkv(self._distill_block, query, key, value)
        teacher = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2),
                                                 value.transpose(1, 2)).transpose(1, 2)
        if d.mode == "init_scale":
            with torch.no_grad():
                self._init_scale_stats(d, query, key, layout)
        elif d.mode == "distill":
            with torch.enable_grad():
                self._student_step(d, query.detach(), key.detach(), value.detach(), teacher.detach(), layout,
                                   train=True)
        elif d.mode == "eval":
            with torch.no_grad():
                self._student_step(d, query, key, value, teacher, layout, train=False)
        return project_out(attn, teacher, query)

    def student_output(self, kind_name: str, q: Tensor, k: Tensor, v: Tensor, frame_tokens: int
                       ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        kind = get_attention_kind(kind_name)
        fq = fk = None
        if kind.needs_features:
            fq, fk = self.inner.features(q, k)
        return kind.run(self.inner.config, q, k, v, fq, fk, frame_tokens=frame_tokens), fq, fk

    def _init_scale_stats(self, d: DistillSettings, q: Tensor, k: Tensor, layout: CallLayout) -> None:
        """Per head: mean over (sampled) queries of ``log sum_L exp(s) - log sum_L fq.fk`` — the log-scale at which
        the linear branch carries the teacher's out-of-window mass (used to initialise ``linear_log_scale``).  With
        the paper's normaliser the softmax branch weighs ``exp(s - c)`` (``c`` the row's max over its window), so the
        linear branch must carry ``sum_L exp(s - c)``: the target drops by ``c``."""
        n = q.shape[1]
        idx = torch.randperm(n, generator=d.generator)[: min(n, max(d.xent_queries, 256))].to(q.device)
        fq, fk = self.phi_q(q), self.phi_k(k)
        s, _ = student_log_weights(q, k, fq, fk, "hybrid", layout, idx)
        nf = n // layout.frame_tokens
        _, lin = get_attention_kind("hybrid").token_masks(idx, nf, layout.frame_tokens, layout.chunk_frames,
                                                          layout.overlap_frames, layout.causal)
        if not bool(lin.any()):
            return
        acc = s.dtype
        kern = torch.matmul(fq[:, idx].to(acc).transpose(1, 2), fk.to(acc).transpose(1, 2).transpose(-1, -2))
        neg = torch.full_like(s, float("-inf"))
        lse_l = torch.logsumexp(torch.where(lin, s, neg), dim=-1)
        log_nl = torch.logsumexp(torch.where(lin, torch.log(kern.clamp_min(1e-30)), neg), dim=-1)
        gap = (lse_l - log_nl)  # [B, H, nq]; rows without a linear set are -inf - -inf = nan
        if layout.normaliser == "paper":
            soft, _ = get_attention_kind("hybrid").token_masks(idx, nf, layout.frame_tokens, layout.chunk_frames,
                                                               layout.overlap_frames, layout.causal)
            gap = gap - torch.where(soft, s, neg).amax(-1)
        ok = torch.isfinite(gap)
        per_head = torch.where(ok, gap, torch.zeros_like(gap)).sum((0, 2)) / ok.sum((0, 2)).clamp_min(1)
        d._acc(self._distill_block, n=1)
        st = d.stats[self._distill_block]
        st["gap"] = st.get("gap", 0) + per_head.double().cpu()

    def _student_step(self, d: DistillSettings, q: Tensor, k: Tensor, v: Tensor, y_t: Tensor, layout: CallLayout,
                      train: bool) -> None:
        y_s, fq, fk = self.student_output(d.student_kind, q, k, v, layout.frame_tokens)
        diff = y_s.float() - y_t.float()
        out_loss = diff.abs().mean() if d.loss == "l1" else diff.pow(2).mean()
        loss = d.output_weight * out_loss
        xent = torch.zeros((), device=q.device)
        if d.xent_weight > 0:
            n = q.shape[1]
            nq = min(d.xent_queries, n)
            g = d.generator
            idx = (torch.randperm(n, generator=g)[:nq] if g is not None else torch.randperm(n)[:nq]).to(q.device)
            xent = attention_xent(q, k, fq, fk, d.student_kind, layout, idx)
            loss = loss + d.xent_weight * xent
        if train and d.backward and loss.requires_grad:
            (d.backward_fn or torch.Tensor.backward)(loss * d.loss_scale)
        d._acc(self._distill_block, loss=loss.detach(), out_loss=out_loss.detach(), xent=xent.detach(),
               sq_err=diff.detach().pow(2).sum(), sq_ref=y_t.detach().float().pow(2).sum(), n=1)
        if not train and d.diagnose:
            self._diagnose(d, q, k, v, y_t, fq, fk, layout)

    def _diagnose(self, d: DistillSettings, q: Tensor, k: Tensor, v: Tensor, y_t: Tensor, fq: Tensor | None,
                  fk: Tensor | None, layout: CallLayout) -> None:
        """Accumulate the linear branch's share of the joint normaliser, ``sum_L a_student`` per query row (the
        weights of :func:`student_log_weights`, i.e. sigma(w) with w = log linear mass - log softmax mass), over rows
        that have a linear set, and the chunk-local softmax baseline's squared error against the teacher."""
        n = q.shape[1]
        g = d.generator
        idx = (torch.randperm(n, generator=g) if g is not None else torch.randperm(n))[: min(n, d.diag_queries)]
        idx = idx.to(q.device)
        if fq is not None:
            _, logw = student_log_weights(q, k, fq, fk, d.student_kind, layout, idx)
            _, lin = get_attention_kind(d.student_kind).token_masks(idx, n // layout.frame_tokens, layout.frame_tokens,
                                                                    layout.chunk_frames, layout.overlap_frames,
                                                                    layout.causal)
            share = torch.where(lin, logw.exp(), torch.zeros_like(logw)).sum(-1)  # [B, H, nq]
            rows = lin.any(-1).expand_as(share)
            d._acc(self._distill_block, share_sum=share[rows].double().sum(), share_rows=rows.sum())
        y_cl, _, _ = self.student_output("chunk_local", q, k, v, layout.frame_tokens)
        d._acc(self._distill_block, sq_err_cl=(y_cl.float() - y_t.float()).pow(2).sum())


def enable_distillation(transformer, settings: DistillSettings) -> dict[int, DistillWanAttnProcessor]:
    """Install teacher forcing on every ReHyAt processor of a converted transformer; returns the wrappers."""
    from rehyat.wan.convert import rehyat_processors

    procs = rehyat_processors(transformer)
    if not procs:
        raise ValueError("no ReHyAt processor found (convert the teacher with convert_wan_to_rehyat first)")
    out = {}
    for i, p in procs.items():
        inner = p.inner if isinstance(p, DistillWanAttnProcessor) else p
        if settings.linear_scale and not inner.linear_scale:
            raise ValueError("linear_scale distillation needs a transformer converted with linear_scale=True")
        out[i] = DistillWanAttnProcessor(inner, settings, i)
        transformer.blocks[i].attn1.set_processor(out[i])
    return out


def disable_distillation(transformer) -> None:
    """Back to the plain ReHyAt processors (the same objects, the same parameters)."""
    from rehyat.wan.convert import rehyat_processors

    for i, p in rehyat_processors(transformer).items():
        if isinstance(p, DistillWanAttnProcessor):
            transformer.blocks[i].attn1.set_processor(p.inner)
