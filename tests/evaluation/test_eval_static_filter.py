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
    sd = model.state_dict()
    # a random RAFT predicts ~9 px flows whatever the content; with its flow head zeroed it predicts zero flow, so
    # the static clips are classified static (with 3 frames upstream's rule accepts only exactly zero end-pair flow)
    for k in ("update_block.flow_head.conv2.weight", "update_block.flow_head.conv2.bias"):
        sd[k] = torch.zeros_like(sd[k])
    path = cache_roots["VBENCH_CACHE_DIR"] / "raft_model/models/raft-things.pth"
    path.parent.mkdir(parents=True)
    torch.save({"module." + k: v for k, v in sd.items()}, path)  # DataParallel layout
    return path


def test_static_filter_selects_and_renames_then_scores(tmp_path, random_raft):
    prompt = [e["prompt_en"] for e in P.load_full_info("vbench") if "temporal_flickering" in e["dimension"]][0]
    # a sample with index >= 5 makes it the 25-sample protocol; RAFT on CPU is slow, so 3 short clips of the
    # smallest size RAFT gives finite flows for (evaluation.videos.RAFT_MIN_SIDE: 64 px gave NaN flows)
    jobs = [GenJob(prompt, i, P.v1_filename(prompt, i)) for i in (0, 1, 5)]
    generate_set(TinyGenerator(static=True), jobs, tmp_path / "v", num_frames=3, height=128, width=128)
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
