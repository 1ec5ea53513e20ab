"""Defects found in the harness's adapters while running the VBench dimensions on random-initialised networks, one
test each (docs/evaluation.md, "What the harness changes around upstream's code")."""
from __future__ import annotations

import argparse
import sys

import pytest

from upstream_fixtures import harness, official_names, vbench_evaluate, write_clips

pytestmark = pytest.mark.upstream_arch


def test_motion_smoothness_loads_a_training_checkpoint(tmp_path, upstream_env, monkeypatch):
    """vbench 0.1.5's AMT loader calls torch.load without weights_only; torch >= 2.6 then refuses a training
    checkpoint with non-tensor state (upstream fixed it after 0.1.5).  The harness loads it (trusted_checkpoints)."""
    import pickle

    from evaluation.store import load_records
    from upstream_nets import amt_s

    cache = tmp_path / "vbench_cache"
    amt_s(cache, trainer_state=True)
    import vbench.utils

    monkeypatch.setenv("VBENCH_CACHE_DIR", str(cache))
    monkeypatch.setattr(vbench.utils, "CACHE_DIR", str(cache))
    videos = tmp_path / "videos"
    write_clips(videos, official_names("motion_smoothness", 1, 1), 5)
    assert harness(videos, tmp_path / "run", ["motion_smoothness"]) == 0
    agg = load_records(tmp_path / "run").query("video.isna()").iloc[0]
    assert agg.status in ("ok", "non_standard") and agg.score > 0
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        vbench_evaluate(videos, tmp_path / "ref", ["motion_smoothness"])


def test_raft_refuses_frames_too_small_for_its_pyramid(tmp_path, upstream_env):
    """RAFT on a side < 121 px returns NaN flow, which upstream counts as 'not dynamic' without a word: the harness
    gives such a file a per-file error naming the limit, and scores the others."""
    from evaluation.store import load_records

    upstream_env.ensure("raft")
    small, big = official_names("dynamic_degree", 2, 1)
    videos = tmp_path / "videos"
    write_clips(videos, [small], 4, size=120)
    write_clips(videos, [big], 4, size=128)
    assert harness(videos, tmp_path / "run", ["dynamic_degree"]) == 0
    df = load_records(tmp_path / "run").set_index("video", drop=False)
    assert df.loc[small, "status"] == "error" and "at least 121 px" in df.loc[small, "message"]
    assert df.loc[big, "status"] == "ok" or df.loc[big, "status"] == "non_standard"
    agg = df[df.video.isna()].iloc[0]
    assert agg.status == "non_standard" and "1 file(s) unusable" in agg.message


def test_static_filter_loads_gpu_saved_raft_on_cpu(tmp_path):
    """vbench's StaticFilter calls torch.load(path) without map_location; RAFT's released file holds CUDA
    storages, which cannot be restored on a machine without CUDA.  The harness loads it onto --device."""
    import torch

    import vbench.cli.static_filter as sf

    from evaluation.upstream_worker import default_map_location
    from upstream_nets import raft

    if torch.cuda.is_available():
        pytest.skip("the defect is CPU-only")
    path = raft(tmp_path / "vb")  # saved with the location tag cuda:0
    args = argparse.Namespace(model=str(path), small=False, mixed_precision=False, alternate_corr=False)
    with pytest.raises(RuntimeError, match="CUDA"):
        sf.StaticFilter(args, device="cpu")
    with default_map_location("cpu"):
        flt = sf.StaticFilter(args, device="cpu")
    assert next(flt.model.parameters()).device.type == "cpu"


def test_worker_points_vbench_cache_constants_at_the_checked_cache(tmp_path, monkeypatch):
    """vbench reads $VBENCH_CACHE_DIR once at import (vbench.utils.CACHE_DIR, copied into e.g.
    vbench.temporal_style, and baked into the default vocabulary of ViCLIP's tokenizer): an in-process run in a
    process that imported vbench under another cache read files the preflight never checked (in the full test
    suite: FileNotFoundError for the vocabulary in an earlier test's cache).  The worker re-points them."""
    import json

    import vbench.temporal_style  # noqa: F401  (imports `CACHE_DIR` by value)
    import vbench.utils
    from vbench.third_party.ViCLIP.simple_tokenizer import SimpleTokenizer

    from evaluation.upstream_worker import run_job

    stale = str(tmp_path / "stale")
    monkeypatch.setattr(vbench.utils, "CACHE_DIR", stale)
    monkeypatch.setattr(sys.modules["vbench.temporal_style"], "CACHE_DIR", stale)
    # the tokenizer's default vocabulary (a default argument, computed at import; used by ViCLIP's text tower)
    monkeypatch.setattr(SimpleTokenizer.__init__, "__defaults__", (f"{stale}/ViCLIP/bpe_simple_vocab_16e6.txt.gz",))
    videos = tmp_path / "v"
    (path,) = write_clips(videos, ["a-0.mp4"], 3)
    info = tmp_path / "info.json"
    info.write_text(json.dumps([{"prompt_en": "a", "dimension": ["temporal_flickering"], "video_list": [str(path)]}]))
    checked = str(tmp_path / "checked")
    run_job({"package": "vbench", "dimension": "temporal_flickering", "full_info": str(info), "device": "cpu",
             "submodules": [], "cache_dir": checked})
    assert vbench.utils.CACHE_DIR == checked
    assert sys.modules["vbench.temporal_style"].CACHE_DIR == checked
    assert SimpleTokenizer.__init__.__defaults__ == (f"{checked}/ViCLIP/bpe_simple_vocab_16e6.txt.gz",)


def test_import_compat_provides_only_missing_names():
    """numpy 2 dropped numpy.lib.function_base.disp (UMT's dataset module imports it, so vbench.human_action could
    not import) and torchvision 0.25+ dropped torchvision.io.write_video (vbench2.utils imports it, so no vbench2
    dimension could import in-process).  The names are provided, and they refuse to be called."""
    import numpy
    import torchvision.io

    from evaluation.suites._upstream import inprocess_import_error
    from evaluation.upstream_worker import install_import_compat

    install_import_compat()
    from numpy.lib.function_base import disp  # noqa: F401

    assert install_import_compat() == []  # idempotent
    if int(numpy.__version__.split(".")[0]) >= 2:
        with pytest.raises(NotImplementedError):
            disp("x")
    if getattr(torchvision.io.write_video, "__module__", "") == "evaluation.upstream_worker":
        with pytest.raises(NotImplementedError):
            torchvision.io.write_video("x.mp4", None, 8)
    assert inprocess_import_error("vbench2") is None
    import vbench.human_action  # noqa: F401


def test_preflight_checks_modules_in_the_external_interpreter(tmp_path, upstream_env):
    """With --vbench-python, the modules a dimension imports must be in *that* interpreter; the preflight used to
    check this one (where clip is installed) and the run then failed inside the worker."""
    import subprocess

    from evaluation.store import load_records

    upstream_env.ensure("clip_b32")
    bare = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    videos = tmp_path / "videos"
    write_clips(videos, official_names("background_consistency", 1, 1), 3)
    assert harness(videos, tmp_path / "run", ["background_consistency"], "--vbench-python", str(bare)) == 1
    agg = load_records(tmp_path / "run").iloc[-1]
    assert agg.status == "error"
    assert "['clip'] not importable in the interpreter" in agg.message and str(bare) in agg.message


def test_missing_external_interpreter_is_one_clear_error(tmp_path):
    """--vbench-python pointing nowhere: each dimension is an error naming the option, not a FileNotFoundError
    traceback from inside the runner."""
    from evaluation.store import load_records

    videos = tmp_path / "videos"
    write_clips(videos, ["a clip-0.mp4"], 3)
    assert harness(videos, tmp_path / "run", ["temporal_flickering"], "--mode", "custom",
                   "--vbench-python", str(tmp_path / "no-venv")) == 1
    agg = load_records(tmp_path / "run").iloc[-1]
    assert agg.status == "error" and agg.message.startswith(f"--vbench-python {tmp_path / 'no-venv'}: no python")


def test_summary_prints_messages_with_brackets_verbatim(tmp_path):
    """Upstream and library errors quote paths in brackets (gloo: "[/.../pair.cc:561] Connection closed"); the
    run summary printed them through rich markup and crashed with MarkupError."""
    from rich.console import Console

    from evaluation.registry import DimensionOutcome
    from evaluation.run import print_summary

    console = Console(record=True, width=200)
    note = "upstream evaluator failed: RuntimeError: [/__w/gloo/pair.cc:561] Connection closed"
    print_summary(console, [DimensionOutcome("vbench", "m", "dynamic_degree", "error", None, note)], tmp_path)
    assert "[/__w/gloo/pair.cc:561] Connection closed" in console.export_text()
