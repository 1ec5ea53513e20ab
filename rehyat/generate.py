"""Text-to-video generation with Wan / ReHyAt: library API and CLI (``python -m rehyat.generate``).

Library::

    from rehyat.generate import generate_videos, generate_sample, WanVideoGenerator
    paths = generate_videos("tiny", ["a cat"], "out/", num_frames=17, height=32, width=32, videos_per_prompt=2)
    sample = generate_sample(pipe, "a cat", seed=0, num_frames=17, height=32, width=32)  # frames + latents

CLI (VBench layout ``{prompt}-{i}.mp4``; seed of video i = ``--seed + i``; resumable; shard with torchrun)::

    python -m rehyat.generate --model PATH --prompts prompts.txt --out videos/ --num-frames 81 --height 480 \
        --width 832 --seed 0 --videos-per-prompt 5 [--mode recurrent]
    torchrun --nproc_per_node 8 -m rehyat.generate --model PATH ...

``--model``: ``tiny`` (built-in tiny random ReHyAt model; the default), ``tiny-softmax`` (its softmax base), a converted
pipeline folder (``model_index.json`` naming ``ReHyAtWanTransformer3DModel``), a ReHyAt transformer folder (either
checkpoint layout; base Wan folder from the checkpoint, ``--base`` or ``$REHYAT_WAN_BASE``), or a plain diffusers Wan
folder (softmax baseline).  ``--preset NAME`` (and the ReHyAt flags ``--blocks``, ``--chunk-frames``, ...) convert a
dense model on the fly with **freshly initialised, untrained** feature maps — for speed / memory / pipeline checks,
never for quality.  Nothing is downloaded.
"""

from __future__ import annotations

import argparse
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

    from rehyat.wan.convert import is_rehyat, set_rehyat_mode

    device = device or default_device()
    if isinstance(model, WanPipeline):
        if is_rehyat(model.transformer):
            set_rehyat_mode(model.transformer, mode)
        elif mode != "parallel":
            raise ValueError(f"mode={mode!r} needs a ReHyAt transformer")
        return model.to(device)
    if isinstance(model, str) and model in TINY_NAMES:
        from rehyat.tiny import build_tiny_pipeline

        if not TINY_NAMES[model] and mode != "parallel":
            raise ValueError("tiny-softmax has no recurrent mode")
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
    return (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def generate_sample(pipe, prompt: str, seed: int, *, num_frames: int, height: int, width: int,
                    num_inference_steps: int = 50, guidance_scale: float = 5.0,
                    negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT, max_sequence_length: int = 512,
                    fps: int = WAN_FPS) -> VideoSample:
    """Generate one video with ``WanPipeline.__call__``; returns decoded frames and the final latents.

    The initial noise comes from a CPU ``torch.Generator`` seeded with ``seed``, so a (prompt, seed) pair gives the
    same starting latents on any device.
    """
    check_size(num_frames, height, width)
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

def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int = WAN_FPS, crf: int = 17) -> Path:
    """Write uint8 ``[T, H, W, 3]`` RGB frames as H.264 mp4 (yuv420p), atomically (temp file + rename)."""
    import av

    path = Path(path)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 [T, H, W, 3] frames, got {frames.dtype} {frames.shape}")
    tmp = path.with_name(f".{path.stem}.partial{os.getpid()}.mp4")
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": str(crf)}
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        container.mux(stream.encode())
    os.replace(tmp, path)
    return path


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
    log: Callable[[str], None] | None = print, convert=None,
) -> list[Path]:
    """Generate ``videos_per_prompt`` videos per prompt into ``out_dir`` (this shard's share); returns their paths.

    Video ``i`` of a prompt uses seed ``seed + i`` and is written as ``out_dir/naming(prompt, i)`` with a sidecar
    ``out_dir/meta/<stem>.json`` (prompt, index, seed, every setting, model description, versions, timing).  Existing
    videos are skipped (resume) unless ``overwrite``; writes are atomic, so an interrupted run leaves no truncated
    mp4.  The model is loaded only if something is left to generate.  ``model``: a ``WanPipeline`` or a spec of
    :func:`load_model`.  Size/step arguments left ``None`` take :func:`model_defaults`.  Each written file is decoded
    back and its frame count and size checked.  ``convert``: a ReHyAtConfig to convert a dense model with
    (untrained phi; see :func:`load_model`).
    """
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
    (out / META_DIR).mkdir(parents=True, exist_ok=True)

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
        settings = dict(num_frames=num_frames, height=height, width=width, num_inference_steps=steps,
                        guidance_scale=guidance, negative_prompt=negative_prompt, max_sequence_length=max_seq,
                        fps=fps, mode=mode, device=str(device), seed_rule="seed + index", base_seed=seed)
        for n, (prompt, i, path) in enumerate(todo):
            t0 = time.perf_counter()
            sample = generate_sample(pipe, prompt, seed + i, num_frames=num_frames, height=height, width=width,
                                     num_inference_steps=steps, guidance_scale=guidance,
                                     negative_prompt=negative_prompt, max_sequence_length=max_seq, fps=fps)
            elapsed = time.perf_counter() - t0
            write_mp4(path, sample.frames, fps)
            decoded = read_mp4(path)
            if decoded.shape != sample.frames.shape:
                raise RuntimeError(f"{path}: decoded {decoded.shape}, wrote {sample.frames.shape}")
            meta = dict(file=path.name, prompt=prompt, index=i, seed=seed + i, settings=settings, model=desc,
                        versions=_versions(), generation_seconds=round(elapsed, 3), frames=int(decoded.shape[0]),
                        shard=[rank, world], time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            if save_latents:
                from safetensors.torch import save_file

                lat = out / META_DIR / f"{path.stem}.latents.safetensors"
                save_file({"latents": sample.latents.contiguous()}, str(lat))
                meta["latents_file"] = str(lat.relative_to(out))
            side = out / META_DIR / f"{path.stem}.json"
            side.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
            if log:
                log(f"[rehyat.generate] {n + 1}/{len(todo)} {path.name} ({elapsed:.1f}s)")
    return [p for _, _, p in mine]


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
        self.spec = model if isinstance(model, str) else None
        self.label = label or (Path(model).name if isinstance(model, (str, os.PathLike)) else "wan")
        self.recipe = dict(
            num_inference_steps=defaults["num_inference_steps"] if num_inference_steps is None else num_inference_steps,
            guidance_scale=defaults["guidance_scale"] if guidance_scale is None else guidance_scale,
            negative_prompt=negative_prompt,
            max_sequence_length=defaults["max_sequence_length"] if max_sequence_length is None else max_sequence_length,
            fps=fps,
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
    ap.add_argument("--mode", choices=("parallel", "recurrent"), default="parallel")
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
        base_model=args.base, overwrite=args.overwrite, save_latents=args.save_latents, convert=convert)
    print(f"[rehyat.generate] done: {len(paths)} videos in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
