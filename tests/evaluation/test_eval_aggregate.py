"""Quality/Semantic/Total (VBench) and category/Total (VBench-2.0) against hand-computed fixtures."""
import math

import pandas as pd
import pytest

from evaluation.aggregate import aggregate_run, vbench2_total, vbench_total
from evaluation.store import ResultsStore, load_records

Q = {"subject_consistency": 0.95, "background_consistency": 0.96, "temporal_flickering": 0.97,
     "motion_smoothness": 0.98, "dynamic_degree": 0.6, "aesthetic_quality": 0.6, "imaging_quality": 0.65}
S = {"object_class": 0.8, "multiple_objects": 0.6, "human_action": 0.9, "color": 0.85, "spatial_relationship": 0.7,
     "scene": 0.5, "appearance_style": 0.2, "temporal_style": 0.24, "overall_consistency": 0.26}

# written out by hand from VBench's scripts/constant.py (Min, Max, weight) — not from the module under test
HAND_QUALITY = ((0.95 - 0.1462) / (1 - 0.1462) + (0.96 - 0.2615) / (1 - 0.2615) + (0.97 - 0.6293) / (1 - 0.6293)
                + (0.98 - 0.706) / (0.9975 - 0.706) + 0.5 * 0.6 + 0.6 + 0.65) / (6 + 0.5)
HAND_SEMANTIC = (0.8 + 0.6 + 0.9 + 0.85 + 0.7 + 0.5 / 0.8222 + (0.2 - 0.0009) / (0.2855 - 0.0009) + 0.24 / 0.364
                 + 0.26 / 0.364) / 9
HAND_TOTAL = (4 * HAND_QUALITY + 1 * HAND_SEMANTIC) / 5


def test_v1_complete_matches_hand_computation():
    r = vbench_total({**Q, **S})
    assert r.complete
    assert r.scores["quality"] == pytest.approx(HAND_QUALITY, abs=1e-12)
    assert r.scores["semantic"] == pytest.approx(HAND_SEMANTIC, abs=1e-12)
    assert r.scores["total"] == pytest.approx(HAND_TOTAL, abs=1e-12)
    # pinned values (regression)
    assert r.scores["quality"] == pytest.approx(0.8148172539829894, abs=1e-12)
    assert r.scores["total"] == pytest.approx(0.7969944537001639, abs=1e-12)


def test_v1_all_at_max_is_one_and_min_is_zero():
    maxes = {"subject_consistency": 1.0, "background_consistency": 1.0, "temporal_flickering": 1.0,
             "motion_smoothness": 0.9975, "dynamic_degree": 1.0, "aesthetic_quality": 1.0, "imaging_quality": 1.0,
             "object_class": 1.0, "multiple_objects": 1.0, "human_action": 1.0, "color": 1.0,
             "spatial_relationship": 1.0, "scene": 0.8222, "appearance_style": 0.2855, "temporal_style": 0.364,
             "overall_consistency": 0.364}
    r = vbench_total(maxes)
    assert r.scores == pytest.approx({"quality": 1.0, "semantic": 1.0, "total": 1.0})
    mins = {"subject_consistency": 0.1462, "background_consistency": 0.2615, "temporal_flickering": 0.6293,
            "motion_smoothness": 0.706, "appearance_style": 0.0009}
    r = vbench_total({**{d: 0.0 for d in maxes}, **mins})
    assert r.scores == pytest.approx({"quality": 0.0, "semantic": 0.0, "total": 0.0}, abs=1e-12)


def test_v1_incomplete_has_no_total_and_names_missing():
    scores = {**Q, **S}
    scores["subject_consistency"] = None
    del scores["scene"]
    r = vbench_total(scores)
    assert r.scores["quality"] is None and r.scores["semantic"] is None and r.scores["total"] is None
    assert r.missing["quality"] == ["subject_consistency"]
    assert r.missing["semantic"] == ["scene"]
    assert set(r.missing["total"]) == {"subject_consistency", "scene"}
    assert not r.complete
    assert any("incomplete" in line and "subject_consistency" in line for line in r.describe())


def test_v1_semantic_complete_quality_incomplete():
    scores = {**S, **{k: v for k, v in Q.items() if k != "dynamic_degree"}}
    r = vbench_total(scores)
    assert r.scores["quality"] is None and r.scores["total"] is None
    assert r.scores["semantic"] == pytest.approx(HAND_SEMANTIC, abs=1e-12)
    # the upstream script would fill dynamic_degree with 0 and report a Total; we must not
    zero_filled = vbench_total({**scores, "dynamic_degree": 0.0}).scores["total"]
    assert zero_filled is not None and not math.isclose(zero_filled, HAND_TOTAL)


V2 = {"Human_Anatomy": 0.8, "Human_Identity": 0.7, "Human_Clothes": 0.9,
      "Diversity": 0.5, "Composition": 0.4,
      "Dynamic_Spatial_Relationship": 0.2, "Dynamic_Attribute": 0.3, "Motion_Order_Understanding": 0.1,
      "Human_Interaction": 0.6, "Complex_Landscape": 0.15, "Complex_Plot": 0.1, "Camera_Motion": 0.35,
      "Motion_Rationality": 0.45, "Instance_Preservation": 0.75,
      "Mechanics": 0.6, "Thermotics": 0.55, "Material": 0.65, "Multi-View_Consistency": 0.3}


def test_v2_complete_matches_hand_computation():
    hf = (0.8 + 0.7 + 0.9) / 3
    cr = (0.5 + 0.4) / 2
    co = (0.2 + 0.3 + 0.1 + 0.6 + 0.15 + 0.1 + 0.35) / 7
    cs = (0.45 + 0.75) / 2
    ph = (0.6 + 0.55 + 0.65 + 0.3) / 4
    r = vbench2_total(V2)
    assert r.scores["Human Fidelity"] == pytest.approx(hf)
    assert r.scores["Creativity"] == pytest.approx(cr)
    assert r.scores["Controllability"] == pytest.approx(co)
    assert r.scores["Commonsense"] == pytest.approx(cs)
    assert r.scores["Physics"] == pytest.approx(ph)
    assert r.scores["Total"] == pytest.approx((hf + cr + co + cs + ph) / 5)
    assert r.scores["Total"] == pytest.approx(0.5264285714285715, abs=1e-12)  # 2.632142857/5


def test_v2_incomplete():
    scores = dict(V2)
    scores["Camera_Motion"] = None
    r = vbench2_total(scores)
    assert r.scores["Controllability"] is None and r.scores["Total"] is None
    assert r.scores["Physics"] == pytest.approx((0.6 + 0.55 + 0.65 + 0.3) / 4)
    assert r.missing["Controllability"] == ["Camera_Motion"] and r.missing["Total"] == ["Camera_Motion"]


def test_aggregate_from_store_uses_only_ok_aggregates(tmp_path):
    st = ResultsStore(tmp_path / "run")
    for d, v in {**Q, **S}.items():
        st.add(suite="vbench", model="m", video=None, dimension=d, score=v, status="ok")
        st.add(suite="vbench", model="m", video=f"{d}-0.mp4", dimension=d, score=0.0, status="ok")  # per-video: ignored
    res = aggregate_run(load_records(tmp_path / "run"))["vbench"]["m"]
    assert res.scores["total"] == pytest.approx(HAND_TOTAL, abs=1e-12)
    # a non-standard score (e.g. temporal_flickering without the static filter) keeps the aggregate incomplete
    st.add(suite="vbench", model="m", video=None, dimension="temporal_flickering", score=0.97, status="non_standard",
           message="no static filter")
    res = aggregate_run(load_records(tmp_path / "run"))["vbench"]["m"]
    assert res.scores["total"] is None and res.missing["quality"] == ["temporal_flickering"]
