"""Exports beside the report: official *_eval_results.json in the upstream layout (ok dimensions only, written from
the store; ingested back by the harness unchanged), a PDF for every figure, a LaTeX file for every paper table."""

import json

import pytest

import fixture_stores as fs


def _official(report, suite, model):
    return json.loads((report["out"] / "official" / suite / f"{model}_eval_results.json").read_text())


def test_official_files_follow_the_upstream_layout(report):
    full = _official(report, "vbench", fs.V1_COMPLETE_MODEL)
    assert list(full) == list(fs.V1_COMPLETE)
    for dim, (score, videos) in full.items():  # {dim: [aggregate, [{"video_path", "video_results"}, ...]]}
        assert score == pytest.approx(fs.V1_COMPLETE[dim])
        assert videos == [{"video_path": "a_cat-0.mp4", "video_results": pytest.approx(fs.V1_COMPLETE[dim] + 0.001)}]
    part = _official(report, "vbench", fs.V1_PARTIAL_MODEL)
    # only ok aggregates: the non-standard temporal_flickering, the missing and the aggregate-less ones stay out
    assert set(part) == set(fs.V1_PARTIAL_OK)
    assert _official(report, "vbench2", fs.V1_COMPLETE_MODEL) == {d: [v, []] for d, v in fs.V2_COMPLETE.items()}
    agg = pytest.importorskip("evaluation.aggregate")
    total = agg.vbench_total({d: v[0] for d, v in full.items()}).scores["total"]
    assert round(total, 4) == 0.8139  # what cal_final_score.py computes from [0] of each entry
    md = report["md_text"]
    assert "official/vbench/wan2.1-1.3b_eval_results.json" in md
    assert "temporal_flickering (non_standard)" in md  # the reason a dimension was left out


def test_official_vbench2_file_is_ingested_back_unchanged(report, tmp_path):
    run = pytest.importorskip("evaluation.run")
    store = pytest.importorskip("evaluation.store")
    f = report["out"] / "official" / "vbench2" / f"{fs.V1_COMPLETE_MODEL}_eval_results.json"
    rc = run.main(["--suite", "vbench2", "--vbench2-results", str(f), "--label", "wan", "--out",
                   str(tmp_path / "run"), "--quiet"])
    assert rc == 0
    df = store.load_records(tmp_path / "run")
    agg = df[df["video"].isna()].set_index("dimension")
    for d, v in fs.V2_COMPLETE.items():
        assert agg.loc[d, "score"] == pytest.approx(v)


def test_every_figure_has_a_pdf_and_the_paper_tables_have_latex(report):
    pngs = sorted(p.stem for p in (report["out"] / "figures").glob("*.png"))
    pdfs = sorted(p.stem for p in (report["out"] / "figures").glob("*.pdf"))
    assert pngs == pdfs and len(pngs) == 11
    for p in (report["out"] / "figures").glob("*.pdf"):
        data = p.read_bytes()
        assert data.startswith(b"%PDF-") and b"%%EOF" in data[-64:]
    tex = {p.stem for p in (report["out"] / "latex").glob("*.tex")}
    assert {"headline_quality", "headline_fidelity", "headline_efficiency", "headline_human", "vbench_dimensions",
            "vbench2_dimensions", "vbench_aggregates", "vbench2_aggregates", "fidelity_summary", "tables"} <= tex
    doc = (report["out"] / "latex" / "tables.tex").read_text()
    assert all(f"\\input{{{t}.tex}}" in doc for t in tex - {"tables"})
    assert all(f"{n}.pdf" in doc for n in pdfs)


def test_latex_escapes_store_text():
    from reports.latex import escape, table_tex
    import pandas as pd

    assert escape("a_b & 50% #1 {x} ~ ^ \\ <b>") == (r"a\_b \& 50\% \#1 \{x\} \textasciitilde{} \textasciicircum{} "
                                                     r"\textbackslash{} $<$b$>$")
    assert escape("0.9875 † ‡ — ≥ 1.5 × é") == r"0.9875 $^\dagger$ $^\ddagger$ --- $\geq$ 1.5 $\times$ e"
    tex = table_tex(pd.DataFrame({"model": ["m_1"], "score": ["0.5000 †"]}), "Cap & more", "t1", ["† note"])
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 1
    assert r"\begin{tabular}{lr}" in tex and r"m\_1 & 0.5000 $^\dagger$ \\" in tex and r"\caption{Cap \& more}" in tex
