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
    latex: bool = False  # also write latex/<name>.tex (booktabs), for the tables a paper takes
    notes: tuple = ()  # footnotes (what the marks mean), shown under the table and in the LaTeX file
    collapsed: bool = False  # HTML: folded under its caption (long per-point tables); Markdown shows it in full

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
    pdf: Optional[bytes] = None  # the same figure as PDF (figures/<name>.pdf, for LaTeX)
    empty_panels: int = 0  # panels drawn without data (the sections draw none; the tests check)


@dataclass
class Attachment:
    """A file written beside the report (``path`` relative to the output directory), e.g. an official
    ``*_eval_results.json``; not shown inline (the section lists it in a table)."""

    path: str
    data: bytes


Block = Union[Text, Heading, Table, KeyValues, Figure, Attachment]

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(name: str) -> str:
    s = _SAFE.sub("_", str(name)).strip("_.")
    return s or "item"


def figure_from_matplotlib(fig, name: str, caption: str, alt: str = "", empty_panels: int = 0) -> Figure:
    """Render and close a matplotlib figure (Agg) into a :class:`Figure` block (PNG for the page, PDF for papers)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    pdf = io.BytesIO()
    fig.savefig(pdf, format="pdf", bbox_inches="tight", metadata={"Creator": None, "Producer": None,
                                                                     "CreationDate": None})
    plt.close(fig)
    return Figure(name=safe_name(name), caption=caption, png=buf.getvalue(), alt=alt or caption, pdf=pdf.getvalue(),
                  empty_panels=int(getattr(fig, "empty_panels", 0) or empty_panels))
