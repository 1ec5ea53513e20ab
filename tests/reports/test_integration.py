"""Wiring to the real stores: stores written by ``evaluation.store`` and tables written by ``human_study.stats``
are read by the report exactly as the hand-written fixtures are."""

import json

import pandas as pd
import pytest
from report_helpers import md_rows_as_dicts

import fixture_stores as fs
from reports.build import build_report
from reports.load import load_run


def test_fixture_records_satisfy_the_store_writer(stores):
    store = pytest.importorskip("evaluation.store")
    for key in ("complete", "partial", "eff"):
        for line in (stores[key] / "records.jsonl").read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # the deliberately truncated line
            fields = {k: rec[k] for k in ("run_id", "suite", "model", "video", "dimension", "score", "status",
                                          "message", "details", "provenance")}
            store.make_record(**fields)  # raises on anything the writer would refuse


def test_loader_agrees_with_evaluation_store(stores):
    store = pytest.importorskip("evaluation.store")
    for key in ("complete", "partial", "eff"):  # eff: points differ only in details (sweep coordinates)
        theirs = store.load_records(stores[key])
        _, ours = load_run(stores[key])
        cols = ["suite", "model", "video", "dimension", "status"]

        def norm(df):
            return sorted((tuple("" if pd.isna(v) else str(v) for v in row[cols])
                           + (json.dumps(row["details"], sort_keys=True),), row["score"]) for _, row in df.iterrows())

        a, b = norm(ours), norm(theirs)
        assert [k for k, _ in a] == [k for k, _ in b]
        assert all(x == y or (pd.isna(x) and pd.isna(y)) for (_, x), (_, y) in zip(a, b))


def test_report_from_a_run_written_by_evaluation_store(tmp_path):
    store = pytest.importorskip("evaluation.store")
    agg = pytest.importorskip("evaluation.aggregate")
    s = store.ResultsStore(tmp_path / "run-real", run_id="run-real")
    s.write_run_info({"run_id": "run-real", "start_time": store.utc_now(), "command": "test",
                      "machine": store.machine_info()})
    for d, v in fs.V1_COMPLETE.items():
        s.add(suite="vbench", model="m-real", video=None, dimension=d, score=v, status="ok", provenance={"seed": 3})
    s.add(suite="fidelity", model="m-real", video="x.mp4", dimension="psnr", score=float("inf"), status="ok",
          details={"reference": "teacher", "per_frame": [float("inf")] * 3})
    res = build_report([tmp_path / "run-real"], tmp_path / "out", only=["vbench", "fidelity", "provenance"])
    assert res["failed"] == []
    md = (tmp_path / "out" / "report.md").read_text()
    (row,) = md_rows_as_dicts(md, "Official aggregates (Quality")
    expected = agg.vbench_total(dict(fs.V1_COMPLETE)).scores["total"]
    assert row["Total"] == f"{expected:.4f}"
    (fid,) = md_rows_as_dicts(md, "Teacher fidelity per model")
    assert fid["psnr mean (dB)"] == "inf (1 identical: inf)"


def _votes():
    rows = []
    raters = ["r1", "r2", "r3"]
    pattern = ["A", "tie", "B", "A", "A", "tie", "B", "A"]
    for ri, r in enumerate(raters):
        for p, choice in enumerate(pattern):
            rows.append(dict(vote_uuid=f"{r}-{p}", rater=r, item=f"i{p}", kind="core", prompt=f"p{p}",
                             model_a="rehyat", model_b="wan", criterion="overall",
                             choice=pattern[(p + ri) % len(pattern)], shown_left="A" if p % 2 else "B",
                             chosen_side=None, dwell_ms=4000 + p, created_at="2026-11-21T09:00:00Z",
                             gold_answer=None, gold_criteria=None, duplicate_of=None, position=p, app_version="t"))
        rows.append(dict(vote_uuid=f"{r}-g", rater=r, item="g0", kind="gold", prompt="gold", model_a="gold-a",
                         model_b="gold-b", criterion="overall", choice="B" if r == "r3" else "A", shown_left="A",
                         chosen_side=None, dwell_ms=3000, created_at="2026-11-21T09:00:00Z", gold_answer="a",
                         gold_criteria=None, duplicate_of=None, position=99, app_version="t"))
    return pd.DataFrame(rows)


def test_report_from_real_human_study_tables(tmp_path):
    tables = pytest.importorskip("human_study.stats.tables")
    cfg = tables.AnalysisConfig(study="integration", models=["rehyat", "wan"], criteria=["overall"], n_boot=50,
                                bt_boot=20)
    out = tables.analyse(_votes(), cfg).write(tmp_path / "stats")
    res = build_report([], tmp_path / "report", [out], only=["human_study"])
    assert res["failed"] == []
    md = (tmp_path / "report" / "report.md").read_text()
    assert "is missing" not in md and "lacks required" not in md
    wtl = pd.read_csv(out / "win_tie_loss.csv")
    (row,) = md_rows_as_dicts(md, "Win / tie / loss")
    assert row["n"] == str(int(wtl.loc[0, "n"])) and row["A wins"].startswith(f"{int(wtl.loc[0, 'wins_a'])} (")
    excl = md_rows_as_dicts(md, "Excluded raters")
    assert [r["rater"] for r in excl] == ["r3"] and "gold accuracy" in excl[0]["reason"]
    assert len([f for f in res["figures"] if "study1" in f.name]) == 3
