"""Readers for the stores the report is built from (see ``docs/interfaces.md``).

* Results store: ``RUN_DIR/records.jsonl`` (append-only, one JSON object per line) + ``RUN_DIR/run.json``.
  Read here with ``json`` + pandas (one small loader, :func:`load_run`) so the report does not depend on
  ``evaluation`` being importable. Append-only semantics: when the same (run, suite, model, video, dimension)
  appears more than once, the **last** line wins. A line that is not valid JSON (for example a half-written last
  line) is skipped and reported as a problem, never silently. For the ``efficiency`` suite the sweep coordinates in
  ``details`` (level, frames, resolution, chunking, dtype, …) are part of that key.
* Human-study statistics: ``DIR/{win_tie_loss,bradley_terry,agreement,position_bias,raters}.csv`` + ``summary.json``.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import pandas as pd

from reports.fmt import to_float

RECORD_FIELDS = ["run_id", "suite", "model", "video", "dimension", "score", "status", "message", "details",
                 "provenance", "time"]
KEY = ["run_id", "suite", "model", "video", "dimension"]

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


def _parse_json_object(text: str):
    # Python's json accepts Infinity/NaN, which is what json.dumps writes for an infinite PSNR.
    return json.loads(text)


# Efficiency records are per-model items (video may be null) distinguished by their sweep coordinates in
# ``details``; two records only supersede each other when those coordinates are equal too.
SWEEP_FIELDS = ("level", "frames", "latent_frames", "height", "width", "chunk_frames", "overlap_frames", "causal",
                "converted_blocks", "dtype", "device", "threads", "backend")


def _sweep_point(suite, details) -> str:
    if suite != "efficiency" or not isinstance(details, dict):
        return ""
    return json.dumps({k: details.get(k) for k in SWEEP_FIELDS}, sort_keys=True, default=str)


def load_run(run_dir) -> tuple[RunInfo, pd.DataFrame]:
    """Read one run directory -> (run info, records frame with the interface columns)."""
    path = Path(run_dir)
    problems: List[str] = []
    run_json = None
    rj = path / "run.json"
    if rj.is_file():
        try:
            run_json = json.loads(rj.read_text(encoding="utf-8"))
            if not isinstance(run_json, dict):
                problems.append("run.json is not a JSON object (ignored)")
                run_json = None
        except (OSError, ValueError) as exc:
            problems.append(f"run.json could not be read: {exc}")
    elif path.is_dir():
        problems.append("run.json is missing")
    else:
        problems.append("run directory does not exist")

    rows = []
    rec = path / "records.jsonl"
    if rec.is_file():
        with rec.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = _parse_json_object(line)
                except ValueError:
                    problems.append(f"records.jsonl line {lineno} is not valid JSON (skipped)")
                    continue
                if not isinstance(obj, dict):
                    problems.append(f"records.jsonl line {lineno} is not a JSON object (skipped)")
                    continue
                obj["_line"] = lineno
                rows.append(obj)
    elif path.is_dir():
        problems.append("records.jsonl is missing")

    run_id = None
    if run_json and run_json.get("run_id"):
        run_id = str(run_json["run_id"])
    if rows:
        ids = [r.get("run_id") for r in rows if r.get("run_id")]
        if run_id is None and ids:
            run_id = str(ids[0])
    run_id = run_id or path.name

    if not rows:
        return RunInfo(path, run_id, run_json, 0, problems), empty_records()

    df = pd.DataFrame(rows)
    for c in RECORD_FIELDS:
        if c not in df.columns:
            df[c] = None
    df["run_id"] = df["run_id"].where(df["run_id"].notna(), run_id).astype(str)
    df["video"] = df["video"].astype(object).where(df["video"].notna(), None)
    df["message"] = df["message"].astype(object).where(df["message"].notna(), None)
    df["score"] = [to_float(s) for s in df["score"]]
    df["status"] = df["status"].fillna("unknown").astype(str)
    for c in ("details", "provenance"):
        df[c] = [v if isinstance(v, dict) else {} for v in df[c]]
    # A score is only meaningful when status is ok / non_standard (interfaces.md); anything else is shown as absent.
    bad = ~df["status"].isin(["ok", "non_standard"])
    df.loc[bad, "score"] = float("nan")
    key = df[KEY].astype(object).where(df[KEY].notna(), "\x00none").astype(str)
    key["_point"] = [_sweep_point(s, d) for s, d in zip(df["suite"], df["details"])]
    dup = key.duplicated(keep="last")
    if dup.any():
        problems.append(f"{int(dup.sum())} superseded record(s) (same run/suite/model/video/dimension appended "
                        f"again; the last one is used)")
    df = df[~dup.values].sort_values("_line", kind="stable").reset_index(drop=True)
    df["_run_dir"] = str(path)
    return RunInfo(path, run_id, run_json, len(df), problems), df


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
    runs, records = load_runs(run_dirs)
    studies = [load_study(d) for d in (study_dirs or [])]
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return ReportContext(title=title, runs=runs, records=records, studies=studies, generated_at=now)
