import json
import math

import pytest

from evaluation.store import RECORDS_FILE, ResultsStore, load_records, make_record


def test_append_and_view(tmp_path):
    st = ResultsStore(tmp_path / "r")
    st.add(suite="vbench", model="m", video="a-0.mp4", dimension="temporal_flickering", score=0.9, status="ok",
           details={"x": 1}, provenance={"seed": 3})
    st.add(suite="vbench", model="m", video=None, dimension="subject_consistency", score=None,
           status="missing_weights", message="missing dino")
    df = load_records(tmp_path / "r")
    assert list(df.columns) == ["run_id", "suite", "model", "video", "dimension", "score", "status", "message",
                                "details", "provenance", "time"]
    assert len(df) == 2 and set(df["run_id"]) == {"r"}
    row = df[df["dimension"] == "subject_consistency"].iloc[0]
    assert math.isnan(row["score"]) and row["status"] == "missing_weights"
    assert df[df["dimension"] == "temporal_flickering"].iloc[0]["provenance"] == {"seed": 3}


def test_never_a_filler_score():
    with pytest.raises(ValueError):
        make_record(run_id="r", suite="s", model="m", video=None, dimension="d", score=0.0, status="missing_weights")
    with pytest.raises(ValueError):
        make_record(run_id="r", suite="s", model="m", video=None, dimension="d", score=None, status="ok")
    with pytest.raises(ValueError):
        make_record(run_id="r", suite="s", model="m", video=None, dimension="d", score=float("nan"), status="ok")
    with pytest.raises(ValueError):
        make_record(run_id="r", suite="s", model="m", video=None, dimension="d", score=None, status="bogus")


def test_truncated_last_line_is_tolerated_and_repaired(tmp_path):
    st = ResultsStore(tmp_path / "r")
    st.add(suite="s", model="m", video="v1", dimension="d", score=1.0, status="ok")
    with open(tmp_path / "r" / RECORDS_FILE, "ab") as fh:  # a writer killed mid-line
        fh.write(b'{"run_id": "r", "suite": "s", "model": "m", "video": "v2", "dimen')
    assert len(load_records(tmp_path / "r")) == 1
    st2 = ResultsStore(tmp_path / "r")  # resume: the partial line is terminated, the next record starts cleanly
    assert st2.is_done("s", "m", "v1", "d") and not st2.is_done("s", "m", "v2", "d")
    st2.add(suite="s", model="m", video="v2", dimension="d", score=2.0, status="ok")
    df = load_records(tmp_path / "r")
    assert sorted(df["video"]) == ["v1", "v2"]
    lines = (tmp_path / "r" / RECORDS_FILE).read_bytes().split(b"\n")
    assert json.loads(lines[-2])["video"] == "v2"


def test_retry_supersedes_non_final_records(tmp_path):
    st = ResultsStore(tmp_path / "r")
    st.add(suite="s", model="m", video=None, dimension="d", score=None, status="missing_weights", message="x")
    assert not st.is_done("s", "m", None, "d")
    st.add(suite="s", model="m", video=None, dimension="d", score=0.5, status="ok")
    df = load_records(tmp_path / "r")
    assert len(df) == 1 and df.iloc[0]["score"] == 0.5
    assert len(load_records(tmp_path / "r", latest_only=False)) == 2


def test_infinite_scores_round_trip(tmp_path):
    st = ResultsStore(tmp_path / "r")
    st.add(suite="fidelity", model="m", video="v", dimension="psnr", score=float("inf"), status="ok",
           details={"per_frame": [float("inf")]})
    df = load_records(tmp_path / "r")
    assert df.iloc[0]["score"] == float("inf") and df.iloc[0]["details"]["per_frame"] == [float("inf")]


def test_efficiency_sweep_points_are_distinct_keys(tmp_path):
    st = ResultsStore(tmp_path / "r")
    for frames in (17, 81):
        st.add(suite="efficiency", model="softmax", video=None, dimension="latency_ms", score=float(frames),
               status="ok", details={"level": "op", "frames": frames, "height": 480, "width": 832})
    st.add(suite="efficiency", model="softmax", video=None, dimension="latency_ms", score=99.0, status="ok",
           details={"level": "op", "frames": 81, "height": 480, "width": 832})  # re-measured point: supersedes
    df = load_records(tmp_path / "r")
    assert sorted(df.score) == [17.0, 99.0]
    assert st.is_done("efficiency", "softmax", None, "latency_ms", {"level": "op", "frames": 17, "height": 480,
                                                                   "width": 832})
    assert not st.is_done("efficiency", "softmax", None, "latency_ms", {"level": "op", "frames": 321})
