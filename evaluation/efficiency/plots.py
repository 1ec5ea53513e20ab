"""Plots of a sweep (matplotlib), drawn from the wide table of :mod:`evaluation.efficiency.table`; used for
``RUN_DIR/efficiency/plots/`` and by the report (``reports/sections/efficiency.py``), so both look the same.

Rules, so that a plot stays readable at 11+ kinds:

* **one colour per attention kind** (softmax, linear, hybrid, hybrid_recurrent, chunk_local; Okabe-Ito, colour-blind
  safe) in every plot; a kind's configurations (T_c, T_o) and converted-block counts differ by line style and marker;
* **at most six series a panel**: the *main comparison* (softmax and each kind at its main setting, T_c = 3, T_o = 1
  where measured) and, per kind swept over several configurations, a *configuration grid* (softmax as reference
  plus that kind's configurations);
* **log axes where the values span more than a decade** (y), and where the durations span 8x or more (x);
* **the analytic prediction beside the measurement**: FLOPs analytic (line) vs counted (x); speedup measured (solid)
  vs the analytic FLOPs ratio (dashed); working memory measured vs the analytic estimate (dashed). Memory that the
  method cannot fully see (CPU: kernel-internal buffers) is drawn as a lower bound (upward triangles, "≥").

Files (:func:`write_plots`): ``{flops,latency,memory,speedup}_{op,block,model}.{png,pdf}``, one row of panels per
resolution, one column per series group, x = video frames.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .table import base_kind

METRICS = ("flops", "latency", "memory", "speedup")
MAX_SERIES = 6
MAIN_CONFIG = (3, 1)  # the paper's main setting, T_c = 3, T_o = 1
KIND_ORDER = ("softmax", "linear", "hybrid", "hybrid_recurrent", "chunk_local")
KIND_COLORS = {"softmax": "#000000", "linear": "#E69F00", "hybrid": "#0072B2", "hybrid_recurrent": "#009E73",
               "chunk_local": "#CC79A7"}
EXTRA_COLORS = ("#D55E00", "#56B4E9", "#999933", "#882255")
# (line style, marker) per configuration of a kind, main setting first
STYLES = (("-", "o"), ("--", "s"), ("-.", "^"), (":", "D"), ((0, (5, 1, 1, 1)), "v"), ((0, (1, 3)), "P"))
CONFIG_ORDER = ((3, 1), (3, 0), (1, 1), (1, 0))
YLABEL = {"flops": "FLOPs", "latency": "latency (ms)", "memory": "peak working memory", "speedup":
          "speedup vs softmax (×)"}
TITLE = {"flops": "FLOPs: analytic (line) vs counted (×)", "latency": "latency, median ± half-range",
         "memory": "working memory: measured vs analytic (dashed)",
         "speedup": "speedup: measured (solid, filled) vs analytic FLOPs ratio (dashed, hollow)"}


# ------------------------------------------------------------------------------------------------ series and style
def series_label(model, converted_blocks, level) -> str:
    if level == "model" and converted_blocks is not None and not pd.isna(converted_blocks):
        return f"{model} ({int(converted_blocks)} blocks)"
    return str(model)


def with_series(w: pd.DataFrame) -> pd.DataFrame:
    """The wide table plus ``series`` (label of one line) and ``base`` / ``tc`` / ``to`` (parsed kind)."""
    w = w.copy()
    w["series"] = [series_label(m, c, lv) for m, c, lv in zip(w["model"], w["converted_blocks"], w["level"])]
    parsed = [base_kind(m) for m in w["model"]]
    w["base"] = [k if isinstance(k, str) and k else p[0] for k, p in zip(w.get("kind", [None] * len(w)), parsed)]
    w["tc"] = [p[1] for p in parsed]
    w["to"] = [p[2] for p in parsed]
    return w


def _kind_rank(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def _ordered_series(w: pd.DataFrame) -> list[str]:
    meta = w.drop_duplicates("series")
    key = {s: (_kind_rank(b), b, CONFIG_ORDER.index((tc, to)) if (tc, to) in CONFIG_ORDER else 9, tc or 0, to or 0,
               str(s)) for s, b, tc, to in zip(meta["series"], meta["base"], meta["tc"], meta["to"])}
    return sorted(key, key=key.get)


def series_groups(w: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """[(group name, series)] with at most :data:`MAX_SERIES` series each: ``main`` (softmax + every kind at its main
    setting, T_c = 3 / T_o = 1 where present, else its first configuration), then ``<kind>_grid`` for every kind
    measured at several configurations (softmax as the reference + that kind's configurations)."""
    w = w if "series" in w.columns else with_series(w)
    order = _ordered_series(w)
    meta = w.drop_duplicates("series").set_index("series")
    by_kind: dict[str, list[str]] = {}
    for s in order:
        by_kind.setdefault(meta.loc[s, "base"], []).append(s)
    main = []
    for kind, ss in by_kind.items():
        configs = [(meta.loc[s, "tc"], meta.loc[s, "to"]) for s in ss]
        pick = MAIN_CONFIG if MAIN_CONFIG in configs else configs[0]
        main += [s for s, c in zip(ss, configs) if c == pick]
    groups = [("main", main[:MAX_SERIES])]
    spill = main[MAX_SERIES:]
    ref = [s for s in by_kind.get("softmax", [])[:1]]
    for kind, ss in by_kind.items():
        if kind == "softmax":
            continue
        configs = {(meta.loc[s, "tc"], meta.loc[s, "to"]) for s in ss}
        extra = [s for s in spill if s in ss]
        if len(configs) > 1 or extra:
            room = MAX_SERIES - len(ref)
            for i in range(0, len(ss), room):
                part = ss[i:i + room]
                groups.append((f"{kind}_grid" + (f"_{i // room + 1}" if len(ss) > room else ""), ref + part))
    return groups


def colors_for(kinds) -> dict[str, str]:
    """One colour per attention kind; kinds outside :data:`KIND_COLORS` get the extra colours in sorted order."""
    out = dict(KIND_COLORS)
    extra = sorted(k for k in set(kinds) if k not in out)
    for i, k in enumerate(extra):
        out[k] = EXTRA_COLORS[i % len(EXTRA_COLORS)]
    return out


def styles_for(w: pd.DataFrame) -> dict[str, tuple]:
    """series -> (colour, line style, marker): colour by kind, style by the series' rank among its kind's series."""
    w = w if "series" in w.columns else with_series(w)
    meta = w.drop_duplicates("series").set_index("series")
    colors = colors_for(meta["base"])
    out, rank = {}, {}
    for s in _ordered_series(w):
        k = meta.loc[s, "base"]
        i = rank.get(k, 0)
        rank[k] = i + 1
        ls, mk = STYLES[i % len(STYLES)]
        out[s] = (colors[k], ls, mk)
    return out


# ------------------------------------------------------------------------------------------------ one panel
def _num(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)


def _bytes_unit(values) -> tuple[float, str]:
    v = np.asarray([x for x in values if np.isfinite(x) and x > 0])
    top = v.max() if len(v) else 1.0
    for scale, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if top >= scale:
            return float(scale), name
    return 1.0, "B"


def draw_panel(ax, g: pd.DataFrame, metric: str, series: list[str], style: dict) -> bool:
    """Draw ``metric`` for ``series`` of one level/resolution on ``ax``; False when nothing could be drawn (the
    panel then says so instead of showing empty axes)."""
    g = g if "series" in g.columns else with_series(g)
    ys_all, xs_all = [], []
    unit = (1.0, "")
    if metric == "memory":
        unit = _bytes_unit(np.concatenate([_num(g["peak_mem_bytes"]), _num(g.get("analytic_memory_bytes",
                                                                                 pd.Series(dtype=float)))]))
    lower_bound_seen = False
    for s in series:
        sg = g[g["series"] == s].sort_values("frames")
        if sg.empty:
            continue
        c, ls, mk = style[s]
        x = _num(sg["frames"])
        meas = ~sg["analytic_only"].fillna(False).astype(bool).to_numpy()
        if metric == "flops":
            y = _num(sg["flops_analytic"])
            ok = np.isfinite(y)
            ax.plot(x[ok], y[ok], linestyle=ls, color=c, label=s, lw=1.4)
            ax.scatter(x[ok & meas], y[ok & meas], color=c, marker=mk, s=18, zorder=3)
            ax.scatter(x[ok & ~meas], y[ok & ~meas], facecolors="none", edgecolors=c, marker=mk, s=30, zorder=3)
            cnt = _num(sg["flops_counted"])
            okc = np.isfinite(cnt)
            ax.scatter(x[okc], cnt[okc], marker="x", color=c, s=36, zorder=4, lw=1.2)
            ys_all += [y[ok], cnt[okc]]
        elif metric == "latency":
            y = _num(sg["latency_ms"])
            ok = np.isfinite(y)
            if ok.any():
                err = np.nan_to_num(_num(sg["latency_spread_ms"])[ok])
                ax.errorbar(x[ok], y[ok], yerr=err, linestyle=ls, marker=mk, ms=4, color=c, label=s, capsize=2,
                            lw=1.4)
                ys_all.append(y[ok])
        elif metric == "memory":
            y = _num(sg["peak_mem_bytes"]) / unit[0]
            ok = np.isfinite(y)
            lb = sg["peak_mem_lower_bound"].fillna(False).astype(bool).to_numpy() if "peak_mem_lower_bound" in sg \
                else np.zeros(len(sg), bool)
            if ok.any():
                ax.plot(x[ok], y[ok], linestyle=ls, color=c, label=s, lw=1.4)
                ax.scatter(x[ok & ~lb], y[ok & ~lb], color=c, marker=mk, s=18, zorder=3)
                ax.scatter(x[ok & lb], y[ok & lb], color=c, marker="^", s=34, zorder=3)
                lower_bound_seen |= bool((ok & lb).any())
                ys_all.append(y[ok])
            if "analytic_memory_bytes" in sg:
                a = _num(sg["analytic_memory_bytes"]) / unit[0]
                oka = np.isfinite(a)
                if oka.any():
                    ax.plot(x[oka], a[oka], linestyle=(0, (2, 2)), color=c, lw=0.9, alpha=0.8)
                    ys_all.append(a[oka])
        else:
            # measured: solid line, filled marker; analytic FLOPs ratio: dashed, hollow marker of the same shape
            y = _num(sg["speedup_vs_softmax"])
            ok = np.isfinite(y)
            if ok.any():
                ax.plot(x[ok], y[ok], linestyle="-", marker=mk, ms=4, color=c, label=s, lw=1.4)
                ys_all.append(y[ok])
            r = _num(sg["flops_ratio_vs_softmax"])
            okr = np.isfinite(r)
            if okr.any():
                ax.plot(x[okr], r[okr], linestyle="--", marker=mk, ms=4, mfc="none", color=c, lw=1.0, alpha=0.85,
                        label=None if ok.any() else s)
                ys_all.append(r[okr])
        oom = sg["oom"].fillna(False).astype(bool).to_numpy()
        for xx in x[oom]:
            ax.plot([xx], [0.96], marker="x", color=c, ms=8, mew=2, transform=ax.get_xaxis_transform())
            ax.text(xx, 0.89, "OOM", color=c, fontsize=7, ha="center", transform=ax.get_xaxis_transform())
        xs_all.append(x)
    ys = np.concatenate(ys_all) if ys_all else np.array([])
    ys = ys[np.isfinite(ys)]
    if not len(ys):
        ax.text(0.5, 0.5, "no stored values", transform=ax.transAxes, ha="center", va="center", color="#666",
                fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        return False
    pos = ys[ys > 0]
    if len(pos) == len(ys) and pos.max() / pos.min() > 10:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if pos.max() / pos.min() < 1e3
                                              else (1.0,)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    xs = np.concatenate(xs_all)
    xs = xs[np.isfinite(xs) & (xs > 0)]
    if len(xs) and xs.max() / xs.min() >= 8:
        ax.set_xscale("log")
        ticks = sorted(set(int(v) for v in xs))
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.minorticks_off()
    elif len(xs):
        ax.set_xticks(sorted(set(int(v) for v in xs)))
    if metric == "speedup":
        ax.axhline(1.0, color="grey", lw=0.8, zorder=0)
    label = YLABEL[metric] + (f" ({unit[1]})" if metric == "memory" else "")
    if metric == "memory" and lower_bound_seen:
        label += "; ▲ = lower bound"
    ax.set_ylabel(label, fontsize=8)
    ax.set_xlabel("video frames (duration)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, which="major")
    return True


def _legend(fig, axes) -> None:
    handles, labels = [], []
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab and not lab.startswith("_") and lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(3, len(labels)), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 0.0))


# ------------------------------------------------------------------------------------------------ figures
def overview_figure(g: pd.DataFrame, series: list[str], title: str, style: dict | None = None):
    """2 x 2 figure (FLOPs, latency, memory, speedup) of ``series`` at one level and resolution."""
    import matplotlib.pyplot as plt

    g = with_series(g) if "series" not in g.columns else g
    style = style or styles_for(g)
    fig, axes = plt.subplots(2, 2, figsize=(10.5, 7.2))
    drawn = [draw_panel(ax, g, metric, series, style) for ax, metric in zip(axes.flat, METRICS)]
    for ax, metric in zip(axes.flat, METRICS):
        ax.set_title(TITLE[metric], fontsize=9)
    fig.empty_panels = drawn.count(False)  # read by reports.blocks.figure_from_matplotlib
    fig.suptitle(f"{title}  (hollow markers: analytic only; × at top: OOM)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    _legend(fig, axes)
    return fig


def metric_figure(wl: pd.DataFrame, metric: str, level: str):
    """One metric at one level: a row of panels per resolution, a column per series group (≤ 6 series each)."""
    import matplotlib.pyplot as plt

    wl = with_series(wl)
    style = styles_for(wl)
    groups = series_groups(wl)
    resolutions = list(dict.fromkeys(zip(wl["height"], wl["width"])))
    fig, axes = plt.subplots(len(resolutions), len(groups), figsize=(5.4 * len(groups), 3.9 * len(resolutions)),
                             squeeze=False)
    for i, (h, wd) in enumerate(resolutions):
        g = wl[(wl["height"] == h) & (wl["width"] == wd)]
        for j, (name, series) in enumerate(groups):
            ax = axes[i][j]
            draw_panel(ax, g, metric, series, style)
            what = "main comparison" if name == "main" else name.replace("_grid", " configurations")
            ax.set_title(f"{level}, {int(h)}x{int(wd)}: {what}", fontsize=9)
    fig.suptitle(TITLE[metric], fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    _legend(fig, axes)
    return fig


def write_plots(w: pd.DataFrame, out_dir) -> list[Path]:
    """``{metric}_{level}.png`` (+ ``.pdf``) for every level present; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if w.empty:
        return paths
    for level in [lv for lv in ("op", "block", "model") if lv in set(w["level"])]:
        wl = w[w["level"] == level]
        for metric in METRICS:
            fig = metric_figure(wl, metric, level)
            path = out_dir / f"{metric}_{level}.png"
            fig.savefig(path, dpi=110, bbox_inches="tight")
            fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight")
            plt.close(fig)
            paths.append(path)
    return paths
