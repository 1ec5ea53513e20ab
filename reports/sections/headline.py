"""Headline: who wins, by how much, at what cost -- one row per compared model, from whatever the stores hold.

* quality per model: VBench Total (+ Quality / Semantic when any model has them), VBench-2.0 Total (+ categories
  when any model has them), teacher fidelity (PSNR / SSIM / latent error vs the reference), scored-dimension counts;
* attention cost per kind (op level): measured speedup vs softmax with the analytic FLOPs ratio beside it, and peak
  working memory, at 81 / 161 / 321 frames (else the longest measured durations, said so);
* human preference: win / tie / loss with CIs per comparison.

Every number keeps its marks (``†`` non-standard, ``‡`` random weights); an aggregate is shown only when complete.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports.blocks import Table
from reports.fmt import nbytes, num
from reports.honesty import MARK_NOTE, mark
from reports.registry import section
from reports.sections import _dimensions as dimx
from reports.sections._common import SCORED, note
from reports.sections.coverage import SUITES
from reports.sections.vbench import NONSTD_NOTE, V1_PARTS, V2_PARTS, aggregate_rows, suite_status

TARGET_FRAMES = (81, 161, 321)
FID_COLUMNS = (("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 4), ("latent_rel_err", "latent rel. err", 4))


# ------------------------------------------------------------------------------------------------ quality
def _quality(ctx):
    labels: dict = {}  # label -> untrained
    parts = {"vbench": V1_PARTS, "vbench2": V2_PARTS}
    status, aggs = {}, {}
    for suite, name, official in SUITES:
        st = suite_status(ctx, suite, official)
        if st is None:
            continue
        status[suite] = st
        for lab, u in zip(st["label"], st["untrained"]):
            labels[lab] = labels.get(lab, False) or bool(u)
        rows, _, _ = aggregate_rows(suite, st, official, parts[suite])
        aggs[suite] = {r["model"]: r for r in rows} if rows else None
    fid = ctx.suite("fidelity")
    fid_refs = {}
    if len(fid):
        fid = fid.assign(reference=[str(d.get("reference", "—")) for d in fid["details"]])
        for lab, ref, u, ru in zip(fid["label"], fid["reference"], fid["untrained"], fid["reference_untrained"]):
            labels[lab] = labels.get(lab, False) or bool(u)
            fid_refs.setdefault(lab, ref)  # a model seen only as a reference gets no row of its own
    if not labels:
        return None
    rows, data = [], []
    for lab, untrained in labels.items():
        row, drow = {"model": lab}, {"model": lab, "random_weights": untrained}
        for suite, name, official in SUITES:
            if suite not in status:
                continue
            st = status[suite]
            mine = st[(st["label"] == lab) & st["official"]]
            agg = (aggs.get(suite) or {}).get(lab)
            n_ok = int((mine["status"] == "ok").sum())
            n_ns = int((mine["status"] == "non_standard").sum())
            cols = [c for c in parts[suite] if c != "Total"]
            show = [c for c in cols if any(a and a.get(c) not in (None, "incomplete")
                                           for a in (aggs.get(suite) or {}).values())]
            for c in ["Total"] + show:
                head = f"{name} {c}"
                if mine.empty:
                    row[head], drow[head] = "—", np.nan
                elif agg and agg.get(c) not in (None, "incomplete"):
                    row[head], drow[head] = agg[c], agg[c]
                else:
                    row[head] = (f"— ({n_ok}/{len(official)} ok" + (f", {n_ns} †" if n_ns else "") + ")"
                                 if c == "Total" else "incomplete")
                    drow[head] = np.nan
            drow[f"{name} dimensions ok"] = n_ok if not mine.empty else np.nan
        if len(fid):
            mine = fid[(fid["label"] == lab) & fid["video"].notna()]
            refs = set(fid.loc[fid["label"] == lab, "reference"])
            ref_untrained = bool(fid.loc[fid["label"] == lab, "reference_untrained"].astype(bool).any())
            row["fidelity vs"] = ("(reference)" if mine.empty and lab in set(fid["reference"]) else
                                  mark(", ".join(sorted(refs)), ref_untrained) if refs else "—")
            for dim, head, digits in FID_COLUMNS:
                vals = mine[(mine["dimension"] == dim) & mine["status"].isin(SCORED)]["score"].to_numpy(float)
                finite = vals[np.isfinite(vals)]
                untr = bool(untrained or mine["reference_untrained"].astype(bool).any())
                if not len(vals):
                    row[head], drow[head] = "—", np.nan
                    continue
                v = float(finite.mean()) if len(finite) else math.inf
                text = num(v, digits) + (" †" if (mine["status"] == "non_standard").any() else "")
                row[head], drow[head] = mark(text, untr), v
        rows.append(row)
        data.append(drow)
    return pd.DataFrame(rows).fillna("—"), pd.DataFrame(data)


# ------------------------------------------------------------------------------------------------ cost
def _cost(ctx):
    eff = ctx.suite("efficiency")
    if eff.empty:
        return None
    from evaluation.efficiency import plots
    from evaluation.efficiency.table import flatten_records, wide

    recs = [dict(r, model=r["label"]) for r in eff[["run_id", "label", "dimension", "score", "status", "message",
                                                    "details", "provenance"]].to_dict("records")]
    w = wide(flatten_records(recs))
    level = next((lv for lv in ("op", "block", "model") if (w["level"] == lv).any()), None)
    if level is None:
        return None
    w = plots.with_series(w[w["level"] == level])
    res_pts = {}
    for (h, wd), g in w.groupby(["height", "width"]):
        res_pts[(int(h), int(wd))] = set(int(f) for f in g["frames"])
    with_targets = [r for r, fs in res_pts.items() if fs & set(TARGET_FRAMES)]
    h, wd = max(with_targets or res_pts, key=lambda r: r[0] * r[1])
    g = w[(w["height"] == h) & (w["width"] == wd)]
    frames = [f for f in TARGET_FRAMES if f in res_pts[(h, wd)]]
    fallback = not frames
    if fallback:
        frames = sorted(res_pts[(h, wd)])[-3:]
    series = plots.series_groups(g)[0][1]
    rows, data = [], []
    lower_bound = False
    for s in series:
        sg = g[g["series"] == s]
        row, drow = {"attention kind": s}, {"kind": s}
        for f in frames:
            p = sg[sg["frames"] == f]
            if p.empty:
                row[f"speedup @{f}"] = row[f"peak mem @{f}"] = "—"
                continue
            p = p.iloc[0]
            sp, ratio, mem = p["speedup_vs_softmax"], p["flops_ratio_vs_softmax"], p["peak_mem_bytes"]
            ratio_txt = f"FLOPs {ratio:.2f}×" if _finite(ratio) else "FLOPs —"
            if p["oom"]:
                row[f"speedup @{f}"] = f"OOM ({ratio_txt})"
            elif _finite(sp):
                row[f"speedup @{f}"] = f"{sp:.2f}× ({ratio_txt})"
            else:
                row[f"speedup @{f}"] = f"— ({'analytic only; ' if p['analytic_only'] else ''}{ratio_txt})"
            lb = bool(p.get("peak_mem_lower_bound", False))
            lower_bound |= lb and _finite(mem)
            row[f"peak mem @{f}"] = ("OOM" if p["oom"] else (("≥ " if lb else "") + nbytes(mem)) if _finite(mem)
                                     else "—")
            drow.update({f"speedup_{f}": sp, f"flops_ratio_{f}": ratio, f"peak_mem_bytes_{f}": mem,
                         f"peak_mem_lower_bound_{f}": lb})
        rows.append(row)
        data.append(drow)
    where = f"level {level}, {h}x{wd}, @ = video frames"
    notes = ["speedup = softmax latency / kind latency, measured in the same run; FLOPs = the analytic ratio "
             "(softmax / kind), the prediction to compare against"]
    if fallback:
        notes.insert(0, f"81/161/321 frames are not in the store: shown at the longest measured durations "
                        f"({', '.join(map(str, frames))} frames)")
    if lower_bound:
        notes.append("≥ lower bound: the CPU tracker does not see buffers a fused kernel allocates inside itself")
    return pd.DataFrame(rows), pd.DataFrame(data), where, tuple(notes)


def _finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------------------------------ human study
def _human(ctx):
    from reports.sections.human_study import _net, _share

    rows, data = [], []
    for st in ctx.studies:
        w = st.tables.get("win_tie_loss")
        if w is None or not len(w):
            continue
        overall = w[w["criterion"].astype(str) == "overall"]
        w = overall if len(overall) else w
        for r in w.to_dict("records"):
            rows.append({"comparison (A vs B)": f"{r['model_a']} vs {r['model_b']}", "criterion": r["criterion"],
                         "n": str(int(r["n"])) if _finite(r["n"]) else "—",
                         "A wins": _share(r["wins_a"], r["p_a"], r["ci_low_a"], r["ci_high_a"]),
                         "ties": _share(r["ties"], r["p_tie"], r["ci_low_tie"], r["ci_high_tie"]),
                         "B wins": _share(r["wins_b"], r["p_b"], r["ci_low_b"], r["ci_high_b"]),
                         "net pref. A [CI]": _net(r["net_pref"], r["net_pref_boot_low"], r["net_pref_boot_high"]),
                         "sign test p (Holm)": num(r["sign_test_p_holm"], 4)})
            data.append({**r, "study": st.name})
    return (pd.DataFrame(rows), pd.DataFrame(data)) if rows else None


FID_HEADS = ["fidelity vs"] + [h for _, h, _ in FID_COLUMNS]


def _marks_notes(disp: pd.DataFrame, untrained: bool, first: str) -> tuple:
    notes = [first]
    if disp.astype(str).apply(lambda c: c.str.contains("†")).any().any():
        notes.append(NONSTD_NOTE)
    if untrained:
        notes.append(MARK_NOTE)
    return tuple(notes)


def _quality_tables(disp: pd.DataFrame, raw: pd.DataFrame) -> list:
    """Benchmark table (VBench / VBench-2.0 Totals, + sub-scores when any model has them) and fidelity table."""
    out = []
    bench = [c for c in disp.columns if c not in FID_HEADS and c != "model"]
    has_bench = [lab for lab, row in zip(disp["model"], disp[bench].to_dict("records")) if any(v != "—"
                                                                                             for v in row.values())]
    if bench and has_bench:
        d = disp[disp["model"].isin(has_bench)][["model"] + bench].rename(
            columns=lambda c: c.replace("VBench-2.0 ", "") if c != "VBench-2.0 Total" else c).rename(
            columns={"VBench Quality": "Quality", "VBench Semantic": "Semantic"})
        r = raw[raw["model"].isin(has_bench)]
        out.append(Table("headline_quality", "VBench / VBench-2.0 per model", d, r, latex=True,
                         notes=_marks_notes(d, bool(r["random_weights"].any()),
                                            "Totals only when every official dimension has an ok score (never a "
                                            "filled-in 0); '— (k/N ok)' counts the ok ones. Quality / Semantic and "
                                            "the VBench-2.0 categories appear when a model has them.")))
    if "fidelity vs" in disp.columns:
        cand = disp["fidelity vs"] != "(reference)"
        cand &= disp[[h for _, h, _ in FID_COLUMNS]].ne("—").any(axis=1)
        if cand.any():
            d = disp[cand][["model"] + FID_HEADS].rename(columns={"fidelity vs": "reference"})
            r = raw[cand.values]
            out.append(Table("headline_fidelity", "Fidelity to the reference per model",
                             d, r, latex=True,
                             notes=_marks_notes(d, bool(r["random_weights"].any()),
                                                "Mean over videos; higher PSNR / SSIM and lower latent error "
                                                "= closer to the reference (the teacher, for ReHyAt).")))
    return out


@section("headline", "Headline results", order=5)
def build(ctx):
    blocks = []
    q = _quality(ctx)
    later = []
    if q is not None:
        for t in _quality_tables(*q):  # a table without a single number (e.g. no complete VBench) goes last
            has_number = t.display.drop(columns="model").apply(
                lambda c: c.astype(str).str.match(r"^(≥ )?\d")).any().any()
            (blocks if has_number else later).append(t)
    c = _cost(ctx)
    if c is not None:
        disp, raw, where, notes = c
        blocks.append(Table("headline_efficiency", f"Attention cost per kind ({where})", disp, raw, latex=True,
                            notes=notes))
    h = _human(ctx)
    if h is not None:
        blocks.append(Table("headline_human", "Human preference (win / tie / loss with 95% CIs)", h[0], h[1],
                            latex=True))
    blocks += later
    if not blocks:
        return [note("Nothing to compare: the inputs hold no VBench, VBench-2.0, fidelity, efficiency or "
                     "human-study results.")]
    return blocks
