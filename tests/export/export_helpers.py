"""Helpers shared by tests/export (tiny models only, CPU, offline)."""

import torch
from diffusers import WanTransformer3DModel

from rehyat.tiny import TINY_TRANSFORMER_CONFIG
from rehyat.wan import ReHyAtWanTransformer3DModel

SMALL_PHI = {"hidden_dim": 16, "feature_dim": 16}
LATENT = (4, 6)  # non-square latent frames -> 2 x 3 post-patch tokens


def converted(tc=2, to=1, seed=0, **fields):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dense = WanTransformer3DModel(**TINY_TRANSFORMER_CONFIG).eval()
    m = ReHyAtWanTransformer3DModel.from_wan(dense, "long-video", chunk_frames=tc, overlap_frames=to,
                                             feature_map_kwargs=SMALL_PHI, seed=seed, **fields)
    if fields.get("linear_scale"):  # zero-initialised: give it values so that it matters
        with torch.no_grad():
            for p in m.rehyat_processors().values():
                p.linear_log_scale.uniform_(-1, 1)
    return m

# a whole tiny video: 17 frames -> latent chunks 2, 2, 1 (T_c = 2), both CFG branches
VIDEO_RECIPE = dict(num_frames=17, num_inference_steps=2, guidance_scale=5.0, negative_prompt="")
