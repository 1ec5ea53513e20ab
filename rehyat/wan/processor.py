"""The one Wan self-attention processor of this project, parameterised by attention kind.

:class:`ReHyAtWanAttnProcessor` is installed on ``attn1`` of a diffusers ``WanTransformerBlock``.  It keeps Wan's
projections, QK-norm (RMSNorm across heads) and RoPE, applies the learned feature maps ``phi_q`` / ``phi_k`` to the
**post-RoPE** queries and keys (for kinds that take features) and replaces the dense softmax call with the registered
attention kind of its :class:`~rehyat.config.ReHyAtConfig` (``hybrid`` = ReHyAt; ``linear``, ``chunk_local`` and
``softmax`` baselines).  It is an ``nn.Module``, so ``phi_q`` / ``phi_k`` are parameters of the transformer
(``blocks.{i}.attn1.processor.phi_q.*``).

**Frame geometry reaches the processor explicitly, through the RoPE argument.**  diffusers' ``WanTransformerBlock``
calls ``attn1(hidden_states, None, None, rotary_emb)`` and passes nothing else, so the one value that travels from the
model's forward to every self-attention call is ``rotary_emb``.  :class:`FrameRotary` is Wan's ``(cos, sin)`` tuple
(it unpacks like one, so diffusers' own processors and gradient checkpointing are unaffected) that also carries the
``(latent frames, tokens per frame)`` it was built for and, in a recurrent sweep, the per-layer recurrent states.
:class:`rehyat.wan.model.ReHyAtWanTransformer3DModel` builds it in its own forward (its ``rope`` module is
:class:`FrameRotaryPosEmbed`); the recurrent forward builds one per chunk.  A direct call may pass
``frame_geometry=(frames, frame_tokens)`` instead.  The processor holds no per-call state.
"""

from __future__ import annotations

from typing import Any, MutableMapping

import torch
import torch.nn as nn
from diffusers.models.transformers.transformer_wan import (WanAttention, WanAttnProcessor, WanRotaryPosEmbed,
                                                           _get_qkv_projections)

from rehyat.attention import HybridState, hybrid_attention_step
from rehyat.config import ReHyAtConfig
from rehyat.feature_maps import build_feature_map
from rehyat.tracing import is_tracing

Tensor = torch.Tensor
RecurrentStates = MutableMapping[Any, HybridState]  # processor -> its layer's state, one per sweep


class FrameRotary(tuple):
    """Wan's RoPE tables ``(cos, sin)``, each ``[1, S, 1, D]``, plus the geometry they belong to.

    ``frames`` x ``frame_tokens`` = S (post-patch latent frames x tokens per frame).  ``states``: set only in a
    recurrent sweep — a mapping processor -> :class:`~rehyat.attention.HybridState` that each converted layer reads
    and updates, so the sweep (not the processor) owns the recurrent state.
    """

    frames: int
    frame_tokens: int
    states: RecurrentStates | None

    def __new__(cls, cos: Tensor, sin: Tensor, frames: int, frame_tokens: int,
                states: RecurrentStates | None = None) -> "FrameRotary":
        self = super().__new__(cls, (cos, sin))
        self.frames, self.frame_tokens, self.states = int(frames), int(frame_tokens), states
        return self

    @property
    def geometry(self) -> tuple[int, int]:
        return self.frames, self.frame_tokens


class FrameRotaryPosEmbed(WanRotaryPosEmbed):
    """``WanRotaryPosEmbed`` whose output also says its frame geometry (a :class:`FrameRotary`); same buffers, same
    numbers."""

    def forward(self, hidden_states: Tensor) -> FrameRotary:
        _, _, f, h, w = hidden_states.shape
        pt, ph, pw = self.patch_size
        cos, sin = super().forward(hidden_states)
        return FrameRotary(cos, sin, f // pt, (h // ph) * (w // pw))


def apply_wan_rotary_emb(x: Tensor, freqs_cos: Tensor, freqs_sin: Tensor, inplace: bool = False) -> Tensor:
    """Wan's real-valued RoPE on interleaved pairs, ``x: [B, S, H, D]``, freqs ``[1, S, 1, D]``.

    Same arithmetic (and dtype promotion) as the helper inside ``WanAttnProcessor.__call__`` (which is a closure and
    cannot be imported), so converted blocks see bit-identical post-RoPE q and k.  Eagerly the pairs are rotated as
    one complex multiplication ``(x1 + i x2)(cos + i sin)`` in the promoted dtype: the same products and sums, one
    pass instead of six (fp32, [1, 32760, 12, 128], 2 threads: 56 against 248 ms; ``tests/wan/test_convert.py``
    checks bit equality).  Traced, compiled or exported graphs keep the real form (ONNX and inductor have no complex
    tensors).  ``inplace``: rotate ``x`` itself where it can (eager, ``x`` already in the promoted dtype and layout),
    for a caller that owns a fresh ``x``.
    """
    dtype = torch.promote_types(x.dtype, freqs_cos.dtype)
    if dtype in (torch.float32, torch.float64) and not is_tracing():
        rot = torch.complex(freqs_cos[..., 0::2].to(dtype), freqs_sin[..., 1::2].to(dtype))  # [1, S, 1, D/2]
        pairs = x.to(dtype).unflatten(-1, (-1, 2))
        if pairs.stride(-1) != 1 or any(st % 2 for st in pairs.stride()[:-1]):
            pairs = pairs.contiguous()
        if inplace and pairs.data_ptr() == x.data_ptr():
            torch.view_as_complex(pairs).mul_(rot)  # the same complex product, written over x
            return x
        return torch.view_as_real(torch.view_as_complex(pairs) * rot).flatten(-2).type_as(x)
    return _apply_wan_rotary_emb_real(x, freqs_cos, freqs_sin)


def _apply_wan_rotary_emb_real(x: Tensor, freqs_cos: Tensor, freqs_sin: Tensor) -> Tensor:
    """diffusers' own form of :func:`apply_wan_rotary_emb` (real arithmetic on strided halves)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


def wan_self_attention_qkv(attn: WanAttention, hidden_states: Tensor, rotary_emb: tuple[Tensor, Tensor] | None
                           ) -> tuple[Tensor, Tensor, Tensor]:
    """Wan's self-attention inputs: projections, QK-norm, head split and RoPE.  [B, S, C] -> 3 x [B, S, H, D].

    The one place that mirrors ``WanAttnProcessor`` up to the attention call; every processor of ours (ReHyAt, the
    distillation teacher-forcing one, the efficiency sweep's kind processor) takes q, k, v from here.
    """
    query, key, value = _get_qkv_projections(attn, hidden_states, None)
    # CPU inference rewrites the fresh projections in place: each [B, S, C] pass left out is a fresh allocation the
    # kernel must zero page by page (480x832, 81 frames: 2.4 M page faults, 4.5 s of system time per block call before)
    own = _rewrites_in_place(query)
    query = _qk_norm(attn.norm_q, query, own).unflatten(2, (attn.heads, -1))
    key = _qk_norm(attn.norm_k, key, own).unflatten(2, (attn.heads, -1))
    value = value.unflatten(2, (attn.heads, -1))
    if rotary_emb is not None:
        query = apply_wan_rotary_emb(query, *rotary_emb, inplace=own)
        key = apply_wan_rotary_emb(key, *rotary_emb, inplace=own)
    return query, key, value


def _rewrites_in_place(x: Tensor) -> bool:
    """Whether the processor may overwrite the fresh tensors of this call: eager CPU inference in fp32/fp64 (no
    autograd graph or traced graph to keep functional, no autocast changing dtypes).  GPUs keep the functional form:
    their caching allocator already reuses freed memory."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu") and not is_tracing())


def _qk_norm(norm: nn.Module, x: Tensor, inplace: bool) -> Tensor:
    """``norm(x)`` for Wan's QK-norm (``nn.RMSNorm`` over the last dim), in place when ``inplace``.

    In place it runs ATen's own CPU composite — ``rsqrt(mean(x^2) + eps)``, times x, times the weight — with the two
    products written over x, so the values are bit-identical (``tests/wan/test_convert.py``) and two [B, S, C]
    temporaries are never allocated."""
    if not (inplace and type(norm) is nn.RMSNorm and len(norm.normalized_shape) == 1):
        return norm(x)
    eps = torch.finfo(x.dtype).eps if norm.eps is None else norm.eps
    x.mul_(x.pow(2).mean(-1, keepdim=True).add_(eps).rsqrt_())
    return x if norm.weight is None else x.mul_(norm.weight)


class ReHyAtWanAttnProcessor(nn.Module, WanAttnProcessor):
    """Wan self-attention with a registered attention kind (``config.kind``; ``hybrid`` = ReHyAt).

    Args:
        num_heads, head_dim: of the attention module it is installed on.
        config: the :class:`~rehyat.config.ReHyAtConfig` (chunking, direction, feature map, linear scale, backend).
        **fields: ReHyAtConfig fields overriding ``config`` (``chunk_frames=2, causal=True``, ...).

    Holds ``phi_q`` / ``phi_k`` (kinds with features and a feature map) and, with ``config.linear_scale``, a
    learnable per-head log-scale ``linear_log_scale`` multiplying phi_k by ``exp(gamma_h)``: ``fq . fk`` stands in
    for ``exp(s)`` itself, so it must match the absolute size of the scores; the scale lets distillation reach score
    magnitudes (log-sum-exp ~30 in the proxy teacher) that a bounded feature map cannot (docs/distill.md).
    """

    def __init__(self, num_heads: int, head_dim: int, config: ReHyAtConfig | None = None, **fields):
        nn.Module.__init__(self)
        self.config = (config or ReHyAtConfig()).replace(**fields)
        self.kind = self.config.attention_kind
        self.num_heads, self.head_dim = num_heads, head_dim
        if self.kind.needs_features and self.config.feature_map:
            kw = dict(self.config.feature_map_kwargs)
            self.phi_q = build_feature_map(self.config.feature_map, num_heads, head_dim, **kw)
            self.phi_k = build_feature_map(self.config.feature_map, num_heads, head_dim, **kw)
        else:
            self.phi_q = self.phi_k = None
        if self.config.linear_scale:
            if not self.kind.needs_features:
                raise ValueError(f"linear_scale needs a kind with a linear branch, not {self.kind.name!r}")
            self.linear_log_scale = nn.Parameter(torch.zeros(num_heads))
        self._compiled_inputs = None  # set by enable_compile()

    def enable_compile(self, **compile_kwargs) -> "ReHyAtWanAttnProcessor":
        """Run what surrounds the attention op — Wan's projections, QK-norm, RoPE and phi_q / phi_k — as one
        ``torch.compile`` region (``compile_kwargs`` go to it: ``mode``, ``backend``, ``dynamic``, ...).

        Inductor fuses the elementwise work (QK-norm, RoPE, phi's bias/activation/softplus/powers) into the GEMMs'
        neighbours; the op itself stays eager (its per-chunk loop calls fused attention kernels, which a compiled graph
        would call the same way).  Weights, their names and ``state_dict`` are unchanged; ``disable_compile`` undoes
        it.  The first call per shape compiles (seconds to minutes); a new frame count or resolution recompiles.
        """
        self._compiled_inputs = torch.compile(self._inputs_eager, **compile_kwargs)
        return self

    def disable_compile(self) -> "ReHyAtWanAttnProcessor":
        self._compiled_inputs = None
        return self

    @property
    def compiled(self) -> bool:
        return self._compiled_inputs is not None

    def inputs(self, attn: WanAttention, hidden_states: Tensor, rotary_emb: tuple[Tensor, Tensor] | None
               ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
        """``q, k, v: [B, N, H, D]`` (post-RoPE) and ``fq, fk: [B, N, H, F]`` (None for kinds without features) from
        ``hidden_states: [B, N, C]``, compiled after :meth:`enable_compile`."""
        cos_sin = None if rotary_emb is None else (rotary_emb[0], rotary_emb[1])  # a plain tuple: no FrameRotary guards
        fn = self._compiled_inputs if self._compiled_inputs is not None else self._inputs_eager
        return fn(attn, hidden_states, cos_sin)

    def _inputs_eager(self, attn: WanAttention, hidden_states: Tensor, cos_sin: tuple[Tensor, Tensor] | None):
        query, key, value = wan_self_attention_qkv(attn, hidden_states, cos_sin)
        return (query, key, value, *self.features(query, key))

    # Read-only views of the config under the names older code used.
    chunk_frames = property(lambda self: self.config.chunk_frames)
    overlap_frames = property(lambda self: self.config.overlap_frames)
    causal = property(lambda self: self.kind.effective_causal(self.config.causal))
    feature_map = property(lambda self: self.config.feature_map)
    feature_map_kwargs = property(lambda self: dict(self.config.feature_map_kwargs))
    softmax_backend = property(lambda self: self.config.softmax_backend)
    linear_scale = property(lambda self: self.config.linear_scale)

    def extra_repr(self) -> str:
        c = self.config
        return (f"kind={c.kind!r}, chunk_frames={c.chunk_frames}, overlap_frames={c.overlap_frames}, "
                f"causal={self.causal}, feature_map={c.feature_map!r}")

    def features(self, query: Tensor, key: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """phi_q(query), phi_k(key) (times ``exp(linear_log_scale)`` per head when enabled).  [B,N,H,D] -> [B,N,H,F].

        ``(None, None)`` for kinds without features, or without a feature map (the ``linear`` kind then uses its
        parameter-free ReLU features)."""
        if self.phi_q is None:
            return None, None
        fq, fk = self.phi_q(query), self.phi_k(key)
        if self.config.linear_scale:
            # in fp32: exp(gamma) * fk overflows fp16 for large gamma (the op accumulates in fp32 anyway)
            with torch.autocast(fk.device.type, enabled=False):
                fk = fk.float() * self.linear_log_scale.float().exp().view(1, 1, -1, 1)
        return fq, fk

    @staticmethod
    def geometry(hidden_states: Tensor, rotary_emb, frame_geometry: tuple[int, int] | None) -> tuple[int, int]:
        """``(latent frames, tokens per frame)`` of this call, from ``frame_geometry`` or the :class:`FrameRotary`."""
        geom = frame_geometry if frame_geometry is not None else getattr(rotary_emb, "geometry", None)
        if geom is None:
            raise RuntimeError(
                "frame geometry unknown: call a ReHyAtWanTransformer3DModel (its RoPE carries the geometry), pass "
                "rotary_emb as a rehyat.wan.FrameRotary, or call attn(..., frame_geometry=(frames, frame_tokens))")
        frames, frame_tokens = int(geom[0]), int(geom[1])
        if frames * frame_tokens != hidden_states.shape[1]:
            raise ValueError(f"sequence length {hidden_states.shape[1]} != latent_frames {frames} x frame_tokens "
                             f"{frame_tokens}")
        return frames, frame_tokens

    def attend(self, query: Tensor, key: Tensor, value: Tensor, fq: Tensor | None, fk: Tensor | None,
               frame_tokens: int, states: RecurrentStates | None = None) -> Tensor:
        """The attention core on post-RoPE ``q, k, v: [B, N, H, D]`` and features ``fq, fk: [B, N, H, F]`` (from
        :meth:`inputs`; None for kinds without features) -> ``[B, N, H, D]``.

        With ``states`` (a recurrent sweep), this call is one chunk of a causal hybrid layer: it reads and updates
        ``states[self]`` through :func:`rehyat.attention.hybrid_attention_step`."""
        if states is not None:
            out, states[self] = hybrid_attention_step(
                query, key, value, fq, fk, states.get(self), frame_tokens=frame_tokens,
                overlap_frames=self.config.overlap_frames, softmax_backend=self.config.softmax_backend,
                normaliser=self.config.normaliser)
            return out
        return self.kind.run(self.config, query, key, value, fq, fk, frame_tokens=frame_tokens)

    def forward(self, attn: WanAttention, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                attention_mask: Tensor | None = None, rotary_emb: tuple[Tensor, Tensor] | None = None,
                frame_geometry: tuple[int, int] | None = None, **kwargs) -> Tensor:
        if encoder_hidden_states is not None or attn.is_cross_attention:
            raise ValueError("ReHyAtWanAttnProcessor is a self-attention processor; install it on attn1 only")
        if attention_mask is not None:
            raise NotImplementedError("ReHyAtWanAttnProcessor does not take an attention mask")
        _, frame_tokens = self.geometry(hidden_states, rotary_emb, frame_geometry)
        query, key, value, fq, fk = self.inputs(attn, hidden_states, rotary_emb)
        states = getattr(rotary_emb, "states", None)
        out = self.attend(query, key, value, fq, fk, frame_tokens, states)
        # v is dead once the op has run, except in a recurrent sweep (its state keeps the overlap frames' v)
        return project_out(attn, out, query, into=value if states is None else None)


def project_out(attn: WanAttention, out: Tensor, like: Tensor, into: Tensor | None = None) -> Tensor:
    """Wan's output projection of per-head outputs ``[B, N, H, D]`` -> ``[B, N, C]``.

    ``into``: a dead ``[B, N, H, D]`` tensor of this call (v) whose memory the projection may write into, in CPU
    inference (the same ``addmm`` that ``nn.Linear`` runs, so the same values; one fresh [B, N, C] less)."""
    x = out.flatten(2, 3).type_as(like)
    lin = attn.to_out[0]
    if (into is not None and type(lin) is nn.Linear and lin.bias is not None and lin.out_features == x.shape[-1]
            and _rewrites_in_place(x)
            and into.is_contiguous() and into.dtype == x.dtype and into.numel() == x.numel() and x.is_contiguous()
            and into.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
            and lin.weight.dtype == x.dtype):
        y = into.view(x.shape)
        torch.addmm(lin.bias, x.flatten(0, 1), lin.weight.t(), out=y.flatten(0, 1))
        return attn.to_out[1](y)
    return attn.to_out[1](lin(x))
