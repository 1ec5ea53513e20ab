"""Helpers shared by tests/wan (tiny models only, CPU, offline)."""

import torch
from diffusers import WanTransformer3DModel

# diffusers' own WanTransformer3DModel test config (tests/models/transformers/test_models_transformer_wan.py),
# with a longer rotary table so the frame sweeps fit.
DIFFUSERS_TEST_CONFIG = {
    "patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 12, "in_channels": 4, "out_channels": 4,
    "text_dim": 16, "freq_dim": 256, "ffn_dim": 32, "num_layers": 2, "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 32,
}
SMALL_PHI = {"hidden_dim": 16, "feature_dim": 16}


def make_transformer(num_layers: int = 2, seed: int = 0, **overrides) -> WanTransformer3DModel:
    cfg = dict(DIFFUSERS_TEST_CONFIG, num_layers=num_layers, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WanTransformer3DModel(**cfg).eval()


def make_inputs(frames: int = 4, size: int = 8, seed: int = 1, channels: int = 4, text_dim: int = 16):
    g = torch.Generator().manual_seed(seed)
    return dict(hidden_states=torch.randn(1, channels, frames, size, size, generator=g),
                timestep=torch.tensor([637]),
                encoder_hidden_states=torch.randn(1, 12, text_dim, generator=g))
