"""Exports a paper or a leaderboard takes, beside the report: the official ``{name}_eval_results.json`` of VBench and
VBench-2.0 (upstream layout: ``{dimension: [aggregate score, [{"video_path": ..., "video_results": ...}, ...]]}``,
as ``VBench.evaluate`` / ``VBench2.evaluate`` write it and ``cal_final_score.py`` reads it), written from the store;
and the list of the other exports (LaTeX tables, CSVs, PDF figures).

Only dimensions whose aggregate is ``ok`` go into an official file: a non-standard score (custom input, no static
filter, missing videos) is not leaderboard-comparable, and no file is written for a model with random or untrained
weights -- each omission is listed with its reason.
"""

from __future__ import annotations

import json

import pandas as pd

from reports.blocks import Attachment, Table, Text, safe_name
from reports.registry import section
from reports.sections._common import SCORED

OFFICIAL = (("vbench", "VBench"), ("vbench2", "VBench-2.0"))


def eval_results(df: pd.DataFrame) -> tuple[dict, list]:
    """(upstream results dict of the ``ok`` dimensions, [(dimension, why left out)]) for one model of one suite."""
    out, left = {}, []
    agg = df[df["video"].isna()]
    for dim in dict.fromkeys(df["dimension"]):
        a = agg[agg["dimension"] == dim]
        if a.empty:
            left.append((dim, "no aggregate record"))
            continue
        r = a.iloc[-1]
        if r["status"] != "ok":
            left.append((dim, r["status"]))
            continue
        vids = df[(df["dimension"] == dim) & df["video"].notna() & df["status"].isin(SCORED)]
        out[dim] = [float(r["score"]), [{"video_path": str(v), "video_results": float(s)}
                                        for v, s in zip(vids["video"], vids["score"])]]
    return out, left


@section("exports", "Exports", order=85)
def build(ctx):
    blocks = [Text("Beside this report: every table as CSV (tables/), the headline, per-dimension, aggregate and "
                   "fidelity tables as LaTeX booktabs floats (latex/<name>.tex; latex/tables.tex inputs them all "
                   "and includes every figure, and compiles with pdflatex), every figure as PNG and PDF (figures/), "
                   "and the official result files below.")]
    rows, attachments = [], []
    for suite, name in OFFICIAL:
        df = ctx.suite(suite)
        for lab, g in df.groupby("label", sort=False):
            results, left = eval_results(g)
            leftover = "; ".join(f"{d} ({why})" for d, why in left[:6]) + (
                f"; … {len(left) - 6} more" if len(left) > 6 else "")
            if g["untrained"].astype(bool).any():
                rows.append(dict(suite=name, model=lab, file="— (not written)", dimensions="0",
                                 left_out="random/untrained weights: a pipeline check, not leaderboard material"))
                continue
            if not results:
                rows.append(dict(suite=name, model=lab, file="— (not written)", dimensions="0",
                                 left_out="no dimension with an ok score" + (f": {leftover}" if leftover else "")))
                continue
            path = f"official/{suite}/{safe_name(lab)}_eval_results.json"
            attachments.append(Attachment(path, (json.dumps(results, indent=1) + "\n").encode("utf-8")))
            rows.append(dict(suite=name, model=lab, file=path, dimensions=str(len(results)),
                             left_out=leftover or "none"))
    if rows:
        blocks.append(Table("exports_official", "Official *_eval_results.json files (ok dimensions only)",
                            pd.DataFrame(rows)))
    else:
        blocks.append(Text("No VBench or VBench-2.0 records, so no official result files."))
    return blocks + attachments
