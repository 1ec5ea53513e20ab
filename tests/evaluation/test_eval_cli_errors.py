"""Errors a user can act on (``python -m evaluation.run``): one message naming what to do, a documented exit status
(2 bad arguments or a missing input path, 3 nothing scored), no traceback unless --debug, and a run that fails on its
arguments leaves nothing behind."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from evaluation.run import EXIT_NOTHING_SCORED, EXIT_USAGE, main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "usage:" not in err and "Traceback" not in err  # one message, not 32 lines of usage
    return err


def test_vbench2_without_input_names_the_three_ways_and_the_missing_checkpoints(tmp_path, capsys, cache_roots):
    out = tmp_path / "v2"
    err = _usage_error(capsys, ["--suite", "vbench2", "--out", str(out), "--quiet"])
    for flag in ("--videos DIR", "--model SPEC", "--vbench2-results FILE"):
        assert flag in err
    assert "Checkpoint preflight of its 18 dimension(s)" in err
    assert "Human_Anatomy" in err and "$VBENCH2_CACHE_DIR/anomaly_detector/human.pth" in err
    assert f"$VBENCH2_CACHE_DIR = {cache_roots['VBENCH2_CACHE_DIR']}" in err  # where the files go
    assert "[GPU ~38 GB]" in err and "--list" in err
    assert "nothing was written" in err and not out.exists()


def test_vbench_without_input_and_only_the_requested_dimensions(tmp_path, capsys, cache_roots):
    f = cache_roots["VBENCH_CACHE_DIR"] / "amt_model/amt-s.pth"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"x")
    err = _usage_error(capsys, ["--suite", "vbench", "--dimensions", "motion_smoothness", "imaging_quality",
                                "--out", str(tmp_path / "v1")])
    assert "--videos DIR" in err and "--model SPEC" in err and "--vbench2-results" not in err
    assert "of its 2 dimension(s)" in err and "musiq_spaq_ckpt-358bb6af.pth" in err
    assert "ready here: motion_smoothness" in err
    assert not (tmp_path / "v1").exists()


@pytest.mark.parametrize("argv, text", [
    (["--suite", "vbench", "--videos", "{tmp}/no-such-dir"], "--videos {tmp}/no-such-dir: no such directory"),
    (["--suite", "vbench2", "--vbench2-results", "{tmp}/nope_eval_results.json"], "--vbench2-results"),
    (["--suite", "nope"], "unknown suite 'nope'"),
    (["--suite", "vbench", "--videos", "{tmp}", "--dimensions", "nope"], "unknown dimension(s) ['nope']"),
    (["--suite", "fidelity", "--model", "x:y"], "--suite fidelity needs --model CANDIDATE and --reference"),
])
def test_bad_arguments_exit_2_with_one_message_and_leave_nothing(tmp_path, capsys, argv, text):
    out = tmp_path / "run"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--out", str(out), "--quiet"]
    err = _usage_error(capsys, argv)
    assert text.replace("{tmp}", str(tmp_path)) in err
    assert not out.exists(), list(out.rglob("*"))


def test_failed_resume_keeps_the_run_directory_as_it_was(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"run_id": "run", "start_time": "earlier"}))
    (out / "records.jsonl").write_text("")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _usage_error(capsys, ["--suite", "fidelity", "--model", "x:y", "--out", str(out), "--quiet"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "evaluation.run", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})


def test_missing_model_folder_is_one_message_and_debug_shows_the_traceback(tmp_path):
    out = tmp_path / "run"
    proc = _cli("--suite", "vbench", "--model", str(tmp_path / "no-model"), "--dimensions", "temporal_flickering",
                "--out", str(out), "--quiet", cwd=tmp_path)
    assert proc.returncode == EXIT_USAGE, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and str(tmp_path / "no-model") in proc.stderr
    assert "hf download" in proc.stderr and "huggingface-cli" not in proc.stderr  # the installed hub CLI is `hf`
    assert "nothing was written" in proc.stderr and not out.exists()
    proc = _cli("--suite", "vbench", "--model", str(tmp_path / "no-model"), "--out", str(out), "--quiet", "--debug",
                cwd=tmp_path)
    assert proc.returncode == EXIT_USAGE and "Traceback (most recent call last)" in proc.stderr


def test_a_run_that_scores_nothing_exits_3(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    proc = _cli("--suite", "vbench2", "--videos", str(videos), "--mode", "custom", "--out", str(tmp_path / "run"),
                "--quiet", cwd=tmp_path)
    assert proc.returncode == EXIT_NOTHING_SCORED, (proc.stdout[-2000:], proc.stderr[-2000:])
    assert "no dimension got a score" in proc.stdout
    assert (tmp_path / "run" / "records.jsonl").is_file()  # the reasons are stored (the report shows them)
