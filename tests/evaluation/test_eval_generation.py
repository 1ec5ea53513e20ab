"""Set generation: official naming, torchrun-style sharding, resume, seeds recorded; vbench --model end to end."""
import json

import pytest

from evaluation import prompts as P
from evaluation.generation import (GenJob, VideoGenerator, generate_set, load_generator, read_generation_log)
from evaluation.run import main
from evaluation.store import load_records
from evaluation.suites._upstream import UpstreamSuite
from evaluation.videos import check_video

from eval_stand_in import TinyGenerator

SPEC = "tests.evaluation.eval_stand_in:make_tiny"


class Counting(TinyGenerator):
    calls = 0

    def generate(self, *a, **k):
        Counting.calls += 1
        return super().generate(*a, **k)


def test_stand_in_satisfies_protocol():
    assert isinstance(load_generator(SPEC), VideoGenerator)


def test_sharded_generation_is_disjoint_complete_and_resumable(tmp_path):
    jobs = [GenJob(p, i, P.v1_filename(p, i)) for p in ("a b", "c d", "e f") for i in range(3)]
    Counting.calls = 0
    r0 = generate_set(Counting(), jobs, tmp_path / "v", num_frames=5, height=32, width=32, rank=0, world_size=2)
    r1 = generate_set(Counting(), jobs, tmp_path / "v", num_frames=5, height=32, width=32, rank=1, world_size=2)
    assert r0["written"] + r1["written"] == 9 and Counting.calls == 9
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == sorted(j.filename for j in jobs)
    assert all(check_video(tmp_path / "v" / j.filename).n_frames == 5 for j in jobs)
    log = read_generation_log(tmp_path / "v")
    assert log[P.v1_filename("c d", 2)]["seed"] == 2 and len(log) == 9
    (tmp_path / "v" / jobs[4].filename).write_bytes(b"broken")  # a damaged file is regenerated, the rest skipped
    r = generate_set(Counting(), jobs, tmp_path / "v", num_frames=5, height=32, width=32, rank=0, world_size=1)
    assert r["written"] == 1 and r["skipped"] == 8 and Counting.calls == 10


def test_same_prompt_and_seed_is_copied_not_regenerated(tmp_path):
    jobs = [GenJob("x y", 0, "A/x y-0.mp4"), GenJob("x y", 0, "B/x y-0.mp4")]
    Counting.calls = 0
    r = generate_set(Counting(), jobs, tmp_path / "v", num_frames=5, height=32, width=32)
    assert r == {"rank": 0, "world_size": 1, "jobs": 2, "written": 1, "skipped": 0, "copied": 1}
    assert (tmp_path / "v/A/x y-0.mp4").read_bytes() == (tmp_path / "v/B/x y-0.mp4").read_bytes()
    log = read_generation_log(tmp_path / "v")
    assert log["B/x y-0.mp4"]["copied_from"] == "A/x y-0.mp4" and log["B/x y-0.mp4"]["seed"] == 0


def test_vbench2_generation_limits_prompts_per_dimension(tmp_path):
    rc = main(["--suite", "vbench2", "--model", SPEC, "--dimensions", "Diversity", "Human_Identity",
               "--limit-prompts", "1", "--num-frames", "3", "--out", str(tmp_path / "run"), "--quiet"])
    assert rc == 1  # both dimensions lack weights here
    root = tmp_path / "run" / "videos" / "vbench2" / "tiny-ref"
    div = [s.filename for s in P.v2_slots(["Diversity"])][:20]
    hid = [s.filename for s in P.v2_slots(["Human_Identity"])][:3]
    assert sorted(p.name for p in (root / "Diversity").iterdir()) == sorted(div)
    assert sorted(p.name for p in (root / "Human_Identity").iterdir()) == sorted(hid)
    assert set(load_records(tmp_path / "run").status) == {"missing_weights"}


def test_vbench_model_generates_official_set_then_scores(tmp_path):
    rc = main(["--suite", "vbench", "--model", SPEC, "--dimensions", "temporal_flickering", "--limit-prompts", "1",
               "--num-frames", "5", "--out", str(tmp_path / "run"), "--quiet"])
    assert rc == 0
    videos = tmp_path / "run" / "videos" / "vbench" / "tiny-ref"
    prompt = [e["prompt_en"] for e in P.load_full_info("vbench") if "temporal_flickering" in e["dimension"]][0]
    assert sorted(p.name for p in videos.iterdir()) == sorted(P.v1_filename(prompt, i) for i in range(25))
    df = load_records(tmp_path / "run")
    per = df[df.video.notna()]
    assert sorted(per.video) == sorted(P.v1_filename(prompt, i) for i in range(5))  # no RAFT: prompt-0..4
    assert sorted(r["seed"] for r in per.provenance) == [0, 1, 2, 3, 4]
    assert {r["model_config_hash"] for r in per.provenance} != {None}
    agg = df[df.video.isna()].iloc[0]
    assert agg.status == "non_standard" and agg.provenance["mode"] == "standard"


def test_vbench_video_mean_dimension_resumes_per_chunk(tmp_path, monkeypatch):
    d = tmp_path / "v"
    jobs = [GenJob("a b", i, f"a b-{i}.mp4") for i in range(6)]
    generate_set(TinyGenerator(), jobs, d, num_frames=5, height=32, width=32)
    monkeypatch.setattr(UpstreamSuite, "chunk_size", 2)
    real = UpstreamSuite.call_upstream
    calls = []

    def crash_on_second(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real(self, *a, **k)

    monkeypatch.setattr(UpstreamSuite, "call_upstream", crash_on_second)
    args = ["--suite", "vbench", "--videos", str(d), "--mode", "custom", "--dimensions", "temporal_flickering",
            "--quiet", "--run-id", "r"]
    assert main(args + ["--out", str(tmp_path / "run")]) == 1  # explicit dimension failed
    df = load_records(tmp_path / "run")
    assert (df[df.video.notna()].status == "non_standard").sum() == 2
    calls.clear()
    monkeypatch.setattr(UpstreamSuite, "call_upstream", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    assert main(args + ["--out", str(tmp_path / "run")]) == 0
    assert len(calls) == 2  # only the 4 videos left, in 2 chunks
    assert main(args + ["--out", str(tmp_path / "clean")]) == 0
    a, b = load_records(tmp_path / "run"), load_records(tmp_path / "clean")
    key = ["video", "dimension", "status", "score"]
    assert a[key].sort_values("video", na_position="first").values.tolist() == \
        b[key].sort_values("video", na_position="first").values.tolist()
