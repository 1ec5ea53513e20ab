"""Efficiency: FLOPs, latency and peak memory vs duration per attention kind, measured speedup vs softmax next to
the analytic FLOPs ratio, at each stored level (op / block / model). OOM points and analytic-only points are marked."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports.blocks import Heading, Table, Text, figure_from_matplotlib
from reports.fmt import is_missing, num, sci
from reports.registry import section
from reports.sections._common import SCORED, new_figure, no_suite_data, ordered, reason, text

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
    df = df.copy()
    for key in ["level", "frames", "latent_frames", "analytic_only", "oom", "latency_spread_ms", "repeats"] + CONFIG:
        # object dtype keeps integers as integers next to missing values (no 15 -> 15.0)
        df[key] = pd.Series([_hashable(d.get(key)) for d in df["details"]], index=df.index, dtype=object)
    df["level"] = df["level"].fillna("unspecified")
    df["analytic_only"] = df["analytic_only"].fillna(False).astype(bool)
    df["oom"] = df["oom"].fillna(False).astype(bool)
    return df


def _varying(g: pd.DataFrame) -> tuple:
    """(settings that vary within one kind -> part of the point key and the series label,
    settings constant per kind but different between kinds -> shown as columns only)."""
    s = pd.DataFrame({c: text(g[c]) for c in CONFIG}, index=g.index)
    within = [c for c in CONFIG if s.groupby(g["label"])[c].nunique().max() > 1]
    per_kind = [c for c in CONFIG if c not in within and s[c].nunique() > 1]
    return within, per_kind


def _series_label(row, varying) -> str:
    extra = ", ".join(f"{c}={row[c]}" for c in varying)
    return f"{row['label']} ({extra})" if extra else str(row["label"])


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
            s += f" ({v / 2**20:.1f} MiB)"
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


def _series_style(n: int):
    """Colours (tab10, or tab20 beyond 10 series) and line styles, so many series stay distinguishable."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    styles = ["-", "-.", ":"]
    k = cmap.N
    return [(cmap(i % k), styles[(i // k) % len(styles)]) for i in range(n)]


def _plot_level(g: pd.DataFrame, title: str, series_keys: list):
    panels = [("flops_analytic", "FLOPs (analytic: line, counted: ×)", True),
              ("latency_ms", "latency (ms)", True),
              ("peak_mem_bytes", "peak memory (MiB)", True),
              ("speedup_vs_softmax", "speedup vs softmax (measured: markers + line; analytic FLOPs ratio: dashed)",
               False)]
    fig, axes = new_figure(11, 7.5, 2, 2)
    g = g.copy()
    g["series"] = [_series_label(r, series_keys) for r in g.to_dict("records")]
    series = list(dict.fromkeys(g["series"]))
    style = _series_style(len(series))
    for ax, (dim, ptitle, logy) in zip(axes.flat, panels):
        for j, s in enumerate(series):
            c, ls = style[j]
            sg = g[g["series"] == s]

            def pts(d):
                p = sg[(sg["dimension"] == d)].copy()
                p["x"] = pd.to_numeric(p["frames"], errors="coerce")
                return p.sort_values("x")

            p = pts(dim)
            ok = p[p["status"].isin(SCORED) & np.isfinite(p["score"])]
            y = ok["score"] / 2**20 if dim == "peak_mem_bytes" else ok["score"]
            if len(ok):
                ax.plot(ok["x"], y, ls, color=c, label=s)
                meas = ~ok["analytic_only"].to_numpy()
                ax.scatter(ok["x"][meas], y[meas], color=c, zorder=3, s=18)
                ax.scatter(ok["x"][~meas], y[~meas], facecolors="none", edgecolors=c, zorder=3, s=30)
                if dim == "latency_ms":
                    spread = pd.to_numeric(ok["latency_spread_ms"], errors="coerce")
                    if spread.notna().any():
                        ax.errorbar(ok["x"], y, yerr=spread.fillna(0), fmt="none", ecolor=c, alpha=0.6)
            for x in p[p["oom"]]["x"].dropna().unique():
                ax.plot([x], [0.96], marker="x", color=c, ms=9, mew=2, transform=ax.get_xaxis_transform())
                ax.text(x, 0.90, "OOM", color=c, fontsize=7, ha="center", transform=ax.get_xaxis_transform())
            if dim == "flops_analytic":
                cnt = pts("flops_counted")
                cnt = cnt[cnt["status"].isin(SCORED) & np.isfinite(cnt["score"])]
                if len(cnt):
                    ax.scatter(cnt["x"], cnt["score"], marker="x", color=c, zorder=4)
            if dim == "speedup_vs_softmax":
                ratio = pts("flops_ratio_vs_softmax")
                ratio = ratio[ratio["status"].isin(SCORED) & np.isfinite(ratio["score"])]
                if len(ratio):
                    ax.plot(ratio["x"], ratio["score"], "--", color=c, alpha=0.8)
        ax.set_title(ptitle, fontsize=9)
        ax.set_xlabel("video frames (duration)")
        if not ax.lines and not ax.collections:
            ax.text(0.5, 0.5, f"no stored {dim} values here", ha="center", va="center",
                    transform=ax.transAxes, color="#666", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        ys = [yy for ln in ax.lines for yy in np.asarray(ln.get_ydata(), float) if np.isfinite(yy)]
        if logy and ys and min(ys) > 0 and max(ys) / min(ys) > 100:  # log only when every value is positive
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    if axes.flat[3].lines:
        axes.flat[3].axhline(1.0, color="grey", lw=0.8)
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.suptitle(f"{title} (hollow markers: analytic only; × at top: OOM)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    if handles:  # below the panels; savefig(bbox_inches="tight") keeps it in the image
        fig.legend(handles, labels, loc="upper center", ncol=min(3, len(labels)), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
    return fig


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
                   "recomputation).")]
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
                                              **{c: [_show(v) for v in kinds[c]] for c in per_kind}})))
        disp, data = _level_table(g, varying, per_kind)
        blocks.append(Table(f"efficiency_{level}", f"Efficiency at level '{level}'", disp, data))
        series_keys = [c for c in varying if c not in ("height", "width")]
        for res, sub in _resolution_groups(g, varying):
            where = f", resolution ({' x '.join(c for c in ('height', 'width') if c in varying)}) {res}" if res else ""
            name = f"efficiency_{level}" + (f"_{res}" if res else "")
            blocks.append(figure_from_matplotlib(
                _plot_level(sub, f"Efficiency, level = {level}{where}", series_keys), name,
                f"FLOPs, latency, peak memory and speedup vs duration, level '{level}'{where}"))
    return blocks
