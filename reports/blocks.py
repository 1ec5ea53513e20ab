"""Content blocks a section returns; the renderers turn them into HTML and Markdown."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Optional, Union

import pandas as pd


@dataclass
class Text:
    """A paragraph. ``kind``: ``p`` (plain), ``note`` (why something is absent / caveat), ``warn`` (problem)."""

    text: str
    kind: str = "p"


@dataclass
class Heading:
    text: str


@dataclass
class Table:
    """A table. ``display`` holds formatted strings (what HTML/Markdown show); ``data`` the raw values written to
    ``tables/<name>.csv`` (defaults to ``display``)."""

    name: str
    caption: str
    display: pd.DataFrame
    data: Optional[pd.DataFrame] = None

    @property
    def csv_frame(self) -> pd.DataFrame:
        return self.display if self.data is None else self.data


@dataclass
class KeyValues:
    """A small two-column table of (key, value) strings, not written as CSV."""

    caption: str
    items: list = field(default_factory=list)


@dataclass
class Figure:
    """A matplotlib figure rendered to PNG bytes; written to ``figures/<name>.png`` and embedded in the HTML."""

    name: str
    caption: str
    png: bytes
    alt: str = ""


Block = Union[Text, Heading, Table, KeyValues, Figure]

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(name: str) -> str:
    s = _SAFE.sub("_", str(name)).strip("_.")
    return s or "item"


def figure_from_matplotlib(fig, name: str, caption: str, alt: str = "") -> Figure:
    """Render and close a matplotlib figure (Agg) into a :class:`Figure` block."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return Figure(name=safe_name(name), caption=caption, png=buf.getvalue(), alt=alt or caption)
