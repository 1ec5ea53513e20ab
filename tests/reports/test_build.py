"""CLI, self-containment, escaping, 'no data' sections, aggregate fallback, loader behaviour, section registry."""

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from report_helpers import md_rows_as_dicts

import fixture_stores as fs
from reports.build import build_report, main
from reports.load import load_run

ROOT = Path(__file__).resolve().parents[2]


def test_cli_module_entry_point(stores, tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "reports.build", "--runs", str(stores["complete"]),
                           "--out", str(out), "--title", "CLI check"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    assert (out / "report.md").read_text().startswith("# CLI check")


def test_cli_requires_an_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path)])
    assert exc.value.code == 2


def test_html_is_self_contained(report):
    html = report["html_text"]
    imgs = re.findall(r"<img\b[^>]*>", html)
    assert len(imgs) == len(report["figures"]) == 11  # 9 + a radar each for VBench and VBench-2.0 (issue 17)
    for tag in imgs:
        assert re.search(r'\bsrc="data:image/png;base64,[A-Za-z0-9+/=]+"', tag)
    # no attribute that could make the browser fetch anything
    assert not re.search(r'\b(?:src|href|action|poster|srcset)\s*=\s*"(?!data:image/png;base64,|#)', html)
    for bad in ("<script", "<link", "<iframe", "@import", "url("):
        assert bad not in html.lower()


def test_markdown_references_written_pngs(report):
    refs = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", report["md_text"])
    assert len(refs) == len(report["figures"])
    for ref in refs:
        assert (report["out"] / ref).read_bytes()[:4] == b"\x89PNG"


def test_text_is_escaped(stores, tmp_path):
    run = fs.hostile_run(stores["root"] / "hostile")
    # the full per-dimension reasons live in the appendix since issue 17 (the VBench section keeps the scores)
    res = build_report([run], tmp_path, only=["vbench", "appendix", "provenance"])
    html = (tmp_path / "report.html").read_text()
    assert "<script" not in html and "<img src=\"http" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=&quot;http://example.com/x.png&quot;&gt; &amp; &quot;quotes&quot; | pipe" in html
    md = (tmp_path / "report.md").read_text()
    assert "<script" not in md and "<img" not in md
    rows = md_rows_as_dicts(md, "VBench: dimensions without an ok score")
    color = [r for r in rows if r["dimension"] == "color"][0]
    assert color["reason"].endswith("&amp; \"quotes\" | pipe") or color["reason"].endswith('& "quotes" | pipe')
    assert res["failed"] == []


def test_sections_without_data_say_why(stores, tmp_path):
    res = build_report([], tmp_path / "a", [stores["study"]])
    md = (tmp_path / "a" / "report.md").read_text()
    assert res["failed"] == []
    assert md.count("no run directory was given (--runs)") == 4  # vbench, vbench2, fidelity, efficiency
    assert "Study: rehyat-vs-wan-pilot" in md

    build_report([stores["complete"]], tmp_path / "b")
    md = (tmp_path / "b" / "report.md").read_text()
    assert "hold no records with suite = 'efficiency'" in md
    assert "hold no records with suite = 'fidelity'" in md
    assert "No human-study statistics given" in md
    assert "Every VBench dimension has an ok score for every model." in md


def test_missing_study_files_are_reported(stores, tmp_path):
    d = tmp_path / "partial_study"
    d.mkdir()
    (d / "raters.csv").write_text((stores["study"] / "raters.csv").read_text())
    (d / "win_tie_loss.csv").write_text("criterion,model_a\noverall,x\n")  # lacks required columns
    build_report([], tmp_path / "out", [d], only=["human_study"])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "bradley_terry.csv is missing" in md and "summary.json is missing" in md
    assert "win_tie_loss.csv lacks required column(s)" in md
    assert "No win/tie/loss table" in md
    assert "Excluded raters and why" in md


def test_aggregate_unavailable_shows_no_total(stores, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "evaluation.aggregate", None)  # import now raises ImportError
    build_report([stores["complete"], stores["partial"]], tmp_path, only=["vbench", "vbench2"])
    md = (tmp_path / "report.md").read_text()
    assert md.count("aggregate unavailable") == 2
    assert "Official aggregates" not in md and not (tmp_path / "tables" / "vbench_aggregates.csv").exists()
    assert "0.8139" not in md and "0.5430" not in md
    rows = {r["dimension"]: r for r in md_rows_as_dicts(md, "VBench: per-dimension scores")}
    assert rows["color"][fs.V1_COMPLETE_MODEL] == f"{fs.V1_COMPLETE['color']:.4f}"


def test_total_for_incomplete_model_is_never_shown(stores, tmp_path, monkeypatch):
    class Res:
        def __init__(self):
            self.scores = {"quality": 0.5, "semantic": 0.5, "total": 0.5}
            self.missing = {}

    fake = types.ModuleType("evaluation.aggregate")
    fake.vbench_total = lambda scores: Res()
    monkeypatch.setitem(sys.modules, "evaluation.aggregate", fake)
    build_report([stores["complete"], stores["partial"]], tmp_path, only=["vbench"])
    md = (tmp_path / "report.md").read_text()
    rows = {r["model"]: r for r in md_rows_as_dicts(md, "Official aggregates (Quality")}
    assert rows[fs.V1_COMPLETE_MODEL]["Total"] == "0.5000"
    part = rows[fs.V1_PARTIAL_MODEL]
    assert part["Total"] == part["Quality"] == part["Semantic"] == "incomplete"
    assert f"{fs.V1_PARTIAL_MODEL}: evaluation.aggregate returned a Total, but the store" in md
    assert "returned a Quality, but the store has no ok score for temporal_flickering, motion_smoothness;" in md


def test_failing_section_is_reported_and_exit_code_is_1(stores, tmp_path, monkeypatch):
    from reports import registry

    def boom(ctx):
        raise RuntimeError("kaputt")

    registry.load_sections()
    monkeypatch.setitem(registry._REGISTRY, "boom", registry.SectionSpec("boom", "Boom", 99, boom))
    rc = main(["--runs", str(stores["complete"]), "--out", str(tmp_path)])
    assert rc == 1
    md = (tmp_path / "report.md").read_text()
    assert "This section could not be built: RuntimeError: kaputt" in md
    assert "## VBench" in md  # the other sections are still there


def test_registry_discovers_every_section_module():
    from reports import registry

    keys = [s.key for s in registry.load_sections()]
    mods = sorted(p.stem for p in (ROOT / "reports" / "sections").glob("*.py") if not p.stem.startswith("_"))
    assert mods == ["appendix", "coverage", "efficiency", "exports", "fidelity", "headline", "human_study",
                    "provenance", "vbench"]
    assert keys == ["headline", "vbench", "vbench2", "coverage", "fidelity", "efficiency", "human_study", "exports",
                    "provenance", "appendix"]


def test_loader_last_record_wins_and_skips_truncated_line(stores):
    info, df = load_run(stores["partial"])
    assert any("not valid JSON" in p for p in info.problems)
    assert any("1 superseded" in p for p in info.problems)
    ms = df[(df["suite"] == "vbench") & (df["dimension"] == "motion_smoothness")]
    assert list(ms["status"]) == ["missing_weights"]
    psnr = df[(df["suite"] == "fidelity") & (df["dimension"] == "psnr") & (df["video"] == "static-0.mp4")]
    assert psnr["score"].iloc[0] == float("inf")
    # efficiency points share (model, video=null, dimension) and differ only in their sweep coordinates
    info, eff = load_run(stores["eff"])
    assert not info.problems
    n_expected = (sum(len(d) for d in fs.EFF_OP.values()) + 2 + len(fs.EFF_ANALYTIC_ONLY)
                  + sum(len(d) for d in fs.EFF_BLOCK.values()) + len(fs.EFF_MODEL))
    assert len(eff) == n_expected


def test_missing_run_directory_is_reported(tmp_path):
    res = build_report([tmp_path / "nope"], tmp_path / "out", only=["vbench", "provenance"])
    md = (tmp_path / "out" / "report.md").read_text()
    assert res["failed"] == []
    assert "run directory does not exist" in md


def test_human_study_with_empty_comparison_and_nan_intervals(stores, tmp_path):
    import shutil

    import pandas as pd

    d = tmp_path / "stats"
    shutil.copytree(stores["study"], d)
    w = pd.read_csv(d / "win_tie_loss.csv")
    empty = {c: float("nan") for c in w.columns}
    empty.update(criterion="motion", model_a="a", model_b="b", n=0, wins_a=0, ties=0, wins_b=0, ci_method="wilson")
    pd.concat([w, pd.DataFrame([empty])]).to_csv(d / "win_tie_loss.csv", index=False)
    bt = pd.read_csv(d / "bradley_terry.csv")
    bt.loc[1, ["ci_low", "ci_high"]] = float("nan")
    bt.to_csv(d / "bradley_terry.csv", index=False)
    res = build_report([], tmp_path / "out", [d], only=["human_study"])
    assert res["failed"] == []
    rows = md_rows_as_dicts((tmp_path / "out" / "report.md").read_text(), "Win / tie / loss")
    assert rows[-1]["n"] == "0" and rows[-1]["A wins"] == rows[-1]["B wins"] == "0"
    assert rows[-1]["net preference A [bootstrap CI]"] == "—"
    bt = md_rows_as_dicts((tmp_path / "out" / "report.md").read_text(), "Bradley–Terry ratings")
    assert bt[1]["95% CI"] == "—"


def test_efficiency_points_at_two_resolutions_get_a_figure_each(tmp_path):
    recs = []
    for (h, w) in ((240, 416), (480, 832)):
        for kind, lat in (("softmax", 10.0), ("hybrid_tc3_to1", 4.0)):
            for frames in (17, 33):
                details = fs._eff_details("op", frames, height=h, width=w,
                                          chunk_frames=None if kind == "softmax" else 3,
                                          backend="sdpa" if kind == "softmax" else "rehyat")
                recs.append(fs.rec("r", "efficiency", kind, None, "latency_ms", lat * frames * h / 240,
                                   details=details))
    fs.write_run(tmp_path / "r", "r", recs)
    res = build_report([tmp_path / "r"], tmp_path / "out", only=["efficiency"])
    assert sorted(p.name for p in res["figures"]) == ["efficiency_op_240x416.png", "efficiency_op_480x832.png"]
    rows = md_rows_as_dicts((tmp_path / "out" / "report.md").read_text(), "Efficiency at level 'op'")
    assert len(rows) == 8
    # chunk_frames / backend differ only between kinds: shown as columns, not used to split points
    assert [(r["kind"], r["height"], r["width"], r["frames"]) for r in rows[:4]] == [
        ("softmax", "240", "416", "17"), ("softmax", "240", "416", "33"),
        ("softmax", "480", "832", "17"), ("softmax", "480", "832", "33")]
    assert "chunk_frames" not in rows[0] and "backend" not in rows[0]
    kinds = md_rows_as_dicts((tmp_path / "out" / "report.md").read_text(), "Settings per kind at level 'op'")
    assert [(r["kind"], r["chunk_frames"], r["backend"]) for r in kinds] == [("softmax", "—", "sdpa"),
                                                                            ("hybrid_tc3_to1", "3", "rehyat")]
    assert rows[5]["latency_ms"] == f"{4.0 * 33:.3f}"
