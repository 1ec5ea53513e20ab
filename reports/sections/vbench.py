"""VBench (v1) and VBench-2.0 sections: per-dimension scores, missing dimensions with reasons, and the official
Quality/Semantic/Total (v1) or category/Total (2.0) from ``evaluation.aggregate`` when every dimension is ``ok``."""

from __future__ import annotations

import pandas as pd

from reports.aggregate import aggregate
from reports.blocks import Table, Text, figure_from_matplotlib
from reports.constants import (VBENCH2_CATEGORIES, VBENCH2_DIMENSIONS, VBENCH_DIMENSIONS, VBENCH_QUALITY,
                               VBENCH_SEMANTIC)
from reports.fmt import num
from reports.registry import section
from reports.sections import _dimensions as dimx
from reports.sections._common import no_suite_data, note, warn

V1_GROUP = {d: ("Quality" if d in VBENCH_QUALITY else "Semantic") for d in VBENCH_DIMENSIONS}
V2_GROUP = {d: cat for cat, dims in VBENCH2_CATEGORIES.items() for d in dims}


def _aggregate_blocks(suite, st, official, parts, prefix):
    """Table of the official aggregates, or a note saying why there is none.

    ``parts``: aggregate name -> its constituent dimensions. A value is shown only when every constituent has an
    ``ok`` score in the store, whatever ``evaluation.aggregate`` returned."""
    columns = list(parts)
    real = dimx.real_scores(st, official)
    agg = aggregate(suite, real)
    if not agg.available:
        return [note(f"{' / '.join(columns)}: aggregate unavailable — {agg.reason}. Only per-dimension scores are "
                     f"shown; no aggregate is computed here and no missing score is filled in.")]
    complete = dimx.complete_labels(st, official)
    rows, data, blocks = [], [], []
    for lab, scores in agg.scores.items():
        missing = agg.missing.get(lab, {})
        row, drow = {"model": lab}, {"model": lab}
        for col in columns:
            val = scores.get(col, scores.get(col.lower()))
            not_ok = [d for d in parts[col] if real.get(lab, {}).get(d) is None]
            if val is not None and not_ok:
                blocks.append(warn(f"{lab}: evaluation.aggregate returned a {col}, but the store has no ok score "
                                   f"for {', '.join(not_ok)}; it is not shown."))
                val = None
            miss = missing.get(col, missing.get(col.lower(), []))
            row[col] = num(val) if val is not None else "incomplete"
            drow[col] = val
            drow[f"{col} missing"] = ";".join(miss)
        all_missing = missing.get("total", missing.get("Total", []))
        row["note"] = ("complete" if lab in complete else
                       "incomplete — not ok: " + (", ".join(all_missing) if all_missing else "see table above"))
        rows.append(row)
        data.append(drow)
    caption = (f"Official aggregates ({', '.join(columns)}) from evaluation.aggregate; 'incomplete' where a "
               f"constituent dimension has no ok score")
    return blocks + [Table(f"{prefix}_aggregates", caption, pd.DataFrame(rows), pd.DataFrame(data))]


def _suite_blocks(ctx, suite, name, official, group_of, agg_parts, group_word):
    df = ctx.suite(suite)
    if df.empty:
        return no_suite_data(ctx, suite, f"{name} results")
    st = dimx.dimension_status(df, official)
    blocks = [Text(f"Scores are each dimension's official aggregate record (video = null), as fractions. "
                   f"'†' marks a non-standard score (counted as not ok for the aggregates); '— (status)' marks a "
                   f"dimension without a score. Models: {', '.join(dict.fromkeys(st['label']))}.")]
    blocks.append(Table(f"{suite}_dimensions", f"{name}: per-dimension scores ({group_word} in column 'group')",
                        dimx.score_matrix(st, group_of), st))
    blocks.append(Table(f"{suite}_completeness", f"{name}: completeness of the official dimensions per model",
                        dimx.completeness(st, official)))
    blocks += _aggregate_blocks(suite, st, official, agg_parts, suite)
    probs = dimx.problems_table(st)
    if len(probs):
        blocks.append(Table(f"{suite}_not_ok", f"{name}: dimensions without an ok score, with the reason", probs))
    else:
        blocks.append(Text(f"Every {name} dimension has an ok score for every model."))
    blocks.append(figure_from_matplotlib(dimx.bar_figure(st, f"{name} per-dimension scores", group_of),
                                         f"{suite}_dimensions", f"{name} per-dimension scores by model"))
    return blocks


@section("vbench", "VBench", order=10)
def build_vbench(ctx):
    parts = {"Quality": VBENCH_QUALITY, "Semantic": VBENCH_SEMANTIC, "Total": VBENCH_DIMENSIONS}
    return _suite_blocks(ctx, "vbench", "VBench", VBENCH_DIMENSIONS, V1_GROUP, parts, "Quality / Semantic")


@section("vbench2", "VBench-2.0", order=20)
def build_vbench2(ctx):
    parts = {**VBENCH2_CATEGORIES, "Total": VBENCH2_DIMENSIONS}
    return _suite_blocks(ctx, "vbench2", "VBench-2.0", VBENCH2_DIMENSIONS, V2_GROUP, parts, "category")
