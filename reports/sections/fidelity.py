"""Teacher fidelity: PSNR / SSIM / latent relative error of each candidate against its reference (teacher) videos.

Per-video records are summarised per (model, reference, metric); an infinite PSNR (identical videos) is counted
separately and shown as ``inf`` — it is not averaged into the finite mean.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from matplotlib.ticker import MaxNLocator
import pandas as pd

from reports.blocks import Table, Text, figure_from_matplotlib
from reports.fmt import num
from reports.honesty import MARK, MARK_NOTE, mark
from reports.registry import section
from reports.sections._common import SCORED, color_cycle, new_figure, no_suite_data, note, ordered, reason

METRICS = ["psnr", "ssim", "latent_rel_err"]
UNITS = {"psnr": "dB", "ssim": "", "latent_rel_err": ""}


def _reference(details) -> str:
    ref = details.get("reference") if isinstance(details, dict) else None
    return "—" if ref is None else str(ref)


def _summary(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (lab, ref, dim), g in df.groupby(["label", "reference", "dimension"], sort=False):
        scored = g[g["status"].isin(SCORED)]
        vals = scored["score"].to_numpy(dtype=float)
        finite = vals[np.isfinite(vals)]
        rows.append(dict(model=lab, reference=ref, metric=dim, n_records=len(g), n_scored=len(scored),
                         n_not_scored=len(g) - len(scored), n_inf=int(np.isposinf(vals).sum()),
                         mean_finite=float(finite.mean()) if len(finite) else (math.inf if len(vals) else np.nan),
                         std_finite=float(finite.std(ddof=1)) if len(finite) > 1 else np.nan,
                         min=float(vals.min()) if len(vals) else np.nan,
                         max=float(vals.max()) if len(vals) else np.nan,
                         n_non_standard=int((scored["status"] == "non_standard").sum()),
                         untrained=bool(g["untrained"].astype(bool).any() or g["reference_untrained"].astype(bool).any())
                         if "untrained" in g else False))
    return pd.DataFrame(rows)


def _display(summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (lab, ref), g in summary.groupby(["model", "reference"], sort=False):
        row = {"model": lab, "reference": ref}
        g = g.set_index("metric")
        n = int(g["n_records"].max())
        row["videos"] = str(n)
        for m in ordered(g.index, METRICS):
            r = g.loc[m]
            unit = f" ({UNITS[m]})" if UNITS.get(m) else ""
            mean = num(r["mean_finite"])
            if m == "psnr" and r["n_inf"]:
                mean += f" ({int(r['n_inf'])} identical: inf)"
            untrained = bool(r.get("untrained", False))
            row[f"{m} mean{unit}"] = mark(mean + (" †" if r["n_non_standard"] else ""), untrained)
            row[f"{m} min–max"] = mark(f"{num(r['min'])}–{num(r['max'])}", untrained)
        row["not scored"] = str(int(g["n_not_scored"].sum()))
        rows.append(row)
    return pd.DataFrame(rows)


def _per_frame_figure(df: pd.DataFrame):
    """Mean per-frame curve per model for each metric with ``details.per_frame`` lists (inf frames omitted)."""
    metrics = [m for m in ordered(df["dimension"], METRICS)
               if any(isinstance(d.get("per_frame"), list) and d["per_frame"]
                      for d in df[df["dimension"] == m]["details"])]
    if not metrics:
        return None
    fig, axes = new_figure(4.2 * len(metrics), 3.4, 1, len(metrics), squeeze=False)
    colors = color_cycle()
    for ax, m in zip(axes[0], metrics):
        sub = df[(df["dimension"] == m) & df["status"].isin(SCORED)]
        for j, ((lab, ref), g) in enumerate(sub.groupby(["label", "reference"], sort=False)):
            curves = [np.asarray([np.nan if v is None else float(v) for v in d.get("per_frame") or []], float)
                      for d in g["details"]]
            curves = [c for c in curves if len(c)]
            if not curves:
                continue
            length = max(len(c) for c in curves)
            mat = np.full((len(curves), length), np.nan)
            for i, c in enumerate(curves):
                mat[i, :len(c)] = c
            mat[~np.isfinite(mat)] = np.nan
            with warnings.catch_warnings():  # all-NaN frame (every video identical there): mean is NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(mat, axis=0)
            ax.plot(np.arange(length), mean, marker=".", color=colors[j % len(colors)], label=f"{lab} vs {ref}" + (f" {MARK} (random weights)" if g["untrained"].astype(bool).any()
                                                  or g["reference_untrained"].astype(bool).any() else ""))
        ax.set_title(m)
        ax.set_xlabel("frame")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


@section("fidelity", "Teacher fidelity", order=30)
def build(ctx):
    df = ctx.suite("fidelity")
    if df.empty:
        return no_suite_data(ctx, "fidelity", "teacher-fidelity results")
    df["reference"] = [_reference(d) for d in df["details"]]
    per_video = df[df["video"].notna()]
    if per_video.empty:
        per_video = df  # only model-level records stored: summarise those
    summary = _summary(per_video)
    notes = (MARK_NOTE + " (candidate or reference)",) if summary["untrained"].any() else ()
    blocks = [Text("Per candidate model against its reference (teacher) videos: mean over videos of finite values; "
                   "PSNR of identical videos is infinite and is counted, not averaged. '†' = includes non-standard "
                   "scores. Higher PSNR/SSIM and lower latent_rel_err mean closer to the teacher."),
              Table("fidelity_summary", "Teacher fidelity per model", _display(summary), summary, latex=True,
                    notes=notes)]
    bad = per_video[~per_video["status"].isin(SCORED)]
    if len(bad):
        blocks.append(Table("fidelity_not_scored", "Fidelity records without a score, with the reason",
                            pd.DataFrame({"model": bad["label"], "video": bad["video"], "metric": bad["dimension"],
                                          "reason": [reason(s, m) for s, m in zip(bad["status"], bad["message"])]})))
    fig = _per_frame_figure(per_video)
    if fig is not None:
        blocks.append(figure_from_matplotlib(fig, "fidelity_per_frame",
                                             "Mean per-frame fidelity over videos (frames with infinite PSNR omitted)"))
    else:
        blocks.append(note("No per-frame values (details.per_frame) stored, so no per-frame plot."))
    return blocks
