"""Run a preset: for every level, resolution and duration, the analytic cost of every kind, then -- where the time
predictor says the point fits its budget -- one instrumented run per kind (counted FLOPs + peak memory) and
interleaved timed repeats, and the ratios to softmax measured in the same run.  Writes the records (one per kind,
point and dimension; conventions in docs/interfaces.md, ``efficiency``).

Budgets: a (kind, point) is measured only if ``predicted seconds x (1 + repeats) <= point_budget_s`` (``repeats``, else
``min_repeats``; the 1 is the untimed instrumented run) and the sweep's
elapsed time plus that stays within ``total_budget_s``.  Predicted seconds = analytic FLOPs / the FLOP rate measured
for the same kind at the previous point of the level (falling back to the level's rate, at the model level then the
block level's, then a matmul rate measured at start).  A point that does not fit, or whose analytic working-set estimate does
not fit the free memory, is recorded analytic-only: ``flops_analytic`` / ``flops_ratio_vs_softmax`` are ``ok`` and every
measured dimension is ``skipped`` with the reason -- never an extrapolated number.
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from rehyat.cost import VideoShape

from .measure import (InstrumentedRun, MemoryMeter, available_memory_bytes, instrumented_run, is_oom, load_average,
                      matmul_rate, timed_rounds)
from .presets import KindConfig, LevelSweep, Preset
from .workloads import DTYPES, WORKLOADS, Workload

SUITE = "efficiency"
DIMENSIONS = ("flops_analytic", "flops_counted", "latency_ms", "peak_mem_bytes", "speedup_vs_softmax",
              "flops_ratio_vs_softmax")
MEASURED_DIMS = ("flops_counted", "latency_ms", "peak_mem_bytes", "speedup_vs_softmax")
SOFTMAX = KindConfig("softmax")


class RatePredictor:
    """FLOP/s per (level, kind label, resolution) from measured points; predicts seconds of a call.

    Fallbacks: the same kind at the level, any kind at the level, then (model level only) the block level's rates --
    a model is a stack of blocks -- then the matmul rate measured at start.  Op-level rates never stand in for a
    block: a block is dominated by its GEMMs, while e.g. the linear op is memory-bound."""

    FALLBACK_LEVEL = {"model": "block"}

    def __init__(self, prior_rate: float):
        self.prior = prior_rate
        self.rates: dict[tuple, float] = {}

    def update(self, level: str, label: str, res: tuple, flops: int, seconds: float) -> None:
        if seconds > 0 and flops > 0:
            r = flops / seconds
            for key in ((level, label, res), (level, label), (level,)):
                self.rates[key] = r

    def _keys(self, level: str, label: str, res: tuple):
        yield from ((level, label, res), (level, label), (level,))
        lower = self.FALLBACK_LEVEL.get(level)
        if lower:
            yield from ((lower, label), (lower,))

    def rate(self, level: str, label: str, res: tuple) -> float:
        return next((self.rates[k] for k in self._keys(level, label, res) if k in self.rates), self.prior)

    def predict(self, level: str, label: str, res: tuple, flops: int) -> float:
        return flops / self.rate(level, label, res)


@dataclass
class SweepOutcome:
    points: int = 0
    measured: int = 0
    analytic_only: int = 0
    errors: int = 0
    oom: int = 0
    seconds: float = 0.0
    records: int = 0
    load_start: list | None = None
    load_end: list | None = None
    notes: list = field(default_factory=list)


def _kinds_for(level: LevelSweep) -> list[KindConfig]:
    kinds = list(dict.fromkeys(level.kinds))
    if not any(k.kind == "softmax" for k in kinds):
        kinds.insert(0, SOFTMAX)  # the baseline of every ratio is always computed (analytic at least)
    return kinds


def run_preset(preset: Preset, emit: Callable[..., None], *, device: str, log: Callable[[str], None] = print,
               dimensions=DIMENSIONS) -> SweepOutcome:
    """Sweep ``preset`` on ``device``; ``emit(model=, dimension=, score=, status=, message=, details=)`` stores a
    record.  Returns counts for the summary."""
    old_threads = torch.get_num_threads()
    if preset.threads:
        torch.set_num_threads(preset.threads)
    try:
        return _run_preset(preset, emit, device, log, dimensions)
    finally:
        torch.set_num_threads(old_threads)


def _run_preset(preset, emit, device, log, dimensions) -> SweepOutcome:
    dtype = DTYPES[preset.dtype]
    outcome = SweepOutcome(load_start=load_average())
    meter = MemoryMeter(device)
    start = time.perf_counter()
    prior = matmul_rate(device, dtype)
    pred = RatePredictor(prior)
    threads = torch.get_num_threads()
    log(f"efficiency: preset {preset.name}, device {device}, {preset.dtype}, {threads} threads, matmul "
        f"{prior / 1e9:.1f} GFLOP/s, load {outcome.load_start}, memory method: "
        f"{meter.method}")
    dims = set(dimensions)

    def write(kc: KindConfig, dim: str, score, status: str, message, details: dict) -> None:
        if dim in dims:
            emit(model=kc.label, dimension=dim, score=score, status=status, message=message, details=details)
            outcome.records += 1

    with torch.inference_mode():
        for level in preset.levels:
            wl: Workload = WORKLOADS[level.level](preset, device)
            kinds = _kinds_for(level)
            backends = {kc: wl.backend(kc) for kc in kinds}
            warmed: set = set()
            for res in level.resolutions:
                for frames in level.frames:
                    video = VideoShape(frames, *res)
                    _run_point(preset, level, wl, kinds, video, res, backends, meter, pred, start, write, outcome,
                               warmed, device, threads, log)
            if hasattr(wl, "release"):
                wl.release()
            del wl
            gc.collect()
    outcome.seconds = time.perf_counter() - start
    outcome.load_end = load_average()
    return outcome


def _warmup(wl: Workload, kinds, level: LevelSweep, device: str, meter: MemoryMeter) -> None:
    """One instrumented call of every kind at a tiny shape: one-off kernel self-checks, lazy imports and inits (of
    the FLOP counter too), thread pools -- so that none of them lands in a measured point's peak memory."""
    tiny = VideoShape(9, 32, 32)  # 3 latent frames x 4 tokens
    try:
        fns = wl.setup(tiny, kinds)
        for fn in fns.values():
            instrumented_run(fn, device, meter, level.count_flops)  # failures here resurface in the point's own run
    except Exception:  # noqa: BLE001
        pass
    finally:
        wl.teardown()


def _run_point(preset, level, wl, kinds, video, res, backends, meter, pred, start, write, outcome, warmed, device,
               threads, log):
    ana = {kc: wl.analytic(kc, video) for kc in kinds}
    base = ana[SOFTMAX].flops
    load = load_average()
    free = available_memory_bytes(device)

    # ---- which kinds fit the budgets (runs per kind: the instrumented warm-up + timed repeats)
    reasons: dict = {}
    n_rep: dict = {}
    planned_total = 0.0
    for kc in kinds:
        t_pred = pred.predict(level.level, kc.label, res, ana[kc].flops)
        reps = next((r for r in (level.repeats, level.min_repeats) if t_pred * (1 + r) <= level.point_budget_s), None)
        cost = t_pred * (1 + (reps or level.min_repeats))
        elapsed = time.perf_counter() - start
        est = wl.estimate_bytes(kc, video)
        if reps is None:
            reasons[kc] = (f"analytic only: predicted {t_pred:.3g} s per call x {1 + level.min_repeats} runs > point "
                           f"budget {level.point_budget_s:g} s (rate {pred.rate(level.level, kc.label, res) / 1e9:.3g} "
                           f"GFLOP/s from the previous points)")
        elif elapsed + planned_total + cost > preset.total_budget_s:
            reasons[kc] = (f"analytic only: preset time budget {preset.total_budget_s:g} s would be exceeded "
                           f"(elapsed {elapsed:.0f} s, predicted {cost:.3g} s)")
        elif free is not None and est > 0.8 * free:
            reasons[kc] = (f"analytic only: estimated working set {est / 2**30:.2f} GiB > 80% of free memory "
                           f"{free / 2**30:.2f} GiB")
        else:
            planned_total += cost
            n_rep[kc] = reps
    measured = [kc for kc in kinds if kc not in reasons]

    # ---- measure
    inst, timing = {}, {}
    if measured:
        cold = [kc for kc in measured if kc not in warmed]
        if cold:
            _warmup(wl, cold, level, device, meter)
            warmed.update(cold)
        t0 = time.perf_counter()
        try:
            fns = wl.setup(video, measured)
        except Exception as exc:  # noqa: BLE001 -- e.g. OOM while allocating inputs: a result, not a crash
            msg = f"setting up inputs failed: {type(exc).__name__}: {str(exc)[:300]}"
            fns = {}
            for kc in measured:
                inst[kc] = InstrumentedRun(False, oom=is_oom(exc), error=msg)
        for kc, fn in fns.items():
            inst[kc] = instrumented_run(fn, device, meter, level.count_flops)
        ok_fns = {kc: fn for kc, fn in fns.items() if inst[kc].ok}
        deadline = t0 + max(level.point_budget_s, planned_total) * 1.5
        min_rounds = min(n_rep.values()) if n_rep else level.repeats
        timing = timed_rounds(ok_fns, device, min_rounds, level.max_repeats, level.min_time_s, deadline)
        wl.teardown()
        del fns, ok_fns
        gc.collect()
        for kc, tm in timing.items():
            if tm.samples and tm.error is None:
                pred.update(level.level, kc.label, res, ana[kc].flops, tm.median_ms / 1000)
        log(f"  {level.level} {res[0]}x{res[1]} {video.frames}f: measured {len(measured)}/{len(kinds)} kinds in "
            f"{time.perf_counter() - t0:.1f} s (sweep {time.perf_counter() - start:.0f} s, load {load})")
    else:
        log(f"  {level.level} {res[0]}x{res[1]} {video.frames}f: analytic only")

    # ---- records
    outcome.points += len(kinds)
    soft_t = timing.get(SOFTMAX)
    soft_ok = soft_t is not None and soft_t.samples and soft_t.error is None
    for kc in kinds:
        a = ana[kc]
        run = inst.get(kc)
        tm = timing.get(kc)
        analytic_only = kc in reasons
        oom = bool(run is not None and (run.oom or (tm is not None and tm.oom)))
        details = dict(
            level=level.level, frames=video.frames, latent_frames=video.latent_frames, height=video.height,
            width=video.width, chunk_frames=kc.chunk_frames if kc.attention_kind.uses_chunks else None,
            overlap_frames=kc.overlap_frames if kc.attention_kind.uses_chunks else None, causal=kc.causal,
            converted_blocks=wl.converted_blocks(kc), dtype=preset.dtype, device=device, threads=threads,
            backend=backends[kc], analytic_only=analytic_only, oom=oom, latency_spread_ms=None, repeats=0,
            # extras (not part of the sweep key)
            kind=kc.kind, preset=preset.name, tokens=video.tokens, frame_tokens=video.frame_tokens,
            feature_dim=a.feature_dim, load_avg=load,
        )
        if level.level == "op":
            details.update(heads=preset.op_heads, head_dim=preset.op_head_dim)
        else:
            details.update(heads=preset.wan["num_attention_heads"], head_dim=preset.wan["attention_head_dim"],
                           width_channels=preset.wan["num_attention_heads"] * preset.wan["attention_head_dim"],
                           text_tokens=preset.text_tokens)
            if level.level == "model":
                details["num_layers"] = preset.wan["num_layers"]

        write(kc, "flops_analytic", float(a.flops), "ok", "analytic (rehyat.cost)",
              dict(details, flops_breakdown=a.breakdown, analytic_memory_bytes=a.memory_bytes))
        write(kc, "flops_ratio_vs_softmax", base / a.flops, "ok", "analytic: softmax FLOPs / this kind's FLOPs",
              dict(details, softmax_flops=base))

        if analytic_only:
            outcome.analytic_only += 1
            for dim in MEASURED_DIMS:
                write(kc, dim, None, "skipped", reasons[kc], dict(details, predicted_s=pred.predict(
                    level.level, kc.label, res, a.flops)))
            continue
        outcome.measured += 1
        if not run.ok:
            outcome.errors += 1
            outcome.oom += int(run.oom)
            msg = ("out of memory: " if run.oom else "error: ") + (run.error or "")
            for dim in MEASURED_DIMS:
                write(kc, dim, None, "error", msg, details)
            continue
        # counted FLOPs
        if run.flops_counted is not None:
            err = (run.flops_counted - a.flops) / a.flops
            write(kc, "flops_counted", float(run.flops_counted), "ok", "torch FlopCounterMode (rehyat.cost.count_flops)",
                  dict(details, flops_analytic=a.flops, counted_vs_analytic_rel_err=err))
        else:
            write(kc, "flops_counted", None, "skipped", "FLOP counting disabled at this level in this preset", details)
        # memory
        mem_details = dict(details, memory_method=meter.method, output_bytes=run.output_bytes,
                           peak_incl_output_bytes=run.peak_incl_output_bytes, analytic_memory_bytes=a.memory_bytes)
        if run.peak_bytes is not None:
            write(kc, "peak_mem_bytes", float(run.peak_bytes), "ok", None, mem_details)
        else:
            write(kc, "peak_mem_bytes", None, "skipped", "no peak-memory reading for this call", mem_details)
        # latency
        if tm is None or tm.error is not None or not tm.samples:
            outcome.errors += 1
            outcome.oom += int(bool(tm and tm.oom))
            msg = ("out of memory during timed runs: " if tm and tm.oom else "error during timed runs: ") + \
                  (tm.error if tm else "not timed")
            for dim in ("latency_ms", "speedup_vs_softmax"):
                write(kc, dim, None, "error", msg, dict(details, oom=bool(tm and tm.oom)))
            continue
        lat_details = dict(details, latency_spread_ms=tm.spread_ms, repeats=len(tm.samples),
                           latency_samples_ms=[round(1000 * s, 4) for s in tm.samples],
                           untimed_runs=1, untimed_s=run.seconds, timer="cuda events" if device.startswith("cuda")
                           else "time.perf_counter", achieved_flops_per_s=a.flops / (tm.median_ms / 1000))
        write(kc, "latency_ms", tm.median_ms, "ok", None, lat_details)
        if soft_ok:
            write(kc, "speedup_vs_softmax", soft_t.median_ms / tm.median_ms, "ok",
                  "measured: softmax median latency / this kind's, same run, interleaved",
                  dict(lat_details, softmax_latency_ms=soft_t.median_ms, flops_ratio_vs_softmax=base / a.flops))
        else:
            why = reasons.get(SOFTMAX) or "softmax failed at this point"
            write(kc, "speedup_vs_softmax", None, "skipped",
                  f"softmax not measured at this point ({why}); no speedup without a measured baseline", details)
