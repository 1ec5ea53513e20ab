"""Build the comparison report.

    python -m reports.build --runs RUN_DIR [RUN_DIR ...] [--study-stats DIR ...] --out DIR [--title TEXT] [--debug]

Writes ``DIR/report.html`` (self-contained: CSS inline, plots as base64 PNG, no scripts, no external requests),
``DIR/report.md`` (plots referenced as ``figures/*.png``), ``DIR/figures/*.{png,pdf}``, ``DIR/tables/*.csv``,
``DIR/latex/*.tex`` (booktabs; ``latex/tables.tex`` compiles them all) and ``DIR/official/<suite>/*_eval_results.json``.
Everything comes from the stores; nothing is recomputed. Exit status 0 when every section built, 1 when a section
raised (the report is still written and the failing section says why), 2 on bad arguments (a run or study-stats
directory that does not exist or is not one; nothing is written).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import List, Optional, Sequence

os.environ.setdefault("MPLBACKEND", "Agg")

from reports.load import load_context  # noqa: E402
from reports.registry import load_sections  # noqa: E402
from reports.render import BuiltSection, write_outputs  # noqa: E402

DEFAULT_TITLE = "ReHyAt comparison report"
STUDY_FILES = ("win_tie_loss.csv", "bradley_terry.csv", "agreement.csv", "position_bias.csv", "raters.csv",
               "summary.json")


def build_sections(ctx, only: Optional[Sequence[str]] = None, debug: bool = False) -> List[BuiltSection]:
    built = []
    for spec in load_sections():
        if only and spec.key not in only:
            continue
        try:
            blocks = list(spec.build(ctx))
            built.append(BuiltSection(spec.key, spec.title, blocks, collapsed=spec.collapsed))
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
            detail = traceback.format_exc() if debug else "(--debug shows the traceback)"
            print(f"reports: section {spec.key!r} failed: {type(exc).__name__}: {exc} {detail}", file=sys.stderr)
            built.append(BuiltSection(spec.key, spec.title, [], collapsed=spec.collapsed,
                                      error=f"This section could not be built: {type(exc).__name__}: {exc}"))
    return built


def build_report(runs: Sequence, out, study_stats: Sequence = (), title: str = DEFAULT_TITLE,
                 only: Optional[Sequence[str]] = None, debug: bool = False) -> dict:
    """Build the report from run directories and human-study stats directories into ``out``.

    Returns a dict with ``html``, ``markdown`` (paths), ``figures``, ``figures_pdf``, ``tables``, ``latex``,
    ``attachments`` (lists of paths), ``latex_document``, ``sections`` (the :class:`reports.render.BuiltSection` list),
    ``banner`` (its lines) and ``failed`` (keys of sections that raised).
    """
    from reports.honesty import banner as banner_lines

    ctx = load_context([Path(r) for r in runs], [Path(s) for s in study_stats], title)
    sections = build_sections(ctx, only, debug)
    meta = [f"Generated {ctx.generated_at} from stored results only (nothing recomputed). "
            "Runs: " + (", ".join(f"{r.run_id} ({r.path})" for r in ctx.runs) or "none given") + ". "
            "Human-study statistics: " + (", ".join(str(s.path) for s in ctx.studies) or "none given") + "."]
    banner = banner_lines(ctx)
    written = write_outputs(Path(out), title, meta, sections, banner)
    written["sections"] = sections
    written["banner"] = banner
    written["failed"] = [s.key for s in sections if s.error]
    return written


def _nearby_runs(path: Path) -> List[str]:
    """Run directories just below ``path`` (or beside it), to suggest when ``path`` is not one."""
    from evaluation.store import is_run_dir

    out = []
    for base in (path, path.parent):
        if base.is_dir():
            out += [str(p) for p in sorted(base.iterdir()) if is_run_dir(p)]
    return list(dict.fromkeys(out))[:6]


def check_inputs(runs: Sequence[str], studies: Sequence[str]) -> List[str]:
    """One message per input that is not what it should be (empty when all are fine)."""
    from evaluation.store import is_run_dir

    errors = []
    for r in runs:
        p = Path(r)
        if not is_run_dir(p):
            why = "no such directory" if not p.exists() else (
                "not a directory" if not p.is_dir() else "not a run directory (no records.jsonl or run.json)")
            near = _nearby_runs(p)
            hint = f"; run directories nearby: {', '.join(near)}" if near else (
                "; a run directory is what `python -m evaluation.run --out DIR` writes")
            errors.append(f"--runs {r}: {why}{hint}")
    for s in studies:
        p = Path(s)
        if not p.is_dir() or not any((p / f).is_file() for f in STUDY_FILES):
            why = "no such directory" if not p.exists() else (
                "not a directory" if not p.is_dir() else f"none of {', '.join(STUDY_FILES)} in it")
            errors.append(f"--study-stats {s}: {why}; it is the output directory of "
                          "`python -m human_study stats --study FILE --out DIR`")
    return errors


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reports.build", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="*", default=[], metavar="RUN_DIR",
                    help="results-store run directories (records.jsonl + run.json)")
    ap.add_argument("--study-stats", nargs="*", default=[], metavar="DIR",
                    help="output directories of `python -m human_study stats`")
    ap.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    ap.add_argument("--title", default=DEFAULT_TITLE)
    ap.add_argument("--debug", action="store_true", help="print tracebacks of failing sections")
    args = ap.parse_args(argv)
    if not args.runs and not args.study_stats:
        ap.exit(2, f"{ap.prog}: error: give at least one --runs RUN_DIR or --study-stats DIR\n")
    errors = check_inputs(args.runs, args.study_stats)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        errors.append(f"--out {args.out}: exists and is not a directory")
    if errors:
        ap.exit(2, "".join(f"{ap.prog}: error: {e}\n" for e in errors) + "nothing was written\n")
    res = build_report(args.runs, args.out, args.study_stats, args.title, debug=args.debug)
    print(f"wrote {res['html']}")
    print(f"wrote {res['markdown']} ({len(res['figures'])} figures as PNG + PDF, {len(res['tables'])} CSV tables, "
          f"{len(res['latex'])} LaTeX tables in {res['latex_document'].parent}, "
          f"{len(res['attachments'])} official result file(s))")
    if res["failed"]:
        print(f"reports: section(s) failed: {', '.join(res['failed'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
