"""onnxruntime (CPU) cost of the exported ReHyAt chunk step vs an exported dense Wan block, at the 1.3B width.

One ``WanTransformerBlock`` at Wan2.1-1.3B width (dim 1536 = 12 heads x 128, FFN 8960, 512 text tokens) with random
weights, converted with the ``long-video`` preset (causal, T_c = 3, T_o = 1, polynomial phi 256/256), is exported
twice per frame size:

* the **chunk step** (:class:`rehyat.export.graphs.BlockChunkStep`: one chunk of T_c frames, state in / state out,
  static shapes) — run chunk after chunk with the states carried, so the chunk that ends a video of L latent frames is
  timed at its place in the chain;
* the **dense block** (:class:`rehyat.export.graphs.DenseBlockStep`, diffusers' softmax processor) on a window of L
  frames — what a dense DiT computes per block and step for an L-frame video; one graph per L.

Each graph runs in its own fresh worker process (onnxruntime's CPU arena off, ``MALLOC_MMAP_THRESHOLD_=65536`` so
freed memory leaves the RSS): median latency over ``--repeats`` calls after a warm-up, and the peak RSS increase of
a call over the loaded session (max over the timed calls, ``rehyat.wan.memory.measure_peak(..., "rss")``; the
weights, ~190 MiB, are loaded before and not counted).  Before timing, the chunk step is checked against the block's eager recurrent step
(PyTorch, fused kernels) over 3 chained chunks.  Random weights: a cost measurement, never a quality one.

    # as recorded in BENCHMARKS.md ("On-device export", 2 shared CPU cores, a few minutes)
    python benchmarks/export_onnx.py --sizes 240x416 --frames 3 6 12 21 --dense-frames 3 6 12 21 \
        --big 480x832 --big-frames 3 6 --big-dense-frames 3 --repeats 3 --threads 2 --out /tmp/export_onnx.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if "MALLOC_MMAP_THRESHOLD_" not in os.environ and "--no-reexec" not in sys.argv:
    os.execve(sys.executable, [sys.executable, *sys.argv], dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536"))

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

DIM, HEADS, HEAD_DIM, FFN, TEXT_TOKENS = 1536, 12, 128, 8960, 512


def mib(b: float) -> str:
    return f"{b / 2**20:,.0f}"


# ------------------------------------------------------------------------------------------------ worker (one graph)
def worker(spec: dict) -> dict:
    """Load one graph, time it and measure one call's peak RSS; the chunk step runs as a chain with its states."""
    from rehyat.export.step import window_valid
    from rehyat.wan.memory import measure_peak
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = spec["threads"], 1
    opts.enable_cpu_mem_arena = False  # every call's working memory is malloc'd and freed: visible in the RSS
    t0 = time.perf_counter()
    sess = ort.InferenceSession(spec["path"], opts, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - t0
    inputs = sess.get_inputs()
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.standard_normal(i.shape).astype(np.float32) for i in inputs}
    if "timestep_proj" in feeds:
        feeds["timestep_proj"] *= 0.1

    def timed(feed) -> tuple[float, int, list]:
        """Median ms of ``repeats`` calls after a warm-up, and the largest peak RSS increase of those calls."""
        sess.run(None, feed)
        ts, peak = [], 0
        for _ in range(spec["repeats"]):
            t = time.perf_counter()
            out, p = measure_peak(lambda: sess.run(None, feed), "rss")
            ts.append(time.perf_counter() - t)
            peak = max(peak, p)
        return statistics.median(ts) * 1e3, peak, out

    rows = []
    if spec["kind"] == "dense":
        ms, peak, _ = timed(feeds)
        rows.append(dict(frames=spec["frames"], ms=ms, peak=peak))
    else:
        tc, to = spec["chunk_frames"], spec["overlap_frames"]
        state = [n.name for n in inputs if n.name.startswith("state.")]
        for name in state:
            feeds[name] = np.zeros(feeds[name].shape, np.float32)
        wanted = set(spec["frames"])
        for c in range(max(spec["frames"]) // tc):
            feeds["window_valid"] = window_valid(min(to, c * tc), tc, to).numpy()
            end = (c + 1) * tc
            if end in wanted:
                ms, peak, out = timed(feeds)
                rows.append(dict(frames=end, chunk=c, ms=ms, peak=peak))
            else:
                out = sess.run(None, feeds)
            for name, value in zip(state, out[1:]):
                feeds[name] = value
    return dict(spec, rows=rows, load_s=load_s)


def run_worker(spec: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    res = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                         env=env, check=False)
    if res.returncode:
        raise RuntimeError(f"worker failed for {spec['path']}:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ export side
def build_block(seed: int = 0):
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock

    from rehyat.config import ReHyAtConfig
    from rehyat.wan.processor import ReHyAtWanAttnProcessor

    torch.manual_seed(seed)
    block = WanTransformerBlock(DIM, FFN, HEADS, "rms_norm_across_heads", True, 1e-6).eval()
    config = ReHyAtConfig.from_preset("long-video")
    dense = WanTransformerBlock(DIM, FFN, HEADS, "rms_norm_across_heads", True, 1e-6).eval()
    dense.load_state_dict(block.state_dict())  # the same weights, diffusers' softmax processor
    block.attn1.set_processor(ReHyAtWanAttnProcessor(HEADS, HEAD_DIM, config))
    return block, dense, config


def parse_size(text: str) -> tuple[int, int]:
    h, w = (int(x) for x in text.lower().split("x"))
    if h % 16 or w % 16:
        raise SystemExit(f"size {text}: height and width must be multiples of 16")
    return h, w


def bench_size(args, size: str, frames: list[int], dense_frames: list[int], block, dense, config, tmp: Path):
    from rehyat.export.exporter import export_graph
    from rehyat.export.graphs import BlockChunkStep, DenseBlockStep
    from rehyat.export.verify import check_block

    h, w = parse_size(size)
    hp, wp = h // 16, w // 16
    tc = config.chunk_frames
    bad = [f for f in frames if f % tc]
    if bad:
        raise SystemExit(f"--frames must be multiples of T_c={tc} (chunk ends), got {bad}")
    step = BlockChunkStep(block, height=hp, width=wp, text_tokens=TEXT_TOKENS)
    path = tmp / f"hybrid_{size}.onnx"
    t0 = time.perf_counter()
    export_graph(step, path)
    export_s = time.perf_counter() - t0
    agree = check_block(path, step, block, threads=args.threads) if not args.no_check else None
    print(f"[{size}] chunk step exported in {export_s:.0f} s"
          + (f"; onnxruntime vs eager: {agree.describe()}" if agree else ""), flush=True)
    results = [run_worker(dict(kind="hybrid", size=size, path=str(path), frames=frames, chunk_frames=tc,
                               overlap_frames=config.overlap_frames, threads=args.threads, repeats=args.repeats))]
    path.unlink()
    path.with_name(path.name + ".data").unlink()
    for f in dense_frames:
        dpath = tmp / f"dense_{size}_{f}.onnx"
        export_graph(DenseBlockStep(dense, frames=f, frame_tokens=hp * wp, text_tokens=TEXT_TOKENS), dpath)
        results.append(run_worker(dict(kind="dense", size=size, path=str(dpath), frames=f, threads=args.threads,
                                       repeats=args.repeats)))
        dpath.unlink()
        dpath.with_name(dpath.name + ".data").unlink()
        print(f"[{size}] dense block on {f} frames: {results[-1]['rows'][0]['ms']:.0f} ms", flush=True)
    return dict(size=size, frame_tokens=hp * wp, chunk_frames=tc, overlap_frames=config.overlap_frames,
                agreement=None if agree is None else dict(max_abs=agree.max_abs, scale=agree.scale, rel=agree.rel),
                export_s=export_s, results=results)


def table(entry: dict) -> str:
    tc = entry["chunk_frames"]
    hyb = {r["frames"]: r for r in entry["results"][0]["rows"]}
    dense = {r["frames"]: r["rows"][0] for r in entry["results"][1:]}
    lines = [f"{entry['size']} ({entry['frame_tokens']} tokens / latent frame), T_c = {tc}, T_o = "
             f"{entry['overlap_frames']}", "",
             "| video (latent frames) | ReHyAt chunk step: ms / chunk | peak MiB | dense block on the whole video: "
             "ms / call | peak MiB | dense ms per T_c frames |",
             "|---|---|---|---|---|---|"]
    for f in sorted(set(hyb) | set(dense)):
        h, d = hyb.get(f), dense.get(f)
        lines.append(f"| {f} | {h['ms']:,.0f} (chunk {h['chunk'] + 1}) | {mib(h['peak'])} | " if h else f"| {f} | — | — | ")
        lines[-1] += (f"{d['ms']:,.0f} | {mib(d['peak'])} | {d['ms'] * tc / f:,.0f} |" if d else "— | — | — |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", nargs="+", default=["240x416"])
    ap.add_argument("--frames", type=int, nargs="+", default=[3, 6, 12, 21],
                    help="video lengths (latent frames, multiples of T_c) whose last chunk is timed")
    ap.add_argument("--dense-frames", type=int, nargs="+", default=[3, 6, 12, 21])
    ap.add_argument("--big", default=None, help="an extra, larger size (e.g. 480x832) with its own frame lists")
    ap.add_argument("--big-frames", type=int, nargs="+", default=[3, 6])
    ap.add_argument("--big-dense-frames", type=int, nargs="+", default=[3])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (and torch's)")
    ap.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-eager check")
    ap.add_argument("--out", default=None, help="also write the results as JSON")
    ap.add_argument("--no-reexec", action="store_true", help="do not re-exec with MALLOC_MMAP_THRESHOLD_")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    import onnxruntime

    torch.set_num_threads(args.threads)
    block, dense, config = build_block()
    started = time.time()
    entries = []
    with tempfile.TemporaryDirectory(prefix="rehyat-export-bench-") as tmp:
        for size in args.sizes:
            entries.append(bench_size(args, size, args.frames, args.dense_frames, block, dense, config, Path(tmp)))
        if args.big:
            entries.append(bench_size(args, args.big, args.big_frames, args.big_dense_frames, block, dense, config,
                                      Path(tmp)))
    head = (f"onnxruntime {onnxruntime.__version__} CPU, torch {torch.__version__}, {platform.machine()}, "
            f"{os.cpu_count()} cpus, {args.threads} threads, {args.repeats} repeats, "
            f"{time.time() - started:.0f} s in all")
    print("\n" + head + "\n")
    for e in entries:
        if e["agreement"]:
            a = e["agreement"]
            print(f"{e['size']}: onnxruntime vs eager recurrent step, max |delta| {a['max_abs']:.3g} (scale "
                  f"{a['scale']:.3g}, relative {a['rel']:.2g})")
        print(table(e) + "\n")
    if args.out:
        Path(args.out).write_text(json.dumps(dict(header=head, entries=entries), indent=2))


if __name__ == "__main__":
    main()
