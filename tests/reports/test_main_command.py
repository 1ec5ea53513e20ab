"""The report of the README's main command (tiny random model + efficiency ci preset), as a reader meets it:
headline table and random-weights banner on the first screen (Chromium, 1366x768), every number from random weights
marked, no chart without data, CPU memory shown as a lower bound, LaTeX that Debian's pdflatex compiles with the PDF
figures included."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_helpers import md_rows_as_dicts, offline_page

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists() and not os.environ.get("CI"),
                                    reason="/usr/bin/chromium is not installed (outside CI only)")
needs_pdflatex = pytest.mark.skipif(not shutil.which("pdflatex") and not os.environ.get("CI"),
                                    reason="pdflatex is not installed (outside CI only; scripts/install.sh --test)")


@pytest.mark.browser
@needs_chromium
def test_first_screen_holds_banner_and_headline(main_report, tmp_path):
    from test_browser import _not_blank

    url = (main_report["out"] / "report.html").resolve().as_uri()
    with offline_page(url, {"width": 1366, "height": 768}, CHROMIUM) as (page, _, blocked):
        boxes = page.evaluate("""() => {
            const r = s => { const e = document.querySelector(s); if (!e) return null;
                             const b = e.getBoundingClientRect(); return [b.top, b.bottom, b.width]; };
            return {banner: r('#banner'), headline: r('#headline table'), h: window.innerHeight,
                    banner_text: document.querySelector('#banner').innerText,
                    headline_text: document.querySelector('#headline table').innerText,
                    broken: Array.from(document.images).filter(i => !i.naturalWidth).length};
        }""")
        shot = page.screenshot(full_page=False)
    (tmp_path / "first_screen.png").write_bytes(shot)
    assert not blocked, blocked
    assert boxes["broken"] == 0
    for key in ("banner", "headline"):
        top, bottom, width = boxes[key]
        assert 0 <= top < bottom <= boxes["h"] and width > 300, (key, boxes)
    assert "random weights" in boxes["banner_text"] and "not quality scores" in boxes["banner_text"]
    assert "rehyat-tiny" in boxes["headline_text"] and "‡" in boxes["headline_text"]
    _not_blank(shot)


def test_every_number_from_random_weights_is_marked(main_report):
    md = main_report["md_text"]
    assert len(re.findall("random", md, flags=re.I)) >= 3
    assert "Pipeline check with random weights" in md
    (fid,) = md_rows_as_dicts(md, "Fidelity to the reference per model")
    for col in ("PSNR (dB)", "SSIM", "latent rel. err"):
        assert re.fullmatch(r"\d+\.\d+ ‡", fid[col]), fid
    rows = md_rows_as_dicts(md, "VBench: per-dimension scores")
    assert rows == [{"dimension": "temporal_flickering", "group": "Quality",
                     "rehyat-tiny": rows[0]["rehyat-tiny"]}]  # only the scored dimension, not 16 rows of '—'
    assert re.fullmatch(r"\d\.\d{4} † ‡", rows[0]["rehyat-tiny"])
    (full,) = md_rows_as_dicts(md, "Teacher fidelity per model**")  # the fidelity section's table
    assert full["psnr mean (dB)"].endswith("‡")
    # random-weight models get no leaderboard file
    official = md_rows_as_dicts(md, "Official *_eval_results.json")
    assert official and all(r["file"] == "— (not written)" and "random" in r["left_out"] for r in official)
    assert not (main_report["out"] / "official").exists()


def test_cpu_memory_is_a_lower_bound(main_report):
    rows = md_rows_as_dicts(main_report["md_text"], "Attention cost per kind")
    mem = [v for r in rows for k, v in r.items() if k.startswith("peak mem")]
    assert mem and all(v.startswith("≥ ") for v in mem), mem
    op = md_rows_as_dicts(main_report["md_text"], "Efficiency at level 'op'")
    assert all(r["peak_mem_bytes"].startswith("≥ ") for r in op)


def test_no_chart_without_data(main_report, tmp_path):
    from reports.build import build_report

    runs = [main_report["out"].parent / n for n in ("default", "efficiency-ci")]
    res = build_report(runs, tmp_path / "again")
    figures = [b for s in res["sections"] for b in s.blocks if type(b).__name__ == "Figure"]
    assert figures and all(f.empty_panels == 0 for f in figures), [(f.name, f.empty_panels) for f in figures]
    names = {f.name for f in figures}
    assert not any(n.startswith(("vbench2", "vbench_")) for n in names), names  # 0 and 1 scored dimension(s)
    assert {"efficiency_block", "efficiency_model", "fidelity_per_frame"} <= names
    assert all((tmp_path / "again" / "figures" / f"{n}.pdf").read_bytes().startswith(b"%PDF-") for n in names)
    coverage = md_rows_as_dicts((tmp_path / "again" / "report.md").read_text(), "Dimensions without a score")
    v2 = [r for r in coverage if r["suite"] == "VBench-2.0"]
    assert sum(len(r["dimensions"].split(", ")) for r in v2) == 18
    assert all(len(r["reason"]) <= 200 and "http" not in r["reason"] for r in coverage)  # URLs: appendix only


def _pdflatex(latex_dir: Path, tmp_path: Path) -> str:
    work = tmp_path / "tex"
    shutil.copytree(latex_dir.parent, work, ignore=shutil.ignore_patterns("*.html"))
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "tables.tex"],
                          cwd=work / "latex", capture_output=True, text=True, timeout=300)
    log = (work / "latex" / "tables.log").read_text(errors="replace") if (work / "latex" / "tables.log").exists() \
        else ""
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert (work / "latex" / "tables.pdf").read_bytes().startswith(b"%PDF-")
    assert "Missing character" not in log
    return log


@needs_pdflatex
def test_latex_compiles_with_the_pdf_figures(main_report, tmp_path):
    out = main_report["out"]
    tex = sorted(p.stem for p in (out / "latex").glob("*.tex") if p.stem != "tables")
    assert {"headline_quality", "headline_fidelity", "headline_efficiency", "vbench_dimensions",
            "fidelity_summary"} <= set(tex)
    for name in tex:
        body = (out / "latex" / f"{name}.tex").read_text()
        assert r"\toprule" in body and r"\midrule" in body and r"\bottomrule" in body
    log = _pdflatex(out / "latex", tmp_path)
    pdfs = sorted(p.name for p in (out / "figures").glob("*.pdf"))
    assert pdfs and len(pdfs) == len(list((out / "figures").glob("*.png")))
    for name in pdfs:  # pdflatex opened and embedded every PDF figure
        assert f"{name}>" in log.replace("\n", ""), name


@needs_pdflatex
def test_latex_of_the_fixture_report_compiles(report, tmp_path):
    """Fixture stores: two models, every VBench / VBench-2.0 table, daggers, human study, hostile-free text."""
    assert {"vbench_dimensions", "vbench2_dimensions", "vbench_aggregates", "vbench2_aggregates",
            "headline_human"} <= {p.stem for p in (report["out"] / "latex").glob("*.tex")}
    _pdflatex(report["out"] / "latex", tmp_path)
