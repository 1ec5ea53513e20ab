"""What each special path of the parallel hybrid op buys: the op with each one switched off, side by side.

    python benchmarks/op_paths.py --frames 81 161 321 --height 240 --width 416 --heads 12 --threads 2 --rounds 5

The parallel form (:func:`rehyat.attention.hybrid_attention`) has two paths that only run without autograd, next to
the plain form that autograd uses, and one that runs in both:

* ``stacked states in place`` — :func:`rehyat.attention.chunked._stacked_states_in_place` instead of the functional
  running sums of :func:`~rehyat.attention.chunked._stacked_states`;
* ``output in place`` — a preallocated output that each chunk's read-out and joint normaliser write into, instead of
  per-chunk results and one final ``cat``;
* ``batched softmax calls`` — chunks of equal length grouped into one fused softmax call, up to
  :data:`~rehyat.attention.chunked.ROWS_PER_SOFTMAX_CALL` query rows, instead of one call per chunk (with autograd
  too: ``--backward`` times forward + backward, where only this one applies).

Each variant switches one of them off (``plain`` all three); timings are medians of interleaved rounds
(no autograd unless ``--backward``, fp32, q/k/v/features ``[1, N, H, D|F]`` in Wan's layout, T_c = 3, T_o = 1,
F = 256).  The ratio column is variant / default: above 1 means the special path pays; peak memory is the live-tensor
peak of one call.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from rehyat.attention import chunked  # noqa: E402
from rehyat.wan.memory import measure_peak  # noqa: E402


@contextlib.contextmanager
def patched(**attrs):
    old = {k: getattr(chunked, k) for k in attrs}
    for k, v in attrs.items():
        setattr(chunked, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(chunked, k, v)


VARIANTS = {
    "default": {},
    "stacked states functional": dict(_stacked_states_in_place=chunked._stacked_states),
    "output not in place": dict(_writes_in_place=lambda *a: False),
    "one softmax call per chunk": dict(ROWS_PER_SOFTMAX_CALL=0),
    "plain (all three off)": dict(_stacked_states_in_place=chunked._stacked_states, _writes_in_place=lambda *a: False,
                                  ROWS_PER_SOFTMAX_CALL=0),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[81, 161, 321], help="pixel frames (4k+1)")
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--width", type=int, default=416)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--feature-dim", type=int, default=256)
    ap.add_argument("--chunk-frames", type=int, default=3)
    ap.add_argument("--overlap-frames", type=int, default=1)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--backward", action="store_true", help="time forward + backward (autograd) instead of inference")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ft = (args.height // 16) * (args.width // 16)
    print(f"hybrid op, {args.heads} heads x {args.head_dim}, F={args.feature_dim}, {args.height}x{args.width} "
          f"({ft} tokens/frame), T_c={args.chunk_frames} T_o={args.overlap_frames} causal={args.causal}, "
          f"threads={torch.get_num_threads()}, {args.rounds} interleaved rounds, "
          f"{'forward + backward' if args.backward else 'inference'}, torch {torch.__version__}\n")
    print("| frames (latent) | variant | median ms | variant / default | peak MiB (live tensors, output included) |\n"
          "|---|---|---|---|---|")
    for frames in args.frames:
        t = (frames - 1) // 4 + 1
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, t * ft, args.heads, args.head_dim, generator=g) for _ in range(3))
        fq, fk = (torch.rand(1, t * ft, args.heads, args.feature_dim, generator=g) / args.feature_dim for _ in range(2))
        kw = dict(frame_tokens=ft, chunk_frames=args.chunk_frames, overlap_frames=args.overlap_frames,
                  causal=args.causal)
        ref, peaks = None, {}
        variants = {name: VARIANTS[name] for name in ["default", *args.variants] if name in VARIANTS}
        if args.backward:  # the inference-only paths do not run under autograd
            variants = {n: a for n, a in variants.items() if n in ("default", "one softmax call per chunk")}
        times = {name: [] for name in variants}

        def call():
            if not args.backward:
                with torch.no_grad():
                    return chunked.hybrid_attention(q, k, v, fq, fk, **kw)
            ins = [t.detach().requires_grad_() for t in (q, k, v, fq, fk)]
            y = chunked.hybrid_attention(*ins, **kw)
            y.backward(torch.ones_like(y))
            return y.detach()

        for name, attrs in variants.items():  # warm-up and equality
            with patched(**attrs):
                y, peaks[name] = measure_peak(call, "tensors")
            ref = y if ref is None else ref
            torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-4)
        for _ in range(args.rounds):
            for name, attrs in variants.items():
                with patched(**attrs):
                    t0 = time.perf_counter()
                    call()
                    times[name].append(time.perf_counter() - t0)
        base = statistics.median(times["default"])
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"| {frames} ({t}) | {name} | {med * 1e3:,.0f} | {med / base:.2f} | {peaks[name] / 2**20:,.1f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
