"""Shared logic for the VBench and VBench-2.0 sections: one status per (model, dimension), taken from the
dimension's official aggregate record (``video = null``) — per-video records are only counted, never averaged,
because the official aggregates are not plain means (e.g. subject_consistency is frame-weighted)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reports.fmt import num
from reports.honesty import MARK, mark
from reports.sections._common import SCORED, color_cycle, labels_in_order, new_figure, ordered, plt, reason

NO_RECORD = "no_record"
NO_AGGREGATE = "no_aggregate"


def dimension_status(df: pd.DataFrame, official: list) -> pd.DataFrame:
    """Long frame: one row per (label, dimension) over the official dimensions plus any extra ones found.

    Columns: label, model, run_id, dimension, official, score, status, message, details (of the aggregate record),
    n_videos, n_videos_scored, untrained (the model has random/untrained weights, :mod:`reports.honesty`).
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
        untrained = bool(df.loc[df["label"] == label, "untrained"].astype(bool).any()) if "untrained" in df else False
        for dim in dims:
            a = agg[(agg["label"] == label) & (agg["dimension"] == dim)]
            nv, ns = (counts.loc[(label, dim)].tolist() if (label, dim) in counts.index else (0, 0))
            details = {}
            if len(a):
                r = a.iloc[-1]
                status, score, message, details = r["status"], r["score"], r["message"], r["details"]
            elif nv:
                status, score = NO_AGGREGATE, np.nan
                message = (f"{nv} per-video record(s) ({ns} scored) but no official aggregate record "
                           f"(video = null)")
            else:
                status, score, message = NO_RECORD, np.nan, "no record in the store for this dimension"
            rows.append(dict(label=label, model=mrec["model"], run_id=mrec["run_id"], dimension=dim,
                             official=dim in official, score=score if status in SCORED else np.nan,
                             status=status, message=message, details=details if isinstance(details, dict) else {},
                             n_videos=int(nv), n_videos_scored=int(ns), untrained=untrained))
    return pd.DataFrame(rows)


def cell(row) -> str:
    """'0.9512', '0.9750 †' (non-standard), '0.9875 † ‡' (and from random weights) or '— (status)'."""
    if row["status"] not in SCORED:
        return f"— ({row['status']})"
    text = num(row["score"]) + (" †" if row["status"] == "non_standard" else "")
    return mark(text, bool(row.get("untrained", False)))


def scored_dimensions(st: pd.DataFrame) -> list:
    """Dimensions with a score (ok or non-standard) for at least one model, in table order."""
    return list(dict.fromkeys(st.loc[st["status"].isin(SCORED), "dimension"]))


def score_matrix(st: pd.DataFrame, group_of: dict) -> pd.DataFrame:
    """Display matrix: rows = the dimensions scored for at least one model (with their group), columns = model labels;
    the others are listed, with reasons, in the coverage table and the appendix."""
    labels = list(dict.fromkeys(st["label"]))
    out = []
    for dim in scored_dimensions(st):
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
                     "not ok (missing / non-standard)": (", ".join(missing) if len(missing) <= 6 else
                                                         f"{len(missing)} dimensions") or "none",
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


def legend_label(label: str, untrained: bool) -> str:
    return f"{label} {MARK} (random weights)" if untrained else str(label)


def bar_figure(st: pd.DataFrame, title: str, group_of: dict):
    """Grouped horizontal bars of the scored dimensions (one group per dimension, one bar per model); non-standard
    bars hatched; a model without a score on a dimension has no bar there (its reason is in the coverage table)."""
    labels = list(dict.fromkeys(st["label"]))
    dims = scored_dimensions(st)
    n, k = len(dims), len(labels)
    height = 0.8 / max(k, 1)
    fig, ax = new_figure(8.5, max(2.2, 0.26 * n * max(k, 1) + 1.3))
    colors = color_cycle()
    for j, lab in enumerate(labels):
        sub = st[st["label"] == lab].set_index("dimension")
        ys = np.arange(n) + j * height
        vals = np.array([sub.loc[d, "score"] if d in sub.index else np.nan for d in dims], float)
        stats = [sub.loc[d, "status"] if d in sub.index else NO_RECORD for d in dims]
        have = np.isfinite(vals)
        bars = ax.barh(ys[have], vals[have], height=height, color=colors[j % len(colors)],
                       label=legend_label(lab, bool(sub["untrained"].any())))
        for b, s in zip(bars, [s for s, h in zip(stats, have) if h]):
            if s == "non_standard":
                b.set_hatch("//")
                b.set_edgecolor("black")
        for y, v in zip(ys[have], vals[have]):
            ax.text(v + 0.005, y, f"{v:.3f}", va="center", fontsize=7)
    ax.set_yticks(np.arange(n) + height * (k - 1) / 2)
    ax.set_yticklabels([f"{d} [{group_of.get(d, 'not official')}]" for d in dims], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("score (fraction; hatched: non-standard †)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return fig


def radar_dimensions(st: pd.DataFrame) -> tuple:
    """(dimensions, labels) for a radar, never a polygon with a missing vertex: the dimensions every model has scored,
    with every model, when there are at least 3; else the models that scored every scored dimension. ([], []) when
    neither gives 3 dimensions."""
    dims = scored_dimensions(st)
    scored = st[st["status"].isin(SCORED)]
    labels = list(dict.fromkeys(st["label"]))
    mine = {lab: set(scored.loc[scored["label"] == lab, "dimension"]) for lab in labels}
    common = [d for d in dims if all(d in m for m in mine.values())]
    if len(common) >= 3:
        return common, labels
    full = [lab for lab in labels if set(dims) <= mine[lab]]
    return (dims, full) if len(dims) >= 3 and full else ([], [])


def radar_figure(st: pd.DataFrame, title: str):
    """Radar (as VBench papers show it): one axis per scored dimension, radius = score (0..1), one polygon per model."""
    dims, labels = radar_dimensions(st)
    fig = plt.figure(figsize=(6.8, 6.0))
    ax = fig.add_subplot(111, projection="polar")
    angles = np.linspace(0, 2 * np.pi, len(dims), endpoint=False)
    colors = color_cycle()
    for j, lab in enumerate(labels):
        sub = st[st["label"] == lab].set_index("dimension")
        vals = np.array([sub.loc[d, "score"] for d in dims], float)
        a = np.concatenate([angles, angles[:1]])
        v = np.concatenate([vals, vals[:1]])
        c = colors[j % len(colors)]
        ax.plot(a, v, color=c, lw=1.5, label=legend_label(lab, bool(sub["untrained"].any())))
        ax.fill(a, v, color=c, alpha=0.12)
    ax.set_xticks(angles)
    ax.set_xticklabels([d.replace("_", " ") for d in dims], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0])
    ax.set_rlabel_position(float(np.degrees(angles[1] / 2)))  # between the first two axes, clear of their labels
    ax.tick_params(axis="y", labelsize=6)
    ax.set_title(title, fontsize=10, pad=18)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), fontsize=8, frameon=False, ncol=2)
    return fig
