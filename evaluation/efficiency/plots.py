"""Matplotlib plots of a sweep, one PNG per (metric, level), one panel per resolution, x = video frames:

* ``flops_<level>.png``   analytic FLOPs (line; hollow markers = analytic-only points) and counted FLOPs (x), the
  paper's Figure-1 view;
* ``latency_<level>.png`` median latency with the half-range as error bars (measured points only);
* ``memory_<level>.png``  peak working memory (measured points only);
* ``speedup_<level>.png`` measured speedup vs softmax (solid) with the analytic FLOPs ratio (dashed, same colour).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

METRICS = ("flops", "latency", "memory", "speedup")


def _series(w: pd.DataFrame):
    for key, g in w.groupby(["model", "converted_blocks"], dropna=False, sort=False):
        model, conv = key
        label = model if conv is None or pd.isna(conv) or g["level"].iloc[0] != "model" else f"{model} ({int(conv)} blocks)"
        yield label, g.sort_values("frames")


def write_plots(w: pd.DataFrame, out_dir) -> list[Path]:
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
        resolutions = list(dict.fromkeys(zip(wl["height"], wl["width"])))
        for metric in METRICS:
            fig, axes = plt.subplots(1, len(resolutions), figsize=(6.2 * len(resolutions), 4.6), squeeze=False)
            for ax, (h, wd) in zip(axes[0], resolutions):
                g = wl[(wl["height"] == h) & (wl["width"] == wd)]
                colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
                for j, (label, s) in enumerate(_series(g)):
                    c = colors[j % len(colors)]
                    x = s["frames"].astype(float)
                    if metric == "flops":
                        y = s["flops_analytic"].astype(float)
                        ax.plot(x, y, "-", color=c, label=label)
                        meas = ~s["analytic_only"].astype(bool)
                        ax.scatter(x[meas], y[meas], color=c, s=16, zorder=3)
                        ax.scatter(x[~meas], y[~meas], facecolors="none", edgecolors=c, s=30, zorder=3)
                        cnt = s["flops_counted"].astype(float)
                        ax.scatter(x[cnt.notna()], cnt[cnt.notna()], marker="x", color=c, s=40, zorder=4)
                    elif metric == "latency":
                        y = s["latency_ms"].astype(float)
                        ok = y.notna()
                        if ok.any():
                            ax.errorbar(x[ok], y[ok], yerr=s["latency_spread_ms"].astype(float)[ok].fillna(0),
                                        fmt="-o", ms=3, color=c, label=label, capsize=2)
                    elif metric == "memory":
                        y = s["peak_mem_bytes"].astype(float) / 2**20
                        ok = y.notna()
                        if ok.any():
                            ax.plot(x[ok], y[ok], "-o", ms=3, color=c, label=label)
                    else:
                        y = s["speedup_vs_softmax"].astype(float)
                        ok = y.notna()
                        if ok.any():
                            ax.plot(x[ok], y[ok], "-o", ms=3, color=c, label=f"{label} measured")
                        r = s["flops_ratio_vs_softmax"].astype(float)
                        ax.plot(x, r, "--", color=c, alpha=0.8, label=f"{label} FLOPs ratio")
                    oom = s["oom"].astype(bool)
                    for xx in x[oom]:
                        ax.annotate("OOM", (xx, 0.95), xycoords=("data", "axes fraction"), color=c, fontsize=7,
                                    ha="center")
                ax.set_title(f"{level}, {int(h)}x{int(wd)}", fontsize=9)
                ax.set_xlabel("video frames (duration)")
                ax.set_ylabel({"flops": "FLOPs (analytic: line/o, hollow = analytic only; counted: x)",
                               "latency": "latency, ms (median ± half-range)",
                               "memory": "peak working memory, MiB",
                               "speedup": "speedup vs softmax (solid) / FLOPs ratio (dashed)"}[metric], fontsize=8)
                ys = [np.asarray(ln.get_ydata(), dtype=float) for ln in ax.lines]
                ys += [np.ma.filled(np.ma.asarray(col.get_offsets(), dtype=float), np.nan)[:, 1]
                       for col in ax.collections if len(col.get_offsets())]
                ys = np.concatenate(ys) if ys else np.array([])
                if np.any(np.isfinite(ys) & (ys > 0)):
                    ax.set_yscale("log")
                else:
                    ax.text(0.5, 0.5, "no measured points", transform=ax.transAxes, ha="center", color="grey")
                ax.grid(alpha=0.3, which="both")
                if metric == "speedup":
                    ax.axhline(1.0, color="grey", lw=0.8)
            handles, labels = axes[0][0].get_legend_handles_labels()
            for ax in axes[0][1:]:
                for hd, lb in zip(*ax.get_legend_handles_labels()):
                    if lb not in labels:
                        handles.append(hd)
                        labels.append(lb)
            fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
            rows = -(-len(labels) // 3)
            fig.tight_layout(rect=(0, min(0.45, 0.04 * rows + 0.02), 1, 1))
            path = out_dir / f"{metric}_{level}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            paths.append(path)
    return paths
