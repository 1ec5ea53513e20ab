"""Readers for the stores the report is built from (see ``docs/interfaces.md``).

* Results store: ``RUN_DIR/records.jsonl`` (append-only, one JSON object per line) + ``RUN_DIR/run.json``, read with
  :func:`evaluation.store.read_run` -- the one loader, which also defines the record key (for ``efficiency`` the
  sweep coordinates in ``details`` are part of it): when the same key appears more than once the **last** line wins;
  a line that is not valid JSON (a half-written last line) is skipped and reported as a problem, never silently.
* Human-study statistics: ``DIR/{win_tie_loss,bradley_terry,agreement,position_bias,raters}.csv`` + ``summary.json``.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import pandas as pd

from evaluation.store import COLUMNS, KEY, read_run
from reports.fmt import to_float

RECORD_FIELDS = list(COLUMNS)
KEY = list(KEY)

STUDY_TABLES: Dict[str, List[str]] = {
    "win_tie_loss": ["criterion", "model_a", "model_b", "n", "wins_a", "ties", "wins_b", "p_a", "p_tie", "p_b",
                     "ci_low_a", "ci_high_a", "ci_low_tie", "ci_high_tie", "ci_low_b", "ci_high_b", "ci_method",
                     "sign_test_p", "sign_test_p_holm", "net_pref", "net_pref_boot_low", "net_pref_boot_high"],
    "bradley_terry": ["criterion", "model", "rating", "ci_low", "ci_high", "scale"],
    "agreement": ["criterion", "statistic", "value", "n_items", "n_raters"],
    "position_bias": ["criterion", "n", "left_chosen", "right_chosen", "p_value"],
    "raters": ["rater", "n_votes", "gold_total", "gold_passed", "excluded", "reason"],
}


@dataclass
class RunInfo:
    path: Path
    run_id: str
    run_json: Optional[dict]
    n_records: int = 0
    problems: List[str] = field(default_factory=list)


@dataclass
class StudyStats:
    path: Path
    tables: Dict[str, pd.DataFrame]
    summary: Optional[dict]
    problems: List[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        if self.summary and self.summary.get("study"):
            return str(self.summary["study"])
        return self.path.name


@dataclass
class ReportContext:
    title: str
    runs: List[RunInfo]
    records: pd.DataFrame
    studies: List[StudyStats]
    generated_at: str

    def suite(self, name: str) -> pd.DataFrame:
        return self.records[self.records["suite"] == name].copy()

    def run_ids(self) -> List[str]:
        return [r.run_id for r in self.runs]


def empty_records() -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype=object) for c in RECORD_FIELDS + ["label"]})
    df["score"] = pd.Series(dtype=float)
    return df


def load_run(run_dir) -> tuple[RunInfo, pd.DataFrame]:
    """Read one run directory -> (run info, records frame with the interface columns)."""
    run = read_run(run_dir)
    if not run.scan.records:
        return RunInfo(run.path, run.run_id, run.run_json, 0, run.problems), empty_records()
    df = pd.DataFrame(run.scan.records)
    df["_line"] = run.scan.lines
    for c in RECORD_FIELDS:
        if c not in df.columns:
            df[c] = None
    df["run_id"] = df["run_id"].astype(str)
    df["video"] = df["video"].astype(object).where(df["video"].notna(), None)
    df["message"] = df["message"].astype(object).where(df["message"].notna(), None)
    df["score"] = [to_float(s) for s in df["score"]]
    df["status"] = df["status"].fillna("unknown").astype(str)
    for c in ("details", "provenance"):
        df[c] = [v if isinstance(v, dict) else {} for v in df[c]]
    # A score is only meaningful when status is ok / non_standard (interfaces.md); anything else is shown as absent.
    bad = ~df["status"].isin(["ok", "non_standard"])
    df.loc[bad, "score"] = float("nan")
    df["_run_dir"] = str(run.path)
    return RunInfo(run.path, run.run_id, run.run_json, len(df), run.problems), df.reset_index(drop=True)


def load_runs(run_dirs) -> tuple[List[RunInfo], pd.DataFrame]:
    infos, frames = [], []
    for d in run_dirs or []:
        info, df = load_run(d)
        infos.append(info)
        if len(df):
            frames.append(df)
    records = pd.concat(frames, ignore_index=True) if frames else empty_records()
    records["label"] = model_labels(records)
    return infos, records


def model_labels(records: pd.DataFrame) -> pd.Series:
    """Display label per record: the model name, or ``model [run_id]`` when the same model appears in several runs
    of the same suite (so the runs stay distinguishable)."""
    if records.empty:
        return pd.Series([], dtype=object)
    n_runs = records.groupby(["suite", "model"], dropna=False)["run_id"].transform("nunique")
    return pd.Series([m if n <= 1 else f"{m} [{r}]"
                      for m, r, n in zip(records["model"], records["run_id"], n_runs)], index=records.index)


def load_study(stats_dir) -> StudyStats:
    path = Path(stats_dir)
    problems: List[str] = []
    tables: Dict[str, pd.DataFrame] = {}
    if not path.is_dir():
        return StudyStats(path, {}, None, ["directory does not exist"])
    for name, cols in STUDY_TABLES.items():
        f = path / f"{name}.csv"
        if not f.is_file():
            problems.append(f"{name}.csv is missing")
            continue
        try:
            df = pd.read_csv(f)
        except Exception as exc:  # noqa: BLE001 - any parse failure is reported in the report
            problems.append(f"{name}.csv could not be read: {exc}")
            continue
        missing = [c for c in cols if c not in df.columns]
        if missing:
            problems.append(f"{name}.csv lacks required column(s) {', '.join(missing)} (table not used)")
            continue
        tables[name] = df
    summary = None
    sj = path / "summary.json"
    if sj.is_file():
        try:
            summary = json.loads(sj.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"summary.json could not be read: {exc}")
    else:
        problems.append("summary.json is missing")
    return StudyStats(path, tables, summary, problems)


def load_context(run_dirs, study_dirs, title: str) -> ReportContext:
    from reports.honesty import annotate

    runs, records = load_runs(run_dirs)
    annotate(records, runs)  # weights / untrained columns, from the stores' provenance
    studies = [load_study(d) for d in (study_dirs or [])]
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return ReportContext(title=title, runs=runs, records=records, studies=studies, generated_at=now)
