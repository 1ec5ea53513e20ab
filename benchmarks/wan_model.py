"""Time and peak memory of ReHyAt vs softmax Wan2.1 at the real 1.3B width (random weights), growing frame counts.

Three parts (``--parts``):

* ``block``  — one ``WanTransformerBlock`` (dim 1536, 12 heads x 128, FFN 8960, 512 text tokens): dense softmax vs the
  ReHyAt block (parallel form, bidirectional and causal), at every ``--frames``; the variants run in interleaved
  rounds (``--repeats``), so a shared machine's drifts land on all of them alike.
* ``model``  — the whole transformer (``--layers``, 30 = the real model): softmax vs ReHyAt with ``--paper-blocks``
  converted (bidirectional, parallel) vs all blocks converted, causal, in parallel and in recurrent form.
* ``memory`` — recurrent sweep of the fully converted causal model at 1x, 2x, 4x, 8x a base length (``--memory-base``
  latent frames) with ``--memory-layers`` blocks; prints peak memory per length and the max/min ratio (the
  acceptance bound is 1.10), next to the parallel form for contrast.

Peak memory = peak increase over the start of the call.  CPU: ``tensors`` (live tensor storages created during the
call, :class:`rehyat.wan.memory.LiveTensorTracker`) and ``rss`` (VmHWM reset via /proc/self/clear_refs; the script
re-executes itself with ``MALLOC_MMAP_THRESHOLD_=65536`` so freed blocks leave RSS; ``--malloc caching`` instead
keeps freed pages for reuse, to show what page zeroing costs).  GPU: ``max_memory_allocated``.
``work`` columns subtract the returned output (same size as the input latent), which the caller owns.

    # CPU, as recorded in BENCHMARKS.md (three invocations; about 40 min on 2 shared cores)
    python benchmarks/wan_model.py --device cpu --parts block --frames 9 17 33 65 --repeats 1 --warmup 1 --threads 2
    python benchmarks/wan_model.py --device cpu --parts model --model-frames 9 --layers 30 --model-repeats 1 \
        --model-warmup 0 --no-model-tracker --threads 2
    python benchmarks/wan_model.py --device cpu --parts memory --memory-layers 4 --memory-base 6 \
        --memory-parallel-max 4 --threads 2
    # GPU (written for CUDA, not run yet: no GPU was available)
    python benchmarks/wan_model.py --device cuda --height 480 --width 832 --frames 21 41 81 161 \
        --model-frames 21 41 81 --layers 30 --memory-layers 30 --memory-base 6

Results print as markdown tables; ``--out FILE.jsonl`` also writes records in the ``efficiency`` shape of
docs/interfaces.md (model, dimension, score, status, details).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

# glibc malloc settings the script re-executes itself with, before torch allocates anything (--malloc):
# * release (default): every block of 64 KiB or more is its own mapping and goes back to the OS when freed, so the RSS
#   high-water mark measures each call's own peak;
# * caching: nothing is ever returned (no mmap, no trim), so a freed tensor's pages are reused without the kernel
#   zeroing fresh ones: what a caching allocator (CUDA's) gives.  In a VM a fresh 4 KiB page costs far more than
#   its zeroing (2.4 M page faults, 4.5 s of system time per converted block call at 480x832, 81 frames); this
#   mode shows how much of a time is that.  RSS columns are then the process's high-water mark, not per call.
MALLOC_ENV = {"release": {"MALLOC_MMAP_THRESHOLD_": "65536"},
              "caching": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40), "MALLOC_TOP_PAD_": str(2**30)}}
_pre = argparse.ArgumentParser(add_help=False)
_pre.add_argument("--malloc", default="release")
_pre.add_argument("--no-reexec", action="store_true")
_heap = _pre.parse_known_args()[0]
if _heap.malloc in MALLOC_ENV and os.environ.get("REHYAT_BENCH_MALLOC") != _heap.malloc and not _heap.no_reexec:
    os.execve(sys.executable, [sys.executable, *sys.argv],
              dict(os.environ, REHYAT_BENCH_MALLOC=_heap.malloc, **MALLOC_ENV[_heap.malloc]))

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from diffusers import WanTransformer3DModel  # noqa: E402
from diffusers.models.transformers.transformer_wan import (WanAttnProcessor, WanRotaryPosEmbed,  # noqa: E402
                                                           WanTransformerBlock)

from rehyat.wan.convert import (convert_wan_to_rehyat, rehyat_processors, revert_to_softmax,  # noqa: E402
                                set_rehyat_mode)
from rehyat.wan.memory import measure_peak, rss_supported  # noqa: E402
from rehyat.config import ReHyAtConfig  # noqa: E402
from rehyat.cost import FeatureMapSpec, VideoShape, WanConfig, wan_block_flops, wan_model_flops  # noqa: E402
from rehyat.wan.processor import FrameRotary, ReHyAtWanAttnProcessor  # noqa: E402

WAN_1P3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6)
DIM, HEADS, HEAD_DIM, TEXT_TOKENS = 1536, 12, 128, 512
MODEL_VARIANTS = ("softmax", "hybrid_partial", "hybrid_causal", "hybrid_recurrent")


def latent_frames(frames: int) -> int:
    return (frames - 1) // 4 + 1


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_and_measure(fn, device, repeats: int, warmup: int, tracker: bool = True) -> tuple[float, float, dict]:
    """Median time (ms) and spread over ``repeats`` calls after ``warmup``; peak memory by every method available.

    Timed calls also carry the zero-overhead peak (CUDA allocator, or RSS high-water mark on CPU; max over the
    calls); one extra untimed call under the live-tensor tracker gives ``tensors`` on CPU.
    """
    return run_interleaved({"": (None, fn)}, device, repeats, warmup, tracker)[""][:3]


def run_interleaved(variants: dict, device, repeats: int, warmup: int, tracker: bool = True) -> dict:
    """:func:`run_and_measure` for several variants side by side: ``variants`` maps a name to ``(prepare, fn)``
    (``prepare``: untimed, called before each of the variant's calls, or None).  Each of the ``repeats`` rounds times
    every variant once, starting one variant later each round, so drifts of a shared machine's speed land on all of
    them alike instead of on whichever ran last.  Returns name -> ``(median ms, spread ms, peaks, faults)``, where
    ``faults`` = the medians of the process's minor page faults and system seconds per call (``getrusage``: the cost
    of first-touching fresh pages, docs/attention.md).
    """
    names = list(variants)
    for name in names:
        prepare, fn = variants[name]
        for _ in range(warmup):
            prepare and prepare()
            fn()
    # a caching heap keeps every freed page resident, so an RSS high-water mark says nothing per call: no rss column
    rss = rss_supported() and os.environ.get("REHYAT_BENCH_MALLOC") != "caching"
    method = "cuda" if device.type == "cuda" else ("rss" if rss else None)
    ts = {name: [] for name in names}
    pk = {name: {} for name in names}
    faults = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            prepare, fn = variants[name]
            prepare and prepare()
            gc.collect()
            sync(device)
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            if method:
                out, p = measure_peak(fn, method, device)
                pk[name][method] = max(pk[name].get(method, 0), p)
            else:
                out = fn()
            sync(device)
            ts[name].append(time.perf_counter() - t0)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            faults[name].append((r1.ru_minflt - r0.ru_minflt, r1.ru_stime - r0.ru_stime))
            pk[name]["output"] = out.numel() * out.element_size()
            del out
    result = {}
    for name in names:
        prepare, fn = variants[name]
        if device.type != "cuda" and tracker:
            prepare and prepare()
            gc.collect()
            out, pk[name]["tensors"] = measure_peak(fn, "tensors")
            del out
        pk[name]["min_ms"] = min(ts[name]) * 1e3  # under CPU contention the minimum is the more robust statistic
        result[name] = (statistics.median(ts[name]) * 1e3, (max(ts[name]) - min(ts[name])) * 1e3, pk[name],
                        dict(page_faults=statistics.median(f for f, _ in faults[name]),
                             sys_s=statistics.median(t for _, t in faults[name])))
    return result


def record(args, model, dimension, score, level, frames, extra=None):
    details = dict(level=level, frames=frames, latent_frames=latent_frames(frames), height=args.height,
                   width=args.width, chunk_frames=args.chunk_frames, overlap_frames=args.overlap_frames,
                   dtype=args.dtype, device=args.device, threads=torch.get_num_threads(), backend="torch",
                   analytic_only=False, repeats=args.repeats)
    details.update(extra or {})
    return dict(suite="efficiency", model=model, video=None, dimension=dimension, score=score, status="ok",
                message=None, details=details,
                provenance=dict(torch=torch.__version__, machine=platform.machine(), script="benchmarks/wan_model.py"),
                time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def mib(b):
    return f"{b / 2**20:,.1f}"


# ----------------------------------------------------------------------------------------------------------------
def bench_block(args, device, dtype, records):
    torch.manual_seed(0)
    block = WanTransformerBlock(DIM, WAN_1P3B["ffn_dim"], HEADS, cross_attn_norm=True, eps=1e-6).to(device, dtype)
    block.eval()
    rope = WanRotaryPosEmbed(HEAD_DIM, (1, 2, 2), 1024).to(device)
    hp, wp = args.height // 16, args.width // 16
    variants = [("softmax", None), (f"hybrid_tc{args.chunk_frames}_to{args.overlap_frames}", False),
                (f"hybrid_causal_tc{args.chunk_frames}_to{args.overlap_frames}", True)]
    if args.compile:  # eager vs torch.compile of the processor's projections, QK-norm, RoPE and phi, side by side
        variants.append((f"hybrid_tc{args.chunk_frames}_to{args.overlap_frames}_compiled", False))
    procs = {}  # built once, so every frame count and round times the same random phi
    for name, causal in variants:
        if causal is None:
            procs[name] = WanAttnProcessor()
        else:
            procs[name] = ReHyAtWanAttnProcessor(HEADS, HEAD_DIM, ReHyAtConfig(
                chunk_frames=args.chunk_frames, overlap_frames=args.overlap_frames, causal=causal,
                feature_map=args.feature_map)).to(device, dtype)
            if name.endswith("_compiled"):
                procs[name].enable_compile()
    rows = []
    for frames in args.frames:
        t_lat = latent_frames(frames)
        n = t_lat * hp * wp
        x = torch.randn(1, n, DIM, device=device, dtype=dtype)
        text = torch.randn(1, TEXT_TOKENS, DIM, device=device, dtype=dtype)
        temb = torch.randn(1, 6, DIM, device=device, dtype=dtype)
        rotary = FrameRotary(*rope(torch.empty(1, 1, t_lat, hp * 2, wp * 2, device="meta")), t_lat, hp * wp)

        def fn():
            with torch.no_grad():
                return block(x, text, temb, rotary)

        for name, proc in procs.items():
            if getattr(proc, "compiled", False):
                block.attn1.set_processor(proc)
                t0 = time.perf_counter()
                fn()  # compiling (once per shape) is not part of the timed calls
                print(f"  block {name}: compiled in {time.perf_counter() - t0:.0f} s", flush=True)
        warmup = args.warmup if frames == args.frames[0] else 0  # first-call costs are per process/variant
        variant_calls = {name: (lambda p=proc: block.attn1.set_processor(p), fn) for name, proc in procs.items()}
        timed = run_interleaved(variant_calls, device, args.repeats, warmup, tracker=args.block_tracker)
        for name, causal in variants:
            ms, spread, pk, faults = timed[name]
            proc = None if causal is None else procs[name]
            phi_ms = None if proc is None else time_features(proc, n, device, dtype)
            rows.append((name, frames, t_lat, n, ms, pk, phi_ms, block_flops_ratio(args, frames, proc), faults))
            print(f"  block {name:28s} frames {frames:4d} (T={t_lat:3d}, N={n:6d}): {ms:9.1f} ms  "
                  + "  ".join(f"{k} {mib(v)} MiB" for k, v in pk.items() if k != "min_ms"), flush=True)
            records.append(record(args, name, "latency_ms", ms, "block", frames, dict(latency_spread_ms=spread)))
            for k, v in pk.items():
                if k not in ("output", "min_ms"):
                    records.append(record(args, name, "peak_mem_bytes", v, "block", frames, dict(method=k)))
    print("\n### Per block (1.3B width)\n")
    keys = [k for k in rows[0][5] if k not in ("output", "min_ms")]
    print("| variant | frames | latent T | tokens | median ms | min ms | speedup vs softmax | FLOPs ratio | "
          "speedup / ratio | phi_q + phi_k ms (share) | page faults | system s | "
          + " | ".join(f"peak {k} MiB" for k in keys) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(keys))
    dense = {frames: ms for name, frames, _, _, ms, *_ in rows if name == "softmax"}
    for name, frames, t_lat, n, ms, pk, phi_ms, ratio, faults in rows:
        speedup = dense[frames] / ms
        phi = "—" if phi_ms is None else f"{phi_ms:,.0f} ({phi_ms / ms:.1%})"
        print(f"| {name} | {frames} | {t_lat} | {n} | {ms:,.1f} | {pk['min_ms']:,.1f} | {speedup:.2f} | {ratio:.3f} | "
              f"{speedup / ratio:.2f} | {phi} | {faults['page_faults']:,.0f} | {faults['sys_s']:.2f} | "
              + " | ".join(mib(pk[k]) for k in keys) + " |")
    del block


def time_features(proc, n, device, dtype) -> float:
    """ms of one ``phi_q(q), phi_k(k)`` call at the block's shape (random post-RoPE-like inputs), no autograd."""
    q, k = (torch.randn(1, n, HEADS, HEAD_DIM, device=device, dtype=dtype) for _ in range(2))
    with torch.no_grad():
        sync(device)
        t0 = time.perf_counter()
        proc.features(q, k)
        sync(device)
    return (time.perf_counter() - t0) * 1e3


def _phi_cost(proc) -> dict:
    """The cost model's feature-map arguments for a processor's own phi (none for parameter-free kinds)."""
    phi = proc.phi_q
    return {} if phi is None else dict(feature_map=FeatureMapSpec.of(phi), feature_dim=phi.feature_dim)


def block_flops_ratio(args, frames, proc) -> float:
    """The cost model's dense / converted FLOPs of one block with ``proc`` (None: the dense block, 1.0)."""
    if proc is None:
        return 1.0
    video = VideoShape(frames, args.height, args.width)
    return (wan_block_flops(WanConfig(), video).flops
            / wan_block_flops(WanConfig(), video, proc.config, **_phi_cost(proc)).flops)


def model_flops_ratio(args, frames, model) -> float:
    """Dense / converted FLOPs of ``model`` as it is converted now (its blocks' own processors)."""
    procs = rehyat_processors(model)
    if not procs:
        return 1.0
    cfg, video = WanConfig(num_layers=args.layers), VideoShape(frames, args.height, args.width)
    return (wan_model_flops(cfg, video).flops
            / wan_model_flops(cfg, video, {i: p.config for i, p in procs.items()},
                              **_phi_cost(next(iter(procs.values())))).flops)


# ----------------------------------------------------------------------------------------------------------------
def build_model(args, layers, device, dtype):
    torch.manual_seed(0)
    with torch.device(device):
        m = WanTransformer3DModel(**dict(WAN_1P3B, num_layers=layers))
    keep = m._keep_in_fp32_modules or []
    for name, p in m.named_parameters():  # like from_pretrained(torch_dtype=...): fp32 modules stay fp32
        if not any(k in name.split(".") for k in keep):
            p.data = p.data.to(dtype)
    return m.eval()


def model_inputs(args, frames, device, dtype):
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(1, 16, latent_frames(frames), args.height // 8, args.width // 8, generator=g)
    text = torch.randn(1, TEXT_TOKENS, WAN_1P3B["text_dim"], generator=g)
    return dict(hidden_states=lat.to(device, dtype), timestep=torch.tensor([500], device=device),
                encoder_hidden_states=text.to(device, dtype))


def bench_model(args, device, dtype, records):
    m = build_model(args, args.layers, device, dtype)
    tc, to = args.chunk_frames, args.overlap_frames
    n_paper = min(args.paper_blocks, args.layers)
    rows = []

    def run_variant(name, frames_list, converted):
        if converted == 0:
            kind = "softmax"
        elif converted < args.layers:
            kind = "hybrid_partial"
        else:
            kind = "hybrid_recurrent" if "recurrent" in name else "hybrid_causal"
        if kind not in args.model_variants:
            return
        for frames in frames_list:
            inputs = model_inputs(args, frames, device, dtype)

            def fn():
                with torch.no_grad():
                    return m(**inputs).sample

            ms, spread, pk = run_and_measure(fn, device, args.model_repeats, args.model_warmup,
                                             tracker=args.model_tracker)
            rows.append((name, frames, ms, pk, model_flops_ratio(args, frames, m)))
            print(f"  model {name:34s} frames {frames:4d}: {ms:10.1f} ms  "
                  + "  ".join(f"{k} {mib(v)} MiB" for k, v in pk.items() if k != "min_ms"), flush=True)
            extra = dict(converted_blocks=converted, layers=args.layers, latency_spread_ms=spread,
                         repeats=args.model_repeats)
            records.append(record(args, name, "latency_ms", ms, "model", frames, extra))
            for k, v in pk.items():
                if k not in ("output", "min_ms"):
                    records.append(record(args, name, "peak_mem_bytes", v, "model", frames, dict(extra, method=k)))

    with torch.no_grad():  # one untimed call so that first-call costs do not land on the first variant
        m(**model_inputs(args, args.model_frames[0], device, dtype))
    run_variant("softmax", args.model_frames, 0)
    convert_wan_to_rehyat(m, n_paper, chunk_frames=tc, overlap_frames=to, causal=False, feature_map=args.feature_map,
                          seed=0)
    run_variant(f"hybrid_{n_paper}x_tc{tc}_to{to}", args.model_frames, n_paper)
    revert_to_softmax(m)
    convert_wan_to_rehyat(m, "all", chunk_frames=tc, overlap_frames=to, causal=True, feature_map=args.feature_map,
                          seed=0)
    run_variant(f"hybrid_causal_{args.layers}x_tc{tc}_to{to}", args.model_frames, args.layers)
    set_rehyat_mode(m, "recurrent")
    run_variant(f"hybrid_recurrent_{args.layers}x_tc{tc}_to{to}", args.model_frames, args.layers)
    if not rows:
        return
    print(f"\n### Whole model ({args.layers} blocks, 1.3B width)\n")
    keys = [k for k in rows[0][3] if k not in ("output", "min_ms")]
    dense = {frames: ms for name, frames, ms, *_ in rows if name == "softmax"}
    print("| variant | frames | median ms | min ms | speedup vs softmax | FLOPs ratio | speedup / ratio | "
          + " | ".join(f"peak {k} MiB" for k in keys) + " |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(keys))
    for name, frames, ms, pk, ratio in rows:
        sp = dense.get(frames, float("nan")) / ms
        print(f"| {name} | {frames} | {ms:,.1f} | {pk['min_ms']:,.1f} | {sp:.2f} | {ratio:.3f} | {sp / ratio:.2f} | "
              + " | ".join(mib(pk[k]) for k in keys) + " |")
    del m


# ----------------------------------------------------------------------------------------------------------------
def bench_memory(args, device, dtype, records):
    m = build_model(args, args.memory_layers, device, dtype)
    tc, to = args.chunk_frames, args.overlap_frames
    convert_wan_to_rehyat(m, "all", chunk_frames=tc, overlap_frames=to, causal=True, feature_map=args.feature_map,
                          seed=0)
    results = {}
    for mode in ("recurrent", "parallel"):
        set_rehyat_mode(m, mode)
        warm = model_inputs(args, (args.memory_base - 1) * 4 + 1, device, dtype)
        with torch.no_grad():  # first-call allocations (kernel self-checks, thread pools) are not the model's
            m(**warm)
        del warm
        for mult in (1, 2, 4, 8):
            t_lat = args.memory_base * mult
            frames = (t_lat - 1) * 4 + 1
            inputs = model_inputs(args, frames, device, dtype)

            def fn():
                with torch.no_grad():
                    return m(**inputs).sample

            t0 = time.perf_counter()
            _, _, pk = run_and_measure(fn, device, 1, 0)
            el = time.perf_counter() - t0
            results[(mode, mult)] = (frames, t_lat, pk)
            print(f"  memory {mode:9s} {mult}x (T={t_lat:3d}): "
                  + "  ".join(f"{k} {mib(v)} MiB" for k, v in pk.items() if k != "min_ms")
                  + f"  ({el:.0f}s)", flush=True)
            extra = dict(converted_blocks=args.memory_layers, layers=args.memory_layers, multiple=mult)
            for k, v in pk.items():
                if k not in ("output", "min_ms"):
                    name = f"hybrid_{'recurrent' if mode == 'recurrent' else 'causal'}_tc{tc}_to{to}"
                    records.append(record(args, name, "peak_mem_bytes", v, "model", frames, dict(extra, method=k)))
            if mode == "parallel" and mult >= args.memory_parallel_max:
                break
    keys = [k for k in results[("recurrent", 1)][2] if k not in ("output", "min_ms")]
    print(f"\n### Recurrent sampling memory ({args.memory_layers} blocks, all converted, causal, T_c={tc}, T_o={to})\n")
    print("| mode | x | latent T | tokens | " + " | ".join(f"peak {k} MiB | work {k} MiB" for k in keys) + " |")
    print("|---|---|---|---|" + "---|---|" * len(keys))
    hw = (args.height // 16) * (args.width // 16)
    for (mode, mult), (frames, t_lat, pk) in results.items():
        print(f"| {mode} | {mult} | {t_lat} | {t_lat * hw} | "
              + " | ".join(f"{mib(pk[k])} | {mib(pk[k] - pk['output'])}" for k in keys) + " |")
    print()
    verdicts = {}
    for k in keys:
        for label, val in (("peak", lambda pk: pk[k]), ("work", lambda pk: pk[k] - pk["output"])):
            vals = [val(results[("recurrent", x)][2]) for x in (1, 2, 4, 8)]
            ratio = max(vals) / max(min(vals), 1)
            verdicts[f"{label}_{k}"] = ratio
            print(f"recurrent {label} ({k}) max/min over 1x..8x = {ratio:.3f} -> "
                  f"{'FLAT (<= 1.10)' if ratio <= 1.10 else 'NOT flat'}")
    return verdicts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--width", type=int, default=416)
    ap.add_argument("--frames", type=int, nargs="+", default=[9, 17, 33, 65], help="pixel frames (4k+1), block part")
    ap.add_argument("--model-frames", type=int, nargs="+", default=[9, 17], help="pixel frames, model part")
    ap.add_argument("--layers", type=int, default=30, help="blocks in the whole-model part (30 = Wan2.1-1.3B)")
    ap.add_argument("--paper-blocks", type=int, default=15, help="blocks converted in the partial model")
    ap.add_argument("--memory-layers", type=int, default=30)
    ap.add_argument("--memory-base", type=int, default=None,
                    help="latent frames at 1x (memory part); default 2*T_c, so that 1x already reaches the steady "
                         "state (a full T_c+T_o window and carried state, from the second chunk on)")
    ap.add_argument("--memory-parallel-max", type=int, default=8, help="largest multiple run in parallel form")
    ap.add_argument("--chunk-frames", type=int, default=3)
    ap.add_argument("--overlap-frames", type=int, default=1)
    ap.add_argument("--feature-map", default="polynomial")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls per variant (block part: first size only)")
    ap.add_argument("--model-repeats", type=int, default=None, help="default: --repeats")
    ap.add_argument("--model-warmup", type=int, default=None, help="default: --warmup")
    ap.add_argument("--model-variants", nargs="+", default=list(MODEL_VARIANTS), choices=list(MODEL_VARIANTS))
    ap.add_argument("--no-model-tracker", dest="model_tracker", action="store_false",
                    help="CPU: skip the (extra, untimed) live-tensor-tracker call in the whole-model part")
    ap.add_argument("--compile", action="store_true",
                    help="block part: also time the bidirectional ReHyAt block with torch.compile (enable_compile)")
    ap.add_argument("--no-block-tracker", dest="block_tracker", action="store_false",
                    help="block part: skip the extra untimed call under the live-tensor tracker")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--parts", nargs="+", default=["block", "model", "memory"], choices=["block", "model", "memory"])
    ap.add_argument("--out", default=None, help="write efficiency records (JSON lines) here")
    ap.add_argument("--malloc", default="release", choices=list(MALLOC_ENV),
                    help="glibc heap the script re-executes itself with: release (default; RSS peaks per call) | "
                         "caching (freed pages reused, no page zeroing: what a caching allocator gives; RSS peaks "
                         "become process-wide)")
    ap.add_argument("--no-reexec", action="store_true", help="do not re-exec with --malloc's environment")
    args = ap.parse_args()
    args.memory_base = 2 * args.chunk_frames if args.memory_base is None else args.memory_base
    args.model_repeats = args.repeats if args.model_repeats is None else args.model_repeats
    args.model_warmup = args.warmup if args.model_warmup is None else args.model_warmup
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    dtype = getattr(torch, args.dtype)
    print(f"# wan_model benchmark: device={device} dtype={args.dtype} {args.height}x{args.width} "
          f"T_c={args.chunk_frames} T_o={args.overlap_frames} phi={args.feature_map} threads={torch.get_num_threads()} "
          f"malloc={os.environ.get('REHYAT_BENCH_MALLOC', 'as launched')} cpus={os.cpu_count()} "
          f"loadavg={os.getloadavg()[0]:.1f}", flush=True)
    records = []
    t0 = time.time()
    if "block" in args.parts:
        bench_block(args, device, dtype, records)
    if "model" in args.parts:
        bench_model(args, device, dtype, records)
    if "memory" in args.parts:
        bench_memory(args, device, dtype, records)
    print(f"\ntotal {time.time() - t0:.0f}s, loadavg at end {os.getloadavg()[0]:.1f}")
    if args.out:
        with open(args.out, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
