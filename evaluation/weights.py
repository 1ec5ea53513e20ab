"""Weights preflight: check every artifact a dimension needs *before* running it, never download anything.

Roots: ``$VBENCH_CACHE_DIR`` (default ``~/.cache/vbench``), ``$VBENCH2_CACHE_DIR`` (``~/.cache/vbench2``) and
``$TORCH_HOME`` (``~/.cache/torch``; torch.hub checkpoints and hub repos live under ``hub/``).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
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


_HF = re.compile(r"https://huggingface\.co/(?P<space>spaces/)?(?P<repo>[^/\s]+/[^/\s]+)/resolve/(?P<rev>[^/\s]+)/"
                 r"(?P<file>\S+)")
_HF_CACHE = re.compile(r"hub/models--(?P<repo>.+)$")


def fetch_hint(art: Artifact, path: Path) -> str:
    """How a user gets ``art`` to ``path`` on a machine that can reach its source: an ``hf download`` command for
    Hugging Face files (huggingface_hub's CLI is ``hf``), else the URL to download from."""
    m = _HF.match(art.url)
    if m:
        rev = "" if m["rev"] == "main" else f" --revision {m['rev']}"
        kind = " --repo-type space" if m["space"] else ""
        return f"hf download {m['repo']} {m['file']}{kind}{rev} --local-dir {path.parent}"
    if art.kind == "dir" and art.url.startswith("https://github.com/"):
        return f"git clone {art.url.split()[0]} {path}"
    m = _HF_CACHE.match(art.path) if art.root == "HF_HOME" else None
    if m:
        return f"HF_HOME={path.parent.parent} hf download {m['repo'].replace('--', '/')}"
    return f"download {art.url} to {path}"


def describe_missing(dim: Dimension, missing: list[tuple[Artifact, Path]], env: dict | None = None) -> str:
    parts = []
    for art, path in missing:
        sha = f", sha256 {art.sha256}" if art.sha256 else ""
        what = f" ({art.description})" if art.description else ""
        parts.append(f"{art.path}{what} expected at {path} [${art.root}={root_dir(art.root, env)}]; "
                     f"upstream {art.url}{sha}; elsewhere: {fetch_hint(art, path)}")
    return (f"{dim.name}: missing {len(missing)} file(s): " + " | ".join(parts)
            + ". Downloads are disabled in this harness - copy the file(s) to the expected path(s).")


def preflight(dim: Dimension, *, env: dict | None = None, hash_cache: HashCache | None = None,
              verify_hashes: bool = True, python: str | None = None) -> Preflight:
    """Check ``dim``'s artifacts, then its python modules / version requirements in the interpreter that will run
    the upstream code (``python``: an external executable, as given by ``--vbench-python``; None: this one)."""
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
    problems = environment_problems(dim.python_modules, dim.python_requirements, python)
    if problems:
        where = f"the interpreter {python}" if python else "this environment"
        return Preflight(dim.name, False, "error",
                         f"{dim.name}: {'; '.join(problems)} in {where} (bash scripts/install.sh --vbench installs "
                         "what the registry has; see docs/evaluation.md, 'Installing the upstream evaluators')",
                         [], hashes, paths)
    return Preflight(dim.name, True, None, None, [], hashes, paths)


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# Run by an external interpreter (stdlib + whichever `packaging` it has): [missing modules, unmet requirements].
_PROBE = r"""
import importlib.metadata as md, importlib.util, json, sys
mods, reqs = json.loads(sys.argv[1])
def have(m):
    try:
        return importlib.util.find_spec(m) is not None
    except (ImportError, ValueError):
        return False
bad = []
if reqs:
    try:
        from packaging.requirements import Requirement
    except ImportError:
        try:
            from pip._vendor.packaging.requirements import Requirement
        except ImportError:
            Requirement = None
    for r in reqs:
        if Requirement is None:
            bad.append([r, "unknown: neither packaging nor pip is importable there"])
            continue
        req = Requirement(r)
        try:
            v = md.version(req.name)
        except md.PackageNotFoundError:
            v = None
        if v is None or not req.specifier.contains(v, prereleases=True):
            bad.append([r, v])
print(json.dumps([[m for m in mods if not have(m)], bad]))
"""
_ENV_CACHE: dict[tuple, tuple[list, list]] = {}


def environment_problems(modules, requirements, python: str | None = None) -> list[str]:
    """Why the upstream code path cannot import in that interpreter: missing modules and unmet version requirements
    (one sentence each; empty when fine).  An external interpreter is probed once per (python, modules, reqs)."""
    modules, requirements = tuple(modules), tuple(requirements)
    if not modules and not requirements:
        return []
    key = (python, modules, requirements)
    if python is None or key not in _ENV_CACHE:
        if python:
            import subprocess

            try:
                proc = subprocess.run([python, "-c", _PROBE, json.dumps([modules, requirements])],
                                      capture_output=True, text=True, timeout=120)
                _ENV_CACHE[key] = tuple(json.loads(proc.stdout.strip().splitlines()[-1]))
            except (OSError, subprocess.SubprocessError) as exc:
                return [f"cannot run the interpreter ({type(exc).__name__}: {exc})"]
            except (ValueError, IndexError):
                tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
                return [f"cannot probe the interpreter (exit {proc.returncode}: {tail})"]
        else:
            from importlib.metadata import PackageNotFoundError, version

            from packaging.requirements import Requirement

            bad = []
            for r in requirements:
                req = Requirement(r)
                try:
                    v = version(req.name)
                except PackageNotFoundError:
                    v = None
                if v is None or not req.specifier.contains(v, prereleases=True):
                    bad.append([r, v])
            _ENV_CACHE[key] = ([m for m in modules if not _module_available(m)], bad)
    missing, unmet = _ENV_CACHE[key]
    out = []
    if missing:
        out.append(f"python module(s) {missing} not importable")
    for req, have in unmet:
        out.append(f"needs {req} (installed: {have or 'none'})")
    return out
