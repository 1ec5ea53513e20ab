"""Peak-memory measurement of a callable, on CPU and GPU.

Three methods, each measuring the peak *increase* over what was allocated when the region started:

* ``"tensors"`` (:class:`LiveTensorTracker`): a ``TorchDispatchMode`` that accounts every storage created by an op
  inside the region (deduplicated by storage; views of pre-existing tensors such as weights and inputs are not
  counted) and frees it when the last tensor using it dies.  Deterministic, any device; it does not see scratch
  buffers *inside* a single kernel (e.g. a fused attention kernel's workspace).
* ``"rss"``: the process's resident-set high-water mark (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``)
  minus the RSS at the start.  Sees everything, but includes allocator slack; accurate only when glibc returns large
  blocks to the OS, i.e. with ``MALLOC_MMAP_THRESHOLD_=65536`` in the environment at process start (the benchmark
  re-executes itself with it).
* ``"cuda"``: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (minus the allocation at start).
"""

from __future__ import annotations

import gc
import os
import re
import weakref
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveTensorTracker(TorchDispatchMode):
    """Peak bytes of tensor storages allocated while the mode is active (see module docstring)."""

    def __init__(self):
        super().__init__()
        self._live: dict[tuple, list[int]] = {}  # storage key -> [nbytes, live tensor refs]
        self.current = 0
        self.peak = 0

    @staticmethod
    def _key(t: torch.Tensor):
        st = t.untyped_storage()
        return (t.device.type, t.device.index, st.data_ptr()), st.nbytes()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {self._key(t)[0] for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)
                  and t.device.type != "meta"}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self._track(t, inputs)
        return out

    def _track(self, t: torch.Tensor, inputs: set) -> None:
        key, nbytes = self._key(t)
        if key[2] == 0 or nbytes == 0:
            return
        ent = self._live.get(key)
        if ent is None:
            if key in inputs:  # a view / in-place result of memory that existed before the region
                return
            ent = self._live[key] = [nbytes, 0]
            self.current += nbytes
            self.peak = max(self.peak, self.current)
        ent[1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key) -> None:
        ent = self._live.get(key)
        if ent is None:
            return
        ent[1] -= 1
        if ent[1] <= 0:
            self.current -= ent[0]
            del self._live[key]


def _proc_status(field: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) * 1024


def rss_supported() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _proc_status("VmHWM")
        return True
    except OSError:
        return False


def measure_peak(fn: Callable[[], Any], method: str = "tensors", device: str | torch.device | None = None
                 ) -> tuple[Any, int]:
    """Run ``fn()``; return ``(result, peak bytes above the start)``, ``method`` = ``tensors`` | ``rss`` | ``cuda``."""
    gc.collect()
    if method == "tensors":
        tracker = LiveTensorTracker()
        with tracker:
            result = fn()
        return result, tracker.peak
    if method == "rss":
        if not rss_supported():
            raise RuntimeError("RSS high-water mark cannot be reset here (/proc/self/clear_refs not writable)")
        base = _proc_status("VmRSS")
        result = fn()
        return result, max(_proc_status("VmHWM") - base, 0)
    if method == "cuda":
        dev = torch.device(device or "cuda")
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        result = fn()
        torch.cuda.synchronize(dev)
        return result, torch.cuda.max_memory_allocated(dev) - base
    raise ValueError(f"unknown method {method!r}")


def mmap_threshold_set() -> bool:
    return "MALLOC_MMAP_THRESHOLD_" in os.environ
