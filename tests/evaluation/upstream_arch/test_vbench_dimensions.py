"""Every VBench dimension whose networks can be built offline, end to end through ``python -m evaluation.run --suite
vbench`` on short real videos and random-initialised real networks, equal to vbench's own ``VBench.evaluate`` (local
mode, CPU) on the same files and checkpoints: per video bit-identical, aggregate equal.

Scores of random networks: pipeline checks, never quality numbers.  Dimensions that cannot run here (GRiT: detectron2;
scene: transformers 4) are listed with their reason by ``--list`` and docs/evaluation.md; test_not_exercised_reasons
keeps that list honest.
"""
from __future__ import annotations

import os

import pytest

from upstream_fixtures import (assert_equal_to_reference, harness, official_names, vbench_evaluate,
                               write_clips)

pytestmark = pytest.mark.upstream_arch

# dimension -> (networks to build, prompts, videos per prompt, frames, extra filter on the prompt entries)
SPECS = {
    "subject_consistency": (("dino",), 2, 1, 5, None),
    "background_consistency": (("clip_b32",), 1, 2, 6, None),
    "motion_smoothness": (("amt",), 1, 2, 7, None),
    "dynamic_degree": (("raft",), 2, 1, 8, None),  # 128 px: RAFT's smallest finite size (videos.RAFT_MIN_SIDE)
    "aesthetic_quality": (("clip_l14",), 2, 1, 4, None),
    "imaging_quality": (("musiq",), 1, 2, 3, None),
    # UMT-L/16 on 16 frames is ~1 min per video on one CPU thread: one video, named after the class the random
    # head is biased to, so the label parsed from the file name must match for the video to count
    "human_action": (("umt",), 1, 1, 8, lambda e: e["prompt_en"] == "A person is riding a bike"),
    "temporal_style": (("viclip",), 1, 1, 8, None),
    "overall_consistency": (("viclip",), 1, 1, 8, None),
    "appearance_style": (("clip_b32",), 2, 1, 3, None),
}


@pytest.mark.parametrize("dimension", list(SPECS))
def test_dimension_equals_vbench_evaluate(dimension, tmp_path, upstream_env):
    nets, n_prompts, per_prompt, frames, where = SPECS[dimension]
    upstream_env.ensure(*nets)
    names = official_names(dimension, n_prompts, per_prompt, where=where or (lambda e: True))
    videos = tmp_path / "videos"
    write_clips(videos, names, frames, size=128 if dimension == "dynamic_degree" else 64)
    assert harness(videos, tmp_path / "run", [dimension]) == 0
    reference = vbench_evaluate(videos, tmp_path / "ref", [dimension])
    score, per = assert_equal_to_reference(tmp_path / "run", dimension, reference, n_videos=len(names))
    if dimension == "human_action":
        assert per == {names[0]: 1.0}  # the biased class is among the top-5 >= 0.85 and matches the file name
    if dimension == "dynamic_degree":
        assert set(per.values()) == {1.0}  # finite flows (~9 px from a random RAFT) above the threshold
    print(f"{dimension} (random-init networks, {len(names)} video(s)): harness {score!r} == vbench {reference[dimension][0]!r}")


def test_not_exercised_reasons():
    """Every VBench dimension says whether it has been exercised offline or why it never runs here, and the ones
    this file exercises say so."""
    from evaluation.suites.vbench import DIMENSIONS

    for name, dim in DIMENSIONS.items():
        assert bool(dim.exercised) != bool(dim.not_exercised), name
        assert bool(dim.exercised) == (name in SPECS or name == "temporal_flickering"), name


def test_temporal_flickering_standard_with_static_filter_equals_vbench(tmp_path, upstream_env, monkeypatch):
    """Standard protocol end to end: samples with indices >= 5 present, vbench's RAFT StaticFilter picks the static
    ones (random RAFT whose flows put 256 px clips under the threshold and 128 px clips over it), the first 5 per
    prompt in file-name order are scored.  Reference: vbench's own static_filter + VBench.evaluate on its
    filtered_videos; patched there, as in the harness, only the device (StaticFilter's DEVICE constant and
    map_location for RAFT's GPU-saved checkpoint)."""
    import argparse

    import vbench.cli.static_filter as sf

    from evaluation import prompts as P
    from evaluation.store import load_records
    from evaluation.upstream_worker import default_map_location
    from upstream_nets import raft

    vb = tmp_path / "vbench_cache"  # its own RAFT (flow head scaled), not the session's
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(vb))
    model = raft(vb, flow_scale=0.2)
    a, b = [e["prompt_en"] for e in P.load_full_info("vbench") if "temporal_flickering" in e["dimension"]][:2]
    videos = tmp_path / "videos"
    for name, size in [(P.v1_filename(a, 0), 128), (P.v1_filename(a, 1), 256), (P.v1_filename(a, 5), 256),
                       (P.v1_filename(a, 6), 128), (P.v1_filename(b, 0), 128), (P.v1_filename(b, 5), 256)]:
        write_clips(videos, [name], 5, size=size, seed=len(name) + size)
    assert harness(videos, tmp_path / "run", ["temporal_flickering"]) == 0

    monkeypatch.setattr(sf, "DEVICE", "cpu")
    args = argparse.Namespace(model=str(model), videos_path=str(videos), result_path=str(tmp_path / "ref"),
                              store_name="filtered.json", small=False, mixed_precision=False, alternate_corr=False,
                              filter_scope="temporal_flickering")
    with default_map_location("cpu"):
        sf.static_filter(args)
    reference = vbench_evaluate(tmp_path / "ref" / "filtered_videos", tmp_path / "ref", ["temporal_flickering"])
    assert_equal_to_reference(tmp_path / "run", "temporal_flickering", reference, n_videos=3)

    df = load_records(tmp_path / "run")
    flt = df[df.dimension == "static_filter"].set_index("video")["score"].to_dict()
    assert flt == {P.v1_filename(a, 0): 0.0, P.v1_filename(a, 1): 1.0, P.v1_filename(a, 5): 1.0,
                   P.v1_filename(a, 6): 0.0, P.v1_filename(b, 0): 0.0, P.v1_filename(b, 5): 1.0}
    import json

    upstream_pick = json.loads((tmp_path / "ref" / "filtered.json").read_text())
    tf = df[(df.dimension == "temporal_flickering") & df.video.notna()]
    ours = {r.video: r.details["source"] for r in tf.itertuples()}
    theirs = {P.v1_filename(p, i): os.path.basename(src) for p in (a, b)
              for i, src in enumerate(upstream_pick[p]["static_path"])}
    assert ours == theirs == {P.v1_filename(a, 0): P.v1_filename(a, 1), P.v1_filename(a, 1): P.v1_filename(a, 5),
                              P.v1_filename(b, 0): P.v1_filename(b, 5)}
    agg = df[(df.dimension == "temporal_flickering") & df.video.isna()].iloc[0]
    assert agg.status == "non_standard" and "without the RAFT static filter" not in (agg.message or "")
