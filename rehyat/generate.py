"""Text-to-video generation with Wan / ReHyAt: library API and CLI (``python -m rehyat.generate``).

Library::

    from rehyat.generate import generate_videos, generate_sample, WanVideoGenerator
    paths = generate_videos("tiny", ["a cat"], "out/", num_frames=17, height=32, width=32, videos_per_prompt=2)
    sample = generate_sample(pipe, "a cat", seed=0, num_frames=17, height=32, width=32)  # frames + latents

    for chunk in stream_video(pipe, "a cat", seed=0, num_frames=161, height=32, width=32):  # rehyat.wan.stream
        ...  # chunk.frames: uint8 [t, H, W, 3], as soon as its latent chunk is finished and decoded

CLI (VBench layout ``{prompt}-{i}.mp4``; seed of video i = ``--seed + i``; resumable; shard with torchrun)::

    python -m rehyat.generate --model PATH --prompts prompts.txt --out videos/ --num-frames 81 --height 480 \
        --width 832 --seed 0 --videos-per-prompt 5 [--mode recurrent | --mode stream [--state-cache host]]
    torchrun --nproc_per_node 8 -m rehyat.generate --model PATH ...

Modes: ``parallel`` (diffusers' forward), ``recurrent`` (every transformer call swept chunk by chunk in constant
memory), ``stream`` (each latent chunk denoised through every step, decoded and appended to the mp4 before the next
starts: the whole generation in memory independent of the video's length; same frames as the other two).

``--model``: ``tiny`` (built-in tiny random ReHyAt model; the default), ``tiny-softmax`` (its softmax base), a converted
pipeline folder (``model_index.json`` naming ``ReHyAtWanTransformer3DModel``), a ReHyAt transformer folder (either
checkpoint layout; base Wan folder from the checkpoint, ``--base`` or ``$REHYAT_WAN_BASE``), or a plain diffusers Wan
folder (softmax baseline).  ``--preset NAME`` (and the ReHyAt flags ``--blocks``, ``--chunk-frames``, ...) convert a
dense model on the fly with **freshly initialised, untrained** feature maps — for speed / memory / pipeline checks,
never for quality.  Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

# Wan2.1's standard negative prompt (from the official Wan configs / diffusers Wan examples).
DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋，残缺的，"
    "多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
WAN_FPS = 16
WAN_DEFAULTS = dict(num_frames=81, height=480, width=832, num_inference_steps=50, guidance_scale=5.0,
                    max_sequence_length=512)
TINY_NAMES = {"tiny": True, "tiny-rehyat": True, "tiny-softmax": False}
META_DIR = "meta"
MODES = ("parallel", "recurrent", "stream")


@dataclass
class VideoSample:
    """One generated video: ``frames`` uint8 ``[T, H, W, 3]`` RGB; ``latents`` float32 ``[C, F, h, w]`` on CPU (the
    final denoised latents, before VAE decode)."""

    frames: np.ndarray
    latents: torch.Tensor
    fps: int
    prompt: str
    seed: int


# ------------------------------------------------------------------------------------------------------------------
# model loading
# ------------------------------------------------------------------------------------------------------------------

def default_device(local_rank: int | None = None) -> str:
    if torch.cuda.is_available():
        rank = int(os.environ.get("LOCAL_RANK", 0)) if local_rank is None else local_rank
        return f"cuda:{rank % torch.cuda.device_count()}"
    return "cpu"


def model_defaults(model) -> dict:
    """Generation defaults of a model spec: small sizes for the tiny model, Wan2.1's defaults otherwise."""
    if isinstance(model, str) and model in TINY_NAMES:
        from rehyat.tiny import TINY_DEFAULTS

        return dict(TINY_DEFAULTS)
    return dict(WAN_DEFAULTS)


def load_model(model, *, mode: str = "parallel", device: str | torch.device | None = None,
               torch_dtype: torch.dtype | None = None, base_model: str | os.PathLike | None = None,
               convert=None):
    """A ``WanPipeline`` from a spec: an existing pipeline, ``tiny`` / ``tiny-softmax``, or a local folder.

    ``convert``: a :class:`~rehyat.config.ReHyAtConfig` to convert a *dense* model with (fresh, untrained phi;
    pipeline/speed checks only); refused for a model that is already ReHyAt (its config comes with its trained phi).
    """
    if convert is not None:
        pipe = load_model(model, mode="parallel", device=device, torch_dtype=torch_dtype, base_model=base_model)
        from rehyat.wan import convert_pipeline, is_rehyat as _is_rehyat

        if _is_rehyat(pipe.transformer):
            raise ValueError(f"{model} is already a ReHyAt model (its attention config comes with its trained feature "
                             f"maps); --preset / --chunk-frames / ... convert dense models only")
        print("[rehyat.generate] converting the dense model with freshly initialised (untrained) feature maps: "
              f"{convert.to_dict()} — outputs are pipeline/speed checks, not quality", file=sys.stderr)
        convert_pipeline(pipe, convert, seed=0)
        return load_model(pipe, mode=mode, device=device)
    from diffusers import WanPipeline

    from rehyat.wan.pipeline import set_pipeline_mode

    device = device or default_device()
    if isinstance(model, WanPipeline):
        set_pipeline_mode(model, mode)
        return model.to(device)
    if isinstance(model, str) and model in TINY_NAMES:
        from rehyat.tiny import build_tiny_pipeline

        if not TINY_NAMES[model] and mode != "parallel":
            raise ValueError(f"tiny-softmax is the dense softmax model: --mode {mode} needs every block converted and "
                             f"causal (use --model tiny, or --model tiny-softmax --preset long-video)")
        return build_tiny_pipeline(rehyat=TINY_NAMES[model], mode=mode, device=device)
    from rehyat.wan.pipeline import load_pipeline

    if torch_dtype is None:
        torch_dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    return load_pipeline(model, base_model=base_model, mode=mode, torch_dtype=torch_dtype, device=device)


def describe_model(pipe, spec=None) -> dict:
    """JSON description of a pipeline (for sidecars and config hashes)."""
    from rehyat.wan.convert import get_rehyat_mode, is_rehyat

    t = pipe.transformer
    d = {
        "spec": spec if isinstance(spec, str) else type(spec).__name__ if spec is not None else None,
        "transformer_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(t.config).items()
                               if not k.startswith("_")},
        "dtype": str(t.dtype).replace("torch.", ""),
        "scheduler": type(pipe.scheduler).__name__,
        "attention": "rehyat" if is_rehyat(t) else "softmax",
        "mode": get_rehyat_mode(t),
    }
    if is_rehyat(t):
        d["rehyat"] = t.rehyat_config.to_dict()
    return d


# ------------------------------------------------------------------------------------------------------------------
# one sample
# ------------------------------------------------------------------------------------------------------------------

def check_size(num_frames: int, height: int, width: int) -> None:
    if num_frames < 1 or (num_frames - 1) % 4:
        raise ValueError(f"num_frames must be 4k+1 (Wan's VAE compresses time 4x), got {num_frames}")
    if height % 16 or width % 16:
        raise ValueError(f"height and width must be multiples of 16, got {height}x{width}")


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] -> uint8 (:func:`rehyat.wan.stream.to_uint8`, shared by every mode)."""
    from rehyat.wan.stream import to_uint8 as convert

    return convert(frames)


def generate_sample(pipe, prompt: str, seed: int, *, num_frames: int, height: int, width: int,
                    num_inference_steps: int = 50, guidance_scale: float = 5.0,
                    negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT, max_sequence_length: int = 512,
                    fps: int = WAN_FPS, stream: bool = False, state_cache: str = "device") -> VideoSample:
    """Generate one video with ``WanPipeline.__call__`` (or, ``stream=True``, chunk by chunk with
    :func:`rehyat.wan.stream.stream_video`, concatenated); returns decoded frames and the final latents.

    The initial noise comes from a CPU ``torch.Generator`` seeded with ``seed``, so a (prompt, seed) pair gives the
    same starting latents on any device (and in every mode).
    """
    check_size(num_frames, height, width)
    if stream:
        from rehyat.wan.stream import stream_video

        chunks = list(stream_video(pipe, prompt, seed, num_frames=num_frames, height=height, width=width,
                                   num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                   negative_prompt=negative_prompt, max_sequence_length=max_sequence_length,
                                   state_cache=state_cache))
        return VideoSample(frames=np.concatenate([c.frames for c in chunks]),
                           latents=torch.cat([c.latents for c in chunks], dim=1), fps=fps, prompt=prompt,
                           seed=int(seed))
    captured: dict[str, torch.Tensor] = {}

    def keep_last_latents(p, i, t, kw):
        if i == p.num_timesteps - 1:
            captured["latents"] = kw["latents"].detach().to("cpu", torch.float32).clone()
        return {}

    out = pipe(prompt=prompt, negative_prompt=negative_prompt, height=height, width=width, num_frames=num_frames,
               num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
               generator=torch.Generator("cpu").manual_seed(int(seed)), output_type="np",
               callback_on_step_end=keep_last_latents, callback_on_step_end_tensor_inputs=["latents"],
               max_sequence_length=max_sequence_length)
    return VideoSample(frames=to_uint8(np.asarray(out.frames[0])), latents=captured["latents"][0], fps=fps,
                       prompt=prompt, seed=int(seed))


# ------------------------------------------------------------------------------------------------------------------
# mp4 I/O
# ------------------------------------------------------------------------------------------------------------------

PARTIAL = ".partial-"  # temporary name of an mp4 being written: ".{name}.partial-{pid}" (hidden, not an .mp4)


def partial_path(path: str | os.PathLike, pid: int | None = None) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL}{os.getpid() if pid is None else pid}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that killed writers of ``path`` left (their process is gone); returns them."""
    path = Path(path)
    gone = []
    for p in path.parent.glob(glob.escape(f".{path.name}{PARTIAL}") + "*"):
        pid = p.name.rsplit(PARTIAL, 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


class Mp4Writer:
    """H.264 mp4 (yuv420p, ``crf``, one encoder thread: the same frames give the same bytes) written frame chunk by
    frame chunk, then moved into place.

    Frames go to the encoder as they come (:meth:`write`, uint8 ``[t, H, W, 3]`` RGB) and are not kept (libx264
    holds up to its lookahead of frames).  The file is written under :func:`partial_path` — hidden and not named
    ``*.mp4``, and unreadable as a video until the encoder is flushed and the index written — and :meth:`close`
    fsyncs and renames it to ``path``, so a killed run never leaves a file that passes for a finished video.  Used
    as a context manager: an exception removes the temporary; on entry, temporaries of killed writers of the same
    ``path`` are removed.
    """

    def __init__(self, path: str | os.PathLike, fps: int = WAN_FPS, crf: int = 17):
        self.path, self.fps, self.crf = Path(path), int(fps), int(crf)
        self.tmp = partial_path(self.path)
        self.frames = 0
        self._container = self._stream = None

    def __enter__(self) -> "Mp4Writer":
        remove_stale_partials(self.path)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, frames: np.ndarray) -> None:
        import av

        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected uint8 [T, H, W, 3] frames, got {frames.dtype} {frames.shape}")
        if self._container is None:
            self._container = av.open(str(self.tmp), mode="w", format="mp4")
            self._stream = self._container.add_stream("libx264", rate=self.fps)
            self._stream.width, self._stream.height, self._stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            self._stream.options = {"crf": str(self.crf)}
            self._stream.thread_count = 1  # libx264's frame threads make the bytes (and decoded frames) vary run to run
        elif (frames.shape[1], frames.shape[2]) != (self._stream.height, self._stream.width):
            raise ValueError(f"frame size {frames.shape[1:3]} != {(self._stream.height, self._stream.width)}")
        for f in frames:
            self._container.mux(self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f),
                                                                               format="rgb24")))
        self.frames += len(frames)

    def close(self) -> Path:
        if self._container is None:
            raise ValueError(f"{self.path}: no frames were written")
        self._container.mux(self._stream.encode())
        self._container.close()
        self._container = None
        with open(self.tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # the encoder may refuse a half-written stream; the file goes anyway
                pass
            self._container = None
        self.tmp.unlink(missing_ok=True)


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int = WAN_FPS, crf: int = 17) -> Path:
    """Write uint8 ``[T, H, W, 3]`` RGB frames as H.264 mp4 (yuv420p), atomically (:class:`Mp4Writer`)."""
    with Mp4Writer(path, fps, crf) as writer:
        writer.write(frames)
    return Path(path)


def probe_mp4(path: str | os.PathLike) -> tuple[int, int, int]:
    """``(frames, height, width)`` of an mp4, decoding it frame by frame without keeping the frames."""
    import av

    n = h = w = 0
    with av.open(str(path)) as container:
        for f in container.decode(video=0):
            n, h, w = n + 1, f.height, f.width
    if not n:
        raise ValueError(f"{path}: no decodable video frames")
    return n, h, w


def read_mp4(path: str | os.PathLike) -> np.ndarray:
    """Decode an mp4 to uint8 ``[T, H, W, 3]`` RGB."""
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path}: no decodable video frames")
    return np.stack(frames)


# ------------------------------------------------------------------------------------------------------------------
# many videos
# ------------------------------------------------------------------------------------------------------------------

def vbench_name(prompt: str, index: int) -> str:
    """VBench's file name for video ``index`` of ``prompt``: ``f"{prompt}-{index}.mp4"`` (the prompt verbatim)."""
    name = f"{prompt}-{index}.mp4"
    if "/" in prompt or "\0" in prompt or len(name.encode()) > 255:
        raise ValueError(f"prompt cannot be a VBench file name (contains '/' or NUL, or is too long): {prompt[:80]!r}")
    return name


def dist_rank_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)`` from the arguments or torchrun's ``RANK`` / ``WORLD_SIZE``."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
    world = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
    if not 0 <= rank < world:
        raise ValueError(f"bad shard: rank {rank} of {world}")
    return rank, world


def _versions() -> dict:
    import diffusers

    import rehyat

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "rehyat": rehyat.__version__}


def generate_videos(
    model, prompts: Sequence[str], out_dir: str | os.PathLike, *, num_frames: int | None = None,
    height: int | None = None, width: int | None = None, seed: int = 0, videos_per_prompt: int = 5,
    naming: Callable[[str, int], str] = vbench_name, mode: str = "parallel",
    num_inference_steps: int | None = None, guidance_scale: float | None = None,
    negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT, max_sequence_length: int | None = None,
    fps: int = WAN_FPS, rank: int | None = None, world_size: int | None = None,
    device: str | torch.device | None = None, torch_dtype: torch.dtype | None = None,
    base_model: str | os.PathLike | None = None, overwrite: bool = False, save_latents: bool = False,
    log: Callable[[str], None] | None = print, convert=None, state_cache: str = "device", progress: bool = False,
) -> list[Path]:
    """Generate ``videos_per_prompt`` videos per prompt into ``out_dir`` (this shard's share); returns their paths.

    Video ``i`` of a prompt uses seed ``seed + i`` and is written as ``out_dir/naming(prompt, i)`` with a sidecar
    ``out_dir/meta/<stem>.json`` (prompt, index, seed, every setting, model description, versions, timing).  Existing
    videos are skipped (resume) unless ``overwrite``; writes are atomic, so an interrupted run leaves no truncated
    mp4.  The model is loaded only if something is left to generate.  ``model``: a ``WanPipeline`` or a spec of
    :func:`load_model`.  Size/step arguments left ``None`` take :func:`model_defaults`.  Each written file is decoded
    back and its frame count and size checked.  ``convert``: a ReHyAtConfig to convert a dense model with
    (untrained phi; see :func:`load_model`).  ``mode="stream"`` appends each finished chunk to the mp4 as it comes
    (:func:`render_stream`; ``state_cache`` = ``"device"`` | ``"host"``, the per-step state cache's place; its size
    is logged before sampling); ``progress`` shows a progress bar (stream: chunks x steps).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    defaults = model_defaults(model)
    num_frames = defaults["num_frames"] if num_frames is None else int(num_frames)
    height = defaults["height"] if height is None else int(height)
    width = defaults["width"] if width is None else int(width)
    steps = defaults["num_inference_steps"] if num_inference_steps is None else int(num_inference_steps)
    guidance = defaults["guidance_scale"] if guidance_scale is None else float(guidance_scale)
    max_seq = defaults["max_sequence_length"] if max_sequence_length is None else int(max_sequence_length)
    check_size(num_frames, height, width)
    rank, world = dist_rank_world(rank, world_size)
    out = Path(out_dir)

    jobs = [(p, i) for p in prompts for i in range(videos_per_prompt)]
    names = [naming(p, i) for p, i in jobs]
    if len(set(names)) != len(names):
        raise ValueError("naming gives the same file name to two videos (duplicate prompts?)")
    mine = [(p, i, out / n) for (p, i), n in list(zip(jobs, names))[rank::world]]
    todo = [j for j in mine if overwrite or not j[2].exists()]
    if log:
        log(f"[rehyat.generate] shard {rank}/{world}: {len(mine)} videos, {len(mine) - len(todo)} already done")
    if todo:
        device = device or default_device()
        pipe = load_model(model, mode=mode, device=device, torch_dtype=torch_dtype, base_model=base_model,
                          convert=convert)
        desc = describe_model(pipe, model)
        # only now: a model that fails to load (or refuses a conversion) leaves no output folders behind
        (out / META_DIR).mkdir(parents=True, exist_ok=True)
        settings = dict(num_frames=num_frames, height=height, width=width, num_inference_steps=steps,
                        guidance_scale=guidance, negative_prompt=negative_prompt, max_sequence_length=max_seq,
                        fps=fps, mode=mode, device=str(device), seed_rule="seed + index", base_seed=seed)
        if mode == "stream":
            settings["state_cache"] = state_cache
        recipe = dict(num_frames=num_frames, height=height, width=width, num_inference_steps=steps,
                      guidance_scale=guidance, negative_prompt=negative_prompt, max_sequence_length=max_seq)
        for n, (prompt, i, path) in enumerate(todo):
            if mode == "stream":
                r = render_stream(pipe, prompt, seed + i, path, fps=fps, state_cache=state_cache,
                                  keep_latents=save_latents, progress=progress, log=log, **recipe)
            else:
                r = render_whole(pipe, prompt, seed + i, path, fps=fps, **recipe)
            got = probe_mp4(path)
            if got != (r.frames, height, width):
                raise RuntimeError(f"{path}: decoded {got} (frames, height, width), wrote {(r.frames, height, width)}")
            meta = dict(file=path.name, prompt=prompt, index=i, seed=seed + i, settings=settings, model=desc,
                        versions=_versions(), generation_seconds=round(r.seconds, 3),
                        first_chunk_written_seconds=round(r.first_chunk_seconds, 3), frames=got[0],
                        shard=[rank, world], time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            if save_latents:
                from safetensors.torch import save_file

                lat = out / META_DIR / f"{path.stem}.latents.safetensors"
                save_file({"latents": r.latents.contiguous()}, str(lat))
                meta["latents_file"] = str(lat.relative_to(out))
            side = out / META_DIR / f"{path.stem}.json"
            side.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
            if log:
                log(f"[rehyat.generate] {n + 1}/{len(todo)} {path.name} ({r.seconds:.1f}s; first frames on disk "
                    f"after {r.first_chunk_seconds:.1f}s)")
    return [p for _, _, p in mine]


@dataclass
class Rendered:
    """One video written to its mp4: ``seconds`` from start to the renamed file, ``first_chunk_seconds`` from start
    to the first frames handed to the mp4 (whole-video modes: all of them, at the end), ``frames`` written, the final
    ``latents`` ``[C, F, h, w]`` (CPU float32; ``None`` when not kept)."""

    seconds: float
    first_chunk_seconds: float
    frames: int
    latents: torch.Tensor | None


def render_whole(pipe, prompt: str, seed: int, path: str | os.PathLike, *, fps: int = WAN_FPS, **recipe) -> Rendered:
    """``parallel`` / ``recurrent``: the whole video through ``WanPipeline``, then written (:func:`write_mp4`)."""
    t0 = time.perf_counter()
    sample = generate_sample(pipe, prompt, seed, fps=fps, **recipe)
    write_mp4(path, sample.frames, fps)
    took = time.perf_counter() - t0
    return Rendered(took, took, int(sample.frames.shape[0]), sample.latents)


def render_stream(pipe, prompt: str, seed: int, path: str | os.PathLike, *, num_frames: int, height: int,
                  width: int, num_inference_steps: int, fps: int = WAN_FPS, state_cache: str = "device",
                  keep_latents: bool = False, progress: bool = False, log: Callable[[str], None] | None = print,
                  **recipe) -> Rendered:
    """``stream``: :func:`rehyat.wan.stream.stream_video` into an :class:`Mp4Writer` — each chunk appended as soon
    as it is decoded, then dropped; the state cache size is logged before sampling; a tqdm bar over chunks x steps
    shows the time to the first written chunk.  ``keep_latents`` collects the final latents (CPU, O(frames))."""
    from tqdm.auto import tqdm

    from rehyat.wan.stream import stream_video

    name = Path(path).name
    bar, chunks, first, parts = None, 0, None, []

    def on_plan(plan):
        nonlocal bar, chunks
        if log:
            log(f"[rehyat.generate] stream {name}: {plan.describe()}")
        chunks = len(plan.chunks)
        bar = tqdm(total=chunks * plan.steps, desc=name, unit="step", disable=not progress, file=sys.stderr,
                   dynamic_ncols=True)

    def on_step(chunk, step):
        bar.update()
        bar.set_postfix_str(f"chunk {chunk + 1}/{chunks}"
                            + (f", first chunk on disk after {first:.1f}s" if first is not None else ""))

    t0 = time.perf_counter()
    try:
        with Mp4Writer(path, fps) as writer:
            for chunk in stream_video(pipe, prompt, seed, num_frames=num_frames, height=height, width=width,
                                      num_inference_steps=num_inference_steps, state_cache=state_cache,
                                      on_plan=on_plan, on_step=on_step, **recipe):
                writer.write(chunk.frames)
                if first is None:
                    first = time.perf_counter() - t0
                    if log:
                        log(f"[rehyat.generate] {name}: first chunk ({chunk.frames.shape[0]} frames) written after "
                            f"{first:.1f}s")
                if keep_latents:
                    parts.append(chunk.latents)
            frames = writer.frames
    finally:
        if bar is not None:
            bar.close()
    return Rendered(time.perf_counter() - t0, first, frames, torch.cat(parts, dim=1) if keep_latents else None)


class WanVideoGenerator:
    """A loaded model with a fixed generation recipe: ``generate(prompt, seed, num_frames, height, width)``.

    Matches the ``VideoGenerator`` protocol of ``evaluation.generation`` (``label``, ``config()``, ``generate``);
    ``generate`` returns a :class:`VideoSample` (``frames`` uint8 [T,H,W,3], ``latents``, ``fps``).
    """

    def __init__(self, model="tiny", *, label: str | None = None, mode: str = "parallel",
                 device: str | torch.device | None = None, torch_dtype: torch.dtype | None = None,
                 base_model: str | os.PathLike | None = None, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT,
                 max_sequence_length: int | None = None, fps: int = WAN_FPS, convert=None):
        defaults = model_defaults(model)
        self.pipe = load_model(model, mode=mode, device=device, torch_dtype=torch_dtype, base_model=base_model,
                               convert=convert)
        self.mode = mode
        self.spec = model if isinstance(model, str) else None
        self.label = label or (Path(model).name if isinstance(model, (str, os.PathLike)) else "wan")
        self.recipe = dict(
            num_inference_steps=defaults["num_inference_steps"] if num_inference_steps is None else num_inference_steps,
            guidance_scale=defaults["guidance_scale"] if guidance_scale is None else guidance_scale,
            negative_prompt=negative_prompt,
            max_sequence_length=defaults["max_sequence_length"] if max_sequence_length is None else max_sequence_length,
            fps=fps, stream=mode == "stream",
        )

    def config(self) -> dict:
        return {"model": describe_model(self.pipe, self.spec), "recipe": self.recipe, "versions": _versions()}

    def generate(self, prompt: str, seed: int, num_frames: int, height: int, width: int) -> VideoSample:
        return generate_sample(self.pipe, prompt, seed, num_frames=num_frames, height=height, width=width,
                               **self.recipe)


# ------------------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------------------

def read_prompts(path: str | os.PathLike) -> list[str]:
    """Prompts from a text file (one per line, blank lines ignored) or JSON (list of strings, or of objects with
    ``prompt_en`` / ``prompt`` as in VBench's ``*_full_info.json``)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        items = json.loads(text)
        out = []
        for it in items:
            out.append(it if isinstance(it, str) else it.get("prompt_en") or it["prompt"])
        return out
    return [line.strip() for line in text.splitlines() if line.strip()]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m rehyat.generate", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="tiny | tiny-softmax | ReHyAt checkpoint dir | Wan diffusers dir")
    ap.add_argument("--base", default=None, help="base Wan diffusers folder for a ReHyAt checkpoint")
    ap.add_argument("--prompts", default=None, help="prompt file (.txt one per line, or .json)")
    ap.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable; added after --prompts)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--num-frames", type=int, default=None)
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0, help="video i of every prompt uses seed + i")
    ap.add_argument("--videos-per-prompt", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (Wan: 50; tiny: 2)")
    ap.add_argument("--guidance-scale", type=float, default=None)
    ap.add_argument("--negative-prompt", default=DEFAULT_NEGATIVE_PROMPT)
    ap.add_argument("--max-sequence-length", type=int, default=None)
    ap.add_argument("--mode", choices=MODES, default="parallel",
                    help="parallel: diffusers' forward; recurrent: every transformer call swept chunk by chunk "
                         "(constant memory inside the transformer); stream: chunk by chunk through all steps, "
                         "decoded and appended to the mp4 as it goes (whole generation in constant memory; needs "
                         "every block converted, causal — the long-video preset)")
    ap.add_argument("--state-cache", choices=("device", "host"), default="device",
                    help="stream: where the per-step recurrent state cache lives (host = CPU memory, moved to the "
                         "device per chunk and step); its size is printed before sampling")
    ap.add_argument("--device", default=None, help="default: cuda:$LOCAL_RANK if available, else cpu")
    ap.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                    help="transformer/text-encoder dtype (default: bfloat16 on CUDA, float32 on CPU)")
    ap.add_argument("--fps", type=int, default=WAN_FPS)
    from rehyat.config import add_config_arguments

    add_config_arguments(ap, title="convert a dense model on the fly (untrained phi: speed / pipeline checks only)")
    from rehyat.cli import add_debug_flag

    add_debug_flag(ap)
    ap.add_argument("--save-latents", action="store_true", help="also store final latents in OUT/meta/")
    ap.add_argument("--overwrite", action="store_true", help="regenerate existing videos")
    return ap


def main(argv: Iterable[str] | None = None) -> int:
    from rehyat.cli import run_cli

    args = build_parser().parse_args(None if argv is None else list(argv))
    return run_cli(lambda: _main(args), debug=args.debug, prog="rehyat.generate")


def _main(args) -> int:
    prompts = (read_prompts(args.prompts) if args.prompts else []) + list(args.prompt)
    if not prompts:
        print("no prompts: pass --prompts FILE and/or --prompt TEXT", file=sys.stderr)
        return 2
    dtype = getattr(torch, args.dtype) if args.dtype else None
    from rehyat.config import CLI_FIELDS, config_from_arguments

    wants_conversion = args.preset is not None or any(getattr(args, f) is not None for f in CLI_FIELDS)
    convert = config_from_arguments(args) if wants_conversion else None
    paths = generate_videos(
        args.model, prompts, args.out, num_frames=args.num_frames, height=args.height, width=args.width,
        seed=args.seed, videos_per_prompt=args.videos_per_prompt, mode=args.mode, num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale, negative_prompt=args.negative_prompt,
        max_sequence_length=args.max_sequence_length, fps=args.fps, device=args.device, torch_dtype=dtype,
        base_model=args.base, overwrite=args.overwrite, save_latents=args.save_latents, convert=convert,
        state_cache=args.state_cache, progress=True)
    print(f"[rehyat.generate] done: {len(paths)} videos in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
