"""``python -m human_study``: create, validate, export, stats (the report tables), counts."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from hs_helpers import MODEL_NAMES, make_webm

from human_study.blinding import find_leaks
from human_study.cli import main
from human_study.config import load_study
from human_study.store import VoteStore

# docs/interfaces.md, "Human-study outputs"
REQUIRED = {
    "win_tie_loss.csv": ["criterion", "model_a", "model_b", "n", "wins_a", "ties", "wins_b", "p_a", "p_tie", "p_b",
                         "ci_low_a", "ci_high_a", "ci_low_tie", "ci_high_tie", "ci_low_b", "ci_high_b", "ci_method",
                         "sign_test_p", "sign_test_p_holm", "net_pref", "net_pref_boot_low", "net_pref_boot_high"],
    "bradley_terry.csv": ["criterion", "model", "rating", "ci_low", "ci_high", "scale"],
    "agreement.csv": ["criterion", "statistic", "value", "n_items", "n_raters"],
    "position_bias.csv": ["criterion", "n", "left_chosen", "right_chosen", "p_value"],
    "raters.csv": ["rater", "n_votes", "gold_total", "gold_passed", "excluded", "reason"],
}


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    for m, model in enumerate(MODEL_NAMES):
        for i in range(6):
            make_webm(tmp_path / "videos" / model / f"prompt{i}.webm", shade=30 * m + 7 * i)
    (tmp_path / "prompts.csv").write_text("id,text\n" + "".join(f"prompt{i},A scene {i}\n" for i in range(6)))
    return tmp_path


def _create(folders: Path, quota: int = 6, repeats: int = 1) -> Path:
    out = folders / "study.yaml"
    args = ["create", "--name", "cli-study", "--out", str(out), "--prompts", str(folders / "prompts.csv"),
            "--criteria", "motion_quality,overall", "--quota", str(quota), "--repeats", str(repeats)]
    for m in MODEL_NAMES:
        args += ["--model", f"{m}={folders / 'videos' / m}"]
    assert main(args) == 0
    return out


def _simulate(study_path: Path, n_raters: int = 6, seed: int = 0) -> VoteStore:
    """Raters who prefer ModelSecretGamma > Beta > Alpha with some noise."""
    study = load_study(study_path)
    store = VoteStore.open(study)
    rng = np.random.default_rng(seed)
    strength = {MODEL_NAMES[0]: 0.0, MODEL_NAMES[1]: 0.7, MODEL_NAMES[2]: 1.4}
    for r in range(n_raters):
        rater = f"rater{r}"
        store.register_rater(rater)
        for entry in store.plan(rater):
            item = store.item(entry.item_id)
            diff = strength[item.model_a] - strength[item.model_b]
            answers = {}
            for crit in study.criterion_ids:
                u = rng.random()
                p_a = 1 / (1 + np.exp(-diff)) * 0.7
                canon = "A" if u < p_a else ("B" if u < 0.7 else "tie")
                left = "A" if entry.left_is_a else "B"
                answers[crit] = "tie" if canon == "tie" else ("left" if canon == left else "right")
            store.record_votes(rater, entry.item_id, answers, dwell_ms=int(rng.integers(3000, 9000)))
    return store


def test_create_writes_a_loadable_study(folders: Path):
    study = load_study(_create(folders))
    assert study.model_names == list(MODEL_NAMES)
    assert [p.text for p in study.prompts][:2] == ["A scene 0", "A scene 1"]
    assert study.criterion_ids == ["motion_quality", "overall"]
    assert study.storage_url.endswith(str(folders / "cli-study.votes.sqlite"))
    assert main(["validate", "--study", str(folders / "study.yaml")]) == 0


def test_validate_finds_a_model_name_inside_a_video(folders: Path, capsys):
    path = _create(folders)
    leaky = folders / "videos" / MODEL_NAMES[0] / "prompt0.webm"
    with av.open(str(leaky), "w", format="webm") as c:
        c.metadata["title"] = f"sample from {MODEL_NAMES[0]}"
        s = c.add_stream("libvpx", rate=8)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        for packet in s.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")):
            c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    assert main(["validate", "--study", str(path)]) == 1
    assert "contains the model name 'ModelSecretAlpha'" in capsys.readouterr().out


def test_validate_finds_a_model_name_in_rater_facing_text(folders: Path, capsys):
    path = _create(folders)
    path.write_text(path.read_text() + f"title: {MODEL_NAMES[1]} versus the rest\n")
    assert main(["validate", "--study", str(path)]) == 1
    assert "title names the model 'ModelSecretBeta'" in capsys.readouterr().out


def test_export_and_stats_write_the_report_tables(folders: Path, tmp_path: Path):
    path = _create(folders)
    store = _simulate(path)
    out = tmp_path / "stats"
    assert main(["stats", "--study", str(path), "--out", str(out), "--n-boot", "300", "--bt-boot", "60"]) == 0
    for name, columns in REQUIRED.items():
        df = pd.read_csv(out / name)
        assert set(columns) <= set(df.columns), name
    summary = json.loads((out / "summary.json").read_text())
    assert {"study", "n_votes", "n_raters", "n_excluded", "models", "criteria", "generated_at"} <= set(summary)
    assert summary["n_raters"] == 6 and summary["n_votes"] == len(store.votes_frame())

    wtl = pd.read_csv(out / "win_tie_loss.csv")
    assert len(wtl) == 2 * 3  # criteria x pairs
    assert (wtl["n"] == wtl["wins_a"] + wtl["ties"] + wtl["wins_b"]).all()
    assert (wtl["sign_test_p_holm"] >= wtl["sign_test_p"] - 1e-12).all()
    assert ((wtl["net_pref_boot_low"] <= wtl["net_pref"]) & (wtl["net_pref"] <= wtl["net_pref_boot_high"])).all()
    bt = pd.read_csv(out / "bradley_terry.csv")
    overall = bt[bt["criterion"] == "overall"].set_index("model")["rating"]
    assert overall[MODEL_NAMES[2]] > overall[MODEL_NAMES[0]]  # the simulated preference is recovered

    # stats from an exported CSV equal stats from the database
    csv_path = tmp_path / "votes.csv"
    assert main(["export", "--study", str(path), "--out", str(csv_path)]) == 0
    exported = pd.read_csv(csv_path)
    assert len(exported) == summary["n_votes"] and not exported.duplicated(["rater", "item", "criterion"]).any()
    out2 = tmp_path / "stats2"
    assert main(["stats", "--study", str(path), "--out", str(out2), "--votes", str(csv_path), "--n-boot", "300",
                 "--bt-boot", "60"]) == 0
    for name in REQUIRED:
        pd.testing.assert_frame_equal(pd.read_csv(out / name), pd.read_csv(out2 / name))


def test_counts_command_and_module_entry_point(capsys):
    assert main(["counts", "--wins", "138", "--ties", "217", "--losses", "145"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["n"] == 500 and row["sign_test_p"] == pytest.approx(0.7214, abs=1e-4)
    done = subprocess.run([sys.executable, "-m", "human_study", "--help"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert done.returncode == 0 and all(c in done.stdout for c in ("create", "stats", "export", "serve"))


def test_serve_starts_the_app(folders: Path):
    path = _create(folders)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "human_study", "serve", "--study", str(path), "--port", str(port)],
                            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    assert r.read() == b"ok"
                    break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "serve did not start"
                time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?rater=x", timeout=10) as r:
            assert not find_leaks(r.read(), MODEL_NAMES)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
