"""Kill-and-resume: a run SIGKILLed mid-way continues where it stopped; nothing lost, nothing duplicated."""
import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from evaluation.store import RECORDS_FILE, load_records, record_key

ROOT = Path(__file__).resolve().parents[2]
SPEC = "tests.evaluation.eval_stand_in:"


def _cmd(out):
    return [sys.executable, "-m", "evaluation.run", "--suite", "fidelity", "--model", SPEC + "make_tiny_candidate",
            "--reference", SPEC + "make_tiny", "--num-prompts", "6", "--seeds-per-prompt", "2", "--out", str(out),
            "--run-id", "resume-test", "--quiet"]


def _env(**extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    return env


def _comparable(df):
    df = df.sort_values(["model", "video", "dimension"]).reset_index(drop=True)
    return [(r.run_id, r.suite, r.model, r.video, r.dimension, r.status, r.score,
             json.dumps(r.details, sort_keys=True)) for r in df.itertuples()]


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    full = tmp_path / "full"
    subprocess.run(_cmd(full), cwd=ROOT, env=_env(), check=True, capture_output=True, timeout=240)

    part = tmp_path / "part"
    proc = subprocess.Popen(_cmd(part), cwd=ROOT, env=_env(EVAL_STAND_IN_SLEEP="0.15"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rec = part / RECORDS_FILE
    deadline = time.time() + 180
    while time.time() < deadline:
        if rec.exists() and rec.read_bytes().count(b"\n") >= 7:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    n_before = rec.read_bytes().count(b"\n")
    assert 7 <= n_before < 36
    with open(rec, "ab") as fh:  # simulate a kill in the middle of a write as well
        fh.write(b'{"run_id": "resume-test", "suite": "fidelity", "model": "tiny-cand", "vid')

    subprocess.run(_cmd(part), cwd=ROOT, env=_env(), check=True, capture_output=True, timeout=240)

    a, b = load_records(full), load_records(part)
    assert len(a) == len(b) == 36
    assert _comparable(a) == _comparable(b)
    # nothing recomputed or duplicated: every key holds exactly one record in the raw file
    raw = [json.loads(line) for line in rec.read_bytes().split(b"\n") if line.strip().endswith(b"}")]
    counts = collections.Counter(record_key(r) for r in raw)
    assert set(counts.values()) == {1} and len(counts) == 36
    run = json.loads((part / "run.json").read_text())
    assert len(run["resumes"]) == 1
