"""A teacher whose attention is video-like without real weights: the stage-1 proxy benchmark's model.

No Wan weights exist offline, and a plain random-weight Wan has near-uniform self-attention (random ``W_q``, ``W_k``
give random RoPE phases, so nothing favours nearby tokens).  Trained video DiTs attend mostly locally in space and
time.  The proxy teacher gets that property from three ingredients, all in a real ``WanTransformer3DModel``:

1. **Smooth, moving inputs**: latents are Gaussian random fields correlated over ~1.5 frames and ~2 latent pixels,
   translating by 0.5 latent pixels per frame (:func:`rehyat.distill.data.make_synthetic_dataset`), noised at
   flow-matching timesteps like stage-1 inputs (``x_t = (1-σ) x_0 + σ ε``).  Neighbouring tokens carry similar content.
2. **Aligned queries and keys**: ``W_k = sqrt(1-ε²) W_q + ε W'`` (``ε = qk_noise``) with zero biases, so
   ``q_i · k_j`` is large when tokens ``i`` and ``j`` are similar — a trained model's "attend to similar content".
3. **Wan's 3D RoPE with per-head gains**: with aligned q/k, RoPE turns position differences into phase differences,
   so the score decays with distance along t, h and w (Wan's head split: 44 temporal / 42 / 42 channels for D = 128).
   The QK RMSNorm weights scale the temporal and spatial channel groups per head: head 0 is a "spatial" head (strong
   temporal gain: mostly its own frame), head 1 a "temporal" head (strong spatial gain: same place across frames) —
   the two head types reported for Wan by sparse-attention papers (e.g. Sparse VideoGen).

:func:`attention_stats` measures how local the resulting maps are (normalised entropy, mass on the own frame, within
±1 frame, …) against the uniform map; the benchmark prints them next to the error table.
"""

from __future__ import annotations

import math

import torch

PROXY_TRANSFORMER = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=16, out_channels=16, text_dim=32,
    freq_dim=256, ffn_dim=512, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    rope_max_seq_len=1024,
)


def rope_channel_groups(head_dim: int) -> tuple[slice, slice]:
    """``(temporal, spatial)`` channel ranges of Wan's RoPE inside one head (t = D - 2*2*(D//6), then h, w)."""
    hw = 2 * (head_dim // 6)
    t = head_dim - 2 * hw
    return slice(0, t), slice(t, head_dim)


@torch.no_grad()
def build_proxy_teacher(seed: int = 0, qk_noise: float = 0.5, bias: float = 2.0, temperature: float = 1.2,
                        gains: tuple[tuple[float, float], ...] = ((1.6, 1.0), (0.6, 1.6)), config: dict | None = None):
    """Random-weight ``WanTransformer3DModel`` with aligned q/k, a shared q/k bias (positional RoPE kernel) and
    per-head (temporal, spatial) RoPE-channel gains times ``temperature``."""
    from diffusers import WanTransformer3DModel

    cfg = dict(PROXY_TRANSFORMER | (config or {}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WanTransformer3DModel(**cfg).eval()
        heads, d = cfg["num_attention_heads"], cfg["attention_head_dim"]
        if len(gains) != heads:
            raise ValueError(f"need one (temporal, spatial) gain pair per head ({heads}), got {len(gains)}")
        t_sl, s_sl = rope_channel_groups(d)
        for block in model.blocks:
            a = block.attn1
            a.to_k.weight.copy_(math.sqrt(1 - qk_noise**2) * a.to_q.weight + qk_noise * torch.randn_like(a.to_k.weight)
                                * a.to_q.weight.std())
            # typical |W_q x| per channel for unit-variance inputs, to size the shared bias against the content term
            scale = float(a.to_q.weight.pow(2).sum(1).mean().sqrt())
            b = bias * scale * torch.randn(a.to_q.bias.shape)
            a.to_q.bias.copy_(b)
            a.to_k.bias.copy_(b)
            w = torch.full((heads, d), float(temperature))
            for h, (gt, gs) in enumerate(gains):
                w[h, t_sl] *= gt
                w[h, s_sl] *= gs
            a.norm_q.weight.copy_(w.flatten())
            a.norm_k.weight.copy_(w.flatten())
    return model


@torch.no_grad()
def attention_stats(q: torch.Tensor, k: torch.Tensor, frame_tokens: int, grid_w: int) -> dict[str, list[float]]:
    """Per-head locality statistics of ``softmax(q k^T / sqrt(D))`` (q, k: [B, N, H, D], post-RoPE).

    ``norm_entropy``: mean row entropy / log N (uniform = 1); ``self``: weight on the query token itself;
    ``own_frame`` / ``pm1_frames``: mass on the query's frame / within ±1 frame; ``spatial_3x3_any_frame``: mass on
    keys within ±1 latent-token row/column of the query position, in any frame; each with its uniform-map value.
    """
    b, n, h, d = q.shape
    s = torch.einsum("bnhd,bmhd->bhnm", q.double(), k.double()) / math.sqrt(d)
    p = torch.softmax(s, dim=-1)
    nf = n // frame_tokens
    fr = torch.arange(n) // frame_tokens
    pos = torch.arange(n) % frame_tokens
    row, col = pos // grid_w, pos % grid_w
    dt = (fr[:, None] - fr[None]).abs()
    near = ((row[:, None] - row[None]).abs() <= 1) & ((col[:, None] - col[None]).abs() <= 1)
    ent = -(p * p.clamp_min(1e-300).log()).sum(-1) / math.log(n)

    def mass(mask):
        return (p * mask).sum(-1).mean(dim=(0, 2)).tolist()

    unif = lambda m: float(m.double().mean())  # noqa: E731
    return {
        "norm_entropy": ent.mean(dim=(0, 2)).tolist(),
        "self": mass(torch.eye(n, dtype=torch.bool)), "self_uniform": [1 / n] * h,
        "own_frame": mass(dt == 0), "own_frame_uniform": [1 / nf] * h,
        "pm1_frames": mass(dt <= 1), "pm1_frames_uniform": [unif(dt <= 1)] * h,
        "spatial_3x3_any_frame": mass(near), "spatial_3x3_any_frame_uniform": [unif(near)] * h,
    }
