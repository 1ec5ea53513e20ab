"""The analytic cost model equals FlopCounterMode counts (CPU fused attention registered) at small shapes."""

import pytest
import torch

from rehyat.attention import get_attention_kind
from rehyat.cost import (
    AttentionSpec, FeatureMapSpec, VideoShape, WanConfig, attention_flops, attention_memory, count_flops,
    wan_block_flops, wan_model_flops,
)
from rehyat.feature_maps import build_feature_map

B, H, D, FEAT, FT = 2, 3, 8, 6, 5

SPECS = [
    AttentionSpec("softmax"),
    AttentionSpec("linear", feature_dim=FEAT),
    AttentionSpec("linear", causal=True, chunk_frames=2, feature_dim=FEAT),
    *[AttentionSpec(kind, tc, to, causal, FEAT)
      for kind in ("hybrid", "chunk_local") for tc, to in [(1, 0), (2, 1), (3, 2), (5, 1)] for causal in (False, True)],
    *[AttentionSpec("hybrid_recurrent", tc, to, True, FEAT) for tc, to in [(1, 0), (2, 1), (3, 2), (4, 5)]],
]


@pytest.mark.parametrize("frames", [1, 7])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label)
def test_attention_flops_equal_counted(spec, frames):
    n = frames * FT
    q, k, v = (torch.randn(B, n, H, D) for _ in range(3))
    fq, fk = torch.rand(B, n, H, FEAT), torch.rand(B, n, H, FEAT)
    kind = get_attention_kind(spec.kind)
    kw = dict(frame_tokens=FT, chunk_frames=spec.chunk_frames, overlap_frames=spec.overlap_frames, causal=spec.causal)
    feats = (fq, fk) if kind.needs_features else (None, None)
    kind(q, k, v, *feats, **kw)  # warm-up: one-off backend self-checks
    counted = count_flops(kind, q, k, v, *feats, **kw)
    analytic = attention_flops(spec, batch=B, heads=H, head_dim=D, frames=frames, frame_tokens=FT).flops
    assert analytic == counted


def test_hybrid_is_linear_in_frames_and_softmax_quadratic():
    spec = AttentionSpec("hybrid", 3, 1, False, 256)
    cost = lambda s, t: attention_flops(s, batch=1, heads=12, head_dim=128, frames=t, frame_tokens=1560).flops  # noqa
    # doubling a long video doubles hybrid cost (up to the boundary chunk) and quadruples softmax cost
    assert cost(spec, 84) / cost(spec, 42) == pytest.approx(2.0, rel=0.02)
    assert cost(AttentionSpec("softmax"), 84) / cost(AttentionSpec("softmax"), 42) == pytest.approx(4.0)
    # the paper's main setting: 21 latent frames, T_c=3, T_o=1 -> softmax part 81/441 of full attention
    soft = attention_flops(spec, batch=1, heads=12, head_dim=128, frames=21, frame_tokens=1560).breakdown["softmax"]
    assert soft / cost(AttentionSpec("softmax"), 21) == pytest.approx((3 * 3 + 6 * 3 * 4) / 21**2)


def test_recurrent_memory_is_constant_and_softmax_grows():
    rec = AttentionSpec("hybrid_recurrent", 3, 1, True, 256)
    mem = [attention_memory(rec, batch=1, heads=12, head_dim=128, frames=t, frame_tokens=1560) for t in (6, 12, 24, 48)]
    assert len(set(mem)) == 1
    par = [attention_memory(AttentionSpec("hybrid"), batch=1, heads=12, head_dim=128, frames=t, frame_tokens=1560)
           for t in (6, 12)]
    assert par[1] > par[0]


def test_video_shape_matches_wan_geometry():
    v = VideoShape(81, 480, 832)
    assert (v.latent_frames, v.frame_tokens, v.tokens) == (21, 1560, 32760)
    assert VideoShape(161, 480, 832).tokens == 63960


TINY_WAN = {"patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 12, "in_channels": 4,
            "out_channels": 4, "text_dim": 16, "freq_dim": 256, "ffn_dim": 32, "num_layers": 2,
            "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 32}


@pytest.mark.parametrize("frames,size", [(9, 16), (5, 24)])
def test_wan_model_flops_equal_counted(frames, size):
    from diffusers import WanTransformer3DModel

    model = WanTransformer3DModel(**TINY_WAN).eval()
    video = VideoShape(frames, size * 8, size * 8)
    x = torch.randn(1, 4, video.latent_frames, size, size)
    text = torch.randn(1, 7, 16)
    with torch.no_grad():
        model(x, torch.tensor([500]), text)
        counted = count_flops(model, x, torch.tensor([500]), text)
    analytic = wan_model_flops(WanConfig.from_diffusers(model.config, text_tokens=7), video)
    assert analytic.flops == counted


def test_block_flops_at_wan_1p3b_match_hand_numbers():
    """diffusers-and-peers.md 1.5: at N = 32,760 self-attention QK^T+PV = 6.59e12 per layer, ~70% of the block."""
    cost = wan_block_flops(WanConfig(), VideoShape(81, 480, 832))
    assert cost.breakdown["self_attn_softmax"] == pytest.approx(6.59e12, rel=1e-3)
    assert cost.breakdown["self_attn_softmax"] / cost.flops == pytest.approx(0.70, abs=0.02)


def test_feature_map_spec_flops_equal_counted():
    phi = build_feature_map("polynomial", num_heads=3, head_dim=8, hidden_dim=10, feature_dim=6)
    x = torch.randn(2, 20, 3, 8)
    assert count_flops(phi, x) == FeatureMapSpec.polynomial(8, 10, 6).flops(2, 20, 3)
    hh = build_feature_map("hedgehog", num_heads=3, head_dim=8, feature_dim=12)
    assert count_flops(hh, x) == FeatureMapSpec.hedgehog(8, 12).flops(2, 20, 3)
