"""Shared logic for the VBench and VBench-2.0 sections: one status per (model, dimension), taken from the
dimension's official aggregate record (``video = null``) — per-video records are only counted, never averaged,
because the official aggregates are not plain means (e.g. subject_consistency is frame-weighted)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reports.fmt import num
from reports.sections._common import SCORED, color_cycle, labels_in_order, new_figure, ordered, reason

NO_RECORD = "no_record"
NO_AGGREGATE = "no_aggregate"


def dimension_status(df: pd.DataFrame, official: list) -> pd.DataFrame:
    """Long frame: one row per (label, dimension) over the official dimensions plus any extra ones found.

    Columns: label, model, run_id, dimension, official, score, status, message, n_videos, n_videos_scored.
    ``status`` is the aggregate record's status, ``no_aggregate`` (per-video records but no ``video = null``
    record) or ``no_record`` (nothing stored). ``score`` is NaN unless status is ok / non_standard.
    """
    agg = df[df["video"].isna()]
    per_video = df[df["video"].notna()]
    counts = per_video.groupby(["label", "dimension"]).agg(
        n_videos=("status", "size"), n_videos_scored=("status", lambda s: int(s.isin(SCORED).sum())))
    dims = ordered(df["dimension"], official)
    dims = official + [d for d in dims if d not in official]
    rows = []
    for label in labels_in_order(df):
        mrec = df[df["label"] == label].iloc[0]
        for dim in dims:
            a = agg[(agg["label"] == label) & (agg["dimension"] == dim)]
            nv, ns = (counts.loc[(label, dim)].tolist() if (label, dim) in counts.index else (0, 0))
            if len(a):
                r = a.iloc[-1]
                status, score, message = r["status"], r["score"], r["message"]
            elif nv:
                status, score = NO_AGGREGATE, np.nan
                message = (f"{nv} per-video record(s) ({ns} scored) but no official aggregate record "
                           f"(video = null)")
            else:
                status, score, message = NO_RECORD, np.nan, "no record in the store for this dimension"
            rows.append(dict(label=label, model=mrec["model"], run_id=mrec["run_id"], dimension=dim,
                             official=dim in official, score=score if status in SCORED else np.nan,
                             status=status, message=message, n_videos=int(nv), n_videos_scored=int(ns)))
    return pd.DataFrame(rows)


def cell(row) -> str:
    if row["status"] == "ok":
        return num(row["score"])
    if row["status"] == "non_standard":
        return num(row["score"]) + " †"
    return f"— ({row['status']})"


def score_matrix(st: pd.DataFrame, group_of: dict) -> pd.DataFrame:
    """Display matrix: rows = dimensions (with their group), columns = model labels."""
    labels = list(dict.fromkeys(st["label"]))
    out = []
    for dim in dict.fromkeys(st["dimension"]):
        sub = st[st["dimension"] == dim].set_index("label")
        row = {"dimension": dim, "group": group_of.get(dim, "not official")}
        for lab in labels:
            row[lab] = cell(sub.loc[lab])
        out.append(row)
    return pd.DataFrame(out)


def problems_table(st: pd.DataFrame) -> pd.DataFrame:
    bad = st[st["status"] != "ok"]
    return pd.DataFrame({
        "model": bad["label"], "dimension": bad["dimension"],
        "status": bad["status"],
        "reason": [reason(s, m) for s, m in zip(bad["status"], bad["message"])],
        "per-video records (scored)": [f"{a} ({b})" for a, b in zip(bad["n_videos"], bad["n_videos_scored"])],
    })


def completeness(st: pd.DataFrame, official: list) -> pd.DataFrame:
    rows = []
    for lab in dict.fromkeys(st["label"]):
        sub = st[(st["label"] == lab) & (st["dimension"].isin(official))]
        scored = sub[sub["status"] == "ok"]
        missing = sub[sub["status"] != "ok"]["dimension"].tolist()
        nonstd = sub[sub["status"] == "non_standard"]["dimension"].tolist()
        rows.append({"model": lab, "official dimensions ok": f"{len(scored)}/{len(official)}",
                     "complete": "yes" if not missing else "no",
                     "not ok (missing / non-standard)": ", ".join(missing) or "none",
                     "of which non-standard": ", ".join(nonstd) or "none"})
    return pd.DataFrame(rows)


def complete_labels(st: pd.DataFrame, official: list) -> set:
    """Models whose every official dimension has an ``ok`` aggregate (non-standard scores keep it incomplete)."""
    out = set()
    for lab in dict.fromkeys(st["label"]):
        sub = st[(st["label"] == lab) & (st["dimension"].isin(official))]
        if len(sub) == len(official) and (sub["status"] == "ok").all():
            out.add(lab)
    return out


def real_scores(st: pd.DataFrame, official: list) -> dict:
    """label -> {dimension: score or None}; only ``ok`` aggregates count as real (as in ``evaluation.aggregate``)."""
    out = {}
    for lab in dict.fromkeys(st["label"]):
        sub = st[(st["label"] == lab) & (st["dimension"].isin(official))]
        out[lab] = {d: (float(sc) if s == "ok" else None)
                    for d, sc, s in zip(sub["dimension"], sub["score"], sub["status"])}
    return out


def bar_figure(st: pd.DataFrame, title: str, group_of: dict):
    """Grouped horizontal bars (one group per dimension, one bar per model); non-standard hatched; absent = 'n/a'."""
    labels = list(dict.fromkeys(st["label"]))
    dims = list(dict.fromkeys(st["dimension"]))
    n, k = len(dims), len(labels)
    height = 0.8 / max(k, 1)
    fig, ax = new_figure(8.5, max(2.5, 0.28 * n * max(k, 1) + 1.2))
    colors = color_cycle()
    for j, lab in enumerate(labels):
        sub = st[st["label"] == lab].set_index("dimension")
        ys = np.arange(n) + j * height
        vals = [sub.loc[d, "score"] if d in sub.index else np.nan for d in dims]
        stats = [sub.loc[d, "status"] if d in sub.index else NO_RECORD for d in dims]
        ok = [0.0 if np.isnan(v) else v for v in vals]
        bars = ax.barh(ys, ok, height=height, color=colors[j % len(colors)], label=lab)
        for b, v, s in zip(bars, vals, stats):
            if s == "non_standard":
                b.set_hatch("//")
                b.set_edgecolor("black")
            if np.isnan(v):
                ax.text(0.005, b.get_y() + b.get_height() / 2, f"n/a ({s})", va="center", fontsize=7, color="#a00")
    ax.set_yticks(np.arange(n) + height * (k - 1) / 2)
    ax.set_yticklabels([f"{d} [{group_of.get(d, 'not official')}]" for d in dims], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("score (hatched: non-standard)")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return fig
