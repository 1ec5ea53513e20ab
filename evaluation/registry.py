"""Registries of suites and their dimensions.

A suite is a :class:`Suite` subclass registered with :func:`register_suite`; its dimensions are :class:`Dimension`
objects listed on the suite (so adding a dimension or a suite touches one file).  Suite modules are discovered
automatically: every module in ``evaluation/suites/`` and every top-level ``evaluation/efficiency*`` module or package is
imported by :func:`discover`, and registers itself at import time.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from evaluation.context import RunContext

# Roots that artifact paths are relative to, with their default location (resolved in evaluation.weights).
ROOTS = {
    "VBENCH_CACHE_DIR": "~/.cache/vbench",
    "VBENCH2_CACHE_DIR": "~/.cache/vbench2",
    "TORCH_HOME": "~/.cache/torch",
    "HF_HOME": "~/.cache/huggingface",
}


@dataclass(frozen=True)
class Artifact:
    """One file (or folder) a dimension needs, relative to an environment-variable root (see ``ROOTS``)."""

    path: str
    url: str
    description: str = ""
    root: str = "VBENCH_CACHE_DIR"
    sha256: str | None = None
    kind: str = "file"  # "file" or "dir"

    def __post_init__(self):
        if self.root not in ROOTS:
            raise ValueError(f"unknown artifact root {self.root!r}")
        if self.kind not in ("file", "dir"):
            raise ValueError(f"unknown artifact kind {self.kind!r}")


@dataclass(frozen=True)
class Dimension:
    name: str
    suite: str
    description: str = ""
    category: str | None = None  # VBench: quality/semantic; VBench-2.0: its category
    artifacts: tuple[Artifact, ...] = ()
    python_modules: tuple[str, ...] = ()  # importable modules the upstream code path needs (checked in preflight)
    needs_gpu: bool = False  # upstream code hard-codes CUDA
    gpu_mem_gb: float | None = None
    custom_input: bool = True  # allowed on arbitrary videos (no auxiliary_info needed)
    offline_capable: bool = False  # runs here without any user-supplied file
    aggregation: str = "set"  # "video_mean": official aggregate == mean of per-video scores (resumable per video)
    min_frames: int = 2
    extras: dict[str, Any] = field(default_factory=dict)
    # Upstream-evaluator dimensions: how this dimension has been run end to end without its real checkpoints
    # (``exercised``: on random-initialised networks, by which test) or why it never runs here (``not_exercised``).
    # Shown by ``--list``; scores from random networks are pipeline checks, never quality numbers.
    exercised: str | None = None
    not_exercised: str | None = None
    # version requirements ("transformers<4.50") of the interpreter that runs the upstream code (checked in preflight)
    python_requirements: tuple[str, ...] = ()
    min_side: int = 0  # smallest frame side (px) the upstream network gives finite results for (0: no limit)


class UsageError(Exception):
    """Bad or missing command-line options for a suite (the CLI exits with status 2)."""


@dataclass
class DimensionOutcome:
    """What happened to one dimension in one run (for the summary table and the exit code)."""

    suite: str
    model: str
    dimension: str
    status: str
    score: float | None = None
    message: str | None = None
    n_videos: int = 0
    n_errors: int = 0
    missing: list = field(default_factory=list)  # missing artifacts ("$ROOT/path") for missing_weights

    def short_note(self, limit: int = 200) -> str:
        if self.status == "missing_weights" and self.missing:
            note = "needs " + ", ".join(self.missing)
        else:
            note = self.message or ""
        return note if len(note) <= limit else note[: limit - 1] + "…"


class Suite:
    """Base class.  Subclasses set ``name``, ``description``, ``dimensions`` and implement :meth:`run`."""

    name: str = ""
    description: str = ""
    dimensions: dict[str, Dimension] = {}
    default_dimensions: tuple[str, ...] | None = None  # None: all

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:  # pragma: no cover - optional hook
        """Add suite-specific CLI options (prefix them with the suite name to avoid clashes)."""

    def resolve_dimensions(self, requested: list[str] | None) -> tuple[list[str], bool]:
        """(dimension list, explicit?) — unknown names raise ``KeyError`` with the valid choices."""
        if not requested:
            return list(self.default_dimensions or self.dimensions), False
        unknown = [d for d in requested if d not in self.dimensions]
        if unknown:
            raise KeyError(f"suite {self.name!r} has no dimension(s) {unknown}; choices: {sorted(self.dimensions)}")
        return list(dict.fromkeys(requested)), True

    def run(self, ctx: "RunContext", dimensions: list[str]) -> list[DimensionOutcome]:  # pragma: no cover
        raise NotImplementedError


SUITES: dict[str, Suite] = {}


def register_suite(cls_or_obj):
    """Class decorator (or call with an instance) adding a suite to :data:`SUITES`."""
    obj = cls_or_obj() if isinstance(cls_or_obj, type) else cls_or_obj
    if not obj.name:
        raise ValueError("suite without a name")
    for dname, dim in obj.dimensions.items():
        if dname != dim.name:
            raise ValueError(f"suite {obj.name}: key {dname!r} != dimension name {dim.name!r}")
    prev = SUITES.get(obj.name)
    if prev is not None and (type(prev).__module__, type(prev).__qualname__) != (type(obj).__module__,
                                                                                 type(obj).__qualname__):
        raise ValueError(f"suite {obj.name!r} is already registered (by {type(prev).__qualname__})")
    SUITES[obj.name] = obj
    return cls_or_obj


_DISCOVERED = False
DISCOVERY_ERRORS: dict[str, str] = {}  # module -> error, for suite modules that failed to import


def _import_suite_module(name: str) -> None:
    try:
        importlib.import_module(name)
    except Exception as exc:  # one broken suite module must not take the other suites down
        DISCOVERY_ERRORS[name] = f"{type(exc).__name__}: {exc}"


def discover() -> dict[str, Suite]:
    """Import every suite module once (``evaluation.suites.*`` and ``evaluation.efficiency*``).

    A module that fails to import is reported in :data:`DISCOVERY_ERRORS` (the CLI prints it) instead of raising.
    """
    global _DISCOVERED
    if _DISCOVERED:
        return SUITES
    import evaluation
    import evaluation.suites as suites_pkg

    for mod in sorted(pkgutil.iter_modules(suites_pkg.__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            _import_suite_module(f"evaluation.suites.{mod.name}")
    for mod in sorted(pkgutil.iter_modules(evaluation.__path__), key=lambda m: m.name):
        if mod.name.startswith("efficiency"):
            _import_suite_module(f"evaluation.{mod.name}")
    _DISCOVERED = True
    return SUITES


def get_suite(name: str) -> Suite:
    discover()
    if name not in SUITES:
        broken = "".join(f"; {m} failed to import: {e}" for m, e in DISCOVERY_ERRORS.items())
        raise KeyError(f"unknown suite {name!r}; registered: {sorted(SUITES)}{broken}")
    return SUITES[name]
