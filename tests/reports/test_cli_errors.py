"""`python -m reports.build` on inputs that are not what they should be: one message, exit status 2, nothing
written."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _build(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "reports.build", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("case", ["typo", "not_a_run", "file"])
def test_bad_run_directory_exits_2_and_writes_nothing(tmp_path, stores, case):
    target = {"typo": tmp_path / "runs" / "defualt", "not_a_run": stores["root"], "file": tmp_path / "x.txt"}[case]
    if case == "file":
        target.write_text("x")
    proc = _build("--runs", str(target), "--out", str(tmp_path / "report"))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "usage:" not in proc.stderr
    assert f"--runs {target}:" in proc.stderr and "nothing was written" in proc.stderr
    assert not (tmp_path / "report").exists()
    if case == "not_a_run":  # the run directories inside it are suggested
        assert str(stores["complete"]) in proc.stderr


def test_bad_study_stats_and_missing_inputs_exit_2(tmp_path, stores):
    proc = _build("--runs", str(stores["complete"]), "--study-stats", str(tmp_path / "nope"), "--out",
                  str(tmp_path / "r"))
    assert proc.returncode == 2 and "--study-stats" in proc.stderr and "human_study stats" in proc.stderr
    assert not (tmp_path / "r").exists()
    proc = _build("--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "give at least one --runs" in proc.stderr and "usage:" not in proc.stderr
    (tmp_path / "f").write_text("x")
    proc = _build("--runs", str(stores["complete"]), "--out", str(tmp_path / "f"))
    assert proc.returncode == 2 and "is not a directory" in proc.stderr


def test_failing_section_prints_one_line_and_debug_shows_the_traceback(stores, tmp_path, monkeypatch, capsys):
    from reports import registry
    from reports.build import main

    def boom(ctx):
        raise RuntimeError("kaputt")

    registry.load_sections()
    monkeypatch.setitem(registry._REGISTRY, "boom", registry.SectionSpec("boom", "Boom", 99, boom))
    assert main(["--runs", str(stores["complete"]), "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert "section 'boom' failed: RuntimeError: kaputt" in err and "Traceback" not in err
    assert main(["--runs", str(stores["complete"]), "--out", str(tmp_path / "b"), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err
