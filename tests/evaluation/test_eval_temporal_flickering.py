"""temporal_flickering through our harness == vbench.VBench(...).evaluate(...) on the same files."""
import json
import os

import pytest

from evaluation import prompts as P
from evaluation.generation import GenJob, generate_set, load_generator
from evaluation.run import main
from evaluation.store import load_records

SPEC = "tests.evaluation.eval_stand_in:make_tiny"

@pytest.fixture(scope="module")
def tiny_pipeline():
    """Our tiny pipeline: rehyat's tiny random ReHyAt Wan model through WanPipeline (17 frames, 32x32, 2 steps)."""
    pytest.importorskip("rehyat.generate")
    return load_generator("tiny", device="cpu")

def _vbench_reference(videos, out, mode, name="ref"):
    import vbench
    from vbench import VBench

    full_info = os.path.join(os.path.dirname(vbench.__file__), "VBench_full_info.json")
    VBench("cpu", full_info, str(out)).evaluate(videos_path=str(videos), name=name,
                                                 dimension_list=["temporal_flickering"], mode=mode)
    with open(os.path.join(out, f"{name}_eval_results.json")) as fh:
        return json.load(fh)["temporal_flickering"]

@pytest.fixture(scope="module")
def tf_prompts():
    return [e["prompt_en"] for e in P.load_full_info("vbench") if "temporal_flickering" in e["dimension"]][:2]

def test_custom_mode_equals_vbench_evaluate(tmp_path, tiny_pipeline):
    jobs = [GenJob(p, s, f"{p}-{s}.mp4") for p in ("a calm lake", "a busy street") for s in range(2)]
    generate_set(tiny_pipeline, jobs, tmp_path / "videos", num_frames=17, height=32, width=32, fps=16)
    ours = main(["--suite", "vbench", "--videos", str(tmp_path / "videos"), "--mode", "custom",
                 "--dimensions", "temporal_flickering", "--out", str(tmp_path / "run"), "--label", "tiny", "--quiet"])
    assert ours == 0
    ref_score, ref_videos = _vbench_reference(tmp_path / "videos", tmp_path / "ref", "custom_input")
    df = load_records(tmp_path / "run")
    agg = df[df.video.isna()].iloc[0]
    assert agg.status == "non_standard" and "custom_input" in agg.message
    # same code, same files: per-video scores are bit-identical (below); the mean agrees up to summation order
    # (upstream: np.mean in directory-listing order; ours: exactly rounded fsum, independent of resume order)
    assert agg.score == pytest.approx(ref_score, rel=1e-14, abs=0)
    per = df[df.video.notna()].set_index("video")["score"].to_dict()
    assert per == {os.path.basename(v["video_path"]): v["video_results"] for v in ref_videos}
    assert 0.5 < ref_score < 1.0
    print(f"temporal_flickering (rehyat tiny, 4 videos): ours {agg.score!r} == vbench {ref_score!r}")

def test_standard_mode_without_static_filter_equals_vbench_evaluate(tmp_path, tf_prompts):
    gen = load_generator(SPEC)  # the stand-in: 10 videos in milliseconds
    jobs = [GenJob(p, i, P.v1_filename(p, i)) for p in tf_prompts for i in range(5)]
    generate_set(gen, jobs, tmp_path / "videos", num_frames=9, height=32, width=32, fps=8)
    rc = main(["--suite", "vbench", "--videos", str(tmp_path / "videos"), "--dimensions", "temporal_flickering",
               "--out", str(tmp_path / "run"), "--label", "tiny", "--quiet"])
    assert rc == 0  # a non-standard score is still a score
    ref_score, ref_videos = _vbench_reference(tmp_path / "videos", tmp_path / "ref", "vbench_standard")
    df = load_records(tmp_path / "run")
    agg = df[df.video.isna()].iloc[0]
    assert agg.score == pytest.approx(ref_score, rel=1e-14, abs=0) and len(ref_videos) == 10
    assert agg.status == "non_standard"
    assert "static filter" in agg.message and "raft-things.pth" in agg.message
    assert agg.provenance["mode"] == "standard"
    assert any("expected video(s) missing" in d for d in agg.provenance["protocol_deviations"])
    # the seeds of the generated set are carried into the per-video provenance
    row = df[df.video == P.v1_filename(tf_prompts[0], 3)].iloc[0]
    assert row.provenance["seed"] == 3
