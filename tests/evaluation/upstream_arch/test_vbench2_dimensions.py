"""VBench-2.0 dimensions whose networks can be built offline, through ``python -m evaluation.run --suite vbench2``
(in-process: vbench2 imports here once the harness provides ``torchvision.io.write_video``'s name), equal to
vbench2's own ``VBench2.evaluate`` on the same files and a random-initialised torchvision VGG19.

Only Diversity qualifies with the PyPI wheel vbench2 0.1.1: its ``third_party`` folders ship without their Python
code (arcface, cotracker, RAFT, ViTDetector, YOLO-World, LLaVA-NeXT), so the other 17 dimensions cannot even import;
test_every_other_dimension_says_why keeps the stated reasons in the registry.  Scores: pipeline checks only.
"""
from __future__ import annotations

import json

import pytest

from upstream_fixtures import assert_equal_to_reference, harness, write_clips

pytestmark = pytest.mark.upstream_arch


def _diversity_entry():
    from evaluation import prompts as P

    return next(e for e in P.load_full_info("vbench2") if e["dimension"][0] == "Diversity")


def test_diversity_equals_vbench2_evaluate(tmp_path, upstream_env):
    from evaluation.upstream_worker import install_import_compat

    upstream_env.ensure("vgg19")
    entry = _diversity_entry()
    names = [f"{entry['prompt_en'][:180]}-{i}.mp4" for i in range(3)]  # 3 of the 20 seeds (VGG19 at 512 px is slow)
    videos = tmp_path / "videos"
    write_clips(videos / "Diversity", names, 2, seed=11)
    assert harness(videos, tmp_path / "run", ["Diversity"], suite="vbench2") == 0

    install_import_compat()  # vbench2.utils imports torchvision.io.write_video (gone in torchvision 0.25+)
    from vbench2 import VBench2

    # upstream's standard mode builds an entry for each of the 10 Diversity prompts and divides by zero on one
    # without videos: the reference reads a full-info file holding only the prompt whose videos are present
    info = tmp_path / "full_info.json"
    info.write_text(json.dumps([entry]))
    VBench2("cpu", str(info), str(tmp_path / "ref")).evaluate(
        videos_path=str(videos / "Diversity"), name="ref", dimension_list=["Diversity"], local=True)
    reference = json.loads((tmp_path / "ref" / "ref_eval_results.json").read_text())
    # upstream reports one record per prompt, under its first video's path
    score, per = assert_equal_to_reference(tmp_path / "run", "Diversity", reference, suite="vbench2", n_videos=1,
                                           prefix="Diversity/")
    assert 0.0 <= score <= 1.0  # upstream clamps
    from evaluation.store import load_records

    df = load_records(tmp_path / "run")
    assert not (df.status == "error").any()  # the prompt's other videos are part of its record, not "no result"
    assert df[df.video.notna()].iloc[0].details["videos"] == [f"Diversity/{n}" for n in names]


def test_every_other_dimension_says_why():
    from evaluation.suites.vbench2 import DIMENSIONS

    for name, dim in DIMENSIONS.items():
        assert bool(dim.exercised) != bool(dim.not_exercised), name
        assert bool(dim.exercised) == (name == "Diversity"), name
