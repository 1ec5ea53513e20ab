import copy

import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from rehyat.attention import hybrid_attention
from rehyat.wan.convert import (convert_wan_to_rehyat, feature_map_state_dict, rehyat_processors, resolve_blocks,
                                set_rehyat_mode)
from rehyat.wan.processor import ReHyAtWanAttnProcessor, apply_wan_rotary_emb

from wan_helpers import SMALL_PHI, make_inputs, make_transformer


def _capture_block_io(model, inputs):
    """Inputs and outputs of every block (and every attn2) of one forward."""
    io, hooks = {}, []
    for i, b in enumerate(model.blocks):
        hooks.append(b.register_forward_hook(lambda m, a, o, i=i: io.__setitem__(("block", i), (a, o))))
        hooks.append(b.attn2.register_forward_hook(lambda m, a, o, i=i: io.__setitem__(("attn2", i), (a, o))))
    with torch.no_grad():
        out = model(**inputs).sample
    for h in hooks:
        h.remove()
    return out, io


def test_unconverted_blocks_and_cross_attention_bit_identical():
    ref = make_transformer(num_layers=3)
    model = copy.deepcopy(ref)
    convert_wan_to_rehyat(model, [1], chunk_frames=1, overlap_frames=0, causal=True, feature_map_kwargs=SMALL_PHI,
                          seed=0)
    # parameters: everything but the new feature maps is untouched
    sd_ref, sd = ref.state_dict(), model.state_dict()
    assert set(sd) - set(sd_ref) == set(feature_map_state_dict(model))
    for k, v in sd_ref.items():
        assert torch.equal(v, sd[k]), k
    # processors: only blocks[1].attn1 changed; every attn2 keeps a dense WanAttnProcessor
    for i, b in enumerate(model.blocks):
        assert isinstance(b.attn1.processor, ReHyAtWanAttnProcessor) == (i == 1)
        assert type(b.attn2.processor) is WanAttnProcessor
    # outputs: feed each module of the converted model the inputs it saw there; non-converted ones match bit for bit
    inputs = make_inputs(frames=5)
    _, io = _capture_block_io(model, inputs)
    with torch.no_grad():
        for (kind, i), (args, out) in io.items():
            module = ref.blocks[i] if kind == "block" else ref.blocks[i].attn2
            if kind == "block" and i == 1:
                assert not torch.equal(module(*args), out)  # the converted block really changed
                continue
            assert torch.equal(module(*args), out), (kind, i)


def test_converted_block_with_large_chunk_reproduces_softmax_block():
    ref = make_transformer()
    inputs = make_inputs(frames=4)
    with torch.no_grad():
        expected = ref(**inputs).sample
    for tc, to, causal in [(4, 0, False), (4, 1, True), (9, 2, False)]:
        model = copy.deepcopy(ref)
        convert_wan_to_rehyat(model, "all", chunk_frames=tc, overlap_frames=to, causal=causal,
                              feature_map_kwargs=SMALL_PHI, seed=0)
        with torch.no_grad():
            got = model(**inputs).sample
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
        # with chunks smaller than the video the linear branch is used and the output differs
    model = copy.deepcopy(ref)
    convert_wan_to_rehyat(model, "all", chunk_frames=1, overlap_frames=0, causal=False, feature_map_kwargs=SMALL_PHI)
    with torch.no_grad():
        assert (model(**inputs).sample - expected).abs().max() > 1e-3


def test_processor_applies_feature_maps_to_post_rope_qk():
    model = make_transformer()
    convert_wan_to_rehyat(model, [0], chunk_frames=2, overlap_frames=1, causal=False, feature_map_kwargs=SMALL_PHI)
    inputs = make_inputs(frames=5)
    seen = {}
    attn = model.blocks[0].attn1
    attn.register_forward_hook(lambda m, a, o: seen.update(args=a, out=o))
    with torch.no_grad():
        model(**inputs)
        hs, _, _, rotary = seen["args"]
        proc = attn.processor
        q = attn.norm_q(attn.to_q(hs)).unflatten(2, (2, -1))
        k = attn.norm_k(attn.to_k(hs)).unflatten(2, (2, -1))
        v = attn.to_v(hs).unflatten(2, (2, -1))
        q, k = apply_wan_rotary_emb(q, *rotary), apply_wan_rotary_emb(k, *rotary)
        y = hybrid_attention(q, k, v, proc.phi_q(q), proc.phi_k(k), frame_tokens=16, chunk_frames=2, overlap_frames=1,
                             causal=False)
        y = attn.to_out[0](y.flatten(2, 3))
    torch.testing.assert_close(seen["out"], y)
    assert rotary.geometry == (5, 16)  # geometry from the model's own forward, carried by the RoPE argument


def test_rope_helper_matches_wan_processor():
    """Our RoPE helper must equal the one inside WanAttnProcessor (checked through a dense softmax block)."""
    model = make_transformer()
    inputs = make_inputs(frames=3)
    seen = {}
    attn = model.blocks[0].attn1
    attn.register_forward_hook(lambda m, a, o: seen.update(args=a, out=o))
    with torch.no_grad():
        model(**inputs)
        hs, _, _, rotary = seen["args"]
        q = apply_wan_rotary_emb(attn.norm_q(attn.to_q(hs)).unflatten(2, (2, -1)), *rotary)
        k = apply_wan_rotary_emb(attn.norm_k(attn.to_k(hs)).unflatten(2, (2, -1)), *rotary)
        v = attn.to_v(hs).unflatten(2, (2, -1))
        y = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        y = attn.to_out[0](y.transpose(1, 2).flatten(2, 3))
    torch.testing.assert_close(seen["out"], y, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_rope_complex_form_is_bit_identical_to_the_real_form(dtype):
    """The eager complex-multiply RoPE equals diffusers' real arithmetic bit for bit, forward and backward, also on a
    non-contiguous input; under tracing the real form itself runs."""
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    from rehyat.wan.processor import _apply_wan_rotary_emb_real

    cos, sin = WanRotaryPosEmbed(16, (1, 2, 2), 64)(torch.empty(1, 1, 3, 4, 6, device="meta"))  # S = 3 * 2 * 3
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 18, 3, 16, generator=g).to(dtype)
    for inp in (x, torch.randn(1, 3, 18, 16, generator=g).to(dtype).transpose(1, 2)):
        a, b = inp.clone().requires_grad_(), inp.clone().requires_grad_()
        fast, real = apply_wan_rotary_emb(a, cos, sin), _apply_wan_rotary_emb_real(b, cos, sin)
        assert fast.dtype == real.dtype == dtype and torch.equal(fast, real)
        go = torch.randn(real.shape, generator=g).to(dtype)
        (ga,), (gb,) = torch.autograd.grad(fast, [a], go), torch.autograd.grad(real, [b], go)
        torch.testing.assert_close(ga, gb, atol=0, rtol=0) if dtype != torch.bfloat16 else \
            torch.testing.assert_close(ga, gb, atol=1e-2, rtol=1e-2)

    class Rope(torch.nn.Module):
        def forward(self, t):
            return apply_wan_rotary_emb(t, cos, sin)

    exported = torch.export.export(Rope(), (x,))
    assert "complex" not in str(exported.graph)
    assert torch.equal(exported.module()(x), _apply_wan_rotary_emb_real(x, cos, sin))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fused", [False, True])
def test_cpu_inference_rewrites_in_place_bit_identically(dtype, fused):
    """CPU inference runs QK-norm, RoPE and the output projection over this call's own fresh tensors (no new
    [B, N, C] allocations); the values equal the functional forms (nn.RMSNorm, out-of-place RoPE, nn.Linear) bit
    for bit, also with fused QKV projections (strided q/k/v views).  Under autograd the functional forms run."""
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed, WanTransformerBlock

    from rehyat.wan.processor import _qk_norm, project_out, wan_self_attention_qkv

    torch.manual_seed(0)
    attn = WanTransformerBlock(48, 96, 3, cross_attn_norm=True, eps=1e-6).attn1.to(dtype)
    for norm in (attn.norm_q, attn.norm_k):
        norm.weight.data.uniform_(0.5, 1.5)
    if fused:
        attn.fuse_projections()
    cos, sin = WanRotaryPosEmbed(16, (1, 2, 2), 64)(torch.empty(1, 1, 3, 4, 6, device="meta"))  # S = 18
    hs = torch.randn(2, 18, 48, dtype=dtype) * 3
    with torch.no_grad():
        q, k, v = wan_self_attention_qkv(attn, hs, (cos, sin))
        pq, pk = attn.to_qkv(hs).chunk(3, -1)[:2] if fused else (attn.to_q(hs), attn.to_k(hs))
        rq, rk = (apply_wan_rotary_emb(n(p).unflatten(2, (3, -1)), cos, sin) for n, p in
                  ((attn.norm_q, pq), (attn.norm_k, pk)))
        assert torch.equal(q, rq) and torch.equal(k, rk)
        x = torch.randn(2, 18, 48, dtype=dtype)
        xi = x.clone()
        assert _qk_norm(attn.norm_q, xi, True) is xi and torch.equal(xi, attn.norm_q(x))
        xi = x.view(2, 18, 3, 16).clone()
        assert apply_wan_rotary_emb(xi, cos, sin, inplace=True) is xi
        assert torch.equal(xi, apply_wan_rotary_emb(x.view(2, 18, 3, 16), cos, sin))
        out = torch.randn(2, 18, 3, 16, dtype=dtype)
        dead = v.clone()
        y = project_out(attn, out, q, into=dead)
        assert y.data_ptr() == dead.data_ptr() and torch.equal(y, attn.to_out[0](out.flatten(2, 3)))
    with torch.enable_grad():  # the functional forms: q, k are new tensors, the projection writes nothing given
        hs.requires_grad_()
        q2, k2, _ = wan_self_attention_qkv(attn, hs, (cos, sin))
        assert q2.requires_grad and torch.equal(q2.detach(), q) and torch.equal(k2.detach(), k)
        dead = v.clone()
        y = project_out(attn, out, q2, into=dead)
        assert y.data_ptr() != dead.data_ptr() and torch.equal(dead, v)


def test_feature_maps_are_model_parameters_and_seeded():
    a, b = make_transformer(), make_transformer()
    convert_wan_to_rehyat(a, "all", feature_map_kwargs=SMALL_PHI, seed=3)
    convert_wan_to_rehyat(b, "all", feature_map_kwargs=SMALL_PHI, seed=3)
    names = {n for n, _ in a.named_parameters()}
    assert "blocks.0.attn1.processor.phi_q.fc1.weight" in names
    assert "blocks.1.attn1.processor.phi_k.fc2.bias" in names
    for k, v in feature_map_state_dict(a).items():
        assert torch.equal(v, feature_map_state_dict(b)[k])
    # the global RNG is not consumed by a seeded conversion
    torch.manual_seed(5)
    convert_wan_to_rehyat(make_transformer(), "all", feature_map_kwargs=SMALL_PHI, seed=1)
    after = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(1))


def test_resolve_blocks_and_errors():
    assert resolve_blocks("all", 4) == [0, 1, 2, 3]
    assert resolve_blocks(15, 30) == list(range(0, 30, 2))
    assert len(resolve_blocks(20, 30)) == 20 and len(set(resolve_blocks(25, 30))) == 25
    assert resolve_blocks([-1, 0], 30) == [0, 29]
    with pytest.raises(IndexError):
        resolve_blocks([30], 30)
    with pytest.raises(ValueError):
        resolve_blocks([1, 1], 30)
    m = make_transformer()
    convert_wan_to_rehyat(m, [0], feature_map_kwargs=SMALL_PHI)
    with pytest.raises(ValueError, match="already"):
        convert_wan_to_rehyat(m, [1])
    with pytest.raises(TypeError):
        convert_wan_to_rehyat(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="needs every block"):
        set_rehyat_mode(m, "recurrent")


@pytest.mark.parametrize("n_blocks", [15, 20, 25, 30])
def test_real_1p3b_config_converts(n_blocks):
    """The real Wan2.1-T2V-1.3B config (on the meta device: no weights allocated)."""
    from diffusers import WanTransformer3DModel

    cfg = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
               text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
               qk_norm="rms_norm_across_heads", eps=1e-6)
    with torch.device("meta"):
        model = WanTransformer3DModel(**cfg)
    convert_wan_to_rehyat(model, n_blocks, chunk_frames=3, overlap_frames=1, causal=n_blocks == 30)
    procs = rehyat_processors(model)
    assert len(procs) == n_blocks
    assert sum(v.numel() for v in feature_map_state_dict(model).values()) == n_blocks * 2_371_584
    assert all(type(b.attn2.processor) is WanAttnProcessor for b in model.blocks)
    if n_blocks == 30:
        set_rehyat_mode(model, "recurrent")


def test_processor_refuses_cross_attention_and_missing_geometry():
    m = make_transformer()
    proc = ReHyAtWanAttnProcessor(2, 12, feature_map_kwargs=SMALL_PHI)
    m.blocks[0].attn2.set_processor(proc)
    with pytest.raises(ValueError, match="attn1 only"), torch.no_grad():
        m(**make_inputs())
    m = make_transformer()
    m.blocks[0].attn1.set_processor(ReHyAtWanAttnProcessor(2, 12, feature_map_kwargs=SMALL_PHI))
    with pytest.raises(RuntimeError, match="geometry"), torch.no_grad():
        m(**make_inputs())  # installed by hand, without convert_wan_to_rehyat's pre-hook


def test_revert_to_softmax_restores_the_original():
    ref = make_transformer()
    m = copy.deepcopy(ref)
    convert_wan_to_rehyat(m, "all", chunk_frames=1, causal=True, feature_map_kwargs=SMALL_PHI)
    set_rehyat_mode(m, "recurrent")
    from rehyat.wan import is_rehyat, revert_to_softmax

    revert_to_softmax(m)
    assert not is_rehyat(m) and set(m.state_dict()) == set(ref.state_dict())
    inputs = make_inputs(frames=3)
    with torch.no_grad():
        assert torch.equal(m(**inputs).sample, ref(**inputs).sample)
    convert_wan_to_rehyat(m, [1], feature_map_kwargs=SMALL_PHI)  # convertible again
    assert list(rehyat_processors(m)) == [1]
