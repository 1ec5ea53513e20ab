"""How the efficiency suite measures: wall time, peak memory, counted FLOPs, out-of-memory, and the machine.

* **Wall time**: the callable runs once untimed (the instrumented warm-up, below), then ``repeats`` timed runs,
  interleaved round-robin across the kinds of a point so background load hits them alike.  CPU: ``time.perf_counter``
  around the call; CUDA: a pair of CUDA events around the call, read after ``torch.cuda.synchronize()``.  Stored:
  the median (``latency_ms``), ``latency_spread_ms`` = half the range (max - min) / 2 of the repeats, and every sample.
* **Peak memory** = working memory: the highest number of bytes the call allocates *beyond the caller-owned inputs
  (and, for the model and block levels, the weights) and excluding the output it returns*; the output's bytes are
  stored next to it (``details.output_bytes``).  The recurrent harnesses write into a caller-owned output buffer, so
  both forms measure the same thing.

  - CUDA: ``torch.cuda.reset_peak_memory_stats()``, then ``max_memory_allocated() - memory_allocated()`` (before the
    call), minus the output's bytes.
  - CPU (Linux): the process's resident-set high-water mark.  PyTorch's CPU allocator does not cache, and glibc is told
    (``mallopt(M_MMAP_THRESHOLD, 64 KiB)``, ``M_TRIM_THRESHOLD``) to serve every block over 64 KiB by ``mmap`` and to
    return it to the system on free, so the RSS follows the live tensors.  Before the call, writing ``5`` to
    ``/proc/self/clear_refs`` resets ``VmHWM`` to the current RSS; after it, ``VmHWM - VmRSS(before)`` is the peak.
    Blocks under 64 KiB and thread-stack pages touched for the first time are included (noise of well under 1 MiB;
    the warm-up run touches the thread stacks first).  Where ``clear_refs`` is not writable the memory records are
    ``skipped`` with the reason.
* **Counted FLOPs**: :func:`rehyat.cost.count_flops` (``FlopCounterMode``, CPU fused attention registered) on the same
  warm-up run that measures memory (counting does not allocate tensors), so counting costs no extra run.
* **Out of memory** (``torch.OutOfMemoryError``, CPU allocator failures) is caught and returned as a result
  (``oom=True``); any other exception is returned as an error with its message.  Nothing is retried or extrapolated.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

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
def _proc_status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


_MALLOC_TUNED: bool | None = None


def _tune_malloc() -> bool:
    """Make glibc return every block over 64 KiB to the system on free (see the module docstring)."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED is None:
        try:
            libc = ctypes.CDLL("libc.so.6")
            m_trim_threshold, m_mmap_threshold = -1, -3
            _MALLOC_TUNED = bool(libc.mallopt(m_mmap_threshold, 64 * 1024)) and bool(
                libc.mallopt(m_trim_threshold, 128 * 1024))
        except OSError:
            _MALLOC_TUNED = False
    return _MALLOC_TUNED


class MemoryMeter:
    """Peak bytes a call allocates, on ``device`` (see the module docstring for the method)."""

    def __init__(self, device: str):
        self.device = device
        self.reason: str | None = None
        if device.startswith("cuda"):
            self.method = "torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus memory_allocated() " \
                          "before the call, minus the returned output"
            return
        self.method = ("CPU RSS high-water: VmHWM (reset via /proc/self/clear_refs) minus VmRSS before the call, "
                       "glibc mmap threshold 64 KiB, minus the returned output")
        if platform.system() != "Linux":
            self.reason = "CPU peak memory needs Linux /proc (VmHWM, clear_refs)"
        elif not _tune_malloc():
            self.reason = "could not set glibc's mmap threshold (mallopt), so RSS would not follow freed tensors"
        else:
            try:
                self._reset()
                _proc_status("VmHWM:")
            except (OSError, KeyError) as exc:
                self.reason = f"/proc/self/clear_refs or VmHWM unavailable: {exc}"

    @property
    def available(self) -> bool:
        return self.reason is None

    @staticmethod
    def _reset() -> None:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")

    @contextlib.contextmanager
    def measure(self):
        """``with meter.measure() as m: ...``; afterwards ``m["peak"]`` holds the peak bytes (``None`` if unavailable)."""
        box: dict = {"peak": None}
        if not self.available:
            yield box
            return
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            yield box
            torch.cuda.synchronize()
            box["peak"] = torch.cuda.max_memory_allocated() - base
        else:
            base = _proc_status("VmRSS:")
            self._reset()
            yield box
            box["peak"] = max(_proc_status("VmHWM:") - base, 0)


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
    """The untimed warm-up run: counted FLOPs, peak working memory, output bytes, wall time (counting included)."""

    ok: bool
    flops_counted: int | None = None
    peak_bytes: int | None = None
    peak_incl_output_bytes: int | None = None
    output_bytes: int = 0
    seconds: float = 0.0
    oom: bool = False
    error: str | None = None


def instrumented_run(fn: Callable[[], object], device: str, meter: MemoryMeter, count: bool) -> InstrumentedRun:
    from rehyat.cost import count_flops

    try:
        synchronize(device)
        t0 = time.perf_counter()
        holder: dict = {}

        def call():
            holder["out"] = fn()

        with meter.measure() as mem:
            if count:
                flops = count_flops(call)
            else:
                call()
                flops = None
            synchronize(device)
        dt = time.perf_counter() - t0
        out_bytes = tensor_bytes(holder.pop("out", None))
        peak = mem["peak"]
        return InstrumentedRun(True, flops, None if peak is None else max(peak - out_bytes, 0), peak, out_bytes, dt)
    except Exception as exc:  # noqa: BLE001 -- recorded as a result, never a crash
        holder = None
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        return InstrumentedRun(False, oom=is_oom(exc), error=f"{type(exc).__name__}: {str(exc)[:400]}")


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
