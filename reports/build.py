"""Build the comparison report.

    python -m reports.build --runs RUN_DIR [RUN_DIR ...] [--study-stats DIR ...] --out DIR [--title TEXT]

Writes ``DIR/report.html`` (self-contained: CSS inline, plots as base64 PNG, no scripts, no external requests),
``DIR/report.md`` (plots referenced as ``figures/*.png``), ``DIR/figures/*.png`` and ``DIR/tables/*.csv``.
Everything comes from the stores; nothing is recomputed. Exit status 0 when every section built, 1 when a section
raised (the report is still written and the failing section says why), 2 on bad arguments.
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


def build_sections(ctx, only: Optional[Sequence[str]] = None) -> List[BuiltSection]:
    built = []
    for spec in load_sections():
        if only and spec.key not in only:
            continue
        try:
            blocks = list(spec.build(ctx))
            built.append(BuiltSection(spec.key, spec.title, blocks))
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
            tb = traceback.format_exc(limit=3)
            print(f"reports: section {spec.key!r} failed:\n{tb}", file=sys.stderr)
            built.append(BuiltSection(spec.key, spec.title, [],
                                      error=f"This section could not be built: {type(exc).__name__}: {exc}"))
    return built


def build_report(runs: Sequence, out, study_stats: Sequence = (), title: str = DEFAULT_TITLE,
                 only: Optional[Sequence[str]] = None) -> dict:
    """Build the report from run directories and human-study stats directories into ``out``.

    Returns a dict with ``html``, ``markdown`` (paths), ``figures``, ``tables`` (lists of paths), ``sections``
    (the :class:`reports.render.BuiltSection` list) and ``failed`` (keys of sections that raised).
    """
    ctx = load_context([Path(r) for r in runs], [Path(s) for s in study_stats], title)
    sections = build_sections(ctx, only)
    meta = [f"Generated {ctx.generated_at} from stored results only (nothing recomputed).",
            "Runs: " + (", ".join(f"{r.run_id} ({r.path})" for r in ctx.runs) or "none given"),
            "Human-study statistics: " + (", ".join(str(s.path) for s in ctx.studies) or "none given")]
    written = write_outputs(Path(out), title, meta, sections)
    written["sections"] = sections
    written["failed"] = [s.key for s in sections if s.error]
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reports.build", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="*", default=[], metavar="RUN_DIR",
                    help="results-store run directories (records.jsonl + run.json)")
    ap.add_argument("--study-stats", nargs="*", default=[], metavar="DIR",
                    help="output directories of `python -m human_study stats`")
    ap.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    ap.add_argument("--title", default=DEFAULT_TITLE)
    args = ap.parse_args(argv)
    if not args.runs and not args.study_stats:
        ap.error("give at least one --runs RUN_DIR or --study-stats DIR")
    res = build_report(args.runs, args.out, args.study_stats, args.title)
    print(f"wrote {res['html']}")
    print(f"wrote {res['markdown']} ({len(res['figures'])} figures, {len(res['tables'])} tables)")
    if res["failed"]:
        print(f"reports: section(s) failed: {', '.join(res['failed'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
