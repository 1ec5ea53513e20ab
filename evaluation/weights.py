"""Weights preflight: check every artifact a dimension needs *before* running it, never download anything.

Roots: ``$VBENCH_CACHE_DIR`` (default ``~/.cache/vbench``), ``$VBENCH2_CACHE_DIR`` (``~/.cache/vbench2``) and
``$TORCH_HOME`` (``~/.cache/torch``; torch.hub checkpoints and hub repos live under ``hub/``).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.registry import ROOTS, Artifact, Dimension

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DIFFUSERS_OFFLINE": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "WANDB_MODE": "disabled",
    "DO_NOT_TRACK": "1",
}


def set_offline_env(env: dict | None = None) -> dict:
    """Set the offline variables (in ``os.environ`` by default) without overriding explicit user choices."""
    target = os.environ if env is None else env
    for k, v in OFFLINE_ENV.items():
        target.setdefault(k, v)
    return target


def root_dir(root: str, env: dict | None = None) -> Path:
    env = os.environ if env is None else env
    val = env.get(root)
    if not val:
        if root == "TORCH_HOME" and env.get("XDG_CACHE_HOME"):
            return Path(env["XDG_CACHE_HOME"]) / "torch"
        val = ROOTS[root]
    return Path(os.path.expanduser(val))


def artifact_path(art: Artifact, env: dict | None = None) -> Path:
    return root_dir(art.root, env) / art.path


class HashCache:
    """sha256 of files keyed by (path, size, mtime); persisted as JSON so large checkpoints are hashed once."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else None
        self._data: dict[str, dict] = {}
        if self.path and self.path.exists():
            try:
                self._data = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                self._data = {}

    def sha256(self, file: Path) -> str:
        st = file.stat()
        key = str(file.resolve())
        hit = self._data.get(key)
        if hit and hit["size"] == st.st_size and hit["mtime"] == st.st_mtime:
            return hit["sha256"]
        h = hashlib.sha256()
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
        self._data[key] = {"size": st.st_size, "mtime": st.st_mtime, "sha256": digest}
        if self.path:
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(self._data, indent=1))
            os.replace(tmp, self.path)
        return digest


@dataclass
class Preflight:
    dimension: str
    ok: bool
    status: str | None = None  # None when ok, else "missing_weights" or "error"
    message: str | None = None
    missing: list[dict] = field(default_factory=list)
    checkpoint_hashes: dict[str, str] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)


def describe_missing(dim: Dimension, missing: list[tuple[Artifact, Path]], env: dict | None = None) -> str:
    parts = []
    for art, path in missing:
        sha = f", sha256 {art.sha256}" if art.sha256 else ""
        what = f" ({art.description})" if art.description else ""
        parts.append(f"{art.path}{what} expected at {path} [${art.root}={root_dir(art.root, env)}]; "
                     f"upstream {art.url}{sha}")
    return (f"{dim.name}: missing {len(missing)} file(s): " + " | ".join(parts)
            + ". Downloads are disabled in this harness - copy the file(s) to the expected path(s).")


def preflight(dim: Dimension, *, env: dict | None = None, hash_cache: HashCache | None = None,
              verify_hashes: bool = True) -> Preflight:
    missing: list[tuple[Artifact, Path]] = []
    hashes: dict[str, str] = {}
    paths: dict[str, str] = {}
    bad_hash: list[str] = []
    for art in dim.artifacts:
        p = artifact_path(art, env)
        paths[art.path] = str(p)
        present = p.is_dir() if art.kind == "dir" else p.is_file()
        if not present:
            missing.append((art, p))
            continue
        if art.kind == "file" and hash_cache is not None and verify_hashes:
            digest = hash_cache.sha256(p)
            hashes[art.path] = digest
            if art.sha256 and digest != art.sha256:
                bad_hash.append(f"{p}: sha256 {digest} != expected {art.sha256} ({art.url})")
    if missing:
        return Preflight(dim.name, False, "missing_weights", describe_missing(dim, missing, env),
                         [{"path": a.path, "root": a.root, "expected_path": str(p), "url": a.url, "sha256": a.sha256}
                          for a, p in missing], hashes, paths)
    if bad_hash:
        return Preflight(dim.name, False, "error", f"{dim.name}: checkpoint hash mismatch: " + "; ".join(bad_hash),
                         [], hashes, paths)
    absent_mods = [m for m in dim.python_modules if not _module_available(m)]
    if absent_mods:
        return Preflight(dim.name, False, "error",
                         f"{dim.name}: python module(s) {absent_mods} not importable in this environment "
                         "(see docs/evaluation.md, 'Installing the upstream evaluators')", [], hashes, paths)
    return Preflight(dim.name, True, None, None, [], hashes, paths)


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
