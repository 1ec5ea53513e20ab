"""VBench-2.0 dimensions whose networks can be built offline, through ``python -m evaluation.run --suite vbench2``
(in-process: vbench2 imports here once the harness provides ``torchvision.io.write_video``'s name), equal to
vbench2's own ``VBench2.evaluate`` on the same files and random-initialised networks: Diversity (torchvision VGG19)
and Camera_Motion (CoTracker2 through co-tracker's torch-hub code, vendored in cotracker_hub/).

The PyPI wheel vbench2 0.1.1 ships its ``third_party`` folders without their Python code (arcface, cotracker,
Dense_match, RAFT, ViTDetector, YOLO-World, LLaVA-NeXT); Camera_Motion imports only cotracker's ``Visualizer`` from
there (never called while scoring; the harness provides the name), the others need that code to score;
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


def _camera_entries(labels):
    from evaluation import prompts as P

    entries = [e for e in P.load_full_info("vbench2") if e["dimension"][0] == "Camera_Motion"]
    return [next(e for e in entries if e["auxiliary_info"] == label) for label in labels]


def test_camera_motion_equals_vbench2_evaluate(tmp_path, upstream_env, monkeypatch):
    import torch.hub

    from evaluation.upstream_worker import cuda_calls_to, install_import_compat

    upstream_env.ensure("cotracker2")
    # the random CoTracker2's coordinate head is zeroed: tracks stay put, so "static" is recognised and "pan_left" not
    entries = _camera_entries(["static", "pan_left"])
    names = [f"{e['prompt_en'][:180]}-0.mp4" for e in entries]
    videos = tmp_path / "videos"
    write_clips(videos / "Camera_Motion", names, 8, seed=12)  # 8 frames: one CoTracker2 window
    assert harness(videos, tmp_path / "run", ["Camera_Motion"], suite="vbench2") == 0

    install_import_compat()  # + cotracker's Visualizer, which the wheel omits (imported by camera_motion, never called)
    from vbench2 import VBench2

    # upstream's init_submodules names "facebookresearch/co-tracker" without a ref, so torch.hub asks github.com for
    # the default branch and, offline, falls back to the cached repo: make that offline answer certain
    def offline(*_a, **_k):
        raise torch.hub.URLError("offline test")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    info = tmp_path / "full_info.json"
    info.write_text(json.dumps(entries))  # only the prompts whose videos are present (3 x 108 otherwise)
    with cuda_calls_to("cpu"):  # upstream moves every video to .cuda(): device only, as the harness does
        VBench2("cpu", str(info), str(tmp_path / "ref")).evaluate(
            videos_path=str(videos / "Camera_Motion"), name="ref", dimension_list=["Camera_Motion"], local=True)
    reference = json.loads((tmp_path / "ref" / "ref_eval_results.json").read_text())
    score, per = assert_equal_to_reference(tmp_path / "run", "Camera_Motion", reference, suite="vbench2", n_videos=2,
                                           prefix="Camera_Motion/")
    assert per == {f"Camera_Motion/{names[0]}": 1.0, f"Camera_Motion/{names[1]}": 0.0}  # the label parsed both ways
    assert score == 0.5


def test_camera_motion_adapters_change_the_device_only():
    """The worker's two Camera_Motion adapters: hard-coded ``.cuda()`` follows a non-CUDA device only while the
    upstream call runs; the wheel-omitted ``Visualizer`` is a name that refuses to be used."""
    import sys

    import torch

    from evaluation.upstream_worker import VISUALIZER, cuda_calls_to, install_import_compat

    real = torch.Tensor.cuda
    x = torch.arange(3.0)
    with cuda_calls_to("cpu"):
        y = x.cuda()
        assert y.device.type == "cpu" and torch.equal(y, x)
    assert torch.Tensor.cuda is real
    with cuda_calls_to("cuda:0"):
        assert torch.Tensor.cuda is real  # a CUDA device: upstream's own call

    install_import_compat()
    from vbench2.third_party.cotracker.utils.visualizer import Visualizer

    if getattr(sys.modules[VISUALIZER], "__file__", None):
        return  # a source checkout's real visualizer: nothing provided
    with pytest.raises(NotImplementedError, match="harness only provides the name"):
        Visualizer(save_dir="x")


def test_every_other_dimension_says_why():
    from evaluation.suites.vbench2 import DIMENSIONS

    for name, dim in DIMENSIONS.items():
        assert bool(dim.exercised) != bool(dim.not_exercised), name
        assert bool(dim.exercised) == (name in ("Diversity", "Camera_Motion")), name
