"""Number formatting and Markdown tables (no ``tabulate`` dependency)."""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

MISSING = "—"


def is_missing(x: Any) -> bool:
    if x is None:
        return True
    try:
        return isinstance(x, float) and math.isnan(x)
    except TypeError:
        return False


def num(x: Any, digits: int = 4) -> str:
    """Format a number: ``inf``/``-inf`` for infinities, ``—`` for missing, fixed decimals otherwise."""
    if is_missing(x):
        return MISSING
    if isinstance(x, bool):
        return str(x)
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return _special(v) or f"{v:.{digits}f}"


def _special(v: float) -> str | None:
    """The label of a non-finite value (``—`` for NaN, ``inf``/``-inf``), ``None`` for a finite one."""
    if math.isnan(v):
        return MISSING
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return None


def sci(x: Any, digits: int = 3) -> str:
    """Scientific notation for large counts (FLOPs, bytes)."""
    if is_missing(x):
        return MISSING
    v = float(x)
    return _special(v) or f"{v:.{digits}e}"


def nbytes(x: Any) -> str:
    """Bytes with a binary unit chosen by size: '480 B', '25.1 KiB', '1.43 GiB' (3 significant digits)."""
    if is_missing(x):
        return MISSING
    v = float(x)
    if _special(v):
        return _special(v)
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.0f} B"


def pct(x: Any, digits: int = 1) -> str:
    if is_missing(x):
        return MISSING
    v = float(x)
    return _special(v) or f"{100.0 * v:.{digits}f}%"


def interval(lo: Any, hi: Any, f=num) -> str:
    if is_missing(lo) and is_missing(hi):
        return MISSING
    return f"[{f(lo)}, {f(hi)}]"


def to_float(x: Any) -> float:
    """Coerce a stored score to float; accepts ``"inf"``, ``"Infinity"``, ``"-inf"``; None -> nan."""
    if x is None:
        return math.nan
    if isinstance(x, str):
        s = x.strip().lower()
        if s in ("inf", "+inf", "infinity", "+infinity"):
            return math.inf
        if s in ("-inf", "-infinity"):
            return -math.inf
        try:
            return float(s)
        except ValueError:
            return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def md_escape(text: Any) -> str:
    s = "" if text is None else str(text)
    return (s.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
            .replace("\n", " ").replace("\r", " "))


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """GitHub-flavoured Markdown table; cells are already-formatted strings (``|`` escaped)."""
    head = "| " + " | ".join(md_escape(c) for c in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join([head, sep, *body])
