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
