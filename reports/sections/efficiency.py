"""Efficiency: FLOPs, latency and peak memory vs duration per attention kind, measured speedup vs softmax next to
the analytic FLOPs ratio, at each stored level (op / block / model). OOM points and analytic-only points are marked."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports.blocks import Heading, Table, Text, figure_from_matplotlib
from reports.fmt import is_missing, nbytes, num, sci
from reports.registry import section
from reports.sections._common import SCORED, no_suite_data, ordered, reason, text

DIMS = ["flops_analytic", "flops_counted", "latency_ms", "peak_mem_bytes", "speedup_vs_softmax",
        "flops_ratio_vs_softmax"]
CONFIG = ["height", "width", "chunk_frames", "overlap_frames", "causal", "converted_blocks", "dtype",
          "device", "threads", "backend"]
LEVELS = ["op", "block", "model"]


def _hashable(v):
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    if isinstance(v, dict):
        return str(sorted(v.items()))
    return v


def _flatten(df: pd.DataFrame) -> pd.DataFrame:
    from evaluation.efficiency.table import memory_lower_bound  # the efficiency suite's own rule (torch: lazy)

    df = df.copy()
    for key in ["level", "frames", "latent_frames", "analytic_only", "oom", "latency_spread_ms", "repeats"] + CONFIG:
        # object dtype keeps integers as integers next to missing values (no 15 -> 15.0)
        df[key] = pd.Series([_hashable(d.get(key)) for d in df["details"]], index=df.index, dtype=object)
    df["level"] = df["level"].fillna("unspecified")
    df["analytic_only"] = df["analytic_only"].fillna(False).astype(bool)
    df["oom"] = df["oom"].fillna(False).astype(bool)
    df["memory_lower_bound"] = [memory_lower_bound(d, p) for d, p in zip(df["details"], df["provenance"])]
    return df


def _varying(g: pd.DataFrame) -> tuple:
    """(settings that vary within one kind -> part of the point key and the series label,
    settings constant per kind but different between kinds -> shown as columns only)."""
    s = pd.DataFrame({c: text(g[c]) for c in CONFIG}, index=g.index)
    within = [c for c in CONFIG if s.groupby(g["label"])[c].nunique().max() > 1]
    per_kind = [c for c in CONFIG if c not in within and s[c].nunique() > 1]
    return within, per_kind


def _point_cell(r, dim) -> str:
    if r is None:
        return "—"
    if r["oom"]:
        return "OOM"
    if r["status"] not in SCORED:
        return f"— ({r['status']})"
    v = r["score"]
    if dim in ("flops_analytic", "flops_counted", "peak_mem_bytes"):
        s = sci(v)
        if dim == "peak_mem_bytes" and not is_missing(v) and math.isfinite(v):
            s += f" ({nbytes(v)})"
            if r.get("memory_lower_bound"):  # the method cannot see kernel-internal buffers: the true peak is larger
                s = "≥ " + s
    elif dim == "latency_ms":
        s = num(v, 3)
        spread = r["latency_spread_ms"]
        if not is_missing(spread):
            s += f" ± {num(spread, 3)}"
    else:
        s = num(v, 3)
    if r["status"] == "non_standard":
        s += " †"
    return s


def _show(v) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)


def _level_table(g: pd.DataFrame, varying: list, per_kind: list):
    keys = ["label"] + varying + ["frames", "latent_frames"]
    names = ["kind"] + varying + ["frames", "latent frames"]
    rows, data = [], []
    order = {lab: i for i, lab in enumerate(dict.fromkeys(g["label"]))}
    sort_cols = {"_k": g["label"].map(order)}
    for i, c in enumerate(varying):
        as_num = pd.to_numeric(g[c], errors="coerce")
        sort_cols[f"_v{i}"] = as_num if as_num.notna().all() else pd.Series(text(g[c]), index=g.index)
    sort_cols["_x"] = pd.to_numeric(g["frames"], errors="coerce")
    g = g.assign(**sort_cols).sort_values(list(sort_cols), kind="stable")
    for key, pg in g.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(names, [_show(k) for k in key]))
        drow = dict(zip(names, key))
        for c in per_kind:  # constant per kind: in the CSV; shown once per kind in the settings table
            drow[c] = pg[c].iloc[0]
        by_dim = {d: r for d, r in zip(pg["dimension"], pg.to_dict("records"))}
        for d in ordered(list(DIMS) + list(pg["dimension"]), DIMS):
            if d not in DIMS and d not in by_dim:
                continue
            row[d] = _point_cell(by_dim.get(d), d)
            r = by_dim.get(d)
            drow[d] = r["score"] if r is not None else np.nan
            drow[f"{d}_status"] = ("oom" if r is not None and r["oom"] else (r["status"] if r is not None else
                                                                              "no_record"))
        notes = []
        if pg["analytic_only"].any():
            notes.append("analytic only (not measured)")
        if pg["oom"].any():
            notes.append("out of memory")
        why: dict = {}  # one note per distinct (status, message), listing its dimensions
        for r in pg.to_dict("records"):
            if r["status"] not in SCORED and not r["oom"] and r["message"]:
                why.setdefault(reason(r["status"], r["message"]), []).append(r["dimension"])
        notes += [f"{', '.join(dims)}: {text}" for text, dims in why.items()]
        row["notes"] = "; ".join(dict.fromkeys(notes))
        drow["analytic_only"] = bool(pg["analytic_only"].any())
        drow["oom"] = bool(pg["oom"].any())
        rows.append(row)
        data.append(drow)
    return pd.DataFrame(rows), pd.DataFrame(data)


def _wide(g: pd.DataFrame) -> pd.DataFrame:
    """The efficiency table's wide frame (evaluation.efficiency.table.wide) of these records, kinds by display label."""
    from evaluation.efficiency.table import flatten_records, wide

    recs = [dict(r, model=r["label"]) for r in g[["run_id", "label", "dimension", "score", "status", "message",
                                                  "details", "provenance"]].to_dict("records")]
    return wide(flatten_records(recs))


def _figures(g: pd.DataFrame, title: str, name: str, where: str) -> list:
    """The main comparison (softmax + every kind at its main setting) and one figure per configuration grid, each
    a 2 x 2 of FLOPs, latency, memory and speedup with at most six series (evaluation.efficiency.plots)."""
    from evaluation.efficiency import plots

    w = plots.with_series(_wide(g))
    style = plots.styles_for(w)
    out = []
    for group, series in plots.series_groups(w):
        what = "main comparison" if group == "main" else group.replace("_grid", " configurations (T_c, T_o)")
        fig = plots.overview_figure(w, series, f"{title}: {what}", style)
        out.append(figure_from_matplotlib(
            fig, name if group == "main" else f"{name}_{group}",
            f"FLOPs, latency, peak memory and speedup vs duration, {what}{where}"))
    return out


def _resolution_groups(g: pd.DataFrame, varying: list):
    """Split a level by resolution when it varies within a kind (one set of plots per resolution)."""
    res_keys = [c for c in ("height", "width") if c in varying]
    if not res_keys:
        return [("", g)]
    out = []
    for key, sub in g.groupby(res_keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        out.append(("x".join(_show(k) for k in key), sub))
    return out


@section("efficiency", "Efficiency", order=40)
def build(ctx):
    df = ctx.suite("efficiency")
    if df.empty:
        return no_suite_data(ctx, "efficiency", "efficiency results")
    df = _flatten(df)
    blocks = [Text("Per attention kind and video length. FLOPs and bytes in scientific notation; latency_ms as "
                   "stored ± details.latency_spread_ms; 'OOM' = ran out of memory (status error, details.oom); "
                   "points marked 'analytic only' were not measured. speedup_vs_softmax is measured, "
                   "flops_ratio_vs_softmax is the analytic ratio, both as stored by the evaluation (no "
                   "recomputation). '≥' marks peak memory that is a lower bound: on CPU the tracker sees every "
                   "tensor the call creates but not the buffers a fused kernel allocates inside itself, so no kind "
                   "may look cheaper than it is; the plots draw those points as ▲.")]
    for level in ordered(df["level"], LEVELS):
        g = df[df["level"] == level]
        varying, per_kind = _varying(g)
        common = {c: g[c].iloc[0] for c in CONFIG if c not in varying + per_kind and g[c].notna().any()}
        blocks.append(Heading(f"Level: {level}"))
        if common:
            blocks.append(Text("Common settings: " + ", ".join(f"{k}={v}" for k, v in common.items())))
        if per_kind:
            kinds = g.drop_duplicates("label")
            blocks.append(Table(f"efficiency_{level}_kind_settings", f"Settings per kind at level '{level}'",
                                pd.DataFrame({"kind": kinds["label"].tolist(),
                                              **{c: [_show(v) for v in kinds[c]] for c in per_kind}}),
                                collapsed=len(kinds) > 6))
        disp, data = _level_table(g, varying, per_kind)
        blocks.append(Table(f"efficiency_{level}", f"Efficiency at level '{level}' ({len(disp)} points; every "
                                                   f"stored number)", disp, data, collapsed=len(disp) > 12))
        for res, sub in _resolution_groups(g, varying):
            where = f", resolution ({' x '.join(c for c in ('height', 'width') if c in varying)}) {res}" if res else ""
            name = f"efficiency_{level}" + (f"_{res}" if res else "")
            blocks += _figures(sub, f"level {level}{where}", name, f", level '{level}'{where}")
    return blocks
