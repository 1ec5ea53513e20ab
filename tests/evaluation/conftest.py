"""Shared fixtures: no network, empty checkpoint caches, tiny videos from the stand-in generator."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class NetworkBlocked(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test (Unix sockets stay allowed)."""
    real_connect = socket.socket.connect

    def guarded(self, address, *a, **k):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise NetworkBlocked(f"test tried to reach the network: {address!r}")
        return real_connect(self, address, *a, **k)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "create_connection",
                        lambda address, *a, **k: (_ for _ in ()).throw(NetworkBlocked(repr(address))))


@pytest.fixture(autouse=True)
def empty_caches(tmp_path_factory, monkeypatch):
    """Point every checkpoint root at an empty folder, so results never depend on the host's caches."""
    base = tmp_path_factory.mktemp("caches")
    roots = {}
    for var in ("VBENCH_CACHE_DIR", "VBENCH2_CACHE_DIR", "TORCH_HOME", "HF_HOME"):
        d = base / var.lower()
        d.mkdir()
        monkeypatch.setenv(var, str(d))
        roots[var] = d
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("REHYAT_VBENCH2_PYTHON", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    return roots


@pytest.fixture
def cache_roots(empty_caches):
    return empty_caches


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    """The test machines share 2 cores among several jobs: oversubscribed torch threads are 10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(before)
