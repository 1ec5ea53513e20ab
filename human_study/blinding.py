"""Blinding helpers: opaque ids, neutral media, and leak checks.

Model identity never reaches the browser. The app sends video *bytes* (Streamlit serves them at a content-hashed
``/media/<hash>.<ext>`` URL, never a file name), neutral labels ("Left video" / "Right video"), opaque item ids
(HMAC of a per-study secret) and the prompt text only. :func:`find_leaks` is the check used by the tests and by
``python -m human_study validate``, which also scans the texts shown to raters and each video's container and
stream metadata (a generator or muxer may write a model name into ``title``, ``comment``, ``encoder`` or a
``handler_name`` tag; the browser can read those). It does not search the compressed stream: the bytes of an
encoded frame spell any short name now and then ("Wan" in a 12 MB mp4), which says nothing about the video.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from .config import Study

#: MIME type by video file extension (what ``st.video`` is told).
MIME_TYPES: dict[str, str] = {
    ".webm": "video/webm",
    ".mp4": "video/mp4",
    ".mov": "video/mp4",
    ".ogv": "video/ogg",
    ".ogg": "video/ogg",
    ".mkv": "video/webm",
}


def new_secret() -> str:
    """A fresh random study secret (hex)."""
    return secrets.token_hex(32)


def opaque_id(secret: str, *parts: object, length: int = 16) -> str:
    """A stable id that reveals nothing about ``parts`` without ``secret`` (HMAC-SHA256, hex, ``length`` chars)."""
    msg = "\x1f".join(map(str, parts)).encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()[:length]


def mime_type(path: Path) -> str:
    """The MIME type of a video file; unknown extensions are an error (the browser would not play them)."""
    try:
        return MIME_TYPES[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"unsupported video type {path.suffix!r} ({path.name}); use one of {sorted(MIME_TYPES)}")


def find_leaks(blob: str | bytes, names: Iterable[str]) -> list[str]:
    """The names that occur in ``blob`` (case-insensitive)."""
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    low = text.lower()
    return [n for n in names if n and n.lower() in low]


def video_metadata(path: Path) -> dict[str, str]:
    """Every metadata tag of a video: container tags, each stream's tags (incl. attachments' file names) and
    chapter titles, keyed ``container title``, ``stream 0 handler_name``, ``chapter 1 title``, ...

    Raises ``av.error.FFmpegError`` (or ``OSError``) when the file is not a readable video.
    """
    import av  # PyAV; imported here so the app's pages do not load FFmpeg before they need it

    with av.open(str(path)) as container:
        # tag names lower-cased: Matroska/WebM store them upper-case (TITLE, ENCODER), MP4 lower-case
        tags = {f"container {k.lower()}": str(v) for k, v in container.metadata.items()}
        for stream in container.streams:
            tags.update({f"stream {stream.index} {k.lower()}": str(v) for k, v in stream.metadata.items()})
        for n, chapter in enumerate(container.chapters()):
            tags.update({f"chapter {n} {k.lower()}": str(v) for k, v in (chapter.get("metadata") or {}).items()})
        if not container.streams.video:
            raise ValueError("no video stream")
    return tags


def video_metadata_leaks(path: Path, names: Iterable[str]) -> list[tuple[str, str]]:
    """``(tag, model name)`` for each metadata tag of ``path`` that names a model (see :func:`video_metadata`)."""
    names = list(names)
    return [(tag, name) for tag, value in video_metadata(path).items() for name in find_leaks(value, names)]


def file_name_leaks(path: Path, names: Iterable[str]) -> list[str]:
    """Model names in a video's file name (not its folders). The app never sends file names, so this is a
    warning for files that are also shared elsewhere, not a blinding failure."""
    return find_leaks(path.name, names)


def study_text_leaks(study: "Study") -> list[str]:
    """Texts shown to raters (title, instructions, consent, prompts, criteria, options) that name a model."""
    texts = {"title": study.title, "instructions": study.instructions, "consent": study.consent}
    texts.update({f"prompt {p.id}": p.text for p in study.prompts})
    texts.update({f"gold prompt {g.id}": g.prompt for g in study.gold})
    texts.update({f"criterion {c.id}": f"{c.label} {c.question}" for c in study.criteria})
    texts.update({f"option {k}": v for k, v in study.options.labels().items()})
    return [f"{where} names the model {name!r}" for where, text in texts.items()
            for name in find_leaks(text, study.model_names)]
