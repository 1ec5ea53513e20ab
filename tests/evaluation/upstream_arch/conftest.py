"""Fixtures of the ``upstream_arch`` tests: random-initialised checkpoints of the real networks (built once per session,
lazily, into temporary VBENCH_CACHE_DIR / VBENCH2_CACHE_DIR / TORCH_HOME / HF_HOME folders) and the environment that
points the harness and upstream at them.  Helpers: upstream_fixtures.py; the networks: upstream_nets.py.

Scores computed here are pipeline checks of random networks; they are never quality numbers and never reach a report.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from upstream_fixtures import ArchCache  # noqa: E402


@pytest.fixture(scope="session")
def arch_cache(tmp_path_factory) -> ArchCache:
    return ArchCache(tmp_path_factory.mktemp("upstream_arch_caches"))


@pytest.fixture
def upstream_env(arch_cache, empty_caches, monkeypatch) -> ArchCache:
    """Point every checkpoint root at the session's random-init caches (after conftest's empty ones) and make the
    already-imported vbench/vbench2 modules agree (they read the variables once, at import)."""
    for var, path in arch_cache.roots.items():
        monkeypatch.setenv(var, str(path))
    for name, mod in list(sys.modules.items()):
        if name.split(".")[0] in ("vbench", "vbench2") and isinstance(getattr(mod, "CACHE_DIR", None), str):
            root = arch_cache.roots["VBENCH2_CACHE_DIR" if name.startswith("vbench2") else "VBENCH_CACHE_DIR"]
            monkeypatch.setattr(mod, "CACHE_DIR", str(root))
    tok = sys.modules.get("vbench.third_party.ViCLIP.simple_tokenizer")
    if tok is not None:  # its default vocabulary path was computed from CACHE_DIR at import
        monkeypatch.setattr(tok.SimpleTokenizer.__init__, "__defaults__",
                            (str(arch_cache.vb / "ViCLIP" / "bpe_simple_vocab_16e6.txt.gz"),))
    return arch_cache


