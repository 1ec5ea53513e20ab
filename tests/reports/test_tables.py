"""The Markdown (and CSV) tables of the report are checked against the fixture data they were built from."""

import math

import pandas as pd
import pytest
from report_helpers import md_rows_as_dicts, md_table

import fixture_stores as fs

V1_QUALITY = ["subject_consistency", "background_consistency", "temporal_flickering", "motion_smoothness",
              "dynamic_degree", "aesthetic_quality", "imaging_quality"]


def hand_vbench_total(scores):
    """Hand computation from vbench.md §1.6 (independent of evaluation.aggregate)."""
    norm = {}
    for d, (lo, hi) in fs.V1_MINMAX.items():
        w = 0.5 if d == "dynamic_degree" else 1.0
        norm[d] = (scores[d] - lo) / (hi - lo) * w
    quality = sum(norm[d] for d in V1_QUALITY) / 6.5
    semantic = sum(v for d, v in norm.items() if d not in V1_QUALITY) / 9.0
    return quality, semantic, (4 * quality + semantic) / 5


def test_sections_build_without_error(report):
    assert report["failed"] == []
    assert [s.key for s in report["sections"]] == ["headline", "vbench", "vbench2", "coverage", "fidelity",
                                                   "efficiency", "human_study", "exports", "provenance", "appendix"]


def test_vbench_dimension_table_matches_records(report):
    rows = {r["dimension"]: r for r in md_rows_as_dicts(report["md_text"], "VBench: per-dimension scores")}
    assert list(rows)[:16] == list(fs.V1_COMPLETE)
    for d, v in fs.V1_COMPLETE.items():
        assert rows[d][fs.V1_COMPLETE_MODEL] == f"{v:.4f}"  # aggregate record, not the per-video 0.001 offset
        assert rows[d]["group"] == ("Quality" if d in V1_QUALITY else "Semantic")
    p = fs.V1_PARTIAL_MODEL
    for d, v in fs.V1_PARTIAL_OK.items():
        assert rows[d][p] == f"{v:.4f}"
    assert rows["temporal_flickering"][p] == "0.9750 †"
    assert rows["motion_smoothness"][p] == "— (missing_weights)"  # last record wins over the earlier 'error'
    assert rows["scene"][p] == "— (no_aggregate)"
    assert rows["human_action"][p] == "— (no_record)"


def test_vbench_missing_dimensions_flagged_with_reason(report):
    rows = {r["dimension"]: r for r in md_rows_as_dicts(report["md_text"], "VBench: dimensions without an ok score")}
    assert set(rows) == {"temporal_flickering", "motion_smoothness", "scene", "human_action"}
    assert all(r["model"] == fs.V1_PARTIAL_MODEL for r in rows.values())
    assert fs.V1_PARTIAL_MISSING["motion_smoothness"][1] in rows["motion_smoothness"]["reason"]
    assert fs.V1_PARTIAL_NONSTD["temporal_flickering"][1] in rows["temporal_flickering"]["reason"]
    assert "no official aggregate record" in rows["scene"]["reason"]
    assert rows["scene"]["per-video records (scored)"] == "2 (1)"
    assert "no record" in rows["human_action"]["reason"]


def test_vbench_total_complete_and_incomplete(report):
    q, s, t = hand_vbench_total(fs.V1_COMPLETE)
    assert (round(q, 4), round(s, 4), round(t, 4)) == (0.8292, 0.7530, 0.8139)  # literal hand values
    rows = {r["model"]: r for r in md_rows_as_dicts(report["md_text"], "Official aggregates (Quality")}
    full = rows[fs.V1_COMPLETE_MODEL]
    assert (full["Quality"], full["Semantic"], full["Total"]) == (f"{q:.4f}", f"{s:.4f}", f"{t:.4f}")
    assert full["note"] == "complete"
    part = rows[fs.V1_PARTIAL_MODEL]
    assert part["Total"] == part["Quality"] == part["Semantic"] == "incomplete"
    for d in ("motion_smoothness", "temporal_flickering", "scene", "human_action"):
        assert d in part["note"]
    csv = pd.read_csv(report["out"] / "tables" / "vbench_aggregates.csv").set_index("model")
    assert csv.loc[fs.V1_COMPLETE_MODEL, "Total"] == pytest.approx(t, abs=1e-12)
    assert math.isnan(csv.loc[fs.V1_PARTIAL_MODEL, "Total"])  # never a filled-in 0
    comp = {r["model"]: r for r in md_rows_as_dicts(report["md_text"], "VBench: completeness")}
    assert comp[fs.V1_COMPLETE_MODEL]["official dimensions ok"] == "16/16"
    assert comp[fs.V1_PARTIAL_MODEL]["official dimensions ok"] == "12/16"
    assert comp[fs.V1_PARTIAL_MODEL]["of which non-standard"] == "temporal_flickering"


def test_vbench2_dimensions_categories_and_total(report):
    rows = {r["dimension"]: r for r in md_rows_as_dicts(report["md_text"], "VBench-2.0: per-dimension scores")}
    for cat, dims in fs.V2_CATS.items():
        for d in dims:
            assert rows[d]["group"] == cat
            assert rows[d][fs.V1_COMPLETE_MODEL] == f"{fs.V2_COMPLETE[d]:.4f}"
    assert rows["Camera_Motion"][fs.V1_PARTIAL_MODEL] == "— (error)"
    assert rows["Mechanics"][fs.V1_PARTIAL_MODEL] == "— (no_record)"
    agg = {r["model"]: r for r in md_rows_as_dicts(report["md_text"], "Official aggregates (Human Fidelity")}
    cats = {c: sum(fs.V2_COMPLETE[d] for d in ds) / len(ds) for c, ds in fs.V2_CATS.items()}
    for c, v in cats.items():
        assert agg[fs.V1_COMPLETE_MODEL][c] == f"{v:.4f}"
    assert agg[fs.V1_COMPLETE_MODEL]["Total"] == f"{sum(cats.values()) / 5:.4f}" == "0.5430"
    part = agg[fs.V1_PARTIAL_MODEL]
    hf = sum(fs.V2_PARTIAL[d] for d in fs.V2_CATS["Human Fidelity"]) / 3
    assert part["Human Fidelity"] == f"{hf:.4f}"  # a complete category is shown even when the Total is not
    assert part["Controllability"] == part["Total"] == "incomplete"
    nok = {r["dimension"]: r for r in md_rows_as_dicts(report["md_text"], "VBench-2.0: dimensions without")}
    assert fs.V2_PARTIAL_ERROR["Camera_Motion"] in nok["Camera_Motion"]["reason"]
    assert len(nok) == 18 - len(fs.V2_PARTIAL)


def test_fidelity_table_and_infinite_psnr(report):
    (row,) = md_rows_as_dicts(report["md_text"], "Teacher fidelity per model")
    assert row["model"] == fs.FID_MODEL and row["reference"] == fs.FID_REF
    finite_psnr = [m["psnr"][0] for m in fs.FID.values() if math.isfinite(m["psnr"][0])]
    assert row["psnr mean (dB)"] == f"{sum(finite_psnr) / len(finite_psnr):.4f} (1 identical: inf)"
    assert row["psnr min–max"] == f"{min(finite_psnr):.4f}–inf"
    ssim = [m["ssim"][0] for m in fs.FID.values()]
    assert row["ssim mean"] == f"{sum(ssim) / len(ssim):.4f}"
    lre = [m["latent_rel_err"][0] for m in fs.FID.values()]
    assert row["latent_rel_err mean"] == f"{sum(lre) / len(lre):.4f}"
    assert row["not scored"] == "1"
    (bad,) = md_rows_as_dicts(report["md_text"], "Fidelity records without a score")
    assert bad["video"] == fs.FID_ERROR[0] and fs.FID_ERROR[2] in bad["reason"]
    csv = pd.read_csv(report["out"] / "tables" / "fidelity_summary.csv").set_index("metric")
    assert csv.loc["psnr", "n_inf"] == 1 and math.isinf(csv.loc["psnr", "max"])
    assert (report["out"] / "figures" / "fidelity_per_frame.png").is_file()


def test_efficiency_table(report):
    rows = md_rows_as_dicts(report["md_text"], "Efficiency at level 'op'")
    by = {(r["kind"], int(r["frames"])): r for r in rows}
    assert set(by) == set(fs.EFF_OP) | {fs.EFF_OOM} | set(fs.EFF_ANALYTIC_ONLY)
    for (kind, frames), dims in fs.EFF_OP.items():
        r = by[(kind, frames)]
        assert r["flops_analytic"] == f"{dims['flops_analytic']:.3e}"
        assert r["flops_counted"] == f"{dims['flops_counted']:.3e}"
        assert r["latency_ms"] == f"{dims['latency_ms']:.3f} ± 0.500"
        assert r["peak_mem_bytes"].startswith(f"{dims['peak_mem_bytes']:.3e} (")
        if "speedup_vs_softmax" in dims:
            assert r["speedup_vs_softmax"] == f"{dims['speedup_vs_softmax']:.3f}"
            assert r["flops_ratio_vs_softmax"] == f"{dims['flops_ratio_vs_softmax']:.3f}"
        else:
            assert r["speedup_vs_softmax"] == "—"
        assert r["notes"] == ""
    oom = by[fs.EFF_OOM]
    assert oom["latency_ms"] == oom["peak_mem_bytes"] == "OOM" and "out of memory" in oom["notes"]
    for key, v in fs.EFF_ANALYTIC_ONLY.items():
        assert by[key]["flops_analytic"] == f"{v:.3e}"
        assert "analytic only" in by[key]["notes"]
        assert by[key]["latency_ms"] == "—"
    block = {r["kind"]: r for r in md_rows_as_dicts(report["md_text"], "Efficiency at level 'block'")}
    assert block["softmax"]["latency_ms"] == "250.000"
    model = {(r["kind"], r["converted_blocks"], r["frames"]): r["latency_ms"]
             for r in md_rows_as_dicts(report["md_text"], "Efficiency at level 'model'")}
    assert model == {(k, str(b), str(f)): f"{v:.3f}" for (k, b, f), v in fs.EFF_MODEL.items()}
    csv = pd.read_csv(report["out"] / "tables" / "efficiency_op.csv")
    assert csv["oom"].sum() == 1 and csv["analytic_only"].sum() == 2
    for level in ("op", "block", "model"):
        assert (report["out"] / "figures" / f"efficiency_{level}.png").is_file()


def test_human_study_tables(report):
    md = report["md_text"]
    rows = md_rows_as_dicts(md, "Win / tie / loss")
    assert len(rows) == len(fs.WTL)
    for r, w in zip(rows, fs.WTL):
        assert (r["criterion"], r["model A"], r["model B"], r["n"]) == (w["criterion"], w["model_a"], w["model_b"],
                                                                        str(w["n"]))
        assert r["A wins"] == (f"{w['wins_a']} ({100 * w['p_a']:.1f}% [{100 * w['ci_low_a']:.1f}%, "
                               f"{100 * w['ci_high_a']:.1f}%])")
        assert r["ties"].startswith(f"{w['ties']} ({100 * w['p_tie']:.1f}%")
        assert r["B wins"].startswith(f"{w['wins_b']} ({100 * w['p_b']:.1f}%")
        assert r["sign test p (Holm)"] == f"{w['sign_test_p']:.4f} ({w['sign_test_p_holm']:.4f})"
        assert r["net preference A [bootstrap CI]"] == (f"{w['net_pref']:.3f} [{w['net_pref_boot_low']:.3f}, "
                                                        f"{w['net_pref_boot_high']:.3f}]")
    bt = md_rows_as_dicts(md, "Bradley–Terry ratings")
    assert [(r["model"], r["rating"]) for r in bt] == [(b["model"], f"{b['rating']:.3f}") for b in fs.BT]
    ag = md_rows_as_dicts(md, "Inter-rater agreement")
    assert [(r["statistic"], r["value"]) for r in ag] == [(a["statistic"], f"{a['value']:.3f}") for a in fs.AGREEMENT]
    (pb,) = md_rows_as_dicts(md, "Position (left/right) bias")
    assert (pb["left chosen"], pb["right chosen"]) == ("150", "132")
    excl = md_rows_as_dicts(md, "Excluded raters")
    assert [(r["rater"], r["reason"]) for r in excl] == [("r02", "failed gold checks (2/5)")]
    assert "1 of 3 rater(s) excluded." in md
    summary = dict(md_table(md, "Study summary")[1])
    assert summary["n_votes"] == "980" and summary["models"] == "rehyat, wan2.1"
    for name in ("study1_win_tie_loss", "study1_forest", "study1_bradley_terry"):
        png = (report["out"] / "figures" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_provenance(report):
    md = report["md_text"]
    kv = dict(md_table(md, "run.json of run-wan")[1])
    assert kv["packages.torch"] == "2.8.0" and kv["machine.gpu"] == "NVIDIA H200"
    assert kv["models.rehyat-15x-tc3-to1.converted_blocks"] == "15" and kv["start_time"] == fs.T0
    dev = md_rows_as_dicts(md, "Protocol deviations")
    texts = [r["deviation"] for r in dev]
    assert any("scored without the RAFT static filter" in t for t in texts)  # run.json
    assert any(t == fs.V1_PARTIAL_NONSTD["temporal_flickering"][1] for t in texts)  # non_standard status
    assert any("rater r03 used a phone screen" in t for t in texts)  # study summary.json
    prov = md_rows_as_dicts(md, "Record provenance per run")
    seeds = {(r["run"], r["scope"]): r["values"] for r in prov if r["key"] == "seed"}
    assert seeds[("run-wan", "all records")] == "42"
    assert seeds[("run-rehyat", f"fidelity / {fs.FID_MODEL}")] == "7"
    assert seeds[("run-rehyat", f"vbench / {fs.V1_PARTIAL_MODEL}")] == "42"
    problems = md_rows_as_dicts(md, "Store reading notes")
    assert any(p["store"] == "run run-rehyat" and "not valid JSON" in p["problem"] for p in problems)
    assert any(p["store"] == "run run-rehyat" and "1 superseded" in p["problem"] for p in problems)
    env = dict(md_table(md, "Report build environment")[1])
    assert env["pandas"] == pd.__version__
    dates = {r["source"]: r for r in md_rows_as_dicts(md, "Dates")}
    assert dates["study rehyat-vs-wan-pilot"]["generated_at"] == fs.SUMMARY["generated_at"]


def test_csv_tables_written_for_every_markdown_table(report):
    md = report["md_text"]
    import re

    names = re.findall(r"\(`tables/([^`]+)\.csv`\)", md)
    assert names and len(names) == len(set(names))
    for n in names:
        assert (report["out"] / "tables" / f"{n}.csv").is_file()
    long = pd.read_csv(report["out"] / "tables" / "vbench_dimensions.csv")
    got = long[(long["label"] == fs.V1_COMPLETE_MODEL)].set_index("dimension")["score"]
    for d, v in fs.V1_COMPLETE.items():
        assert got[d] == pytest.approx(v)
