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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

RECORDS_FILE = "records.jsonl"
RUN_FILE = "run.json"
STATUSES = ("ok", "non_standard", "missing_weights", "error", "skipped")
FINAL_STATUSES = ("ok", "non_standard")
SCORED_STATUSES = ("ok", "non_standard")
# The one results schema (docs/interfaces.md, "Results store"): every reader -- this module's loaders, reports/ and
# evaluation/efficiency/table.py -- takes the columns, the key and the sweep coordinates from here.
COLUMNS = ["run_id", "suite", "model", "video", "dimension", "score", "status", "message", "details", "provenance",
           "time"]
KEY = ("run_id", "suite", "model", "video", "dimension")
# Efficiency records are per-model items (video null) told apart by their sweep coordinates in ``details``.
SWEEP_FIELDS = ("level", "frames", "latent_frames", "height", "width", "chunk_frames", "overlap_frames", "causal",
                "converted_blocks", "dtype", "device", "threads", "backend")


# Model specs of the built-in models with random (untrained) weights (rehyat.tiny): whatever they score exercises the
# pipeline and is never a quality number.  Readers mark every number from them (reports: banner + mark).
RANDOM_WEIGHT_SPECS = ("tiny", "tiny-softmax")


def weights_origin(provenance: dict | None, config_key: str = "model_config") -> str | None:
    """Where a record's model weights come from, as far as its provenance says: ``"random"`` (or any origin written
    explicitly), else ``None`` (not stated).

    An explicit ``provenance["weights"]`` (a string such as ``"random"`` / ``"untrained"`` / ``"trained"``, or
    ``{"origin": ...}``) wins; otherwise the generator config under ``config_key`` (``model_config`` or
    ``reference_config``) names its model spec, and a built-in random spec (:data:`RANDOM_WEIGHT_SPECS`, with or
    without an ``@mode`` suffix) means ``"random"``."""
    if not isinstance(provenance, dict):
        return None
    explicit = provenance.get("weights") if config_key == "model_config" else None
    if isinstance(explicit, dict):
        explicit = explicit.get("origin")
    if isinstance(explicit, str) and explicit:
        return explicit
    cfg = provenance.get(config_key)
    return spec_weights((cfg.get("model") or {}).get("spec") if isinstance(cfg, dict) else None)


def spec_weights(spec) -> str | None:
    """``"random"`` for a built-in random model spec (``tiny``, ``tiny-softmax@recurrent``, ...), else ``None``."""
    if not isinstance(spec, str):
        return None
    return "random" if spec.split("@", 1)[0].strip() in RANDOM_WEIGHT_SPECS else None


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# Suites whose per-model items are distinguished by coordinates in ``details`` (docs/interfaces.md: efficiency sweep
# points); those fields join the key.
KEY_DETAIL_FIELDS = {"efficiency": SWEEP_FIELDS}


def record_key(rec: dict) -> tuple:
    """Resume key: (run, suite, model, video, dimension) [+ sweep coordinates for the suites in KEY_DETAIL_FIELDS].

    ``suite`` is part of it so that equal dimension names in two suites never collide."""
    key = tuple(rec.get(k) for k in KEY)
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


@dataclass
class StoreScan:
    """What :func:`scan_records` read from one ``records.jsonl``.

    ``records``: the records in file order (with ``latest_only``: the last record per :func:`record_key`, placed at
    its last line); ``lines``: their line numbers; ``problems``: one sentence per line that was skipped;
    ``superseded``: how many records a later line with the same key replaced."""

    records: list[dict] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    superseded: int = 0


def scan_records(path: str | os.PathLike, *, default_run_id: str | None = None, latest_only: bool = True
                 ) -> StoreScan:
    """The one reader of ``records.jsonl`` (used by :func:`load_records`, :class:`ResultsStore`, ``reports`` and the
    efficiency table).

    A line that is not valid JSON (a writer killed mid-line) or not a record object is skipped and named in
    ``problems``, never silently; a complete last line without its newline is a record (the next writer terminates
    it, see :meth:`ResultsStore._repair_tail`).  Python's json reads ``Infinity`` (an infinite PSNR).  A record without
    ``run_id`` gets ``default_run_id`` (the run directory's), and is skipped when there is none."""
    scan = StoreScan()
    path = Path(path)
    if not path.is_file():
        return scan
    latest: dict[tuple, tuple[int, dict]] = {}
    order: list[tuple[int, dict]] = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                tail = "" if raw.endswith(b"\n") else "; a truncated last line, as a killed writer leaves"
                scan.problems.append(f"{RECORDS_FILE} line {lineno} is not valid JSON (skipped{tail})")
                continue
            if not isinstance(rec, dict) or "dimension" not in rec or "model" not in rec:
                scan.problems.append(f"{RECORDS_FILE} line {lineno} is not a record object (skipped)")
                continue
            if not rec.get("run_id"):
                if default_run_id is None:
                    scan.problems.append(f"{RECORDS_FILE} line {lineno} has no run_id (skipped)")
                    continue
                rec["run_id"] = default_run_id
            if not latest_only:
                order.append((lineno, rec))
                continue
            key = record_key(rec)
            if latest.pop(key, None) is not None:  # keep the order of the latest write
                scan.superseded += 1
            latest[key] = (lineno, rec)
    pairs = order if not latest_only else list(latest.values())
    scan.lines = [n for n, _ in pairs]
    scan.records = [r for _, r in pairs]
    if scan.superseded:
        scan.problems.append(f"{scan.superseded} superseded record(s) (same run/suite/model/video/dimension appended "
                             "again; the last one is used)")
    return scan


def iter_lines(path: Path) -> Iterator[dict]:
    """Every complete, parseable record of a JSONL file in file order (see :func:`scan_records`)."""
    yield from scan_records(path, latest_only=False).records


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


def merge_records(target: ResultsStore, source: str | os.PathLike) -> tuple[int, int]:
    """Append to ``target`` the latest record of every key in the ``records.jsonl`` at ``source`` (another writer's,
    e.g. one rank's shard, same run_id), unless ``target`` already holds that key as final or the same record.
    Returns (appended, skipped)."""
    added = skipped = 0
    for rec in scan_records(source).records:
        have = target.get(rec.get("suite"), rec["model"], rec.get("video"), rec["dimension"], rec.get("details"))
        if have is not None and (have["status"] in FINAL_STATUSES or have == rec):
            skipped += 1
            continue
        target.append(rec)
        added += 1
    return added, skipped


def load_records(run_dir: str | os.PathLike, *, latest_only: bool = True):
    """The pandas view the reports use: one row per record key (the latest record), columns as in the contract."""
    import pandas as pd

    recs = scan_records(Path(run_dir) / RECORDS_FILE, latest_only=latest_only).records
    df = pd.DataFrame(recs, columns=COLUMNS)
    if not df.empty:
        df["score"] = pd.to_numeric(df["score"], errors="coerce")
        df["time"] = pd.to_datetime(df["time"], utc=True, errors="coerce")
    return df


@dataclass
class RunRead:
    """One run directory as read by :func:`read_run`: ``run.json`` (or None), the latest records, the problems met."""

    path: Path
    run_id: str
    run_json: dict | None
    scan: StoreScan
    problems: list[str] = field(default_factory=list)


def read_run(run_dir: str | os.PathLike) -> RunRead:
    """``run.json`` + :func:`scan_records` of a run directory, every problem named (missing files, bad lines).

    The run id is ``run.json``'s, else the first record's, else the directory name."""
    path = Path(run_dir)
    problems: list[str] = []
    run_json = None
    rj = path / RUN_FILE
    if rj.is_file():
        try:
            run_json = json.loads(rj.read_text(encoding="utf-8"))
            if not isinstance(run_json, dict):
                problems.append(f"{RUN_FILE} is not a JSON object (ignored)")
                run_json = None
        except (OSError, ValueError) as exc:
            problems.append(f"{RUN_FILE} could not be read: {exc}")
    elif path.is_dir():
        problems.append(f"{RUN_FILE} is missing")
    else:
        problems.append("run directory does not exist")
    if path.is_dir() and not (path / RECORDS_FILE).is_file():
        problems.append(f"{RECORDS_FILE} is missing")
    run_id = str(run_json["run_id"]) if run_json and run_json.get("run_id") else None
    scan = scan_records(path / RECORDS_FILE, default_run_id=run_id or path.name)
    if run_id is None:
        run_id = str(scan.records[0]["run_id"]) if scan.records else path.name
    return RunRead(path, run_id, run_json, scan, problems + scan.problems)


def is_run_dir(path: str | os.PathLike) -> bool:
    """A results-store run directory holds ``records.jsonl`` or ``run.json`` (written by ``python -m evaluation.run``)."""
    p = Path(path)
    return p.is_dir() and ((p / RECORDS_FILE).is_file() or (p / RUN_FILE).is_file())


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
