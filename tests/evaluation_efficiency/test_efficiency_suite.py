"""The efficiency suite: the ci preset end to end through the CLI (structure, not speed), and the measurement
machinery (budget -> analytic-only, OOM as a result, peak-memory method, recurrent memory, targets)."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from evaluation.efficiency.measure import MemoryMeter, instrumented_run
from evaluation.efficiency.presets import PRESETS, KindConfig, override, parse_kind
from evaluation.efficiency.sweep import DIMENSIONS, MEASURED_DIMS, run_preset
from evaluation.efficiency.table import load_efficiency, targets, targets_markdown, wide
from evaluation.efficiency.workloads import OpWorkload
from rehyat.cost import VideoShape

CONTRACT_DETAILS = {"level", "frames", "latent_frames", "height", "width", "chunk_frames", "overlap_frames", "causal",
                    "converted_blocks", "dtype", "device", "threads", "backend", "analytic_only", "oom",
                    "latency_spread_ms", "repeats"}
BASE_LABELS = {"softmax", "linear", "hybrid_tc3_to1", "hybrid_recurrent_tc3_to1", "chunk_local_tc3_to1"}
POINT = ["level", "height", "width", "frames", "converted_blocks"]


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    from evaluation.run import main

    out = tmp_path_factory.mktemp("eff") / "run-ci"
    rc = main(["--suite", "efficiency", "--preset", "ci", "--out", str(out), "--quiet"])
    return rc, out


@pytest.fixture(scope="module")
def ci_records(ci_run):
    _, out = ci_run
    recs = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line.strip()]
    return recs


def test_ci_preset_runs_through_the_cli(ci_run):
    rc, out = ci_run
    assert rc == 0
    info = json.loads((out / "run.json").read_text())
    assert info["suites"] == ["efficiency"]


def test_every_level_has_every_kind_and_dimension(ci_records):
    df = pd.DataFrame([{**r["details"], "model": r["model"], "dimension": r["dimension"], "status": r["status"],
                        "score": r["score"]} for r in ci_records])
    assert set(df["level"]) == {"op", "block", "model"}
    for level, g in df.groupby("level"):
        assert BASE_LABELS <= set(g["model"]), level
    assert {"hybrid_tc1_to0", "hybrid_tc1_to1", "hybrid_tc3_to0"} <= set(df[df["level"] == "op"]["model"])
    assert set(df[(df["level"] == "model") & (df["model"] == "hybrid_tc3_to1")]["converted_blocks"]) == {1, 2}
    # one record per (point, kind, dimension), every dimension present, all measured at ci size
    key = POINT + ["model"]
    for _, g in df.groupby(key, dropna=False):
        assert sorted(g["dimension"]) == sorted(DIMENSIONS)
        assert (g["status"] == "ok").all(), g[g["status"] != "ok"]
    assert not df["analytic_only"].any() and not df["oom"].any()


def test_record_fields_follow_the_contract(ci_records):
    for r in ci_records:
        assert r["suite"] == "efficiency" and r["video"] is None
        assert CONTRACT_DETAILS <= set(r["details"]), set(CONTRACT_DETAILS) - set(r["details"])
        d = r["details"]
        assert d["dtype"] == "float32" and d["device"] == "cpu" and d["threads"] >= 1 and d["backend"]
        assert r["provenance"]["machine"]["cpu_count"] >= 1
        assert r["provenance"]["preset"] == "ci"
        if r["dimension"] == "latency_ms":
            assert d["repeats"] >= 2 and d["latency_spread_ms"] >= 0 and len(d["latency_samples_ms"]) == d["repeats"]
            assert r["score"] == pytest.approx(float(pd.Series(d["latency_samples_ms"]).median()), rel=1e-3)
        if r["dimension"] == "peak_mem_bytes":
            assert r["score"] >= 0 and d["memory_method"]


def test_ratios_are_consistent_with_the_stored_numbers(ci_records):
    df = pd.DataFrame([{**r["details"], "model": r["model"], "dimension": r["dimension"], "score": r["score"]}
                       for r in ci_records])
    piv = df.pivot_table(index=POINT + ["model"], columns="dimension", values="score", aggfunc="first").reset_index()
    for _, g in piv.groupby(["level", "height", "width", "frames"]):
        soft = g[g["model"] == "softmax"].iloc[0]
        assert soft["speedup_vs_softmax"] == 1.0 and soft["flops_ratio_vs_softmax"] == 1.0
        for _, r in g.iterrows():
            assert r["flops_ratio_vs_softmax"] == pytest.approx(soft["flops_analytic"] / r["flops_analytic"])
            assert r["speedup_vs_softmax"] == pytest.approx(soft["latency_ms"] / r["latency_ms"])
            # analytic == counted within 1% wherever counted (here: exactly, recurrent text-KV term included)
            assert r["flops_counted"] == pytest.approx(r["flops_analytic"], rel=0.01)


def test_outputs_written(ci_run):
    _, out = ci_run
    eff = out / "efficiency"
    pngs = sorted(p.name for p in (eff / "plots").glob("*.png"))
    assert pngs == sorted(f"{m}_{lv}.png" for m in ("flops", "latency", "memory", "speedup")
                          for lv in ("op", "block", "model"))
    assert all((eff / "plots" / p).stat().st_size > 5000 for p in pngs)
    table = pd.read_csv(eff / "table.csv")
    assert {"level", "frames", "model", *DIMENSIONS, "speedup_over_flops_ratio"} <= set(table.columns)
    assert len(table) == len(load_efficiency(out).groupby(POINT + ["model"], dropna=False))
    md = (eff / "table.md").read_text()
    assert "| op | 32x48 | 17 (5) |" in md and "Targets" in md
    summary = json.loads((eff / "summary.json").read_text())
    assert summary["analytic_only"] == 0 and summary["errors"] == 0 and summary["load_start"] is not None
    assert md.startswith("Efficiency sweep, preset `ci`") and "torch threads; load average" in md


def test_rebuilding_the_table_keeps_the_run_header(ci_run):
    from evaluation.efficiency.table import main as rebuild

    _, out = ci_run
    md_path = out / "efficiency" / "table.md"
    first = md_path.read_text().split("\n")[0]
    assert rebuild([str(out)]) == 0
    assert md_path.read_text().split("\n")[0] == first  # header rebuilt from summary.json + record provenance


def test_report_loader_keeps_every_sweep_point(ci_run, ci_records):
    """reports/ reads the store with the sweep coordinates in the key: no efficiency record may shadow another."""
    reports_load = pytest.importorskip("reports.load")
    _, out = ci_run
    _, df = reports_load.load_run(out)
    assert len(df[df["suite"] == "efficiency"]) == len(ci_records)


def _collect():
    recs = []

    def emit(**kw):
        recs.append(kw)

    return recs, emit


def test_points_over_budget_are_analytic_only_never_extrapolated():
    preset = override(PRESETS["ci"], levels=["op"], frames=[17], resolutions=[(32, 48)], point_budget_s=0.0,
                      kinds=[KindConfig("softmax"), KindConfig("hybrid", 3, 1)])
    recs, emit = _collect()
    out = run_preset(preset, emit, device="cpu", log=lambda m: None)
    assert out.measured == 0 and out.analytic_only == 2
    by = {(r["model"], r["dimension"]): r for r in recs}
    for label in ("softmax", "hybrid_tc3_to1"):
        assert by[(label, "flops_analytic")]["status"] == "ok" and by[(label, "flops_analytic")]["score"] > 0
        assert by[(label, "flops_ratio_vs_softmax")]["status"] == "ok"
        for dim in MEASURED_DIMS:
            r = by[(label, dim)]
            assert r["status"] == "skipped" and r["score"] is None and "analytic only" in r["message"]
            assert r["details"]["analytic_only"] is True


def test_out_of_memory_is_a_result(monkeypatch):
    real_setup = OpWorkload.setup

    def setup(self, video, kinds):
        fns = real_setup(self, video, kinds)

        def boom():
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

        fns[KindConfig("hybrid", 3, 1)] = boom
        return fns

    monkeypatch.setattr(OpWorkload, "setup", setup)
    preset = override(PRESETS["ci"], levels=["op"], frames=[17], resolutions=[(32, 48)],
                      kinds=[KindConfig("softmax"), KindConfig("hybrid", 3, 1)])
    recs, emit = _collect()
    out = run_preset(preset, emit, device="cpu", log=lambda m: None)
    assert out.oom == 1
    by = {(r["model"], r["dimension"]): r for r in recs}
    for dim in MEASURED_DIMS:
        r = by[("hybrid_tc3_to1", dim)]
        assert r["status"] == "error" and r["score"] is None and r["details"]["oom"] is True
        assert "out of memory" in r["message"]
        assert by[("softmax", dim)]["status"] == "ok"
    assert by[("hybrid_tc3_to1", "flops_analytic")]["status"] == "ok"


def test_memory_meter_sees_transients_excludes_caller_tensors_and_the_output():
    meter = MemoryMeter("cpu")
    mib = 2**20
    x = torch.ones(16 * mib // 4)  # caller-owned: never counted, nor are views of it or in-place writes to it

    def fn():
        view = x[: 4 * mib // 4]
        view.mul_(1.0)
        tmp = torch.ones(64 * mib // 4)  # 64 MiB transient
        out = torch.ones(32 * mib // 4) * tmp[0]  # 32 MiB output (+ the 32 MiB ones() temporary, freed)
        del tmp
        return out

    with torch.inference_mode():
        run = instrumented_run(fn, "cpu", meter, count=True)
    assert run.ok and run.output_bytes == 32 * mib and run.flops_counted == 0
    # live at the peak: 64 MiB tmp + 32 MiB ones + 32 MiB out = 128 MiB incl. output, 96 MiB without
    assert run.peak_incl_output_bytes == 128 * mib
    assert run.peak_bytes == 96 * mib


def test_recurrent_op_memory_is_flat_in_frames_and_parallel_grows():
    preset = override(PRESETS["ci"], levels=["op"])
    preset = preset.__class__(**{**preset.__dict__, "op_heads": 2, "op_head_dim": 64, "op_feature_dim": 64})
    wl = OpWorkload(preset, "cpu")
    meter = MemoryMeter("cpu")
    rec, par = KindConfig("hybrid_recurrent", 3, 1), KindConfig("hybrid", 3, 1)
    peaks = {}
    with torch.inference_mode():
        for frames in (25, 193):  # 1x and 8x duration: 7 and 49 latent frames (>= 2 T_c), 256 tokens per frame
            fns = wl.setup(VideoShape(frames, 256, 256), [rec, par])
            peaks[frames] = {k: instrumented_run(fn, "cpu", meter, count=False).peak_bytes for k, fn in fns.items()}
            wl.teardown()
    assert peaks[193][rec] <= 1.1 * peaks[25][rec], peaks
    assert peaks[193][par] >= 3 * peaks[25][par], peaks


def test_targets_from_stored_numbers():
    rows = []

    def point(model, kind, tc, to, frames, lat, speed, ratio):
        for dim, v in (("speedup_vs_softmax", speed), ("flops_ratio_vs_softmax", ratio), ("flops_analytic", 1e9),
                       ("flops_counted", 1.001e9)):
            rows.append(dict(run_id="r", model=model, dimension=dim, score=v, status="ok", message=None,
                             level="op", height=240, width=416, frames=frames, latent_frames=lat, tokens=lat * 390,
                             converted_blocks=None, kind=kind, chunk_frames=tc, overlap_frames=to,
                             analytic_only=False, oom=False))

    point("hybrid_tc3_to1", "hybrid", 3, 1, 81, 21, 4.0, 4.2)  # 0.95
    point("hybrid_tc3_to1", "hybrid", 3, 1, 161, 41, 6.0, 8.0)  # 0.75
    point("hybrid_tc1_to0", "hybrid", 1, 0, 81, 21, 8.0, 12.0)  # 0.67
    point("chunk_local_tc1_to0", "chunk_local", 1, 0, 81, 21, 14.0, 21.0)  # its softmax part alone: 0.67
    point("chunk_local_tc3_to1", "chunk_local", 3, 1, 161, 41, 10.0, 10.0)  # 1.0
    t = targets(wide(pd.DataFrame(rows)))
    h = t["hybrid_op_speedup_ge_0.9x_flops_ratio"]
    pts = {(p["model"], p["frames"]): p for p in h["points"]}
    assert len(pts) == 3  # chunk_local rows are evidence beside the hybrid points, not target points
    assert pts["hybrid_tc3_to1", 81]["met"] is True and pts["hybrid_tc3_to1", 161]["met"] is False
    assert pts["hybrid_tc3_to1", 81]["softmax_part_speedup_over_ratio"] is None  # not measured at that point
    assert pts["hybrid_tc3_to1", 161]["kernel_bound"] is False
    assert math.isclose(pts["hybrid_tc1_to0", 81]["softmax_part_speedup_over_ratio"], 14 / 21)
    assert pts["hybrid_tc1_to0", 81]["kernel_bound"] is True
    assert h["per_config"] == {"hybrid_tc3_to1": dict(evaluated=2, met=1), "hybrid_tc1_to0": dict(evaluated=1, met=0)}
    assert h["main_setting"] == dict(model="hybrid_tc3_to1", evaluated=2, met=1)
    assert (h["misses"], h["misses_kernel_bound"], h["all_met"]) == (2, 1, False)
    assert t["analytic_equals_counted_within_1pct"]["all_met"] is True
    assert math.isclose(t["analytic_equals_counted_within_1pct"]["max_abs_rel_err"], 0.001, rel_tol=1e-6)
    md = targets_markdown(t)
    assert "1 of the 2 misses are kernel-bound" in md and "(softmax part alone: 0.67)" in md


def test_kind_labels_and_parsing():
    assert parse_kind("hybrid:3:1").label == "hybrid_tc3_to1"
    assert parse_kind("hybrid_recurrent").label == "hybrid_recurrent_tc3_to1"
    assert parse_kind("chunk_local:6:2").label == "chunk_local_tc6_to2"
    assert parse_kind("linear").label == "linear" and parse_kind("softmax").label == "softmax"
    assert parse_kind("hybrid_recurrent:3:1").causal and not parse_kind("hybrid:3:1").causal
    for bad in ("nope", "linear:3:1", "hybrid:0:1"):
        with pytest.raises(ValueError):
            parse_kind(bad)


def test_presets_cover_the_issue():
    for name in ("ci", "cpu", "gpu"):
        p = PRESETS[name]
        assert {lv.level for lv in p.levels} == {"op", "block", "model"}
        kinds = {k.kind for lv in p.levels for k in lv.kinds}
        assert kinds == {"softmax", "hybrid", "hybrid_recurrent", "linear", "chunk_local"}
    for name in ("cpu", "gpu"):
        frames = {f for lv in PRESETS[name].levels for f in lv.frames}
        res = {r for lv in PRESETS[name].levels for r in lv.resolutions}
        assert {17, 81, 161, 321} <= frames and {(240, 416), (480, 832)} <= res
    assert PRESETS["gpu"].device == "cuda" and PRESETS["gpu"].dtype == "bfloat16"
    grid = {(k.chunk_frames, k.overlap_frames) for lv in PRESETS["cpu"].levels for k in lv.kinds if k.kind == "hybrid"}
    assert len(grid) >= 4


def test_dimension_subset_and_overrides_through_the_cli(tmp_path):
    from evaluation.run import main

    out = tmp_path / "sub"
    rc = main(["--suite", "efficiency", "--preset", "ci", "--dimensions", "latency_ms", "speedup_vs_softmax",
               "--efficiency-levels", "op", "--efficiency-frames", "17", "--efficiency-resolutions", "32x48",
               "--efficiency-kinds", "softmax", "hybrid:2:1", "--out", str(out), "--quiet"])
    assert rc == 0
    recs = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert sorted((r["model"], r["dimension"]) for r in recs) == [
        ("hybrid_tc2_to1", "latency_ms"), ("hybrid_tc2_to1", "speedup_vs_softmax"),
        ("softmax", "latency_ms"), ("softmax", "speedup_vs_softmax")]
    assert all(r["status"] == "ok" and r["details"]["chunk_frames"] in (None, 2) for r in recs)
    assert len(list((out / "efficiency" / "plots").glob("*_op.png"))) == 4


def test_overriding_shapes_merges_sweeps_of_a_level():
    p = override(PRESETS["cpu"], levels=["op"], resolutions=[(480, 832)], frames=[17, 81])
    assert [(lv.level, lv.resolutions, lv.frames) for lv in p.levels] == [("op", ((480, 832),), (17, 81))]
    assert len(p.levels[0].kinds) == len({k for lv in PRESETS["cpu"].levels if lv.level == "op" for k in lv.kinds})
    assert [lv.level for lv in override(PRESETS["cpu"], levels=["op"]).levels] == ["op", "op"]


def test_rate_predictor_fallbacks():
    from evaluation.efficiency.sweep import RatePredictor

    p = RatePredictor(prior_rate=100.0)
    p.update("op", "linear", (240, 416), flops=10, seconds=1.0)  # a memory-bound op: 10 FLOP/s
    assert p.rate("block", "linear", (240, 416)) == 100.0  # op rates never predict a block
    p.update("block", "softmax", (240, 416), flops=4000, seconds=1.0)
    assert p.rate("block", "linear", (240, 416)) == 4000.0  # any kind at the level
    assert p.rate("model", "linear", (480, 832)) == 4000.0  # the model falls back to the block level
    p.update("model", "linear", (240, 416), flops=3000, seconds=1.0)
    assert p.predict("model", "linear", (480, 832), 6000) == 2.0
