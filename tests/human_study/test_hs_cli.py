"""``python -m human_study``: create, validate, export, stats (the report tables), counts."""

from __future__ import annotations

import contextlib
import io
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
from hs_helpers import MODEL_NAMES, make_tagged_video, make_webm

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
    make_tagged_video(folders / "videos" / MODEL_NAMES[0] / "prompt0.webm",
                      container_tags={"title": f"sample from {MODEL_NAMES[0]}"})
    assert main(["validate", "--study", str(path)]) == 1
    assert "contains the model name 'ModelSecretAlpha'" in capsys.readouterr().out


def test_validate_finds_a_model_name_in_rater_facing_text(folders: Path, capsys):
    path = _create(folders)
    path.write_text(path.read_text() + f"title: {MODEL_NAMES[1]} versus the rest\n")
    assert main(["validate", "--study", str(path)]) == 1
    assert "title names the model 'ModelSecretBeta'" in capsys.readouterr().out


def test_export_and_stats_write_the_report_tables(folders: Path, tmp_path: Path, db_url: str, monkeypatch):
    monkeypatch.setenv("HUMAN_STUDY_DB_URL", db_url)  # SQLite and the local PostgreSQL server
    path = _create(folders)
    assert load_study(path).storage_url == db_url
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


@contextlib.contextmanager
def _serving(path: Path, *extra: str):
    """``python -m human_study serve`` on a free loopback port until its health check answers; yields the port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "human_study", "serve", "--study", str(path), "--port", str(port),
                             *extra], cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL,
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
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_starts_the_app(folders: Path):
    path = _create(folders)
    with _serving(path) as port:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?rater=x", timeout=10) as r:
            assert not find_leaks(r.read(), MODEL_NAMES)


# ------------------------------------------------------------------------------------------ errors and exit codes

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "human_study", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


@pytest.fixture
def bad_inputs(folders: Path) -> dict[str, Path]:
    good = _create(folders)
    (folders / "broken.yaml").write_text("name: x\nmodels: [{name: a, folder: videos}\n")
    (folders / "incomplete.yaml").write_text("name: x\n")
    (folders / "wrong.csv").write_text("a,b\n1,2\n")
    return {"good": good, "broken": folders / "broken.yaml", "incomplete": folders / "incomplete.yaml",
            "wrong_csv": folders / "wrong.csv", "missing": folders / "nope" / "study.yaml", "dir": folders}


@pytest.mark.parametrize("args, message", [
    (["validate", "--study", "{missing}"], "study file not found"),
    (["validate", "--study", "{broken}"], "not valid YAML at line 3"),
    (["validate", "--study", "{incomplete}"], "needs 'models'"),
    (["validate", "--study", "{dir}"], "unknown study file type"),
    (["serve", "--study", "{missing}"], "study file not found"),
    (["export", "--study", "{broken}"], "not valid YAML"),
    (["links", "--study", "{missing}", "--count", "2"], "study file not found"),
    (["links", "--study", "{good}"], "give --count K or --ids"),
    (["links", "--study", "{good}", "--count", "0"], "--count must be >= 1"),
    (["links", "--study", "{good}", "--ids", "ok,not ok"], "rater ids must match"),
    (["stats", "--study", "{good}", "--out", "{dir}/s", "--votes", "{dir}/none.csv"], "--votes: file not found"),
    (["stats", "--study", "{good}", "--out", "{dir}/s", "--votes", "{wrong_csv}"], "not an export"),
    (["export", "--study", "{good}", "--db", "postgresql+psycopg://u@127.0.0.1:1/x"], "cannot open the vote database"),
    (["export", "--study", "{good}", "--db", "no url"], "not a database URL"),
    (["create", "--name", "n", "--model", "a={dir}/none", "--model", "b={dir}", "--out", "{dir}/s.yaml"],
     "folder not found"),
    (["create", "--name", "n", "--model", "a", "--out", "{dir}/s.yaml"], "expects NAME=FOLDER"),
    (["create", "--name", "n", "--model", "a={dir}", "--out", "{dir}/no/s.yaml"], "--out: folder not found"),
])
def test_cli_errors_are_one_clear_line_and_exit_code_2(bad_inputs, capsys, args: list[str], message: str):
    argv = [a.format(**bad_inputs) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_cli_exit_codes_and_debug_traceback_in_a_real_process(bad_inputs):
    missing = str(bad_inputs["missing"])
    done = _cli("validate", "--study", missing)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: study file not found: {missing}"
    for argv in (["--debug", "validate", "--study", missing], ["validate", "--study", missing, "--debug"]):
        debug = _cli(*argv)
        assert debug.returncode != 0 and "Traceback" in debug.stderr and "StudyError" in debug.stderr


# ---------------------------------------------------------------------------------------------------- links


def test_links_and_create_write_signed_links(folders: Path, capsys):
    from human_study.links import link_signature

    path = _create(folders)
    capsys.readouterr()
    assert main(["links", "--study", str(path), "--count", "3", "--base-url", "http://study.example:8501/"]) == 0
    links = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(links["rater"]) == ["r001", "r002", "r003"]
    study = load_study(path)
    secret = VoteStore.open(study).link_secret
    for rater, url in zip(links["rater"], links["url"]):
        assert url == f"http://study.example:8501/?rater={rater}&sig={link_signature(secret, study.name, rater)}"
    out = folders / "more.csv"
    assert main(["links", "--study", str(path), "--ids", "alice,bob", "--out", str(out)]) == 0
    assert list(pd.read_csv(out)["rater"]) == ["alice", "bob"]
    # create --raters writes the links beside the study file; the same database secret signs them
    args = ["create", "--name", "cli-study", "--out", str(folders / "again.yaml"), "--raters", "2"]
    for m in MODEL_NAMES:
        args += ["--model", f"{m}={folders / 'videos' / m}"]
    assert main(args) == 0
    made = pd.read_csv(folders / "again.links.csv")
    assert len(made) == 2 and made["url"].str.contains("&sig=").all()


def test_links_for_open_enrolment_print_the_platform_link(folders: Path, capsys):
    path = _create(folders)
    path.write_text(path.read_text().replace("enrolment: signed", "enrolment: open"))
    assert main(["links", "--study", str(path), "--base-url", "https://s.example"]) == 0
    err = capsys.readouterr().err
    assert ("https://s.example/?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}"
            "&SESSION_ID={{%SESSION_ID%}}") in err


# --------------------------------------------------------------------------------------- validate metadata


def test_validate_reads_metadata_not_compressed_bytes(folders: Path, capsys):
    path = _create(folders)
    alpha, beta = (folders / "videos" / m for m in MODEL_NAMES[:2])
    make_tagged_video(alpha / "prompt1.webm", stream_tags={"title": f"{MODEL_NAMES[0]} sample"})
    make_tagged_video(alpha / "prompt2.webm", container_tags={"comment": f"made with {MODEL_NAMES[0].lower()}"})
    make_tagged_video(beta / "prompt3.webm", stream_tags={"encoder": f"{MODEL_NAMES[1]}-writer 1.0"})
    assert main(["validate", "--study", str(path)]) == 1
    out = capsys.readouterr().out
    assert "metadata tag 'stream 0 title'" in out and "metadata tag 'container comment'" in out
    assert f"contains the model name '{MODEL_NAMES[1]}' in its metadata tag 'stream 0 encoder'" in out
    assert "3 problem(s)" in out


def test_validate_has_no_false_alarm_on_names_inside_the_video_data(tmp_path: Path, capsys):
    """An mp4 without metadata whose bytes happen to spell a model name ("Wan") is not a leak."""
    for model in ("Wan", "other"):
        for i in range(2):
            video = make_tagged_video(tmp_path / model / f"p{i}.mp4", fmt="mp4", codec="mpeg4")
            with video.open("ab") as fh:  # a top-level 'free' box: bytes in the file, not metadata
                payload = b"..Wan..wan..WAN.."
                fh.write((8 + len(payload)).to_bytes(4, "big") + b"free" + payload)
            assert b"Wan" in video.read_bytes()
            with av.open(str(video)) as c:
                assert c.streams.video[0].frames == 3  # still a valid video
    study = tmp_path / "study.yaml"
    args = ["create", "--name", "plain", "--out", str(study), "--model", f"Wan={tmp_path / 'Wan'}",
            "--model", f"other={tmp_path / 'other'}"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["validate", "--study", str(study)]) == 0
    out = capsys.readouterr().out
    assert "0 problem(s)" in out and "4 videos checked" in out


def test_validate_flags_unreadable_videos_and_warns_about_file_names(folders: Path, capsys):
    path = _create(folders)
    (folders / "videos" / MODEL_NAMES[0] / "prompt4.webm").write_bytes(b"not a video at all")
    assert main(["validate", "--study", str(path)]) == 1
    assert "prompt4.webm is not a readable video" in capsys.readouterr().out
    named = folders / "named"
    for model in ("alpha", "beta"):
        make_webm(named / model / f"{model}_p0.webm", shade=10)
    (named / "m.json").write_text(json.dumps({"p0": "alpha/alpha_p0.webm"}))
    study = named / "s.yaml"
    study.write_text("name: n\nquota: 1\nprompts: [{id: p0, text: a scene}]\nmodels:\n"
                     "  - {name: alpha, manifest: m.json}\n  - {name: beta, videos: {p0: beta/beta_p0.webm}}\n")
    assert main(["validate", "--study", str(study)]) == 0  # file names never reach the browser: a warning
    out = capsys.readouterr().out
    assert out.count("warning:") == 2 and "the file name names the model 'alpha'" in out


def test_serve_refuses_a_leaking_study_unless_forced(folders: Path):
    path = _create(folders)
    make_tagged_video(folders / "videos" / MODEL_NAMES[0] / "prompt0.webm",
                     container_tags={"title": f"{MODEL_NAMES[0]} output"})
    done = _cli("serve", "--study", str(path), "--port", "9")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "metadata tag 'container title'" in done.stdout and "not serving a study with problems" in done.stderr
    with _serving(path, "--force"):  # told to go on, it serves
        pass


def test_serve_turns_streamlit_error_details_off(tmp_path: Path):
    from human_study.cli import serve_command

    cmd = serve_command(tmp_path / "s.yaml", 8501, "127.0.0.1")
    assert cmd[cmd.index("--client.showErrorDetails") + 1] == "none"
    debug = serve_command(tmp_path / "s.yaml", 8501, "127.0.0.1", debug=True)
    assert debug[debug.index("--client.showErrorDetails") + 1] == "full"
