"""Streamed (chunk-by-chunk) sampling: equal to the recurrent sweep and the parallel causal model; its parts (noise,
state cache, VAE decode) equal their whole-video counterparts; errors for models that cannot stream."""

import numpy as np
import pytest
import torch
from diffusers import (AutoencoderKLWan, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler,
                       UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel)

import rehyat.generate as G
from rehyat.config import ReHyAtConfig
from rehyat.tiny import (TINY_REHYAT, TINY_SCHEDULER_CONFIG, TINY_TRANSFORMER_CONFIG, TINY_VAE_CONFIG,
                         build_tiny_components, build_tiny_pipeline)
from rehyat.wan import convert_pipeline, rehyat_mode
from rehyat.wan.stream import (ChunkNoise, StepStateCache, StreamingWanDecoder, StreamUnsupportedError,
                               check_streamable, plan_stream, stream_video)

PHI = {k: v for k, v in TINY_REHYAT.items() if k.startswith("feature_map")}
CAUSAL = ReHyAtConfig(blocks="all", chunk_frames=2, causal=True, **PHI)
# 17 frames -> 5 latent frames -> chunks of 2, 2, 1 (ragged); 3 steps so that UniPC's multistep history is used
RECIPE = dict(num_frames=17, height=32, width=32, num_inference_steps=3, guidance_scale=5.0, max_sequence_length=16)
PROMPT, SEED = "waves at dusk", 2
SCHEDULERS = {"unipc": lambda: UniPCMultistepScheduler(**TINY_SCHEDULER_CONFIG),
              "euler": lambda: FlowMatchEulerDiscreteScheduler(shift=3.0)}


def _pipe(tiny_root, overlap_frames=1, scheduler="unipc", **fields):
    """The tiny softmax pipeline converted with every block causal (T_c = 2, the given T_o), fresh each call."""
    pipe = build_tiny_pipeline(0, rehyat=False, root=tiny_root)
    convert_pipeline(pipe, CAUSAL.replace(overlap_frames=overlap_frames, **fields), seed=1)
    pipe.scheduler = SCHEDULERS[scheduler]()
    return pipe


def _stream(pipe, **kw):
    plans = []
    chunks = list(stream_video(pipe, PROMPT, SEED, negative_prompt=G.DEFAULT_NEGATIVE_PROMPT,
                               on_plan=plans.append, **(RECIPE | kw)))
    return plans[0], chunks


def _close(a, b):
    torch.testing.assert_close(a.latents, b.latents, atol=1e-4, rtol=1e-4)
    assert a.frames.shape == b.frames.shape
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
@pytest.mark.parametrize("overlap", [0, 1])
def test_stream_equals_recurrent_and_parallel(tiny_root, scheduler, overlap):
    pipe = _pipe(tiny_root, overlap, scheduler)
    par = G.generate_sample(pipe, PROMPT, SEED, **RECIPE)
    with rehyat_mode(pipe.transformer, "recurrent"):
        rec = G.generate_sample(pipe, PROMPT, SEED, **RECIPE)
    plan, chunks = _stream(pipe)
    assert [c.latent_frames for c in chunks] == [(0, 2), (2, 4), (4, 5)] == list(plan.chunks)
    assert [c.frames.shape[0] for c in chunks] == [5, 8, 4]  # latent frame 0 -> 1 frame, later ones -> 4
    assert [c.first_frame for c in chunks] == [0, 5, 13]
    st = G.VideoSample(frames=np.concatenate([c.frames for c in chunks]),
                       latents=torch.cat([c.latents for c in chunks], dim=1), fps=16, prompt=PROMPT, seed=SEED)
    _close(st, par)
    _close(st, rec)
    # the per-step cache holds steps x CFG branches x layers states, as planned, and does not grow with the chunks
    assert plan.steps == 3 and plan.branches == 2 and plan.layers == 2
    assert [c.cache_bytes for c in chunks] == [plan.cache_bytes] * 3
    assert (plan.tail_bytes > 0) == bool(overlap)
    assert pipe.transformer.rehyat_mode == "parallel"  # streaming restores the mode it found
    assert np.array_equal(G.generate_sample(pipe, PROMPT, SEED, stream=True, **RECIPE).frames, st.frames)
    gen = G.WanVideoGenerator(pipe, mode="stream", device="cpu", num_inference_steps=3, guidance_scale=5.0,
                              max_sequence_length=16)  # evaluation's generator protocol, streamed
    assert np.array_equal(gen.generate(PROMPT, SEED, 17, 32, 32).frames, st.frames)


def test_stream_two_experts_wan22_a14b():
    """Wan2.2 A14B: each step runs the expert WanPipeline picks (boundary_ratio), each with its own states."""
    comps = build_tiny_components(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        comps["transformer_2"] = WanTransformer3DModel(**TINY_TRANSFORMER_CONFIG).eval()
    pipe = WanPipeline(**comps, boundary_ratio=0.5)
    convert_pipeline(pipe, CAUSAL, seed=0)
    recipe = dict(RECIPE, num_inference_steps=4)
    par = G.generate_sample(pipe, PROMPT, SEED, **recipe)
    _, chunks = _stream(pipe, num_inference_steps=4)
    st = G.VideoSample(frames=np.concatenate([c.frames for c in chunks]),
                       latents=torch.cat([c.latents for c in chunks], dim=1), fps=16, prompt=PROMPT, seed=SEED)
    _close(st, par)


@pytest.mark.parametrize("shape", [(1, 16, 7, 6, 10), (2, 16, 5, 3, 5), (1, 3, 3, 1, 1)])
def test_chunk_noise_equals_whole_draw(shape):
    """Frame range by frame range, the values diffusers' randn_tensor draws for the whole latent (h*w = 15 and
    60 are not multiples of torch's 16-value blocks; (1, 3, 3, 1, 1) has 9 values and takes the whole-draw path)."""
    full_gen = torch.Generator().manual_seed(5)
    full = torch.randn(shape, generator=full_gen, dtype=torch.float32)
    g = torch.Generator().manual_seed(5)
    noise = ChunkNoise(shape, g)
    bounds = [0, 1, 3, 4, shape[2]] if shape[2] > 4 else [0, 1, shape[2]]
    parts = [noise.frames(a, b) for a, b in zip(bounds, bounds[1:])]
    assert torch.equal(torch.cat(parts, dim=2), full)
    assert torch.equal(torch.rand(8, generator=g), torch.rand(8, generator=full_gen))  # generator left the same
    if shape[2] > 4:
        with pytest.raises(ValueError, match="in order"):
            noise.frames(0, 1)


VAE_CONFIGS = {
    "wan2.1": {},
    "wan2.2": dict(z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
                   latents_mean=[0.0] * 48, latents_std=[1.0] * 48, scale_factor_spatial=16),
}


@pytest.mark.parametrize("family", sorted(VAE_CONFIGS))
@pytest.mark.parametrize("tiling", [False, True])
def test_streamed_vae_decode_equals_whole_decode(family, tiling):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKLWan(**(TINY_VAE_CONFIG | VAE_CONFIGS[family])).eval()
    if tiling:  # tiles of 32 px with stride 16: several tiles, blended
        vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=16,
                          tile_sample_stride_width=16)
    side = 64 // vae.spatial_compression_ratio
    z = torch.randn(1, vae.config.z_dim, 7, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = vae.decode(z).sample
        for bounds in ([0, 1, 3, 6, 7], [0, 2, 4, 6, 7], [0, 7]):
            dec = StreamingWanDecoder(vae)
            parts = [dec.decode(z[:, :, a:b]) for a, b in zip(bounds, bounds[1:])]
            assert [p.shape[2] for p in parts] == [1 + 4 * (b - a - 1) if a == 0 else 4 * (b - a)
                                                   for a, b in zip(bounds, bounds[1:])]
            assert torch.equal(torch.cat(parts, dim=2), whole)  # the same decoder calls, bit for bit


def test_state_cache_placement():
    cache = StepStateCache("host", "cpu")
    with cache.use(0, 1) as states:
        states["layer"] = "state"
    with cache.use(0, 1) as states:
        assert states == {"layer": "state"}
    with pytest.raises(ValueError, match="placement"):
        StepStateCache("disk")


def test_plan_formula_for_wan_1p3b_480p():
    """The per-step cache formula of docs/wan.md for Wan2.1-1.3B at 480x832, 50 steps, CFG (on the meta device)."""
    from rehyat.wan import ReHyAtWanTransformer3DModel

    with torch.device("meta"):
        t = WanTransformer3DModel(num_layers=30, num_attention_heads=12, attention_head_dim=128, ffn_dim=8960)
    ReHyAtWanTransformer3DModel.from_wan(t, "long-video")

    class P:  # the parts of a WanPipeline the plan reads
        transformer, transformer_2, vae_scale_factor_temporal, vae_scale_factor_spatial = t, None, 4, 8
        _execution_device = torch.device("cpu")

    plan = plan_stream(P, num_frames=81, height=480, width=832, num_inference_steps=50, guidance_scale=5.0)
    assert plan.sz_bytes == (12 * 256 * 128 + 12 * 256) * 4  # fp32 accumulation
    assert plan.tail_bytes == 1560 * 12 * (2 * 128 + 256) * 4  # one frame of k, v, phi(k), fp32
    assert plan.steps * plan.branches * plan.layers == 3000
    assert len(plan.chunks) == 7 and plan.chunks[-1] == (18, 21)


def test_models_that_cannot_stream(tiny_root):
    dense = build_tiny_pipeline(0, rehyat=False, root=tiny_root)
    with pytest.raises(StreamUnsupportedError, match="dense .*long-video"):
        check_streamable(dense)
    with pytest.raises(StreamUnsupportedError, match=r"blocks \[1\] keep dense.*long-video"):
        check_streamable(_pipe(tiny_root, blocks=[0]))
    with pytest.raises(StreamUnsupportedError, match="bidirectional.*long-video"):
        check_streamable(_pipe(tiny_root, causal=False))
    pipe = _pipe(tiny_root)
    pipe.scheduler = DPMSolverMultistepScheduler()
    with pytest.raises(StreamUnsupportedError, match="DPMSolverMultistepScheduler is not known"):
        check_streamable(pipe)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)
    with pytest.raises(StreamUnsupportedError, match="stochastic_sampling"):
        check_streamable(pipe)
    pipe.scheduler = UniPCMultistepScheduler(**TINY_SCHEDULER_CONFIG, thresholding=True)
    with pytest.raises(StreamUnsupportedError, match="thresholding"):
        list(stream_video(pipe, PROMPT, SEED, **RECIPE))
    with pytest.raises(ValueError, match="long-video"):
        G.load_model(dense, mode="stream", device="cpu")
    with pytest.raises(ValueError, match="tiny-softmax is the dense"):
        G.load_model("tiny-softmax", mode="stream", device="cpu")


def test_stream_with_model_cpu_offload_hooks(tiny_root):
    """diffusers' model CPU offload (hooks with the CPU as execution device here): the text encoder, transformer and
    VAE hooks fire as in WanPipeline and the result is unchanged up to float rounding (offloading moves WanPipeline's
    own latents by ~2e-6 here too)."""
    pipe = _pipe(tiny_root)
    _, ref = _stream(pipe)
    pipe.enable_model_cpu_offload(device="cpu")
    calls = {}
    for name in ("text_encoder", "transformer", "vae"):
        hook = getattr(pipe, name)._hf_hook
        calls[name] = 0

        def counted(module, *a, _orig=hook.pre_forward, _name=name, **k):
            calls[_name] += 1
            return _orig(module, *a, **k)

        hook.pre_forward = counted
    _, got = _stream(pipe)
    assert calls["text_encoder"] >= 1 and calls["vae"] == 3 and calls["transformer"] == 3 * 3 * 2
    for a, b in zip(got, ref):
        _close(a, b)
