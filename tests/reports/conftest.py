import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).parent))

import fixture_stores as fs  # noqa: E402


@pytest.fixture(scope="session")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return {"complete": fs.complete_run(root), "partial": fs.partial_run(root), "eff": fs.efficiency_run(root),
            "study": fs.study_stats(root), "root": root}


@pytest.fixture(scope="session")
def report(stores, tmp_path_factory):
    """The full report, built once from every fixture store."""
    from reports.build import build_report

    out = tmp_path_factory.mktemp("report")
    res = build_report([stores["complete"], stores["partial"], stores["eff"]], out, [stores["study"]],
                       title="Fixture report")
    res["out"] = out
    res["md_text"] = (out / "report.md").read_text(encoding="utf-8")
    res["html_text"] = (out / "report.html").read_text(encoding="utf-8")
    return res


ROOT = Path(__file__).resolve().parents[2]


def readme_main_command():
    """The README's main command, split at '&&' into its evaluation and report steps (the venv/install steps are
    what this test environment already is)."""
    import re

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- main-command -->", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    steps = [s.strip() for s in block.replace("\\\n", " ").split("&&")]
    return [s for s in steps if re.match(r"python -m (evaluation\.run|reports\.build)\b", s)]


@pytest.fixture(scope="session")
def main_report(tmp_path_factory):
    """The report of the README's main command, run as a user would (its CLI steps, in order, in a fresh folder)."""
    import shlex
    import subprocess

    work = tmp_path_factory.mktemp("readme-main")
    steps = readme_main_command()
    assert [s.split()[2] for s in steps] == ["evaluation.run", "evaluation.run", "reports.build"], steps
    for step in steps:
        argv = shlex.split(step)
        proc = subprocess.run([sys.executable, *argv[1:]], cwd=work, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "MPLBACKEND": "Agg"})
        assert proc.returncode == 0, (step, proc.stdout[-3000:], proc.stderr[-3000:])
    out = work / shlex.split(steps[-1])[shlex.split(steps[-1]).index("--out") + 1]
    return {"out": out, "md_text": (out / "report.md").read_text(encoding="utf-8"),
            "html_text": (out / "report.html").read_text(encoding="utf-8")}
