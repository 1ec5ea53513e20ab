"""Dimensions without a score, in one compact table: one row per (suite, status, short reason, models), the
dimensions that share it listed together. The full messages, expected paths and upstream URLs are in the appendix."""

from __future__ import annotations

import pandas as pd

from reports.blocks import Table, Text
from reports.constants import VBENCH2_DIMENSIONS, VBENCH_DIMENSIONS
from reports.registry import section
from reports.sections._common import SCORED, short_reason
from reports.sections.vbench import suite_status

SUITES = (("vbench", "VBench", VBENCH_DIMENSIONS), ("vbench2", "VBench-2.0", VBENCH2_DIMENSIONS))


def unscored(ctx) -> pd.DataFrame:
    """Long frame (suite, dimension, label, status, short reason) of every (model, dimension) without an ok score:
    VBench / VBench-2.0 dimensions (non-standard ones included: they do not count for the aggregates) and fidelity
    metrics with no scored video."""
    rows = []
    for suite, name, official in SUITES:
        st = suite_status(ctx, suite, official)
        if st is None:
            continue
        for r in st[st["status"] != "ok"].to_dict("records"):
            status = r["status"] + (" (scored †)" if r["status"] == "non_standard" else "")
            rows.append(dict(suite=name, dimension=r["dimension"], model=r["label"], status=status,
                             reason=short_reason(r["status"], r["message"], r["details"])))
    fid = ctx.suite("fidelity")
    for (lab, dim), g in fid.groupby(["label", "dimension"], sort=False):
        if not g["status"].isin(SCORED).any():
            r = g.iloc[-1]
            rows.append(dict(suite="fidelity", dimension=dim, model=lab, status=r["status"],
                             reason=short_reason(r["status"], r["message"], r["details"])))
    return pd.DataFrame(rows, columns=["suite", "dimension", "model", "status", "reason"])


def compact(long: pd.DataFrame) -> pd.DataFrame:
    if long.empty:
        return pd.DataFrame(columns=["suite", "dimensions", "models", "status", "reason"])
    per_dim = (long.groupby(["suite", "dimension", "status", "reason"], sort=False)["model"]
               .apply(lambda m: ", ".join(dict.fromkeys(m))).reset_index())
    out = (per_dim.groupby(["suite", "model", "status", "reason"], sort=False)["dimension"]
           .apply(lambda d: ", ".join(dict.fromkeys(d))).reset_index())
    return out.rename(columns={"dimension": "dimensions", "model": "models"})[
        ["suite", "dimensions", "models", "status", "reason"]]


@section("coverage", "Dimensions without a score", order=25)
def build(ctx):
    long = unscored(ctx)
    if long.empty:
        if ctx.suite("vbench").empty and ctx.suite("vbench2").empty and ctx.suite("fidelity").empty:
            return [Text("No VBench, VBench-2.0 or fidelity records were given, so there is no coverage to show.")]
        return [Text("Every stored VBench / VBench-2.0 dimension and fidelity metric has an ok score.")]
    table = compact(long)
    n_dims = long.groupby("suite")["dimension"].nunique()
    summary = "; ".join(f"{s}: {n} dimension(s)" for s, n in n_dims.items())
    return [Text(f"Without an ok score — {summary}. Each row groups the dimensions that share a reason; full "
                 f"messages with expected paths and upstream URLs are in the appendix. Nothing is ever downloaded: "
                 f"copy the files to the paths given there, or use --vbench2-results / --vbench2-python (see "
                 f"docs/evaluation.md)."),
            Table("coverage_unscored", "Dimensions without a score (compact)", table, long)]
