"""Shared machinery of both training stages: config files + CLI flags, seeding and RNG state, atomic resumable
checkpoints, JSONL metrics, ``torchrun`` / DDP setup, progress bars.

Nothing here knows about Wan; :mod:`rehyat.distill.stage1` and :mod:`rehyat.distill.stage2` build on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.distributed as dist

METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"
SUMMARY_NAME = "summary.json"
CKPT_DIR = "checkpoints"
LATEST_NAME = "latest"
EXPORT_DIR = "rehyat"


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
# Determinism
# --------------------------------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs and machines): the key of every data-sampling generator."""
    h = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def generator(*parts: int, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derived_seed(*parts))
    return g


def rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


# --------------------------------------------------------------------------------------------------------------------
# Distributed (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT)
# --------------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group if there is one (gloo on CPU, nccl on CUDA) and pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(dev)
    here = False
    if world > 1 and not (dist.is_available() and dist.is_initialized()):
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        here = True
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, world, local, dev, here)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown_distributed(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean_(tensors: list[torch.Tensor], info: DistInfo) -> None:
    """In-place mean over ranks of a list of tensors (one flat buffer, one collective)."""
    if not info.enabled or not tensors:
        return
    flat = torch.cat([t.reshape(-1).to(torch.float32) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world_size
    off = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[off:off + n].view_as(t).to(t.dtype))
        off += n


def broadcast_object(obj, info: DistInfo):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# --------------------------------------------------------------------------------------------------------------------
# Optimiser + schedule
# --------------------------------------------------------------------------------------------------------------------

def lr_lambda(schedule: str, warmup: int, total: int, min_ratio: float):
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "cosine":
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        if schedule == "linear":
            return min_ratio + (1 - min_ratio) * (1 - progress)
        raise ValueError(f"unknown lr schedule {schedule!r} (constant, cosine, linear)")

    return f


def make_optimizer(params, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: no parameter requires grad")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)


# --------------------------------------------------------------------------------------------------------------------
# Atomic files, resumable checkpoints
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


def atomic_torch_save(obj, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


class CheckpointManager:
    """``OUT/checkpoints/step_XXXXXXXX/`` = ``state.pt`` (rank 0: trainable tensors, optimiser, schedule, step,
    config hash) + ``rng_rank{r}.pt`` (every rank).  A checkpoint folder is built under a temporary name and renamed
    into place only when every rank has written its part, then ``checkpoints/latest`` (a one-line text file) is
    replaced atomically.  A kill at any moment therefore leaves the previous checkpoint intact and selected."""

    def __init__(self, out_dir: Path, info: DistInfo, keep: int = 2):
        self.root = Path(out_dir) / CKPT_DIR
        self.info, self.keep = info, max(1, keep)

    def _name(self, step: int) -> str:
        return f"step_{step:08d}"

    def save(self, step: int, state: dict, rng: dict) -> Path:
        tmp = self.root / (self._name(step) + ".partial")
        final = self.root / self._name(step)
        if self.info.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        barrier(self.info)
        atomic_torch_save(rng, tmp / f"rng_rank{self.info.rank}.pt")
        if self.info.is_main:
            atomic_torch_save(state, tmp / "state.pt")
        barrier(self.info)
        if self.info.is_main:
            (tmp / "world_size").write_text(f"{self.info.world_size}\n")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            atomic_write_bytes(self.root / LATEST_NAME, (final.name + "\n").encode())
            self._prune()
        barrier(self.info)
        return final

    def _prune(self) -> None:
        done = sorted(p for p in self.root.glob("step_*") if p.is_dir() and not p.name.endswith(".partial"))
        for p in done[: -self.keep]:
            shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob("*.partial"):
            shutil.rmtree(p, ignore_errors=True)

    def latest(self) -> Path | None:
        ptr = self.root / LATEST_NAME
        if ptr.is_file():
            p = self.root / ptr.read_text().strip()
            if (p / "state.pt").is_file():
                return p
        done = sorted(p for p in self.root.glob("step_*") if (p / "state.pt").is_file() and p.suffix != ".partial")
        return done[-1] if done else None

    def load(self, path: Path, map_location="cpu") -> tuple[dict, dict | None]:
        state = torch.load(path / "state.pt", map_location=map_location, weights_only=False)
        rng_file = path / f"rng_rank{self.info.rank}.pt"
        rng = torch.load(rng_file, weights_only=False) if rng_file.is_file() else None
        return state, rng

    def save_training(self, step: int, model, opt, sched, config_hash: str) -> Path:
        """Trainable tensors, optimiser, schedule and every rank's RNG at ``step`` (both stages use this)."""
        return self.save(step, {"step": step, "trainable": trainable_state(model), "optimizer": opt.state_dict(),
                                "scheduler": sched.state_dict(), "config_hash": config_hash,
                                "world_size": self.info.world_size}, rng_state())

    def resume_training(self, model, opt, sched, config_hash: str) -> int | None:
        """Restore the latest checkpoint written by :meth:`save_training`; returns its step (``None``: none found).

        Refuses a checkpoint of another configuration or another world size (the data split depends on it)."""
        latest = self.latest()
        if latest is None:
            return None
        state, rng = self.load(latest)
        if state["config_hash"] != config_hash:
            raise ValueError(f"{latest} was written with a different configuration ({state['config_hash']} != "
                             f"{config_hash}); use a new --out or --no-resume")
        if state["world_size"] != self.info.world_size:
            raise ValueError(f"{latest} was written by {state['world_size']} ranks, this run has "
                             f"{self.info.world_size} (the data split depends on it)")
        load_trainable_state(model, state["trainable"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if rng is not None:
            set_rng_state(rng)
        return int(state["step"])


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.named_parameters() if v.requires_grad}


def load_trainable_state(model, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    want = {k for k, v in params.items() if v.requires_grad}
    if set(state) != want:
        raise ValueError(f"checkpoint trainable tensors do not match the model: missing {sorted(want - set(state))[:4]}"
                         f", unexpected {sorted(set(state) - want)[:4]}")
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)


# --------------------------------------------------------------------------------------------------------------------
# Metrics (JSONL, rank 0) and progress
# --------------------------------------------------------------------------------------------------------------------

class MetricsWriter:
    """Append-only ``OUT/metrics.jsonl``; on resume, lines of steps after the checkpoint are dropped first so the
    file of a resumed run equals the one of an uninterrupted run (timings aside)."""

    def __init__(self, out_dir: Path, info: DistInfo, resume_step: int | None = None):
        self.path = Path(out_dir) / METRICS_NAME
        self.enabled = info.is_main
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

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True,
                file=sys.stderr, mininterval=0.5)


def versions() -> dict:
    import diffusers

    out = {"python": sys.version.split()[0], "torch": torch.__version__, "diffusers": diffusers.__version__}
    try:
        import peft

        out["peft"] = peft.__version__
    except Exception:  # pragma: no cover - peft is a declared dependency
        pass
    return out


@contextmanager
def maybe_autocast(device: torch.device, mixed_precision: str):
    """bf16/fp16 autocast on CUDA when asked (``auto`` = bf16 on CUDA, none on CPU)."""
    mp = mixed_precision
    if mp == "auto":
        mp = "bf16" if device.type == "cuda" else "no"
    if mp == "no":
        yield
        return
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[mp]
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


class SimulatedKill(RuntimeError):
    """Raised by the test hook ``fail_at_step`` in the middle of a step to emulate a kill (no cleanup runs)."""
