"""VBench (v1) and VBench-2.0 sections: per-dimension scores of the scored dimensions (table, grouped bars, radar),
the official Quality/Semantic/Total (v1) or category/Total (2.0) from ``evaluation.aggregate`` when every
dimension is ``ok``, and completeness per model. Dimensions without a score are listed compactly in the coverage
section and with their full messages (paths, URLs) in the appendix."""

from __future__ import annotations

import pandas as pd

from reports.aggregate import aggregate
from reports.blocks import Table, Text, figure_from_matplotlib
from reports.constants import (VBENCH2_CATEGORIES, VBENCH2_DIMENSIONS, VBENCH_DIMENSIONS, VBENCH_QUALITY,
                               VBENCH_SEMANTIC)
from reports.fmt import num
from reports.honesty import MARK_NOTE, mark
from reports.registry import section
from reports.sections import _dimensions as dimx
from reports.sections._common import no_suite_data, note, warn

V1_GROUP = {d: ("Quality" if d in VBENCH_QUALITY else "Semantic") for d in VBENCH_DIMENSIONS}
V2_GROUP = {d: cat for cat, dims in VBENCH2_CATEGORIES.items() for d in dims}
NONSTD_NOTE = "† non-standard protocol (custom input, no static filter, missing videos, …): not leaderboard-comparable"
LIST_AT_MOST = 6


def _names(dims) -> str:
    dims = list(dims)
    return ", ".join(dims) if len(dims) <= LIST_AT_MOST else f"{len(dims)} dimensions (see 'Dimensions without a score')"


def notes_for(st: pd.DataFrame) -> tuple:
    """The footnotes a table of ``st`` needs (only the marks that occur)."""
    notes = []
    if (st["status"] == "non_standard").any():
        notes.append(NONSTD_NOTE)
    if st["untrained"].astype(bool).any() and st["status"].isin(dimx.SCORED).any():
        notes.append(MARK_NOTE)
    return tuple(notes)


def aggregate_rows(suite, st, official, parts):
    """(display rows, raw rows, warnings) of the official aggregates, or None when evaluation.aggregate is
    unavailable (then the reason is in the second item). ``parts``: aggregate name -> its constituent dimensions;
    a value is shown only when every constituent has an ``ok`` score in the store, whatever evaluation.aggregate
    returned."""
    columns = list(parts)
    real = dimx.real_scores(st, official)
    agg = aggregate(suite, real)
    if not agg.available:
        return None, agg.reason, []
    complete = dimx.complete_labels(st, official)
    untrained = dict(zip(st["label"], st["untrained"].astype(bool)))
    rows, data, warnings = [], [], []
    for lab, scores in agg.scores.items():
        missing = agg.missing.get(lab, {})
        row, drow = {"model": lab}, {"model": lab}
        for col in columns:
            val = scores.get(col, scores.get(col.lower()))
            not_ok = [d for d in parts[col] if real.get(lab, {}).get(d) is None]
            if val is not None and not_ok:
                warnings.append(warn(f"{lab}: evaluation.aggregate returned a {col}, but the store has no ok score "
                                     f"for {', '.join(not_ok)}; it is not shown."))
                val = None
            miss = missing.get(col, missing.get(col.lower(), []))
            row[col] = mark(num(val), untrained.get(lab, False)) if val is not None else "incomplete"
            drow[col] = val
            drow[f"{col} missing"] = ";".join(miss)
        all_missing = missing.get("total", missing.get("Total", []))
        row["note"] = ("complete" if lab in complete else
                       "incomplete — not ok: " + (_names(all_missing) if all_missing else "see table above"))
        rows.append(row)
        data.append(drow)
    return rows, data, warnings


def _aggregate_blocks(suite, st, official, parts, prefix):
    """Table of the official aggregates, or a note saying why there is none."""
    columns = list(parts)
    rows, data, warnings = aggregate_rows(suite, st, official, parts)
    if rows is None:
        return [note(f"{' / '.join(columns)}: aggregate unavailable — {data}. Only per-dimension scores are "
                     f"shown; no aggregate is computed here and no missing score is filled in.")]
    if not any(r[c] != "incomplete" for r in rows for c in columns):
        return warnings + [Text(f"No official aggregate ({', '.join(columns)}): no model has an ok score on every "
                                f"constituent dimension, and a missing dimension is never filled in.")]
    caption = (f"Official aggregates ({', '.join(columns)}) from evaluation.aggregate; 'incomplete' where a "
               f"constituent dimension has no ok score")
    notes = (MARK_NOTE,) if st["untrained"].astype(bool).any() else ()
    return warnings + [Table(f"{prefix}_aggregates", caption, pd.DataFrame(rows), pd.DataFrame(data), latex=True,
                             notes=notes)]


def suite_status(ctx, suite, official):
    df = ctx.suite(suite)
    return None if df.empty else dimx.dimension_status(df, official)


def _suite_blocks(ctx, suite, name, official, group_of, agg_parts, group_word):
    st = suite_status(ctx, suite, official)
    if st is None:
        return no_suite_data(ctx, suite, f"{name} results")
    labels = list(dict.fromkeys(st["label"]))
    scored = dimx.scored_dimensions(st)
    per_model = "; ".join(
        f"{lab}: {int(st[(st['label'] == lab) & st['official']]['status'].isin(dimx.SCORED).sum())}/{len(official)}"
        for lab in labels)
    blocks = [Text(f"Scores are each dimension's official aggregate record (video = null), as fractions; dimensions "
                   f"scored per model — {per_model}. Dimensions without a score are listed under 'Dimensions without "
                   f"a score' (full messages in the appendix).")]
    if not scored:
        blocks.append(note(f"No {name} dimension has a score for any model, so there is no per-dimension table or "
                           f"chart."))
    else:
        blocks.append(Table(f"{suite}_dimensions", f"{name}: per-dimension scores ({group_word} in column 'group')",
                            dimx.score_matrix(st, group_of), st.drop(columns=["details"]), latex=True,
                            notes=notes_for(st)))
        blocks += _aggregate_blocks(suite, st, official, agg_parts, suite)
    blocks.append(Table(f"{suite}_completeness", f"{name}: completeness of the official dimensions per model",
                        dimx.completeness(st, official)))
    if not (st["status"] != "ok").any():
        blocks.append(Text(f"Every {name} dimension has an ok score for every model."))
    if scored and (len(scored) >= 2 or len(labels) >= 2):
        blocks.append(figure_from_matplotlib(dimx.bar_figure(st, f"{name}: scored dimensions", group_of),
                                             f"{suite}_dimensions", f"{name} per-dimension scores by model "
                                             f"(scored dimensions only)"))
    radar_dims, radar_labels = dimx.radar_dimensions(st)
    if radar_dims:
        left = [d for d in scored if d not in radar_dims]
        blocks.append(figure_from_matplotlib(
            dimx.radar_figure(st, f"{name}: {len(radar_dims)} dimensions scored for every shown model"),
            f"{suite}_radar", f"{name} radar (score 0–1 per dimension) of {', '.join(radar_labels)}"
            + (f"; left out because not every model has them: {', '.join(left)}" if left else "")))
    return blocks


V1_PARTS = {"Quality": VBENCH_QUALITY, "Semantic": VBENCH_SEMANTIC, "Total": VBENCH_DIMENSIONS}
V2_PARTS = {**VBENCH2_CATEGORIES, "Total": VBENCH2_DIMENSIONS}


@section("vbench", "VBench", order=10)
def build_vbench(ctx):
    return _suite_blocks(ctx, "vbench", "VBench", VBENCH_DIMENSIONS, V1_GROUP, V1_PARTS, "Quality / Semantic")


@section("vbench2", "VBench-2.0", order=20)
def build_vbench2(ctx):
    return _suite_blocks(ctx, "vbench2", "VBench-2.0", VBENCH2_DIMENSIONS, V2_GROUP, V2_PARTS, "category")
