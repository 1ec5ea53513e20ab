"""Standard-mode temporal_flickering with VBench's own RAFT static filter (random-init RAFT: mechanics only)."""
import argparse

import pytest
import torch

from evaluation import prompts as P
from evaluation.generation import GenJob, generate_set
from evaluation.run import main
from evaluation.store import load_records

from eval_stand_in import TinyGenerator


@pytest.fixture
def random_raft(cache_roots):
    from vbench.third_party.RAFT.core.raft import RAFT

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = RAFT(argparse.Namespace(small=False, mixed_precision=False, alternate_corr=False))
    path = cache_roots["VBENCH_CACHE_DIR"] / "raft_model/models/raft-things.pth"
    path.parent.mkdir(parents=True)
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, path)  # DataParallel layout
    return path


def test_static_filter_selects_and_renames_then_scores(tmp_path, random_raft):
    prompt = [e["prompt_en"] for e in P.load_full_info("vbench") if "temporal_flickering" in e["dimension"]][0]
    # a sample with index >= 5 makes it the 25-sample protocol; RAFT on CPU is slow, so 3 short 64x64 clips
    jobs = [GenJob(prompt, i, P.v1_filename(prompt, i)) for i in (0, 1, 5)]
    generate_set(TinyGenerator(static=True), jobs, tmp_path / "v", num_frames=3, height=64, width=64)
    rc = main(["--suite", "vbench", "--videos", str(tmp_path / "v"), "--dimensions", "temporal_flickering",
               "--out", str(tmp_path / "run"), "--label", "m", "--quiet", "--no-verify-hashes"])
    assert rc == 0
    df = load_records(tmp_path / "run")
    sf = df[df.dimension == "static_filter"]
    assert sorted(sf.video) == sorted(j.filename for j in jobs) and set(sf.status) == {"ok"}
    static = sorted(sf[sf.score == 1.0].video)  # upstream order: sorted file names, first 5 static ones kept
    tf = df[(df.dimension == "temporal_flickering") & df.video.notna()]
    assert sorted(tf.video) == [P.v1_filename(prompt, i) for i in range(min(5, len(static)))]
    assert sorted(d["source"] for d in tf.details) == static[:5]
    agg = df[(df.dimension == "temporal_flickering") & df.video.isna()].iloc[0]
    assert "without the RAFT static filter" not in (agg.message or "")
    assert "static_filter" in agg.details
    assert (tmp_path / "run" / "work" / "vbench" / "filtered_videos" / P.v1_filename(prompt, 0)).exists()
