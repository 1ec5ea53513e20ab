"""The seam between evaluation and the model side: a small ``VideoGenerator`` protocol, loaders, and resumable,
torchrun-shardable generation of the official video sets.

Any object with ``label``, ``config()`` and ``generate(prompt, seed, num_frames, height, width)`` works; ``--model``
specs are resolved by :func:`load_generator`:

* ``module.path:callable`` — ``callable(device=..., **options)`` returns a generator (tests use this);
* a name registered in :data:`GENERATOR_FACTORIES`;
* anything else goes to ``rehyat.generate.WanVideoGenerator`` through :mod:`evaluation.rehyat_adapter`: ``tiny``
  (built-in tiny random ReHyAt model), ``tiny-softmax`` (its softmax teacher), a ReHyAt checkpoint folder or a diffusers
  Wan folder, optionally with ``@recurrent``.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

import numpy as np


@dataclass
class GenerationResult:
    frames: np.ndarray  # uint8 [T, H, W, 3], RGB
    latents: Any = None  # torch.Tensor of the final (pre-VAE-decode) latents, or None
    fps: int = 16


@runtime_checkable
class VideoGenerator(Protocol):
    label: str

    def config(self) -> dict:  # pragma: no cover - protocol
        """JSON-serialisable description (architecture, attention kind, dtype, steps …) for the config hash."""

    def generate(self, prompt: str, seed: int, num_frames: int, height: int, width: int) -> GenerationResult:
        ...  # pragma: no cover - protocol


def config_hash(config: dict) -> str:
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


GENERATOR_FACTORIES: dict[str, Callable[..., VideoGenerator]] = {}


def register_generator(name: str):
    def deco(fn):
        prev = GENERATOR_FACTORIES.get(name)
        if prev is not None and (prev.__module__, prev.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"generator {name!r} is already registered (by {prev.__module__}.{prev.__qualname__})")
        GENERATOR_FACTORIES[name] = fn
        return fn

    return deco


def load_generator(spec: str, *, device: str = "cpu", label: str | None = None, **options) -> VideoGenerator:
    if ":" in spec and not os.path.exists(spec):
        mod_name, fn_name = spec.split(":", 1)
        factory = getattr(importlib.import_module(mod_name), fn_name)
        gen = factory(device=device, **options)
    elif spec in GENERATOR_FACTORIES:
        gen = GENERATOR_FACTORIES[spec](device=device, **options)
    else:
        gen = _rehyat_factory(spec, device=device, **options)
    if label:
        gen.label = label
    if not isinstance(gen, VideoGenerator):
        raise TypeError(f"{spec!r} did not produce a VideoGenerator (needs label, config(), generate())")
    return gen


def rehyat_available() -> bool:
    try:
        return importlib.util.find_spec("rehyat.generate") is not None
    except (ImportError, ValueError):
        return False


def _rehyat_factory(spec: str, *, device: str = "cpu", **options) -> VideoGenerator:
    """``rehyat.generate.WanVideoGenerator`` through :mod:`evaluation.rehyat_adapter`."""
    if not rehyat_available():
        raise ModuleNotFoundError(
            f"cannot load model {spec!r}: rehyat.generate is not available in this checkout. Pass a generator as "
            "'module:factory' or install the model package.")
    from evaluation import rehyat_adapter

    return rehyat_adapter.load(spec, device=device, **options)


# ------------------------------------------------------------------------------------------ set generation
@dataclass(frozen=True)
class GenJob:
    prompt: str
    seed: int
    filename: str  # relative to the output folder (may contain one sub-folder level, e.g. VBench-2.0 dimension)


def shard_info() -> tuple[int, int]:
    """(rank, world_size) from torchrun's environment (1 process otherwise)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def generate_set(gen: VideoGenerator, jobs: list[GenJob], out_dir: str | os.PathLike, *, num_frames: int, height: int,
                 width: int, fps: int | None = None, rank: int | None = None, world_size: int | None = None,
                 progress: Callable[[Iterable], Iterable] | None = None, reuse_identical: bool = True) -> dict:
    """Generate every job of this shard whose file does not exist yet; resumable (atomic writes, skip existing).

    Seeds and settings of each written file are appended to ``<out_dir>.gen/generation.rank{r}.jsonl`` (the provenance
    of the set; kept *beside* the video folder because upstream VBench takes the extension of the first file it lists
    and other files in the folder would break it).  ``reuse_identical``: a job with the same (prompt, seed) as an already written file (VBench-2.0 reuses
    prompts across dimension folders) is copied instead of regenerated.
    """
    from evaluation.videos import check_video, write_video

    r0, w0 = shard_info()
    rank = r0 if rank is None else rank
    world_size = w0 if world_size is None else world_size
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = generation_log_dir(out) / f"generation.rank{rank}.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    mine = [j for i, j in enumerate(jobs) if i % world_size == rank]
    done_by_key: dict[tuple, Path] = {}
    written = skipped = copied = 0
    cfg_hash = config_hash(gen.config())
    it = progress(mine) if progress else mine
    for job in it:
        target = out / job.filename
        key = (job.prompt, job.seed)
        if target.exists() and check_video(target).ok:
            skipped += 1
            done_by_key.setdefault(key, target)
            continue
        entry = {"file": job.filename, "prompt": job.prompt, "seed": job.seed, "model": gen.label,
                 "config_hash": cfg_hash, "num_frames": num_frames, "height": height, "width": width}
        if reuse_identical and key in done_by_key:
            import shutil

            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(".tmp-copy-" + target.name)
            shutil.copyfile(done_by_key[key], tmp)
            os.replace(tmp, target)
            copied += 1
            entry["copied_from"] = str(done_by_key[key].relative_to(out))
        else:
            res = gen.generate(job.prompt, job.seed, num_frames, height, width)
            write_video(target, res.frames, fps=fps or res.fps)
            done_by_key[key] = target
            written += 1
            entry["fps"] = fps or res.fps
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    return {"rank": rank, "world_size": world_size, "jobs": len(mine), "written": written, "skipped": skipped,
            "copied": copied}


def generation_log_dir(out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir).resolve()
    return out.parent / (out.name + ".gen")


def read_generation_log(out_dir: str | os.PathLike) -> dict[str, dict]:
    """filename -> generation entry (seed, model, config hash, …), merged over all ranks."""
    res: dict[str, dict] = {}
    for p in sorted(generation_log_dir(out_dir).glob("generation.rank*.jsonl")):
        with open(p, "rb") as fh:
            for raw in fh:
                if not raw.endswith(b"\n"):
                    continue
                try:
                    e = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                res[e["file"]] = e
    return res


DEFAULT_SETTINGS = {"num_frames": 17, "height": 64, "width": 64, "fps": 8}


def gen_settings(args, gen) -> dict:
    """num_frames/height/width/fps: CLI value, else the generator's ``defaults`` dict, else :data:`DEFAULT_SETTINGS`."""
    own = dict(getattr(gen, "defaults", {}) or {})
    return {k: (getattr(args, k, None) or own.get(k) or v) for k, v in DEFAULT_SETTINGS.items()}
