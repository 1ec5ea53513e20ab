"""Comparison reports built from stored results alone.

``python -m reports.build --runs RUN_DIR [RUN_DIR ...] [--study-stats DIR ...] --out DIR`` reads the evaluation
results store (``records.jsonl`` + ``run.json``, see ``docs/interfaces.md``) and the human-study statistics tables,
and writes ``report.html`` (self-contained), ``report.md``, ``figures/*.png`` and ``tables/*.csv``.

Nothing is recomputed from videos: the report only reads, groups and plots what the stores hold.
Sections live in :mod:`reports.sections` (one module per section, discovered automatically).
Nothing in this project may import ``reports``.
"""

__all__ = ["build_report"]


def __getattr__(name):  # lazy, so that ``python -m reports.build`` does not import the module twice
    if name == "build_report":
        from reports.build import build_report

        return build_report
    raise AttributeError(name)
