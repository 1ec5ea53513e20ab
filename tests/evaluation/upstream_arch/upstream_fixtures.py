"""Helpers of the ``upstream_arch`` tests (fixtures: conftest.py): the session's random-initialised checkpoints
(:class:`ArchCache`, built lazily from upstream_nets), short real mp4 videos named after official prompts, the harness
CLI and vbench's own ``evaluate`` as the reference, and the equality check.

Scores computed here are pipeline checks of random networks; they are never quality numbers and never reach a report.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import upstream_nets as N

ROOT_VARS = ("VBENCH_CACHE_DIR", "VBENCH2_CACHE_DIR", "TORCH_HOME", "HF_HOME")


class ArchCache:
    """Checkpoint roots of one test session; each artifact is built on first use."""

    def __init__(self, base: Path):
        self.roots = {v: base / v.lower() for v in ROOT_VARS}
        for p in self.roots.values():
            p.mkdir(parents=True, exist_ok=True)
        self.vb, self.th = self.roots["VBENCH_CACHE_DIR"], self.roots["TORCH_HOME"]
        self._built: set[str] = set()

    def ensure(self, *names: str) -> None:
        builders = {
            "raft": lambda: N.raft(self.vb),
            "amt": lambda: N.amt_s(self.vb),
            "clip_b32": lambda: N.clip_b32(self.vb),
            "clip_l14": lambda: (N.clip_l14(self.vb), N.aesthetic_head(self.vb)),
            "musiq": lambda: N.musiq(self.vb),
            "umt": lambda: N.umt(self.vb, boost_labels=HUMAN_ACTION_MATCH),
            "viclip": lambda: N.viclip(self.vb),
            "dino": lambda: N.dino(self.vb, self.th),
            "vgg19": lambda: N.vgg19(self.th),
            "cotracker2": lambda: N.cotracker2(self.th),
        }
        for name in names:
            if name not in self._built:
                builders[name]()
                self._built.add(name)


# the Kinetics-400 class whose head bias the random UMT raises (see upstream_nets.umt)
HUMAN_ACTION_MATCH = ("riding a bike",)


# ------------------------------------------------------------------------------------------------------ videos
def clip_frames(seed: int, n_frames: int, size: int = 64, motion: int = 2) -> np.ndarray:
    """uint8 [T, size, size, 3]: a seeded texture translating by ``motion`` px per frame, plus mild noise."""
    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 256, (size // 8 + 2, size // 8 + 2, 3)).astype(np.float32)
    tex = np.kron(tex, np.ones((8, 8, 1), np.float32))
    out = []
    for t in range(n_frames):
        shifted = np.roll(tex, shift=(t * motion, t * motion // 2), axis=(0, 1))[:size, :size]
        out.append(np.clip(shifted + rng.normal(0, 4, shifted.shape), 0, 255))
    return np.stack(out).astype(np.uint8)


def write_clips(folder: Path, names: list[str], n_frames: int, size: int = 64, fps: int = 8, seed: int = 0,
                motion: int = 2) -> list[Path]:
    from evaluation.videos import write_video

    folder.mkdir(parents=True, exist_ok=True)
    return [write_video(folder / n, clip_frames(seed + i, n_frames, size, motion), fps=fps) for i, n in enumerate(names)]


def official_names(dimension: str, n_prompts: int, per_prompt: int, *, skip: int = 0,
                   where=lambda entry: True) -> list[str]:
    """File names ``{prompt}-{i}.mp4`` of the first ``n_prompts`` official prompts of ``dimension`` (after ``skip``)."""
    from evaluation import prompts as P

    prompts = [e["prompt_en"] for e in P.load_full_info("vbench") if dimension in e["dimension"] and where(e)]
    return [P.v1_filename(p, i) for p in prompts[skip:skip + n_prompts] for i in range(per_prompt)]


# ------------------------------------------------------------------------------------------------------ references
def vbench_evaluate(videos: Path, out: Path, dimensions: list[str], mode: str = "vbench_standard") -> dict:
    """vbench's own ``VBench('cpu', ...).evaluate(..., local=True)`` on ``videos``; its ``*_eval_results.json``."""
    import vbench
    from vbench import VBench

    from evaluation.upstream_worker import install_import_compat

    install_import_compat()  # import-time names removed from numpy 2 / torchvision (never called)
    full_info = os.path.join(os.path.dirname(vbench.__file__), "VBench_full_info.json")
    VBench("cpu", full_info, str(out)).evaluate(videos_path=str(videos), name="ref", dimension_list=dimensions,
                                                 local=True, mode=mode)
    return json.loads((out / "ref_eval_results.json").read_text())


def harness(videos: Path, out: Path, dimensions: list[str], *extra: str, suite: str = "vbench") -> int:
    from evaluation.run import main

    return main(["--suite", suite, "--videos", str(videos), "--dimensions", *dimensions, "--out", str(out),
                 "--label", "m", "--quiet", "--no-verify-hashes", *extra])


def assert_equal_to_reference(run_dir: Path, dimension: str, reference: dict, *, suite: str = "vbench",
                              n_videos: int | None = None, prefix: str = "") -> tuple[float, dict]:
    """Per-video scores bit-identical, aggregate equal (exactly rounded mean vs np.mean: equal for <= 2 videos, else
    within 1e-14).  Returns (aggregate, per-video)."""
    from evaluation.store import load_records

    ref_score, ref_videos = reference[dimension]
    df = load_records(run_dir)
    df = df[(df.suite == suite) & (df.dimension == dimension)]
    agg = df[df.video.isna()].iloc[0]
    assert agg.status in ("ok", "non_standard"), agg.message
    per = {v: s for v, s in df[df.video.notna()].set_index("video")["score"].items()}
    ref_per = {prefix + os.path.basename(v["video_path"]): float(v["video_results"]) for v in ref_videos}
    assert per == ref_per, (per, ref_per)
    if n_videos is not None:
        assert len(per) == n_videos
    if len(per) <= 2:
        assert agg.score == float(ref_score), (agg.score, ref_score)
    else:
        assert agg.score == pytest.approx(float(ref_score), rel=1e-14, abs=0)
    return float(agg.score), per
