"""Streamed (chunk-by-chunk) text-to-video sampling with a fully converted causal ReHyAt Wan pipeline.

Schedule: **chunk c of the latent video goes through every denoising step (both CFG branches) before chunk c + 1
starts**, its latents are decoded by Wan's causal VAE and the frames handed out; nothing of it is kept.  The result is
*exactly* the causal model the recurrent sweep (and the parallel causal form) computes, because at step ``i`` chunk
``c`` attends to the state that chunks ``< c`` left **at step i** — kept in a per-step state cache
(:class:`StepStateCache`: ``S``, ``z`` and the ``T_o``-frame K/V/phi(K) tail per step x CFG branch x layer; its size
depends on steps x layers x frame size, never on the number of frames).  Everything else is per chunk:

* the initial noise: :class:`ChunkNoise` produces, frame range by frame range, the very values ``WanPipeline`` draws
  for the whole video (``torch.randn`` on a CPU generator), without holding them;
* the scheduler: one instance per chunk (a copy of the pipeline's after ``set_timesteps``), since the schedulers Wan
  uses update element-wise (UniPC keeps per-element multistep history, flow-match Euler none) — a registry
  (:func:`register_stream_scheduler`) lists which can, and why others cannot;
* the VAE decode: :class:`StreamingWanDecoder` runs ``AutoencoderKLWan``'s per-latent-frame decoder calls with its
  temporal feature cache carried from chunk to chunk (spatial tiling too), so its frames equal ``vae.decode`` of the
  whole latent.

The text encoder runs once, before the first chunk.  Every transformer call goes through the model's own ``forward``
(recurrent mode, continuing a sweep: :func:`rehyat.wan.recurrent.sweep_kwargs`) and the VAE pre-forward hook is
triggered like diffusers' ``apply_forward_hook`` does, so ``enable_model_cpu_offload`` / sequential offload keep
working.  Library entry point: :func:`stream_video` (a generator of :class:`StreamChunk`).
"""

from __future__ import annotations

import copy
import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from rehyat.attention import HybridState

from .convert import is_rehyat, recurrent_unsupported_reason
from .processor import RecurrentStates
from .recurrent import sweep_kwargs

Tensor = torch.Tensor
PLACEMENTS = ("device", "host")
LONG_VIDEO_HINT = ("convert it with the 'long-video' preset (all blocks, causal): `python -m rehyat.convert --model "
                   "DIR --preset long-video --out DIR` (or `--preset long-video` in rehyat.generate, untrained phi)")


class StreamUnsupportedError(ValueError):
    """The pipeline cannot be sampled chunk by chunk; the message says why and what can."""


# ------------------------------------------------------------------------------------------------------------------
# which schedulers can run one chunk at a time
# ------------------------------------------------------------------------------------------------------------------

STREAM_SCHEDULERS: dict[str, Callable[[dict], str | None]] = {}


def register_stream_scheduler(class_name: str, check: Callable[[dict], str | None]) -> None:
    """Declare that scheduler class ``class_name`` updates latents element-wise (so one instance per chunk equals one
    for the whole video); ``check(config)`` returns why a particular configuration does not (or ``None``)."""
    if STREAM_SCHEDULERS.get(class_name, check) is not check:
        raise ValueError(f"stream scheduler {class_name!r} is already registered")
    STREAM_SCHEDULERS[class_name] = check


def _unipc_check(cfg) -> str | None:
    return "dynamic thresholding takes quantiles over the whole video" if cfg.get("thresholding") else None


def _euler_check(cfg) -> str | None:
    if cfg.get("stochastic_sampling"):
        return "stochastic_sampling draws fresh noise each step from one generator, in whole-video order"
    return None


register_stream_scheduler("UniPCMultistepScheduler", _unipc_check)
register_stream_scheduler("FlowMatchEulerDiscreteScheduler", _euler_check)


def scheduler_unsupported_reason(scheduler) -> str | None:
    name = type(scheduler).__name__
    check = STREAM_SCHEDULERS.get(name)
    if check is None:
        return (f"scheduler {name} is not known to update element-wise (streamable: {sorted(STREAM_SCHEDULERS)}; "
                f"rehyat.wan.stream.register_stream_scheduler adds one)")
    why = check(dict(scheduler.config))
    return f"scheduler {name}: {why}" if why else None


# ------------------------------------------------------------------------------------------------------------------
# can this pipeline stream?
# ------------------------------------------------------------------------------------------------------------------

def pipeline_transformers(pipe) -> dict[str, object]:
    """``{component name: transformer}`` of a Wan pipeline (Wan2.2 A14B: both experts)."""
    return {n: t for n in ("transformer", "transformer_2") if (t := getattr(pipe, n, None)) is not None}


def stream_unsupported_reason(pipe) -> str | None:
    """Why :func:`stream_video` cannot sample ``pipe`` chunk by chunk (``None`` if it can)."""
    from diffusers import AutoencoderKLWan

    experts = pipeline_transformers(pipe)
    if not experts:
        return "the pipeline has no transformer"
    for name, t in experts.items():
        if not is_rehyat(t):
            return f"{name} is a dense (softmax) Wan transformer, which has no recurrent state; {LONG_VIDEO_HINT}"
        why = recurrent_unsupported_reason(t)
        if why:
            return f"{name}: {why}"
    if len({t.rehyat_config.chunk_frames for t in experts.values()}) > 1:
        return "the two experts chunk the video differently (T_c differs); streaming needs one chunking"
    if getattr(pipe.config, "expand_timesteps", False):
        return "per-token timesteps (Wan2.2 TI2V expand_timesteps) have no recurrent form"
    why = scheduler_unsupported_reason(pipe.scheduler)
    if why:
        return why
    if not isinstance(pipe.vae, AutoencoderKLWan):
        return f"the VAE is {type(pipe.vae).__name__}, not Wan's causal AutoencoderKLWan"
    return None


def check_streamable(pipe) -> None:
    why = stream_unsupported_reason(pipe)
    if why:
        raise StreamUnsupportedError(f"--mode stream unavailable: {why}")


# ------------------------------------------------------------------------------------------------------------------
# initial noise, one frame range at a time
# ------------------------------------------------------------------------------------------------------------------

_BLOCK = 16  # torch's CPU normal_ fills float tensors of >= 16 values in independent 16-value Box-Muller blocks
_SKIP = 1 << 20


def _advance(generator: torch.Generator, n: int) -> None:
    """Move a CPU generator ``n`` 32-bit draws on (``rand`` of float32 takes exactly one draw per value)."""
    while n > 0:
        k = min(n, _SKIP)
        torch.rand(k, generator=generator)
        n -= k


class ChunkNoise:
    """The tensor ``torch.randn(shape, generator=generator, dtype=float32)`` — what ``WanPipeline.prepare_latents``
    draws from one CPU generator — produced one latent-frame range at a time, without holding it.

    ``shape`` = ``[B, C, F, h, w]``; its rows ``(b, c)`` are contiguous runs of ``F*h*w`` values.  torch's CPU
    ``randn`` fills a float tensor whose size is a multiple of 16 in independent 16-value blocks (uniform draw ``j``
    feeds value ``j``), so a block-aligned range of the whole tensor equals ``randn`` of that range's size drawn from a
    generator moved on to the range's start.  One generator per row (``B*C`` states, a few KiB each) sits at the
    aligned start of the row's next range.  Memory: one range; time: every draw about twice.  A shape whose size is no
    multiple of 16 (not a Wan latent: C is 16 or 48) falls back to drawing the whole tensor once.
    ``tests/wan/test_stream.py`` checks equality with ``torch.randn`` for ragged ranges.
    """

    def __init__(self, shape, generator: torch.Generator):
        if generator.device.type != "cpu":
            raise ValueError("streamed sampling draws its initial noise from a CPU torch.Generator")
        self.shape = tuple(int(s) for s in shape)
        b, c, f, h, w = self.shape
        self._row, self._frame = f * h * w, h * w
        self._whole = None
        if (b * c * self._row) % _BLOCK:
            self._whole = torch.randn(self.shape, generator=generator, dtype=torch.float32)
            return
        self._gens, self._pos = [], []
        at = 0
        for r in range(b * c):
            start = (r * self._row) // _BLOCK * _BLOCK
            _advance(generator, start - at)
            at = start
            g = torch.Generator()
            g.set_state(generator.get_state())
            self._gens.append(g)
            self._pos.append(start)
        _advance(generator, b * c * self._row - at)  # leave the caller's generator where a whole draw would

    def frames(self, f0: int, f1: int) -> Tensor:
        """Noise of latent frames ``[f0, f1)``: ``[B, C, f1 - f0, h, w]`` float32 (CPU).  Ranges must not go back."""
        b, c, f, h, w = self.shape
        if not 0 <= f0 < f1 <= f:
            raise ValueError(f"frame range [{f0}, {f1}) outside [0, {f})")
        if self._whole is not None:
            return self._whole[:, :, f0:f1].clone()
        out = torch.empty(b * c, (f1 - f0) * self._frame)
        for r, g in enumerate(self._gens):
            lo, hi = r * self._row + f0 * self._frame, r * self._row + f1 * self._frame
            a, z = lo // _BLOCK * _BLOCK, -(-hi // _BLOCK) * _BLOCK
            if a < self._pos[r]:
                raise ValueError("ChunkNoise ranges must be requested in order")
            _advance(g, a - self._pos[r])
            self._pos[r] = a
            state = g.get_state()
            out[r] = torch.randn(z - a, generator=g)[lo - a:hi - a]
            g.set_state(state)  # stay at `a`: the next range may start inside this one's last block
        return out.view(b, c, f1 - f0, h, w)


# ------------------------------------------------------------------------------------------------------------------
# the per-step state cache
# ------------------------------------------------------------------------------------------------------------------

def _move(state: HybridState, device) -> HybridState:
    return dataclasses.replace(state, **{f: getattr(state, f).to(device)
                                         for f in ("s", "z", "tail_k", "tail_v", "tail_fk")})


class StepStateCache:
    """Recurrent states per (denoising step, CFG branch): ``{processor: HybridState}`` each — what the chunks so far
    left at that step.  ``placement="device"`` keeps them on the compute device; ``"host"`` keeps them in CPU memory
    and moves one (step, branch) entry to the device for the call that needs it and back after it."""

    def __init__(self, placement: str = "device", device: str | torch.device = "cpu"):
        if placement not in PLACEMENTS:
            raise ValueError(f"state cache placement must be one of {PLACEMENTS}, got {placement!r}")
        self.placement, self.device = placement, torch.device(device)
        self._entries: dict[tuple[int, int], RecurrentStates] = {}

    @contextmanager
    def use(self, step: int, branch: int) -> Iterator[RecurrentStates]:
        """The states of ``(step, branch)`` on the compute device, for one transformer call that updates them."""
        stored = self._entries.setdefault((step, branch), {})
        if self.placement == "device" or self.device.type == "cpu":
            yield stored
            return
        live = {p: _move(s, self.device) for p, s in stored.items()}
        yield live
        self._entries[(step, branch)] = {p: _move(s, "cpu") for p, s in live.items()}

    def nbytes(self) -> int:
        return sum(s.nbytes() for e in self._entries.values() for s in e.values())


@dataclass(frozen=True)
class StreamPlan:
    """What a streamed sample will do and hold: chunks (post-patch latent frame ranges), steps, CFG branches and the
    per-step state cache (bytes per converted layer and step and branch, and the total)."""

    chunks: tuple[tuple[int, int], ...]
    steps: int
    branches: int
    layers: int
    sz_bytes: int  # S + z of one layer, one step, one branch
    tail_bytes: int  # the T_o-frame tail (k, v, phi(k)) of one layer, one step, one branch
    placement: str
    device: str

    @property
    def cache_bytes(self) -> int:
        return self.steps * self.branches * self.layers * (self.sz_bytes + self.tail_bytes)

    def describe(self) -> str:
        last = self.chunks[-1][1] - self.chunks[-1][0]
        full = self.chunks[0][1] - self.chunks[0][0]
        where = f"{self.placement} memory ({self.device})" if self.placement == "device" else "host memory"
        return (f"{self.chunks[-1][1]} latent frames in {len(self.chunks)} chunks of {full}"
                + (f" (last {last})" if last != full else "")
                + f" x {self.steps} steps x {self.branches} CFG branch{'es' if self.branches > 1 else ''}; "
                f"per-step state cache {_mib(self.cache_bytes)} in {where} = {self.steps} steps x {self.branches} "
                f"x {self.layers} layers x (S+z {_mib(self.sz_bytes)} + T_o tail {_mib(self.tail_bytes)})")


def _mib(b: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= size:
            return f"{b / size:.2f} {unit}"
    return f"{b} B"


def layer_state_bytes(transformer, frame_tokens: int, batch: int = 1, dtype: torch.dtype | None = None
                      ) -> tuple[int, int]:
    """``(S + z bytes, tail bytes)`` of one converted layer's steady-state recurrent state (every layer of a model
    has the same): ``S [B,H,F,D]`` and ``z [B,H,F]`` in the accumulation dtype (float32 unless float64), and the
    tail — k, v ``[B, T_o*h, H, D]`` and phi(k) ``[B, T_o*h, H, F]`` of the last ``T_o`` frames — in the activation
    dtype.  Equals ``HybridState.nbytes()`` once ``T_o`` frames have been seen (tested)."""
    from rehyat.attention.linear_branch import accum_dtype

    proc = next(iter(transformer.rehyat_processors().values()))
    act = dtype or transformer.dtype
    heads, d = proc.num_heads, proc.head_dim
    feat = getattr(proc.phi_k, "feature_dim", d)
    acc = torch.empty(0, dtype=accum_dtype(torch.empty(0, dtype=act))).element_size()
    el = torch.empty(0, dtype=act).element_size()
    tail_tokens = proc.config.overlap_frames * frame_tokens
    return batch * heads * feat * (d + 1) * acc, batch * tail_tokens * heads * (2 * d + feat) * el


def plan_stream(pipe, *, num_frames: int, height: int, width: int, num_inference_steps: int,
                guidance_scale: float, placement: str = "device", batch: int = 1) -> StreamPlan:
    """The :class:`StreamPlan` of one streamed sample (nothing runs)."""
    experts = list(pipeline_transformers(pipe).values())
    t = experts[0]
    pt, ph, pw = t.config.patch_size
    latent_f = (num_frames - 1) // pipe.vae_scale_factor_temporal + 1
    frames = latent_f // pt
    tc = t.rehyat_config.chunk_frames
    h = height // pipe.vae_scale_factor_spatial // ph
    w = width // pipe.vae_scale_factor_spatial // pw
    sz, tail = layer_state_bytes(t, h * w, batch)
    # Wan2.2 A14B: each step runs one expert, so an entry holds that expert's layers (both have the same count)
    layers = max(len(e.rehyat_config.blocks) for e in experts)
    return StreamPlan(chunks=tuple(latent_chunks(frames, tc)),
                      steps=int(num_inference_steps), branches=2 if guidance_scale > 1.0 else 1, layers=layers,
                      sz_bytes=sz, tail_bytes=tail, placement=placement, device=str(pipe._execution_device))


# ------------------------------------------------------------------------------------------------------------------
# streamed VAE decode
# ------------------------------------------------------------------------------------------------------------------

def _enter_forward_hook(module) -> None:
    """What diffusers' ``apply_forward_hook`` does before ``decode``: let an offload hook move the module in."""
    hook = getattr(module, "_hf_hook", None)
    if hook is not None and hasattr(hook, "pre_forward"):
        hook.pre_forward(module)


class StreamingWanDecoder:
    """``AutoencoderKLWan`` decoding a latent video chunk by chunk along time, equal to ``vae.decode`` of the whole.

    ``vae._decode`` runs the decoder one latent frame at a time with a temporal feature cache (``feat_cache``: the
    last ``CACHE_T`` = 2 input frames of every causal conv) and ``first_chunk=True`` for frame 0 only; this class makes
    the same calls, keeping the cache between :meth:`decode` calls instead of concatenating the whole output.  With
    ``vae.use_tiling`` (and a latent larger than one tile) it does what ``tiled_decode`` does — one cache per spatial
    tile, tiles blended per chunk (blending is per frame).  Latent frame 0 decodes to 1 frame, every later one to 4.
    Memory: one chunk's frames plus the caches (independent of the video's length).
    """

    def __init__(self, vae):
        self.vae = vae
        self.frames_done = 0  # latent frames decoded so far
        self._caches: dict[tuple[int, int], list] = {}

    def _frames(self, cache_key, x: Tensor, conv_per_frame: bool) -> Tensor:
        """Decoder calls for the latent frames of ``x`` with the cache of ``cache_key``; ``post_quant_conv`` applied
        per frame (as ``tiled_decode`` does) or already applied to ``x`` (as ``_decode`` does to the whole)."""
        vae = self.vae
        cache = self._caches.setdefault(cache_key, [None] * vae._cached_conv_counts["decoder"])
        outs = []
        for k in range(x.shape[2]):
            xk = vae.post_quant_conv(x[:, :, k:k + 1]) if conv_per_frame else x[:, :, k:k + 1]
            first = self.frames_done + k == 0
            outs.append(vae.decoder(xk, feat_cache=cache, feat_idx=[0], first_chunk=first))
        return torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Latent frames ``z: [B, z_dim, f, h, w]`` (denormalised, the VAE's dtype and device; the next ones of the
        video) -> video frames ``[B, 3, t, H, W]`` in ``[-1, 1]``."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        vae = self.vae
        _enter_forward_hook(vae)
        _, _, _, height, width = z.shape
        th = vae.tile_sample_min_height // vae.spatial_compression_ratio
        tw = vae.tile_sample_min_width // vae.spatial_compression_ratio
        if vae.use_tiling and (width > tw or height > th):
            out = self._tiled(z, th, tw)
        else:
            out = self._frames((0, 0), vae.post_quant_conv(z), conv_per_frame=False)
        self.frames_done += z.shape[2]
        if vae.config.patch_size is not None:
            out = unpatchify(out, patch_size=vae.config.patch_size)
        return torch.clamp(out, min=-1.0, max=1.0)

    def _tiled(self, z: Tensor, th: int, tw: int) -> Tensor:
        """``AutoencoderKLWan.tiled_decode`` for the chunk ``z`` (same tiles, blends and crop), per-tile caches."""
        vae = self.vae
        ratio = vae.spatial_compression_ratio
        _, _, _, height, width = z.shape
        sh, sw = vae.tile_sample_stride_height // ratio, vae.tile_sample_stride_width // ratio
        out_h, out_w = height * ratio, width * ratio
        st_h, st_w = vae.tile_sample_stride_height, vae.tile_sample_stride_width
        blend_h = vae.tile_sample_min_height - st_h
        blend_w = vae.tile_sample_min_width - st_w
        if vae.config.patch_size is not None:
            p = vae.config.patch_size
            out_h, out_w, st_h, st_w = out_h // p, out_w // p, st_h // p, st_w // p
            blend_h, blend_w = vae.tile_sample_min_height // p - st_h, vae.tile_sample_min_width // p - st_w
        rows = []
        for i in range(0, height, sh):
            rows.append([self._frames((i, j), z[:, :, :, i:i + th, j:j + tw], conv_per_frame=True)
                         for j in range(0, width, sw)])
        result_rows = []
        for i, row in enumerate(rows):
            result_row = []
            for j, tile in enumerate(row):
                if i > 0:
                    tile = vae.blend_v(rows[i - 1][j], tile, blend_h)
                if j > 0:
                    tile = vae.blend_h(row[j - 1], tile, blend_w)
                result_row.append(tile[:, :, :, :st_h, :st_w])
            result_rows.append(torch.cat(result_row, dim=-1))
        return torch.cat(result_rows, dim=3)[:, :, :, :out_h, :out_w]


# ------------------------------------------------------------------------------------------------------------------
# the sampler
# ------------------------------------------------------------------------------------------------------------------

@dataclass
class StreamChunk:
    """One finished chunk of a streamed video: ``frames`` uint8 ``[t, H, W, 3]`` (video frames
    ``[first_frame, first_frame + t)``), ``latents`` float32 ``[C, f, h, w]`` on CPU (final, before the VAE; latent
    frames ``latent_frames``), ``index`` of ``num_chunks``; ``cache_bytes``: what the per-step state cache holds
    after this chunk (the plan's ``cache_bytes`` from the first chunk with ``>= T_o`` frames behind it on)."""

    index: int
    num_chunks: int
    latent_frames: tuple[int, int]
    first_frame: int
    frames: np.ndarray
    latents: Tensor
    cache_bytes: int


def _denormalise(vae, latents: Tensor) -> Tensor:
    """``WanPipeline``'s latents -> VAE input: ``latents / (1 / std) + mean`` per channel (same arithmetic)."""
    z = latents.to(vae.dtype)
    mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(z.device, z.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(z.device, z.dtype)
    return z / inv_std + mean


@torch.no_grad()
def stream_video(pipe, prompt: str, seed: int, *, num_frames: int, height: int, width: int,
                 num_inference_steps: int = 50, guidance_scale: float = 5.0, guidance_scale_2: float | None = None,
                 negative_prompt: str | None = None, max_sequence_length: int = 512,
                 prompt_embeds: Tensor | None = None, negative_prompt_embeds: Tensor | None = None,
                 state_cache: str = "device", on_plan: Callable[[StreamPlan], None] | None = None,
                 on_step: Callable[[int, int], None] | None = None) -> Iterator[StreamChunk]:
    """Sample one video chunk by chunk; yields each :class:`StreamChunk` as soon as it is decoded.

    Same inputs and the same result (up to float rounding) as ``WanPipeline.__call__`` with ``generator=
    torch.Generator("cpu").manual_seed(seed)`` and the transformer(s) in recurrent (or parallel causal) mode — see the
    module docstring for the schedule.  ``state_cache``: ``"device"`` or ``"host"`` (:class:`StepStateCache`).
    ``on_plan(plan)`` is called before sampling starts (the cache size is known then); ``on_step(chunk, step)`` after
    every denoising step.  The pipeline must pass :func:`stream_unsupported_reason`.
    """
    check_streamable(pipe)
    experts = pipeline_transformers(pipe)
    main = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
    device = pipe._execution_device
    plan = plan_stream(pipe, num_frames=num_frames, height=height, width=width,
                       num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, placement=state_cache)
    if on_plan:
        on_plan(plan)
    cfg = guidance_scale > 1.0
    if pipe.config.boundary_ratio is not None and guidance_scale_2 is None:
        guidance_scale_2 = guidance_scale

    # text encoder: once, before the first chunk (its offload hook moves it in; the transformer's moves it out)
    cond, uncond = pipe.encode_prompt(prompt=prompt, negative_prompt=negative_prompt, do_classifier_free_guidance=cfg,
                                      num_videos_per_prompt=1, prompt_embeds=prompt_embeds,
                                      negative_prompt_embeds=negative_prompt_embeds,
                                      max_sequence_length=max_sequence_length, device=device)
    dtype = main.dtype
    branches = [cond.to(dtype)] + ([uncond.to(dtype)] if cfg else [])

    template = copy.deepcopy(pipe.scheduler)
    template.set_timesteps(num_inference_steps, device=device)
    template.set_begin_index(0)
    boundary = (pipe.config.boundary_ratio * template.config.num_train_timesteps
                if pipe.config.boundary_ratio is not None else None)

    pt = main.config.patch_size[0]
    latent_f = (num_frames - 1) // pipe.vae_scale_factor_temporal + 1
    shape = (1, main.config.in_channels, latent_f, height // pipe.vae_scale_factor_spatial,
             width // pipe.vae_scale_factor_spatial)
    noise = ChunkNoise(shape, torch.Generator("cpu").manual_seed(int(seed)))
    cache = StepStateCache(state_cache, device)
    modes = {n: t.rehyat_mode for n, t in experts.items()}

    def expert(t):  # WanPipeline's expert choice (Wan2.2 A14B: high-noise expert above the boundary)
        high = boundary is None or t >= boundary
        return (pipe.transformer, guidance_scale) if high else (pipe.transformer_2, guidance_scale_2)

    def predict(chunk, i, b, t, latents, text):
        f0 = plan.chunks[chunk][0]
        with cache.use(i, b) as states:
            x = latents.to(dtype)
            return expert(t)[0](hidden_states=x, timestep=t.expand(x.shape[0]), encoder_hidden_states=text,
                                attention_kwargs=sweep_kwargs(f0, states), return_dict=False)[0]

    try:
        for t in experts.values():
            t.set_rehyat_mode("recurrent")
        latent_ranges = [(f0 * pt, f1 * pt) for f0, f1 in plan.chunks]
        for ci, first_frame, latents, frames in sample_chunks(
                pipe, latent_ranges, noise, template, branches, predict, lambda t: expert(t)[1], device=device,
                on_step=on_step):
            yield StreamChunk(index=ci, num_chunks=len(plan.chunks), latent_frames=latent_ranges[ci],
                              first_frame=first_frame, frames=frames, latents=latents[0].to("cpu", torch.float32),
                              cache_bytes=cache.nbytes())
    finally:
        for n, t in experts.items():
            t.set_rehyat_mode(modes[n])
        pipe.maybe_free_model_hooks()


def sample_chunks(pipe, latent_ranges: list[tuple[int, int]], noise: "ChunkNoise", template, branches: list,
                  predict: Callable, guidance: Callable, *, device="cpu",
                  on_step: Callable[[int, int], None] | None = None) -> Iterator[tuple[int, int, Tensor, np.ndarray]]:
    """The stream schedule itself, whatever runs the transformer: for each latent range ``(f0, f1)``, the chunk's
    noise goes through every timestep of ``template`` (a scheduler after ``set_timesteps``, copied per chunk) and
    every CFG branch (``branches``: text embeddings, cond first), then through ``pipe.vae``'s streaming decode.

    ``predict(chunk, step, branch, t, latents, text)`` returns the noise prediction ``[1, C, f, h, w]`` (and keeps
    whatever per-(step, branch) state it needs); ``guidance(t)`` the CFG scale at ``t``.  Yields ``(chunk index,
    first video frame, final latents [1, C, f, h, w], uint8 frames [t, H, W, 3])``; a chunk's tensors are dropped
    when the next one starts."""
    decoder = StreamingWanDecoder(pipe.vae)
    vae_device = _vae_device(pipe.vae)
    first_frame = 0
    for ci, (f0, f1) in enumerate(latent_ranges):
        scheduler = copy.deepcopy(template)  # this chunk's own multistep history
        latents = noise.frames(f0, f1).to(device)
        for i, t in enumerate(template.timesteps):
            preds = [predict(ci, i, b, t, latents, text) for b, text in enumerate(branches)]
            noise_pred = preds[1] + guidance(t) * (preds[0] - preds[1]) if len(preds) > 1 else preds[0]
            latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
            del preds, noise_pred
            if on_step:
                on_step(ci, i)
        video = decoder.decode(_denormalise(pipe.vae, latents.to(vae_device)))
        frames = to_uint8(pipe.video_processor.postprocess_video(video, output_type="np")[0])
        del video
        yield ci, first_frame, latents, frames
        first_frame += frames.shape[0]
        del latents, scheduler


def _vae_device(vae) -> torch.device:
    from diffusers.utils.torch_utils import get_module_execution_device

    return get_module_execution_device(vae)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] (``WanPipeline``'s ``output_type="np"``) -> uint8, rounded to nearest."""
    return (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def latent_chunks(num_latent_frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """``[(f0, f1), ...]``: the model's chunks of a latent video (the last one ragged)."""
    return [(f0, min(f0 + chunk_frames, num_latent_frames)) for f0 in range(0, num_latent_frames, chunk_frames)]


__all__ = ["ChunkNoise", "LONG_VIDEO_HINT", "PLACEMENTS", "STREAM_SCHEDULERS", "StepStateCache", "StreamChunk",
           "StreamPlan", "StreamUnsupportedError", "StreamingWanDecoder", "check_streamable", "latent_chunks",
           "layer_state_bytes", "pipeline_transformers", "plan_stream", "register_stream_scheduler",
           "sample_chunks", "scheduler_unsupported_reason", "stream_unsupported_reason", "stream_video", "to_uint8"]
