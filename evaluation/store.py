"""Append-only, resumable results store (contract: docs/interfaces.md, "Results store").

A run directory holds ``records.jsonl`` (one JSON object per line, one per (run, model, video, dimension)) and
``run.json`` (run-level provenance).  Every record is written with a single ``write`` of one complete line followed by
``flush`` + ``fsync``, so a process killed at any point leaves at most one truncated last line, which readers ignore and
the next writer repairs (it starts a fresh line).

Resume rule: a record whose status is *final* (``ok`` / ``non_standard``) is never recomputed; records with
``error`` / ``missing_weights`` / ``skipped`` are retried on the next run and the newer record supersedes the older one in
:func:`load_records` (last record per key wins), so the view never holds duplicates.
"""
from __future__ import annotations

import json
import math
import os
import platform
import socket
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

RECORDS_FILE = "records.jsonl"
RUN_FILE = "run.json"
STATUSES = ("ok", "non_standard", "missing_weights", "error", "skipped")
FINAL_STATUSES = ("ok", "non_standard")
SCORED_STATUSES = ("ok", "non_standard")
COLUMNS = ["run_id", "suite", "model", "video", "dimension", "score", "status", "message", "details", "provenance",
           "time"]


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# Suites whose per-model items are distinguished by coordinates in ``details`` (docs/interfaces.md: efficiency sweep
# points); those fields join the key, as in reports/load.py and evaluation/efficiency/table.py.
KEY_DETAIL_FIELDS = {
    "efficiency": ("level", "frames", "latent_frames", "height", "width", "chunk_frames", "overlap_frames", "causal",
                   "converted_blocks", "dtype", "device", "threads", "backend"),
}


def record_key(rec: dict) -> tuple:
    """Resume key: (run, suite, model, video, dimension) [+ sweep coordinates for the suites in KEY_DETAIL_FIELDS].

    ``suite`` is part of it so that equal dimension names in two suites never collide."""
    key = (rec["run_id"], rec.get("suite"), rec["model"], rec.get("video"), rec["dimension"])
    fields = KEY_DETAIL_FIELDS.get(rec.get("suite"))
    if fields:
        d = rec.get("details") or {}
        key += (json.dumps({k: d.get(k) for k in fields}, sort_keys=True, default=str),)
    return key


def _json_default(obj: Any):
    # numpy scalars / arrays, paths, tensors of one element
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def make_record(*, run_id: str, suite: str, model: str, video: str | None, dimension: str, score: float | None,
                status: str, message: str | None = None, details: dict | None = None,
                provenance: dict | None = None) -> dict:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; expected one of {STATUSES}")
    if status not in SCORED_STATUSES and score is not None:
        raise ValueError(f"status {status!r} must not carry a score (got {score!r}); never fill a missing metric")
    if status in SCORED_STATUSES:
        if score is None:
            raise ValueError(f"status {status!r} needs a score")
        score = float(score)
        if math.isnan(score):
            raise ValueError("NaN score; record an error instead")
    return {
        "run_id": run_id, "suite": suite, "model": model, "video": video, "dimension": dimension,
        "score": score, "status": status, "message": message, "details": details or {},
        "provenance": provenance or {}, "time": utc_now(),
    }


def iter_lines(path: Path) -> Iterator[dict]:
    """Yield the complete, parseable records of a JSONL file; a truncated/garbled line (a kill mid-write) is skipped."""
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                # last line without newline: written partially by a killed process
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(rec, dict) and "dimension" in rec and "run_id" in rec:
                yield rec


class ResultsStore:
    """Writer for one run directory."""

    def __init__(self, run_dir: str | os.PathLike, run_id: str | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / RECORDS_FILE
        self.run_id = run_id or self.run_dir.name
        self._lock = threading.Lock()
        self._latest: dict[tuple, dict] = {}
        for rec in iter_lines(self.path):
            self._latest[record_key(rec)] = rec
        self._repair_tail()

    def _repair_tail(self) -> None:
        """If the file ends in a partial line (killed writer), terminate it so the next record starts cleanly."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            last = fh.read(1)
        if last != b"\n":
            with open(self.path, "ab") as fh:
                fh.write(b"\n")
                fh.flush()
                os.fsync(fh.fileno())

    # ------------------------------------------------------------------ queries
    def get(self, suite: str, model: str, video: str | None, dimension: str, details: dict | None = None
            ) -> dict | None:
        probe = {"run_id": self.run_id, "suite": suite, "model": model, "video": video, "dimension": dimension,
                 "details": details or {}}
        return self._latest.get(record_key(probe))

    def is_done(self, suite: str, model: str, video: str | None, dimension: str, details: dict | None = None
                ) -> bool:
        rec = self.get(suite, model, video, dimension, details)
        return rec is not None and rec["status"] in FINAL_STATUSES

    def records(self, suite: str | None = None, model: str | None = None, dimension: str | None = None) -> list[dict]:
        out = []
        for rec in self._latest.values():
            if suite is not None and rec.get("suite") != suite:
                continue
            if model is not None and rec["model"] != model:
                continue
            if dimension is not None and rec["dimension"] != dimension:
                continue
            out.append(rec)
        return out

    # ------------------------------------------------------------------ writing
    def append(self, record: dict) -> dict:
        if record["run_id"] != self.run_id:
            raise ValueError(f"record run_id {record['run_id']!r} != store run_id {self.run_id!r}")
        line = json.dumps(record, default=_json_default, ensure_ascii=False) + "\n"
        data = line.encode("utf-8")
        with self._lock:
            with open(self.path, "ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            self._latest[record_key(record)] = record
        return record

    def add(self, **kwargs) -> dict:
        kwargs.setdefault("run_id", self.run_id)
        return self.append(make_record(**kwargs))

    def write_run_info(self, info: dict) -> None:
        """Write/refresh ``run.json`` atomically; earlier starts are kept under ``resumes``."""
        path = self.run_dir / RUN_FILE
        old = {}
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                old = {}
        merged = dict(info)
        if old:
            merged["start_time"] = old.get("start_time", info.get("start_time"))
            merged["resumes"] = old.get("resumes", []) + [{"time": info.get("start_time"),
                                                            "command": info.get("command")}]
        tmp = path.with_suffix(f".json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(merged, indent=2, default=_json_default))
        os.replace(tmp, path)


def load_records(run_dir: str | os.PathLike, *, latest_only: bool = True):
    """The pandas view the reports use: one row per record key (the latest record), columns as in the contract."""
    import pandas as pd

    path = Path(run_dir) / RECORDS_FILE
    recs = list(iter_lines(path))
    if latest_only:
        latest: dict[tuple, dict] = {}
        for rec in recs:
            key = record_key(rec)
            latest.pop(key, None)  # keep order of the latest write
            latest[key] = rec
        recs = list(latest.values())
    df = pd.DataFrame(recs, columns=COLUMNS)
    if not df.empty:
        df["score"] = pd.to_numeric(df["score"], errors="coerce")
        df["time"] = pd.to_datetime(df["time"], utc=True, errors="coerce")
    return df


def load_run_info(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / RUN_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def machine_info() -> dict:
    info = {"hostname": socket.gethostname(), "platform": platform.platform(), "python": sys.version.split()[0],
            "cpu_count": os.cpu_count()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # pragma: no cover - torch always present in this project
        pass
    return info
