"""Helpers shared by the section modules (not a section itself: the leading underscore keeps it out of the registry)."""

from __future__ import annotations

import json
from typing import Iterable, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from reports.blocks import Text  # noqa: E402

SCORED = ("ok", "non_standard")


def note(text: str) -> Text:
    return Text(text, "note")


def warn(text: str) -> Text:
    return Text(text, "warn")


def text_value(v) -> str:
    """Display string of a stored value: '—' when missing, integers without '.0', else ``str``."""
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return str(v)


def text(series: pd.Series) -> list:
    return [text_value(v) for v in series]


def no_suite_data(ctx, suite: str, what: str) -> List:
    """The standard 'no data' paragraph: says which runs were searched and what was looked for."""
    if not ctx.runs:
        return [note(f"No {what}: no run directory was given (--runs).")]
    runs = ", ".join(r.run_id for r in ctx.runs)
    problems = [f"{r.run_id}: {p}" for r in ctx.runs for p in r.problems if "missing" in p or "exist" in p]
    extra = f" Store problems: {'; '.join(problems)}." if problems else ""
    return [note(f"No {what}: the given runs ({runs}) hold no records with suite = '{suite}'.{extra}")]


def reason(status, message) -> str:
    status = "unknown" if status is None else str(status)
    return f"{status}: {message}" if message else status


SHORT = 110


def short_reason(status, message, details=None) -> str:
    """A reason that fits a table cell: the files a ``missing_weights`` record lacks (base names), else the message's
    first clause, without the leading ``dimension:``; the full message stays in the appendix."""
    missing = (details or {}).get("missing") if isinstance(details, dict) else None
    if status == "missing_weights" and isinstance(missing, list) and missing:
        names = []
        for m in missing:
            path = str(m.get("path", m) if isinstance(m, dict) else m).rstrip("/")
            names.append(path.rsplit("/", 1)[-1] + ("/" if isinstance(m, dict) and "." not in path.rsplit("/", 1)[-1]
                                                     else ""))
        roots = sorted({f"${m['root']}" for m in missing if isinstance(m, dict) and m.get("root")})
        more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
        return (f"missing {len(names)} file(s): {', '.join(names[:3])}{more}"
                + (f" under {', '.join(roots)}" if roots else ""))
    text = str(message or "").strip()
    if not text:
        return str(status)
    head, sep, rest = text.partition(": ")
    if sep and " " not in head and len(head) < 40:  # "Human_Identity: upstream code ..." -> "upstream code ..."
        text = rest
    for stop in ("; ", ". "):
        if stop in text[:SHORT]:
            text = text[:text.index(stop)]
            break
    return text if len(text) <= SHORT else text[:SHORT - 1] + "…"


def ordered(values: Iterable, preferred: Iterable) -> list:
    """``preferred`` first (those present), then the rest in first-seen order."""
    vals = list(dict.fromkeys(v for v in values if v is not None))
    pref = [p for p in preferred if p in vals]
    return pref + [v for v in vals if v not in pref]


def labels_in_order(df: pd.DataFrame) -> list:
    return list(dict.fromkeys(df["label"]))


def new_figure(width: float = 8.0, height: float = 4.0, nrows: int = 1, ncols: int = 1, **kw):
    return plt.subplots(nrows, ncols, figsize=(width, height), **kw)


def color_cycle():
    return plt.rcParams["axes.prop_cycle"].by_key()["color"]


MAX_VALUE = 400


def flatten(obj, prefix: str = "") -> list:
    """Nested dicts -> [(dotted key, value string)]; lists of scalars joined, other lists as JSON."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out += flatten(v, key)
            else:
                out.append((key, _value(v)))
    else:
        out.append((prefix, _value(obj)))
    return out


def _value(v) -> str:
    if isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v):
        s = ", ".join(str(x) for x in v)
    elif isinstance(v, (dict, list)):
        s = json.dumps(v, sort_keys=True, default=str)
    else:
        s = "" if v is None else str(v)
    if len(s) > MAX_VALUE:
        s = s[:MAX_VALUE] + f"… ({len(s)} characters; full value in the store)"
    return s
