import torch

from rehyat.distill.data import smooth_field
from rehyat.distill.proxy import attention_stats, build_proxy_teacher, rope_channel_groups
from rehyat.distill.teacher_forcing import DistillSettings, enable_distillation
from rehyat.wan.convert import convert_wan_to_rehyat


def _stats(model):
    convert_wan_to_rehyat(model, "all", chunk_frames=2, overlap_frames=1, feature_map="relu")
    st = DistillSettings(mode="teacher")
    caps = []
    st.on_qkv = lambda b, q, k, v: caps.append((q, k))
    enable_distillation(model, st)
    g = torch.Generator().manual_seed(0)
    x = smooth_field((16, 5, 12, 12), (1.5, 2.0, 2.0), g, (0.3, 0.3))[None]
    with torch.no_grad():
        model(hidden_states=0.8 * x + 0.2 * torch.randn(x.shape, generator=g), timestep=torch.tensor([200.0]),
              encoder_hidden_states=torch.randn(1, 8, 32, generator=g), return_dict=False)
    q, k = caps[0]
    return attention_stats(q, k, frame_tokens=36, grid_w=6)


def test_proxy_teacher_attention_is_local_and_a_random_wan_is_not():
    assert rope_channel_groups(128) == (slice(0, 44), slice(44, 128))  # Wan's 44 / 42 / 42 split
    cfg = {"num_layers": 1}
    proxy = _stats(build_proxy_teacher(seed=0, config=cfg))
    plain = _stats(build_proxy_teacher(seed=0, qk_noise=1.0, bias=0.0, temperature=1.0, gains=((1, 1), (1, 1)),
                                       config=cfg))
    for h in range(2):
        assert plain["norm_entropy"][h] > 0.85  # near-uniform
        assert proxy["norm_entropy"][h] < 0.8
        assert proxy["pm1_frames"][h] > 1.25 * proxy["pm1_frames_uniform"][h]
        assert proxy["spatial_3x3_any_frame"][h] > 2 * proxy["spatial_3x3_any_frame_uniform"][h]
        assert proxy["self"][h] < 0.9  # local, not a delta on the query token
    assert proxy["own_frame"][0] > 2 * proxy["own_frame_uniform"][0]  # head 0 "spatial": mostly its own frame
    assert proxy["own_frame"][0] > proxy["own_frame"][1]  # head 1 "temporal" reaches across frames
