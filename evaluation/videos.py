"""Video files: validation before scoring (per-file errors instead of crashes) and atomic mp4 writing."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.prompts import VIDEO_EXTS


@dataclass
class VideoCheck:
    path: str
    ok: bool
    n_frames: int = 0
    height: int = 0
    width: int = 0
    fps: float | None = None
    message: str | None = None


def read_frames_cv2(path: str | os.PathLike) -> list[np.ndarray]:
    """Decode every frame with OpenCV — the reader VBench's temporal_flickering/static filter use (BGR, uint8)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while cap.isOpened():
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    return frames


# RAFT (dynamic_degree, the static filter) pads frames to a multiple of 8 and builds a 4-level correlation pyramid on
# the 1/8-scale features by 2x average pooling; its sampler divides by (side - 1) of every level, so a level of 1 px
# (padded side < 128, i.e. a side < 121 px) gives NaN flows -- upstream then silently calls the video static / not
# dynamic.  Such files get a per-file error instead.
RAFT_MIN_SIDE = 121


def check_video(path: str | os.PathLike, min_frames: int = 2, min_side: int = 0, min_side_why: str = "") -> VideoCheck:
    """Decode ``path`` fully; report unreadable/empty/too-short/too-small files instead of raising."""
    p = Path(path)
    if not p.is_file():
        return VideoCheck(str(p), False, message="file not found")
    if p.suffix.lower() not in VIDEO_EXTS:
        return VideoCheck(str(p), False, message=f"unsupported extension {p.suffix!r} (expected one of {VIDEO_EXTS})")
    if p.stat().st_size == 0:
        return VideoCheck(str(p), False, message="empty file")
    try:
        if p.suffix.lower() == ".gif":
            from PIL import Image, ImageSequence

            with Image.open(p) as im:
                frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]
            fps = None
        else:
            import cv2

            frames = read_frames_cv2(p)
            cap = cv2.VideoCapture(str(p))
            fps = float(cap.get(cv2.CAP_PROP_FPS)) or None
            cap.release()
    except Exception as exc:  # decoder errors vary by backend
        return VideoCheck(str(p), False, message=f"unreadable: {type(exc).__name__}: {exc}")
    if not frames:
        return VideoCheck(str(p), False, message="unreadable or corrupt: no frame could be decoded")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        return VideoCheck(str(p), False, len(frames), message=f"inconsistent frame shapes {sorted(shapes)}")
    h, w = frames[0].shape[:2]
    if len(frames) < min_frames:
        return VideoCheck(str(p), False, len(frames), h, w, fps,
                          message=f"too short: {len(frames)} frame(s) decoded, at least {min_frames} needed")
    if min(h, w) < min_side:
        return VideoCheck(str(p), False, len(frames), h, w, fps,
                          message=f"too small: {w}x{h} px, the network needs a side of at least {min_side} px"
                                  + (f" ({min_side_why})" if min_side_why else ""))
    return VideoCheck(str(p), True, len(frames), h, w, fps)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 8, crf: int = 18) -> Path:
    """Write ``frames`` (uint8 [T,H,W,3] RGB) as H.264 mp4, atomically (temp file + rename), so a killed writer never
    leaves a partial file under the final name."""
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 [T,H,W,3], got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:  # yuv420p needs even sides
        frames = frames[:, : h - h % 2, : w - w % 2]
        h, w = frames.shape[1:3]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".mp4", dir=path.parent)
    os.close(fd)
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": str(crf), "preset": "medium"}
            stream.thread_count = 1
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def list_videos(directory: str | os.PathLike) -> list[str]:
    """All regular files in ``directory`` (not recursive, hidden/temp files excluded), sorted."""
    d = Path(directory)
    return sorted(p.name for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
