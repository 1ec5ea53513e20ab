"""ReHyAt self-attention processor for diffusers' ``WanAttention`` (``attn1`` of a ``WanTransformerBlock``).

The processor keeps Wan's projections, QK-norm (RMSNorm across heads) and RoPE, applies the learned feature maps
``phi_q`` / ``phi_k`` to the **post-RoPE** queries and keys, and replaces the dense softmax call with the hybrid op of
:mod:`rehyat.attention`.  It is an ``nn.Module``, so ``phi_q`` / ``phi_k`` are parameters of the transformer
(``blocks.{i}.attn1.processor.phi_q.*``).

The processor sees only ``(B, S, C)`` tokens.  The frame geometry (latent frames x tokens per frame) is pushed into it
by a forward pre-hook on the transformer (installed by :func:`rehyat.wan.convert.convert_wan_to_rehyat`) or, in the
recurrent forward, by :func:`rehyat.wan.recurrent.recurrent_forward` per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor, _get_qkv_projections

from rehyat.attention import HybridState, hybrid_attention, hybrid_attention_step
from rehyat.feature_maps import build_feature_map

Tensor = torch.Tensor


def apply_wan_rotary_emb(x: Tensor, freqs_cos: Tensor, freqs_sin: Tensor) -> Tensor:
    """Wan's real-valued RoPE on interleaved pairs, ``x: [B, S, H, D]``, freqs ``[1, S, 1, D]``.

    Same arithmetic (and dtype promotion) as the helper inside ``WanAttnProcessor.__call__`` (which is a closure and
    cannot be imported), so converted blocks see bit-identical post-RoPE q and k.
    """
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
    query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
    key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
    value = value.unflatten(2, (attn.heads, -1))
    if rotary_emb is not None:
        query = apply_wan_rotary_emb(query, *rotary_emb)
        key = apply_wan_rotary_emb(key, *rotary_emb)
    return query, key, value


@dataclass
class _StepSlot:
    """Recurrent state holder of one converted layer during a recurrent sweep (see ``rehyat.wan.recurrent``)."""

    state: HybridState | None = None


class ReHyAtWanAttnProcessor(nn.Module, WanAttnProcessor):
    """Hybrid (chunk-local softmax + linear) self-attention for ``WanAttention``.

    Args:
        num_heads, head_dim: of the attention module it is installed on.
        chunk_frames: T_c, latent frames per query chunk.
        overlap_frames: T_o, previous latent frames added to each chunk's softmax window.
        causal: linear set = only frames before the window (``True``) or every frame outside it (``False``).
        feature_map: a name registered in :data:`rehyat.feature_maps.FEATURE_MAPS`.
        feature_map_kwargs: extra constructor kwargs of the feature map (same for phi_q and phi_k).
        softmax_backend: forwarded to the op (``None`` = its default selection).
        linear_scale: hold a learnable per-head log-scale ``linear_log_scale`` (a mixing parameter) that multiplies
            phi_k by ``exp(gamma_h)``.  ``fq . fk`` stands in for ``exp(s)`` itself, so it must match the absolute size
            of the scores; the scale lets distillation reach score magnitudes (log-sum-exp ~30 in the proxy teacher)
            that a bounded feature map cannot, without which the linear branch gets ~e^-18 of the weight and does not
            train (docs/distill.md).
    """

    def __init__(self, num_heads: int, head_dim: int, *, chunk_frames: int = 3, overlap_frames: int = 1,
                 causal: bool = False, feature_map: str = "polynomial", feature_map_kwargs: dict | None = None,
                 softmax_backend: str | None = None, linear_scale: bool = False):
        nn.Module.__init__(self)
        if chunk_frames < 1 or overlap_frames < 0:
            raise ValueError(f"need chunk_frames >= 1 and overlap_frames >= 0, got {chunk_frames}, {overlap_frames}")
        kw = dict(feature_map_kwargs or {})
        self.phi_q = build_feature_map(feature_map, num_heads, head_dim, **kw)
        self.phi_k = build_feature_map(feature_map, num_heads, head_dim, **kw)
        self.num_heads, self.head_dim = num_heads, head_dim
        self.chunk_frames, self.overlap_frames, self.causal = int(chunk_frames), int(overlap_frames), bool(causal)
        self.feature_map, self.feature_map_kwargs = feature_map, kw
        self.softmax_backend = softmax_backend
        self.linear_scale = bool(linear_scale)
        if self.linear_scale:
            self.linear_log_scale = nn.Parameter(torch.zeros(num_heads))
        # Geometry of the current forward, written by the transformer's pre-hook (or the recurrent sweep).
        self.latent_frames: int | None = None
        self.frame_tokens: int | None = None
        # Set only inside a recurrent sweep: then each call is one chunk and carries state across calls.
        self._step: _StepSlot | None = None

    def extra_repr(self) -> str:
        return (f"chunk_frames={self.chunk_frames}, overlap_frames={self.overlap_frames}, causal={self.causal}, "
                f"feature_map={self.feature_map!r}")

    def features(self, query: Tensor, key: Tensor) -> tuple[Tensor, Tensor]:
        """phi_q(query), phi_k(key) (times ``exp(linear_log_scale)`` per head when enabled).  [B,N,H,D] -> [B,N,H,F]."""
        fq, fk = self.phi_q(query), self.phi_k(key)
        if self.linear_scale:
            fk = fk * self.linear_log_scale.exp().to(fk.dtype).view(1, 1, -1, 1)
        return fq, fk

    def set_geometry(self, latent_frames: int, frame_tokens: int) -> None:
        self.latent_frames, self.frame_tokens = int(latent_frames), int(frame_tokens)

    def forward(self, attn: WanAttention, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                attention_mask: Tensor | None = None, rotary_emb: tuple[Tensor, Tensor] | None = None,
                **kwargs) -> Tensor:
        if encoder_hidden_states is not None or attn.is_cross_attention:
            raise ValueError("ReHyAtWanAttnProcessor is a self-attention processor; install it on attn1 only")
        if attention_mask is not None:
            raise NotImplementedError("ReHyAtWanAttnProcessor does not take an attention mask")
        if self.frame_tokens is None:
            raise RuntimeError(
                "frame geometry unknown: call the converted WanTransformer3DModel (its pre-hook sets it) or "
                "processor.set_geometry(latent_frames, frame_tokens) before calling a block directly")
        if self.frame_tokens * (self.latent_frames or 0) != hidden_states.shape[1]:
            raise ValueError(f"sequence length {hidden_states.shape[1]} != latent_frames {self.latent_frames} x "
                             f"frame_tokens {self.frame_tokens}")

        query, key, value = wan_self_attention_qkv(attn, hidden_states, rotary_emb)
        fq, fk = self.features(query, key)

        if self._step is not None:
            out, self._step.state = hybrid_attention_step(
                query, key, value, fq, fk, self._step.state, frame_tokens=self.frame_tokens,
                overlap_frames=self.overlap_frames, softmax_backend=self.softmax_backend)
        else:
            out = hybrid_attention(
                query, key, value, fq, fk, frame_tokens=self.frame_tokens, chunk_frames=self.chunk_frames,
                overlap_frames=self.overlap_frames, causal=self.causal, softmax_backend=self.softmax_backend)
        out = out.flatten(2, 3).type_as(query)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)
