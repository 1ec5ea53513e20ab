"""Small fixture stores that follow docs/interfaces.md exactly (results store + human-study stats outputs).

Values are chosen here and the tests check the report against these same dictionaries.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

T0 = "2026-11-20T10:00:00+00:00"
PROV = {"versions": {"torch": "2.8.0", "diffusers": "0.42.1", "vbench": "0.1.5"}, "seed": 42,
        "config_hash": "cfg-abc123", "checkpoint_hashes": {"dit": "sha256:feedbeef"},
        "protocol_deviations": [], "machine": {"hostname": "gpu-node-1", "gpu": "H200"}}

# ---------------------------------------------------------------- VBench v1
V1_COMPLETE_MODEL = "wan2.1-1.3b"
V1_COMPLETE = {
    "subject_consistency": 0.9512, "background_consistency": 0.9634, "temporal_flickering": 0.9801,
    "motion_smoothness": 0.9823, "aesthetic_quality": 0.6220, "imaging_quality": 0.6745, "dynamic_degree": 0.6111,
    "object_class": 0.8512, "multiple_objects": 0.6930, "human_action": 0.9400, "color": 0.8820,
    "spatial_relationship": 0.7490, "scene": 0.4310, "appearance_style": 0.2199, "temporal_style": 0.2380,
    "overall_consistency": 0.2600,
}
V1_PARTIAL_MODEL = "rehyat-15x-tc3-to1"
V1_PARTIAL_OK = {d: round(v - 0.01, 4) for d, v in V1_COMPLETE.items()
                 if d not in ("motion_smoothness", "temporal_flickering", "scene", "human_action")}
V1_PARTIAL_NONSTD = {"temporal_flickering": (0.9750, "RAFT static filter not applied (custom videos)")}
V1_PARTIAL_MISSING = {"motion_smoothness": ("missing_weights", "amt_model/amt-s.pth not found under VBENCH_CACHE_DIR")}
V1_PARTIAL_NO_AGGREGATE = "scene"     # per-video records only
V1_PARTIAL_NO_RECORD = "human_action"  # nothing at all

# Hand computation (vbench.md §1.6): norm = (s - Min)/(Max - Min) * w; Quality = sum/6.5; Semantic = sum/9;
# Total = (4*Quality + Semantic)/5.
V1_MINMAX = {"subject_consistency": (0.1462, 1.0), "background_consistency": (0.2615, 1.0),
             "temporal_flickering": (0.6293, 1.0), "motion_smoothness": (0.706, 0.9975),
             "dynamic_degree": (0.0, 1.0), "aesthetic_quality": (0.0, 1.0), "imaging_quality": (0.0, 1.0),
             "object_class": (0.0, 1.0), "multiple_objects": (0.0, 1.0), "human_action": (0.0, 1.0),
             "color": (0.0, 1.0), "spatial_relationship": (0.0, 1.0), "scene": (0.0, 0.8222),
             "appearance_style": (0.0009, 0.2855), "temporal_style": (0.0, 0.364),
             "overall_consistency": (0.0, 0.364)}

# ---------------------------------------------------------------- VBench-2.0
V2_CATS = {
    "Human Fidelity": ["Human_Anatomy", "Human_Identity", "Human_Clothes"],
    "Creativity": ["Diversity", "Composition"],
    "Controllability": ["Dynamic_Spatial_Relationship", "Dynamic_Attribute", "Motion_Order_Understanding",
                        "Human_Interaction", "Complex_Landscape", "Complex_Plot", "Camera_Motion"],
    "Commonsense": ["Motion_Rationality", "Instance_Preservation"],
    "Physics": ["Mechanics", "Thermotics", "Material", "Multi-View_Consistency"],
}
V2_DIMS = [d for ds in V2_CATS.values() for d in ds]
V2_COMPLETE = {d: round(0.30 + 0.03 * i, 4) for i, d in enumerate(V2_DIMS)}
V2_PARTIAL = {"Human_Anatomy": 0.81, "Human_Identity": 0.77, "Human_Clothes": 0.69, "Diversity": 0.42,
              "Composition": 0.38}
V2_PARTIAL_ERROR = {"Camera_Motion": "CUDA out of memory in CoTracker"}

# ---------------------------------------------------------------- fidelity
FID_MODEL, FID_REF = "rehyat-15x-tc3-to1", "wan2.1-1.3b"
FID = {  # video -> metric -> (score, per_frame)
    "a_cat-0.mp4": {"psnr": (31.5, [33.0, 31.0, 30.5]), "ssim": (0.91, [0.93, 0.90, 0.90]),
                    "latent_rel_err": (0.12, [0.10, 0.12, 0.14])},
    "a_dog-0.mp4": {"psnr": (28.5, [29.0, 28.0, 28.5]), "ssim": (0.85, [0.86, 0.85, 0.84]),
                    "latent_rel_err": (0.18, [0.17, 0.18, 0.19])},
    "static-0.mp4": {"psnr": (math.inf, [math.inf, math.inf, math.inf]), "ssim": (1.0, [1.0, 1.0, 1.0]),
                     "latent_rel_err": (0.0, [0.0, 0.0, 0.0])},
}
FID_ERROR = ("broken-0.mp4", "psnr", "video could not be decoded")
FID_PROV = {**PROV, "seed": 7}  # differs from the other records of the same run -> split by suite/model

# ---------------------------------------------------------------- efficiency
EFF_OP = {  # (kind, frames) -> dims ; frames 161 softmax OOM; 321 analytic-only
    ("softmax", 21): dict(flops_analytic=4.0e11, flops_counted=4.1e11, latency_ms=12.0, peak_mem_bytes=2.0e9,
                          speedup_vs_softmax=1.0, flops_ratio_vs_softmax=1.0),
    ("softmax", 81): dict(flops_analytic=6.4e12, flops_counted=6.5e12, latency_ms=180.0, peak_mem_bytes=8.0e9,
                          speedup_vs_softmax=1.0, flops_ratio_vs_softmax=1.0),
    ("hybrid_tc3_to1", 21): dict(flops_analytic=2.0e11, flops_counted=2.1e11, latency_ms=9.0, peak_mem_bytes=1.5e9,
                                 speedup_vs_softmax=1.333, flops_ratio_vs_softmax=2.0),
    ("hybrid_tc3_to1", 81): dict(flops_analytic=8.0e11, flops_counted=8.2e11, latency_ms=30.0,
                                 peak_mem_bytes=3.0e9, speedup_vs_softmax=6.0, flops_ratio_vs_softmax=8.0),
    ("hybrid_tc3_to1", 161): dict(flops_analytic=1.6e12, flops_counted=1.65e12, latency_ms=61.0,
                                  peak_mem_bytes=5.5e9),
}
EFF_OOM = ("softmax", 161)
EFF_ANALYTIC_ONLY = {("softmax", 321): 1.0e14, ("hybrid_tc3_to1", 321): 3.2e12}
EFF_BLOCK = {("softmax", 81): dict(latency_ms=250.0, flops_analytic=9.1e12),
             ("hybrid_tc3_to1", 81): dict(latency_ms=60.0, flops_analytic=1.5e12)}
EFF_MODEL = {  # (kind, converted_blocks, frames) -> latency_ms ; converted_blocks varies -> shown as a column
    ("softmax", 0, 81): 5200.0, ("hybrid_tc3_to1", 15, 81): 3100.0, ("hybrid_tc3_to1", 20, 81): 2600.0,
    ("hybrid_tc3_to1", 20, 161): 5100.0,
}

# ---------------------------------------------------------------- human study
WTL = [
    dict(criterion="overall", model_a="rehyat", model_b="wan2.1", n=500, wins_a=138, ties=218, wins_b=144,
         p_a=0.276, p_tie=0.436, p_b=0.288, ci_low_a=0.238, ci_high_a=0.316, ci_low_tie=0.393, ci_high_tie=0.480,
         ci_low_b=0.250, ci_high_b=0.329, ci_method="wilson", sign_test_p=0.7383, sign_test_p_holm=0.7383,
         net_pref=-0.012, net_pref_boot_low=-0.070, net_pref_boot_high=0.046),
    dict(criterion="motion", model_a="rehyat", model_b="wan2.1", n=480, wins_a=160, ties=150, wins_b=170,
         p_a=0.3333, p_tie=0.3125, p_b=0.3542, ci_low_a=0.293, ci_high_a=0.376, ci_low_tie=0.273, ci_high_tie=0.355,
         ci_low_b=0.313, ci_high_b=0.397, ci_method="wilson", sign_test_p=0.6219, sign_test_p_holm=0.7383,
         net_pref=-0.0208, net_pref_boot_low=-0.085, net_pref_boot_high=0.041),
]
BT = [dict(criterion="overall", model="wan2.1", rating=1000.0, ci_low=1000.0, ci_high=1000.0, scale="elo"),
      dict(criterion="overall", model="rehyat", rating=995.8, ci_low=975.1, ci_high=1016.2, scale="elo")]
AGREEMENT = [dict(criterion="overall", statistic="krippendorff_alpha", value=0.412, n_items=100, n_raters=9),
             dict(criterion="overall", statistic="fleiss_kappa", value=0.398, n_items=100, n_raters=9)]
POSITION = [dict(criterion="overall", n=282, left_chosen=150, right_chosen=132, p_value=0.3117)]
RATERS = [dict(rater="r01", n_votes=60, gold_total=5, gold_passed=5, excluded=False, reason=""),
          dict(rater="r02", n_votes=55, gold_total=5, gold_passed=2, excluded=True, reason="failed gold checks (2/5)"),
          dict(rater="r03", n_votes=58, gold_total=5, gold_passed=4, excluded=False, reason="")]
SUMMARY = {"study": "rehyat-vs-wan-pilot", "n_votes": 980, "n_raters": 3, "n_excluded": 1,
           "models": ["rehyat", "wan2.1"], "criteria": ["overall", "motion"], "generated_at": "2026-11-21T09:00:00Z",
           "protocol_deviations": ["rater r03 used a phone screen"]}


def rec(run_id, suite, model, video, dimension, score, status="ok", message=None, details=None, provenance=None,
        time=T0):
    return {"run_id": run_id, "suite": suite, "model": model, "video": video, "dimension": dimension,
            "score": score, "status": status, "message": message, "details": details or {},
            "provenance": provenance if provenance is not None else PROV, "time": time}


def write_run(run_dir: Path, run_id: str, records, run_info: dict | None = None, extra_lines=()):
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "records.jsonl", "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")  # json.dumps writes Infinity for an infinite PSNR
        for line in extra_lines:
            fh.write(line)
    info = {"run_id": run_id, "command": f"python -m evaluation.run --run {run_id}", "start_time": T0,
            "packages": {"torch": "2.8.0", "diffusers": "0.42.1", "numpy": "2.4.6"},
            "machine": {"hostname": "gpu-node-1", "platform": "Linux-6.8", "gpu": "NVIDIA H200"},
            "suite_config": {"videos_per_prompt": 5, "seed": 42},
            "models": {"rehyat-15x-tc3-to1": {"converted_blocks": 15, "chunk_frames": 3, "overlap_frames": 1}}}
    info.update(run_info or {})
    (run_dir / "run.json").write_text(json.dumps(info, indent=2), encoding="utf-8")


def complete_run(root: Path) -> Path:
    rid = "run-wan"
    recs = []
    for d, v in V1_COMPLETE.items():
        recs.append(rec(rid, "vbench", V1_COMPLETE_MODEL, "a_cat-0.mp4", d, v + 0.001))
        recs.append(rec(rid, "vbench", V1_COMPLETE_MODEL, None, d, v))
    for d, v in V2_COMPLETE.items():
        recs.append(rec(rid, "vbench2", V1_COMPLETE_MODEL, None, d, v))
    write_run(root / rid, rid, recs)
    return root / rid


def partial_run(root: Path) -> Path:
    rid = "run-rehyat"
    m = V1_PARTIAL_MODEL
    recs = []
    for d, v in V1_PARTIAL_OK.items():
        recs.append(rec(rid, "vbench", m, None, d, v))
    for d, (v, msg) in V1_PARTIAL_NONSTD.items():
        recs.append(rec(rid, "vbench", m, None, d, v, status="non_standard", message=msg))
    for d, (st, msg) in V1_PARTIAL_MISSING.items():
        # an earlier error, superseded by the later missing_weights record (append-only: last wins)
        recs.append(rec(rid, "vbench", m, None, d, None, status="error", message="earlier attempt"))
        recs.append(rec(rid, "vbench", m, None, d, None, status=st, message=msg))
    recs.append(rec(rid, "vbench", m, "a_cat-0.mp4", V1_PARTIAL_NO_AGGREGATE, 0.4))
    recs.append(rec(rid, "vbench", m, "a_dog-0.mp4", V1_PARTIAL_NO_AGGREGATE, None, status="error",
                    message="Tag2Text failed"))
    for d, v in V2_PARTIAL.items():
        recs.append(rec(rid, "vbench2", m, None, d, v))
    for d, msg in V2_PARTIAL_ERROR.items():
        recs.append(rec(rid, "vbench2", m, None, d, None, status="error", message=msg))
    for video, mets in FID.items():
        for dim, (score, pf) in mets.items():
            recs.append(rec(rid, "fidelity", FID_MODEL, video, dim, score,
                            details={"reference": FID_REF, "per_frame": pf}, provenance=FID_PROV))
    v, dim, msg = FID_ERROR
    recs.append(rec(rid, "fidelity", FID_MODEL, v, dim, None, status="error", message=msg,
                    details={"reference": FID_REF}, provenance=FID_PROV))
    write_run(root / rid, rid, recs,
              run_info={"protocol_deviations": ["temporal_flickering scored without the RAFT static filter"]},
              extra_lines=['{"run_id": "run-rehyat", "suite": "vbench", "mod'])  # killed writer: truncated line
    return root / rid


def _eff_details(level, frames, **kw):
    d = dict(level=level, frames=frames, latent_frames=(frames - 1) // 4 + 1, height=480, width=832,
             chunk_frames=3, overlap_frames=1, causal=False, converted_blocks=None, dtype="bf16", device="cuda",
             threads=None, backend="sdpa", analytic_only=False, oom=False, latency_spread_ms=None, repeats=5)
    d.update(kw)
    return d


def efficiency_run(root: Path) -> Path:
    rid = "run-eff"
    recs = []
    for (kind, frames), dims in EFF_OP.items():
        for dim, v in dims.items():
            kw = {"latency_spread_ms": 0.5} if dim == "latency_ms" else {}
            recs.append(rec(rid, "efficiency", kind, None, dim, v, details=_eff_details("op", frames, **kw)))
    kind, frames = EFF_OOM
    for dim in ("latency_ms", "peak_mem_bytes"):
        recs.append(rec(rid, "efficiency", kind, None, dim, None, status="error",
                        message="CUDA out of memory", details=_eff_details("op", frames, oom=True)))
    for (kind, frames), v in EFF_ANALYTIC_ONLY.items():
        recs.append(rec(rid, "efficiency", kind, None, "flops_analytic", v,
                        details=_eff_details("op", frames, analytic_only=True)))
    for (kind, frames), dims in EFF_BLOCK.items():
        for dim, v in dims.items():
            recs.append(rec(rid, "efficiency", kind, None, dim, v, details=_eff_details("block", frames)))
    for (kind, blocks, frames), v in EFF_MODEL.items():
        recs.append(rec(rid, "efficiency", kind, None, "latency_ms", v,
                        details=_eff_details("model", frames, converted_blocks=blocks)))
    write_run(root / rid, rid, recs)
    return root / rid


def study_stats(root: Path) -> Path:
    import csv

    d = root / "study_stats"
    d.mkdir(parents=True, exist_ok=True)
    for name, rows in (("win_tie_loss", WTL), ("bradley_terry", BT), ("agreement", AGREEMENT),
                       ("position_bias", POSITION), ("raters", RATERS)):
        with open(d / f"{name}.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    (d / "summary.json").write_text(json.dumps(SUMMARY), encoding="utf-8")
    return d


def hostile_run(root: Path) -> Path:
    """A run whose labels/messages contain HTML, to check escaping."""
    rid = "run-hostile"
    recs = [rec(rid, "vbench", "<script>alert(1)</script>", None, "color", None, status="error",
                message='<img src="http://example.com/x.png"> & "quotes" | pipe')]
    write_run(root / rid, rid, recs)
    return root / rid
