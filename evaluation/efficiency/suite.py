"""Registration of the ``efficiency`` suite with the evaluation CLI (``python -m evaluation.run --suite efficiency``)."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import defaultdict
from dataclasses import asdict

from evaluation.registry import Dimension, DimensionOutcome, Suite, register_suite

from .measure import MemoryMeter, machine_description
from .presets import LEVELS, PRESETS, override, parse_kind
from .sweep import DIMENSIONS, SUITE, run_preset

DESCRIPTIONS = {
    "flops_analytic": "FLOPs from the analytic cost model (rehyat.cost); matrix products only",
    "flops_counted": "FLOPs counted by torch FlopCounterMode on the measured run (where run)",
    "latency_ms": "median wall time of the interleaved timed repeats (ms); details.latency_spread_ms = half-range",
    "peak_mem_bytes": "peak working memory beyond caller-owned inputs/weights, output excluded (bytes)",
    "speedup_vs_softmax": "measured softmax latency / this kind's latency, same run and point",
    "flops_ratio_vs_softmax": "analytic softmax FLOPs / this kind's FLOPs",
}


def _resolution(text: str) -> str:
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution must be HEIGHTxWIDTH, got {text!r}") from None
    if h % 16 or w % 16:
        raise argparse.ArgumentTypeError(f"{text}: height and width must be multiples of 16 (VAE 8 x patch 2)")
    return text


def _kind(text: str) -> str:
    """Validated here; kept as text so that run.json can store the parsed options."""
    try:
        parse_kind(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


@register_suite
class EfficiencySuite(Suite):
    name = SUITE
    description = "FLOPs, latency and peak memory of attention kinds vs video duration (op / Wan block / Wan model)"
    dimensions = {d: Dimension(d, SUITE, DESCRIPTIONS[d], offline_capable=True, custom_input=True) for d in DIMENSIONS}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("efficiency suite (docs/efficiency.md)")
        flags = ["--efficiency-preset"] + (["--preset"] if "--preset" not in parser._option_string_actions else [])
        g.add_argument(*flags, dest="efficiency_preset", choices=sorted(PRESETS), default=None,
                       help="ci (seconds, tiny shapes), cpu (< 15 min on 2 cores), gpu (< 8 min on one H100/H200); "
                            "default: gpu with --device cuda, else cpu")
        g.add_argument("--efficiency-levels", nargs="+", choices=LEVELS, default=None, help="levels to run")
        g.add_argument("--efficiency-kinds", nargs="+", type=_kind, default=None,
                       help="kinds: softmax linear hybrid:TC:TO hybrid_recurrent:TC:TO chunk_local:TC:TO")
        g.add_argument("--efficiency-frames", nargs="+", type=int, default=None, help="video frames (e.g. 17 81 321)")
        g.add_argument("--efficiency-resolutions", nargs="+", type=_resolution, default=None,
                       help="HEIGHTxWIDTH (e.g. 240x416 480x832)")
        g.add_argument("--efficiency-budget", type=float, default=None, help="total measurement budget (s)")
        g.add_argument("--efficiency-point-budget", type=float, default=None,
                       help="per (kind, point) budget (s); points predicted to exceed it are analytic-only")
        g.add_argument("--efficiency-repeats", type=int, default=None, help="timed repeats per point")
        g.add_argument("--efficiency-threads", type=int, default=None, help="torch intra-op threads")
        g.add_argument("--efficiency-dtype", choices=["float32", "bfloat16", "float16"], default=None)
        g.add_argument("--efficiency-no-count", action="store_true", help="skip FLOP counting (flops_counted)")

    def resolve_preset(self, ctx):
        a = ctx.args
        name = getattr(a, "efficiency_preset", None) or ("gpu" if str(ctx.device).startswith("cuda") else "cpu")
        preset = PRESETS[name]
        res = getattr(a, "efficiency_resolutions", None)
        kinds = getattr(a, "efficiency_kinds", None)
        preset = override(
            preset, levels=getattr(a, "efficiency_levels", None), frames=getattr(a, "efficiency_frames", None),
            resolutions=None if res is None else [tuple(int(x) for x in r.lower().split("x")) for r in res],
            kinds=None if kinds is None else [parse_kind(k) for k in kinds],
            total_budget_s=getattr(a, "efficiency_budget", None), point_budget_s=getattr(a, "efficiency_point_budget", None),
            repeats=getattr(a, "efficiency_repeats", None), dtype=getattr(a, "efficiency_dtype", None),
            threads=getattr(a, "efficiency_threads", None),
            count_flops=False if getattr(a, "efficiency_no_count", False) else None)
        device = ctx.device if str(ctx.device).startswith("cuda") else preset.device
        return preset, device

    def run(self, ctx, dimensions: list[str]) -> list[DimensionOutcome]:
        import torch

        preset, device = self.resolve_preset(ctx)
        if device.startswith("cuda") and not torch.cuda.is_available():
            msg = f"preset {preset.name!r} needs a CUDA device and none is available (nothing measured or stored)"
            return [DimensionOutcome(SUITE, "*", d, "skipped", message=msg) for d in dimensions]
        old_threads = torch.get_num_threads()
        if preset.threads:
            torch.set_num_threads(preset.threads)
        try:
            return self._run(ctx, dimensions, preset, device)
        finally:
            torch.set_num_threads(old_threads)

    def _run(self, ctx, dimensions, preset, device) -> list[DimensionOutcome]:
        meter = MemoryMeter(device)
        machine = machine_description(device)
        prov = ctx.provenance(machine=machine, preset=preset.name, preset_config=asdict(preset),
                              memory_method=meter.method,
                              command=" ".join(shlex.quote(x) for x in sys.argv))

        def emit(**kw):
            ctx.store.add(suite=SUITE, video=None, provenance=prov, **kw)

        outcome = run_preset(preset, emit, device=device, log=ctx.log, dimensions=dimensions)
        from .table import load_efficiency, run_header, wide, write_outputs

        header = run_header(asdict(preset), machine, device, prov["memory_method"], outcome.load_start,
                            outcome.load_end, outcome.seconds)
        try:
            out = write_outputs(ctx.out_dir, ctx.run_id, header)
        except Exception as exc:  # noqa: BLE001 -- the records are stored; the table/plots can be rebuilt
            ctx.log(f"efficiency: writing table/plots failed ({type(exc).__name__}: {exc}); rebuild with "
                    f"`python -m evaluation.efficiency {ctx.out_dir}`")
            out = dict(target_values={}, plots=[], wide=wide(load_efficiency(ctx.out_dir, ctx.run_id)),
                       table_md=ctx.out_dir / "efficiency" / "table.md")
            (ctx.out_dir / "efficiency").mkdir(parents=True, exist_ok=True)
        summary = dict(preset=preset.name, device=device, machine=machine, load_start=outcome.load_start,
                       load_end=outcome.load_end, seconds=outcome.seconds, points=outcome.points,
                       measured=outcome.measured, analytic_only=outcome.analytic_only, errors=outcome.errors,
                       oom=outcome.oom, records=outcome.records, targets=out["target_values"],
                       plots=[str(p) for p in out["plots"]])
        (ctx.out_dir / "efficiency" / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        ctx.log(f"efficiency: {outcome.measured} measured / {outcome.analytic_only} analytic-only (kind, point)s, "
                f"{outcome.errors} errors ({outcome.oom} OOM) in {outcome.seconds:.0f} s; table {out['table_md']}")
        return _outcomes(out["wide"], dimensions, str(out["table_md"]))


def _outcomes(w, dimensions, table_path: str) -> list[DimensionOutcome]:
    """One summary line per (kind label, dimension): ok if any point is ok; counts in the message."""
    res = []
    if w.empty:
        return [DimensionOutcome(SUITE, "*", d, "error", message="no records written") for d in dimensions]
    for (model,), g in w.groupby(["model"], sort=False):
        for d in dimensions:
            counts = defaultdict(int)
            for st in g[f"{d}_status"]:
                counts[st] += 1
            status = "ok" if counts.get("ok") else max(counts, key=counts.get)
            msg = ", ".join(f"{n} {st}" for st, n in counts.items()) + f" points; see {table_path}"
            res.append(DimensionOutcome(SUITE, model, d, status, message=msg, n_videos=0,
                                        n_errors=counts.get("error", 0)))
    return res
