"""How the efficiency suite measures: wall time, peak memory, counted FLOPs, out-of-memory, and the machine.

* **Runs**: per (kind, point) one untimed *instrumented* run -- the first call at the point's shape, the warm-up --
  that counts FLOPs and measures peak memory at once, then ``repeats`` timed runs interleaved round-robin across the
  kinds of the point, so background load hits them alike.
* **Wall time**: CPU ``time.perf_counter`` around the call; CUDA a pair of CUDA events around the call, read after
  ``torch.cuda.synchronize()``.  Stored: the median (``latency_ms``), ``latency_spread_ms`` = half the range
  ((max - min) / 2) of the repeats, and every sample.
* **Peak memory** = working memory: the most bytes the call holds *beyond the caller-owned tensors (inputs, weights,
  caller-owned output buffers) and excluding the output it returns* (stored next to it, ``details.output_bytes``).
  The recurrent harnesses write into a caller-owned output buffer, so both forms measure the same thing.

  - CUDA: ``torch.cuda.reset_peak_memory_stats()``, then ``max_memory_allocated() - memory_allocated()`` (before the
    call), minus the output's bytes (includes kernel workspaces and allocator rounding).
  - CPU: :class:`LiveTensorBytes`, a ``TorchDispatchMode`` that adds up the storages the call's ops create and
    subtracts them when their last tensor dies -- exact at tensor level, deterministic, independent of glibc, cheap.
    Buffers allocated *inside* a kernel are not seen (e.g. the CPU flash-attention kernel's working buffers and the
    copies it makes of non-contiguous q/k/v windows; at 480x832, 17 frames this is ~1.3 MiB for SDPA and ~8 MiB for a
    chunked kind).  Rejected alternatives: the process RSS (``VmHWM`` reset via ``/proc/self/clear_refs``): glibc heap
    reuse and first-touch of pages moved it by MiBs; ``torch.profiler``'s memory timeline sees kernel buffers but needs
    ``with_stack=True`` and costs 10-40x the op's run time.
* **Counted FLOPs**: :func:`rehyat.cost.count_flops` (``FlopCounterMode``, CPU fused attention registered) on the
  instrumented run, so counting costs no extra run.
* **Out of memory** (``torch.OutOfMemoryError``, CPU allocator failures) is caught and returned as a result
  (``oom=True``); any other exception is returned as an error with its message.  Nothing is retried or extrapolated.
"""
from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "defaultcpuallocator")


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in OOM_MARKERS)


def tensor_bytes(obj) -> int:
    """Bytes of the tensors in ``obj`` (a tensor, a tuple/list/dict of them, or a diffusers output)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(tensor_bytes(o) for o in obj.values())
    if hasattr(obj, "to_tuple"):
        return tensor_bytes(obj.to_tuple())
    return 0


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------ memory
class LiveTensorBytes(TorchDispatchMode):
    """Tensor-level allocation tracker: the peak of the bytes of the storages created by the ops run under it.

    Every op output whose storage was not seen before and is not one of the caller's (a storage first met as an
    *input* -- inputs, weights, caller-owned buffers, and views of them) is counted when it appears and released when
    the last tensor object on it is freed (``weakref.finalize``; PyTorch keeps a tensor's Python object alive while
    C++ holds the tensor, so the release is not early).  Exact for everything allocated through the dispatcher,
    independent of the C allocator; buffers a kernel allocates internally (e.g. the per-thread tiles of the CPU
    flash-attention kernel) are not seen.
    """

    def __init__(self):
        super().__init__()
        self.refs: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.external: set[int] = set()
        self.current = 0
        self.peak = 0

    def _release(self, ptr: int) -> None:
        n = self.refs.get(ptr, 0) - 1
        if n <= 0:
            self.refs.pop(ptr, None)
            self.current -= self.sizes.pop(ptr, 0)
        else:
            self.refs[ptr] = n

    @staticmethod
    def _storage(t):
        try:
            st = t.untyped_storage()
            return st.data_ptr(), st.nbytes()
        except (RuntimeError, NotImplementedError):
            return 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for t in tree_leaves((args, kwargs)):
            if isinstance(t, torch.Tensor):
                ptr, _ = self._storage(t)
                if ptr and ptr not in self.refs:
                    self.external.add(ptr)
        out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                ptr, nbytes = self._storage(t)
                if not ptr or ptr in self.external:
                    continue
                if ptr not in self.refs:
                    self.refs[ptr] = 0
                    self.sizes[ptr] = nbytes
                    self.current += nbytes
                    self.peak = max(self.peak, self.current)
                self.refs[ptr] += 1
                weakref.finalize(t, self._release, ptr)
        return out


class MemoryMeter:
    """Peak bytes a call allocates beyond the caller's tensors, on ``device`` (see the module docstring)."""

    def __init__(self, device: str):
        self.device = device
        self.reason: str | None = None
        if device.startswith("cuda"):
            self.method = ("torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus "
                           "memory_allocated() before the call, minus the returned output")
        else:
            self.method = ("tensor-level live bytes (TorchDispatchMode tracking every storage the call's ops create, "
                           "released via weakref.finalize), caller-owned tensors excluded, minus the returned output; "
                           "buffers allocated inside a kernel are not seen")

    @property
    def available(self) -> bool:
        return self.reason is None

    @contextlib.contextmanager
    def measure(self):
        """``with meter.measure() as m: ...``; afterwards ``m["peak"]`` holds the peak bytes."""
        box: dict = {"peak": None}
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            yield box
            torch.cuda.synchronize()
            box["peak"] = torch.cuda.max_memory_allocated() - base
        else:
            tracker = LiveTensorBytes()
            with tracker:
                yield box
            box["peak"] = tracker.peak


# ------------------------------------------------------------------------------------------------ timing
def time_call(fn: Callable[[], object], device: str) -> float:
    """Seconds of one call (CUDA events on GPU, perf_counter on CPU).  The result is dropped before returning."""
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        out = fn()
        end.record()
        torch.cuda.synchronize()
        del out
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    del out
    return dt


@dataclass
class InstrumentedRun:
    """The untimed warm-up run of a (kind, point): counted FLOPs, peak memory, output bytes."""

    ok: bool
    flops_counted: int | None = None
    peak_bytes: int | None = None
    peak_incl_output_bytes: int | None = None
    output_bytes: int = 0
    seconds: float = 0.0  # wall time of the untimed run (counting included)
    oom: bool = False
    error: str | None = None


def instrumented_run(fn: Callable[[], object], device: str, meter: MemoryMeter, count: bool) -> InstrumentedRun:
    """The untimed warm-up run (the first call at the point's shape): counted FLOPs (``FlopCounterMode``, if
    ``count``) and peak memory (``meter``) in the same call -- neither changes what the call allocates."""
    from rehyat.cost import count_flops

    t0 = time.perf_counter()
    holder: dict = {}

    def call():
        holder["out"] = fn()

    try:
        synchronize(device)
        with meter.measure() as mem:
            flops = count_flops(call) if count else call()
            synchronize(device)
        out_bytes = tensor_bytes(holder.pop("out", None))
        peak = mem["peak"]
        return InstrumentedRun(True, flops if count else None, None if peak is None else max(peak - out_bytes, 0),
                               peak, out_bytes, time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 -- recorded as a result, never a crash
        holder.clear()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        return InstrumentedRun(False, oom=is_oom(exc), error=f"{type(exc).__name__}: {str(exc)[:400]}",
                               seconds=time.perf_counter() - t0)


@dataclass
class Timing:
    samples: list = field(default_factory=list)  # seconds
    oom: bool = False
    error: str | None = None

    @property
    def median_ms(self) -> float:
        return 1000 * statistics.median(self.samples)

    @property
    def spread_ms(self) -> float:
        return 1000 * (max(self.samples) - min(self.samples)) / 2


def timed_rounds(fns: dict, device: str, repeats: int, max_repeats: int, min_time_s: float,
                 deadline: float | None = None) -> dict:
    """Interleaved timing: round r calls every fn once.  At least ``repeats`` rounds; more (up to ``max_repeats``)
    while every fn's total timed time is under ``min_time_s`` and ``deadline`` (perf_counter) is not reached."""
    res = {k: Timing() for k in fns}
    for r in range(max_repeats):
        live = [k for k in fns if res[k].error is None]
        if not live:
            break
        if r >= repeats and (all(sum(res[k].samples) >= min_time_s for k in live)
                             or (deadline is not None and time.perf_counter() > deadline)):
            break
        for k in live:
            try:
                res[k].samples.append(time_call(fns[k], device))
            except Exception as exc:  # noqa: BLE001
                res[k].oom, res[k].error = is_oom(exc), f"{type(exc).__name__}: {str(exc)[:400]}"
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
    return res


# ------------------------------------------------------------------------------------------------ machine
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def available_memory_bytes(device: str) -> int | None:
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info()
        return int(free)
    try:
        return _proc_meminfo("MemAvailable:")
    except (OSError, KeyError):
        return None


def _proc_meminfo(key: str) -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def machine_description(device: str) -> dict:
    info = {
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(), "torch": torch.__version__, "cpu_capability":
            getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)(),
        "load_average": load_average(),
    }
    try:
        info["memory_total_bytes"] = _proc_meminfo("MemTotal:")
    except (OSError, KeyError):
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        info["gpu"] = torch.cuda.get_device_name(idx)
        info["gpu_memory_bytes"] = torch.cuda.get_device_properties(idx).total_memory
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def matmul_rate(device: str, dtype: torch.dtype, size: int = 1024, seconds: float = 0.2) -> float:
    """FLOP/s of a square matmul on this device (a prior for the time predictor before any point was measured)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    time_call(lambda: a @ b, device)
    n, total = 0, 0.0
    while total < seconds and n < 50:
        total += time_call(lambda: a @ b, device)
        n += 1
    return 2 * size**3 * n / total
