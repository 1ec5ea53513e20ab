"""Test helpers: tiny WebM videos (PyAV, VP8) and study files in tmp_path."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import yaml

# Distinctive names: any occurrence in what the browser receives is a blinding leak.
MODEL_NAMES = ("ModelSecretAlpha", "ModelSecretBeta", "ModelSecretGamma")


def make_webm(path: Path, shade: int, frames: int = 6, width: int = 64, height: int = 48) -> Path:
    """A tiny VP8 WebM whose frames are a moving gradient with base brightness ``shade``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        x = np.arange(width, dtype=np.int64)
        for i in range(frames):
            img = np.empty((height, width, 3), np.uint8)
            img[..., 0] = (shade + x * 2 + i * 10) % 256
            img[..., 1] = shade
            img[..., 2] = (255 - shade + i * 20) % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_tagged_video(path: Path, container_tags: dict | None = None, stream_tags: dict | None = None,
                      fmt: str = "webm", codec: str = "libvpx") -> Path:
    """A 3-frame 32x32 video with the given container and stream metadata tags."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as c:
        c.metadata.update(container_tags or {})
        s = c.add_stream(codec, rate=8)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        s.metadata.update(stream_tags or {})
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def write_study(root: Path, *, models=MODEL_NAMES[:2], n_prompts=4, quota=4, repeats=1, n_gold=1,
                criteria=("visual_quality", "overall"), fmt="yaml", extra: dict | None = None,
                frames: int = 6) -> Path:
    """Videos under ``root/videos/<model>/<prompt>.webm`` (folder names carry model names) and a study file;
    ``frames`` per video at 8 fps (gold "bad" videos have half as many)."""
    prompts = [{"id": f"p{i}", "text": f"A calm scene number {i}"} for i in range(n_prompts)]
    for m, model in enumerate(models):
        for i, p in enumerate(prompts):
            make_webm(root / "videos" / model / f"{p['id']}.webm", shade=(40 * m + 17 * i) % 200, frames=frames)
    gold = []
    for g in range(n_gold):
        make_webm(root / "gold" / f"good{g}.webm", shade=120 + g, frames=frames)
        make_webm(root / "gold" / f"bad{g}.webm", shade=5 + g, frames=max(3, frames // 2))
        gold.append({"id": f"g{g}", "prompt": f"Attention check {g}: a red ball", "video_a": f"gold/good{g}.webm",
                     "video_b": f"gold/bad{g}.webm", "answer": "a"})
    data = {
        "name": "test-study",
        "seed": 7,
        "models": [{"name": m, "folder": f"videos/{m}"} for m in models],
        "prompts": prompts,
        "criteria": list(criteria),
        "quota": quota,
        "repeats": repeats,
        "gold": gold,
        "exclusion": {"min_gold_accuracy": 0.75},
        "storage": {"url": "sqlite:///votes.sqlite"},
        "admin_password_env": "HS_TEST_ADMIN_PW",
    }
    data.update(extra or {})
    path = root / f"study.{fmt}"
    if fmt == "yaml":
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    elif fmt == "json":
        import json
        path.write_text(json.dumps(data))
    else:
        raise ValueError(fmt)
    return path
