"""Official prompt suites and file naming, read from the installed ``vbench`` / ``vbench2`` package data.

The prompt JSON files are located with ``importlib.util.find_spec`` (which does *not* execute the package — ``vbench2``'s
``__init__`` imports gdown, scenedetect, … that are not installed next to diffusers 0.42).  Nothing is copied into this
repository.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

VIDEO_EXTS = (".mp4", ".gif")
V1_VIDEOS_PER_PROMPT = 5
V1_TEMPORAL_FLICKERING_SAMPLES = 25
V2_VIDEOS_PER_PROMPT = 3
V2_DIVERSITY_VIDEOS = 20
V2_NAME_CHARS = 180
_NUM_SUFFIX = re.compile(r"-(\d+)$")


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"package {package!r} is not installed; `pip install --no-deps vbench==0.1.5 vbench2==0.1.1` "
            "(see docs/evaluation.md)")
    return Path(list(spec.submodule_search_locations)[0])


def full_info_path(suite: str) -> Path:
    if suite == "vbench":
        return package_dir("vbench") / "VBench_full_info.json"
    if suite == "vbench2":
        return package_dir("vbench2") / "VBench2_full_info.json"
    raise ValueError(suite)


@lru_cache(maxsize=4)
def _load(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def load_full_info(suite: str) -> list[dict]:
    """The upstream list of ``{"prompt_en", "dimension": [...], "auxiliary_info"?}`` (a fresh deep copy)."""
    return json.loads(json.dumps(_load(str(full_info_path(suite)))))


@dataclass(frozen=True)
class VideoSlot:
    """One video the official protocol expects."""

    prompt: str
    index: int
    filename: str
    dimensions: tuple[str, ...]
    entry: int  # index into the full-info list


def v1_filename(prompt: str, index: int, ext: str = ".mp4") -> str:
    return f"{prompt}-{index}{ext}"


def v2_filename(prompt: str, index: int, ext: str = ".mp4") -> str:
    return f"{prompt[:V2_NAME_CHARS]}-{index}{ext}"


def v2_num_videos(dimensions) -> int:
    # upstream: `if prompt_dict["dimension"][0] == 'Diversity': num = 20 else 3`
    return V2_DIVERSITY_VIDEOS if list(dimensions)[0] == "Diversity" else V2_VIDEOS_PER_PROMPT


def v1_slots(dimensions: list[str], *, sampling: bool = False, ext: str = ".mp4") -> list[VideoSlot]:
    """Videos VBench standard mode reads for ``dimensions``.

    ``sampling=True`` gives the *generation* set: temporal_flickering prompts get 25 samples (the static filter then
    keeps up to 5 as ``prompt-0..4``).
    """
    out: dict[str, VideoSlot] = {}
    for i, e in enumerate(_load(str(full_info_path("vbench")))):
        dims = tuple(d for d in e["dimension"] if d in dimensions)
        if not dims:
            continue
        n = V1_VIDEOS_PER_PROMPT
        if sampling and "temporal_flickering" in dims:
            n = V1_TEMPORAL_FLICKERING_SAMPLES
        for k in range(n):
            name = v1_filename(e["prompt_en"], k, ext)
            if name in out:  # prompts repeated in the JSON (2 duplicates) share the files, as upstream
                prev = out[name]
                out[name] = VideoSlot(prev.prompt, prev.index, name, tuple(dict.fromkeys(prev.dimensions + dims)),
                                      prev.entry)
            else:
                out[name] = VideoSlot(e["prompt_en"], k, name, dims, i)
    return list(out.values())


def v2_slots(dimensions: list[str], ext: str = ".mp4") -> list[VideoSlot]:
    """Videos VBench-2.0 standard mode reads, one entry per (dimension, file) — upstream keeps one folder per dimension."""
    out = []
    for i, e in enumerate(_load(str(full_info_path("vbench2")))):
        dims = [d for d in e["dimension"] if d in dimensions]
        for d in dims:
            for k in range(v2_num_videos(e["dimension"])):
                out.append(VideoSlot(e["prompt_en"], k, v2_filename(e["prompt_en"], k, ext), (d,), i))
    return out


def prompt_from_filename(name: str) -> str:
    """Upstream ``get_prompt_from_filename``: strip the extension and a trailing ``-N``."""
    stem = Path(name).stem
    return _NUM_SUFFIX.sub("", stem)


def parse_indexed_name(name: str) -> tuple[str, int] | None:
    stem, ext = os.path.splitext(name)
    if ext.lower() not in VIDEO_EXTS:
        return None
    m = _NUM_SUFFIX.search(stem)
    if not m or not stem[: m.start()]:
        return None
    return stem[: m.start()], int(m.group(1))
