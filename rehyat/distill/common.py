"""Shared pieces of both training stages: config files + CLI flags, the data-sampling generators, which data
slots a process takes, atomic files, JSONL metrics (mirrored to the accelerate trackers), loss / LR curves, progress.

The training engine itself (process group, devices, mixed precision, accumulation, checkpoints) is accelerate's,
set up in :mod:`rehyat.distill.engine`.  Nothing here knows about Wan.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import torch

METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"
SUMMARY_NAME = "summary.json"
CKPT_DIR = "checkpoints"
LATEST_NAME = "latest"
EXPORT_DIR = "rehyat"
EMA_EXPORT_DIR = "rehyat_ema"
CURVES_NAME = "curves.png"


# --------------------------------------------------------------------------------------------------------------------
# Config: one dataclass per stage; a JSON/YAML file and/or CLI flags fill it (flags win).
# --------------------------------------------------------------------------------------------------------------------

def _flag_type(f: dataclasses.Field):
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    t = t.replace(" ", "")
    if t.startswith("bool"):
        return "bool"
    if t.startswith("int"):
        return int
    if t.startswith("float"):
        return float
    return str


def config_keys(cls) -> set[str]:
    """Keys a stage config accepts: its fields plus its init-only aliases (``--preset``, the ReHyAt flags)."""
    return {f.name for f in dataclasses.fields(cls)} | {
        n for n, f in cls.__dataclass_fields__.items() if isinstance(f.type, dataclasses.InitVar)
        or str(f.type).startswith("InitVar")}


def add_dataclass_flags(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--field-name`` flag per dataclass field (default ``None`` = keep the config-file / dataclass value).

    A nested ``rehyat`` field (a :class:`rehyat.config.ReHyAtConfig`) gets ``--preset`` and the ReHyAt flags
    instead, under the names its ``REHYAT_FLAG_NAMES`` gives (folded into the nested object by the config)."""
    if "rehyat" in {f.name for f in dataclasses.fields(cls)}:
        from rehyat.config import add_config_arguments

        add_config_arguments(parser, names=getattr(sys.modules[cls.__module__], "REHYAT_FLAG_NAMES", None))
    skip = config_keys(cls) - {f.name for f in dataclasses.fields(cls)} | {"rehyat"}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        name = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        typ = _flag_type(f)
        if typ == "bool":
            parser.add_argument(name, dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=help_)
        else:
            parser.add_argument(name, dest=f.name, default=None, type=typ, help=help_)


def load_config_file(path: str | os.PathLike) -> dict:
    p = Path(path)
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping, got {type(data).__name__}")
    return data


def build_config(cls, file: str | os.PathLike | None = None, overrides: dict | None = None):
    """``cls(**(file values | non-None overrides))``; unknown keys raise (typos must not be silently ignored)."""
    values: dict[str, Any] = {}
    if file:
        values.update(load_config_file(file))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = config_keys(cls)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {unknown}; known: {sorted(known)}")
    return cls(**values)


def config_hash(cfg, ignore: Iterable[str] = ()) -> str:
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in set(ignore)}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------------------------
# Data sampling: every random draw of the data path comes from a generator keyed by what it is for
# --------------------------------------------------------------------------------------------------------------------

def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs and machines): the key of every data-sampling generator."""
    h = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def generator(*parts: int, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derived_seed(*parts))
    return g


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Which data slots this process takes: rank ``r`` of ``world_size`` takes slots ``[r*b, (r+1)*b)`` of a global
    batch of ``world_size * b``.  Only data: the process group is accelerate's."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def of(cls, accelerator) -> "DistInfo":
        return cls(accelerator.process_index, accelerator.num_processes)


# --------------------------------------------------------------------------------------------------------------------
# Atomic files
# --------------------------------------------------------------------------------------------------------------------

def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


# --------------------------------------------------------------------------------------------------------------------
# Metrics (JSONL on the main process, mirrored to the trackers), curves and progress
# --------------------------------------------------------------------------------------------------------------------

_TRACKED = ("loss", "rel_l2", "grad_norm", "lr", "linear_share", "rel_l2_chunk_local", "vs_chunk_local")


class MetricsWriter:
    """Append-only ``OUT/metrics.jsonl``; on resume, lines of steps after the checkpoint are dropped first so the
    file of a resumed run equals the one of an uninterrupted run (timings aside).  With an ``accelerator`` whose
    trackers are initialised, every record's scalars are also logged there (``{kind}/{field}``, per block
    ``{kind}/block{i}/{field}``)."""

    def __init__(self, out_dir: Path, is_main: bool, resume_step: int | None = None, accelerator=None):
        self.path = Path(out_dir) / METRICS_NAME
        self.enabled = is_main
        self.acc = accelerator
        if self.enabled and resume_step is not None and self.path.is_file():
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            atomic_write_bytes(self.path, ("\n".join(kept) + ("\n" if kept else "")).encode())
        elif self.enabled and resume_step is None and self.path.exists():
            self.path.unlink()
        self._f = open(self.path, "a") if self.enabled else None

    def write(self, **rec) -> None:
        if self._f is None:
            return
        rec.setdefault("time", time.time())
        self._f.write(json.dumps(rec, default=float) + "\n")
        self._f.flush()
        if self.acc is not None and self.acc.trackers:
            where = rec["kind"] if rec.get("block") is None else f"{rec['kind']}/block{rec['block']}"
            vals = {f"{where}/{k}": float(rec[k]) for k in _TRACKED if isinstance(rec.get(k), (int, float))}
            if vals:
                self.acc.log(vals, step=int(rec["step"]))

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def read_metrics(out_dir: Path) -> list[dict]:
    p = Path(out_dir) / METRICS_NAME
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()] if p.is_file() else []


def plot_curves(out_dir: Path, stage: str) -> Path | None:
    """``OUT/curves.png``: training loss (mean over blocks in stage 1), held-out loss / error and the learning rate
    against the step, from ``metrics.jsonl``."""
    recs = [r for r in read_metrics(out_dir) if r.get("block") is None]
    train = [r for r in recs if r["kind"] == "train"]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev_key = "loss" if stage == "stage2" else "rel_l2"
    ev = [r for r in recs if r["kind"] == "eval" and r.get(ev_key) is not None]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    if ev:
        a2 = a.twinx() if ev_key != "loss" else a
        a2.plot([r["step"] for r in ev], [r[ev_key] for r in ev], "o-", color="C1",
                label="held-out " + ("loss" if ev_key == "loss" else "rel. L2 error (mean over blocks)"))
        a2.legend(loc="upper center", fontsize=8)
    a.set_xlabel("step"), a.set_ylabel("loss"), a.legend(loc="upper right", fontsize=8)
    b.plot([r["step"] for r in train], [r["lr"] for r in train], color="C2")
    b.set_xlabel("step"), b.set_ylabel("learning rate")
    fig.suptitle(f"{stage}: {out_dir}", fontsize=9)
    fig.tight_layout()
    path = Path(out_dir) / CURVES_NAME
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True,
                file=sys.stderr, mininterval=0.5)


def versions() -> dict:
    import accelerate
    import diffusers

    out = {"python": sys.version.split()[0], "torch": torch.__version__, "diffusers": diffusers.__version__,
           "accelerate": accelerate.__version__}
    try:
        import peft

        out["peft"] = peft.__version__
    except Exception:  # pragma: no cover - peft is a declared dependency
        pass
    return out


def flat_hparams(cfg) -> dict:
    """The config as the flat scalar mapping trackers accept (nested values as JSON strings)."""
    out = {}
    for k, v in dataclasses.asdict(cfg).items():
        out[k] = v if isinstance(v, (int, float, str, bool)) else json.dumps(v, default=str)
    return out


class SimulatedKill(RuntimeError):
    """Raised by the test hook ``fail_at_step`` in the middle of a step to emulate a kill (no cleanup runs)."""
