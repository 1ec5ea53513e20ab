"""Scoring sharded over ranks: ``torchrun --nproc_per_node 2`` (gloo, CPU) over a per-video-mean dimension with a
network (aesthetic_quality), whole dimensions round-robin (background_consistency, subject-to-frame-weighting, so
not split) and temporal_flickering's RAFT static filter (split, with a barrier) -- merged into one store with no lost
and no duplicated record, and the same scores as one process."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from upstream_fixtures import harness, official_names, write_clips

pytestmark = pytest.mark.upstream_arch

ROOT = Path(__file__).resolve().parents[3]
DIMS = ["temporal_flickering", "background_consistency", "aesthetic_quality"]


def _videos(folder: Path, tf_prompt: str) -> list[str]:
    from evaluation import prompts as P

    names = []
    # static filter input: 2 static (256 px) + 2 moving (128 px) samples, one with index >= 5 (the 25-sample protocol)
    for i, size in [(0, 256), (1, 128), (5, 128), (6, 256)]:
        write_clips(folder, [P.v1_filename(tf_prompt, i)], 5, size=size, seed=i)
        names.append(P.v1_filename(tf_prompt, i))
    more = official_names("aesthetic_quality", 3, 1) + official_names("background_consistency", 1, 2)
    write_clips(folder, more, 3, seed=40)
    return names + more


def test_two_gloo_ranks_merge_into_one_store(tmp_path, upstream_env, monkeypatch):
    from evaluation import prompts as P
    from evaluation.store import load_records
    from upstream_nets import raft

    # the session's CLIP files beside a RAFT whose flows give both static-filter verdicts (see upstream_nets.raft)
    upstream_env.ensure("clip_b32", "clip_l14")
    cache = tmp_path / "vbench_cache"
    cache.mkdir()
    for sub in ("clip_model", "aesthetic_model"):
        os.symlink(upstream_env.vb / sub, cache / sub)
    raft(cache, flow_scale=0.2)
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(cache))
    tf_prompt = [e["prompt_en"] for e in P.load_full_info("vbench") if "temporal_flickering" in e["dimension"]][0]
    videos = tmp_path / "videos"
    files = _videos(videos, tf_prompt)

    out = tmp_path / "sharded"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "evaluation.run", "--suite", "vbench", "--videos", str(videos), "--dimensions", *DIMS, "--out", str(out),
           "--label", "m", "--quiet", "--no-verify-hashes"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (out / "shards").exists()  # merged and removed

    raw = load_records(out, latest_only=False)
    keys = Counter(zip(raw.suite, raw.video.fillna(""), raw.dimension))
    assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1]  # nothing duplicated
    by_dim = {d: set(raw[(raw.dimension == d) & raw.video.notna()].video) for d in [*DIMS, "static_filter"]}
    assert by_dim["static_filter"] == set(files[:4])  # every sample classified once, by one of the ranks
    assert by_dim["aesthetic_quality"] == set(official_names("aesthetic_quality", 3, 1))  # nothing lost
    assert by_dim["background_consistency"] == set(official_names("background_consistency", 1, 2))
    assert by_dim["temporal_flickering"] == {P.v1_filename(tf_prompt, 0), P.v1_filename(tf_prompt, 1)}

    assert harness(videos, tmp_path / "single", DIMS) == 0
    single = load_records(tmp_path / "single")
    sharded = load_records(out)

    def scores(df):
        return {(r.dimension, r.video): r.score for r in df.itertuples()}

    assert scores(sharded) == scores(single)
    ranks = {r.provenance.get("rank") for r in raw.itertuples() if r.video is not None}
    assert ranks == {0, 1}  # both ranks did part of the work
