"""Benchmark (not a test): the hybrid op (parallel and recurrent) vs SDPA at the Wan2.1-1.3B attention shape.

    python benchmarks/attention_op.py                      # 21 and 41 latent frames, fp32, CPU
    python benchmarks/attention_op.py --frames 5 9 --heads 2   # quick look

Prints, per frame count: wall time (median of interleaved repeats) of SDPA / hybrid parallel / hybrid recurrent, the
measured speedup next to the analytic FLOPs ratio, and each op's achieved FLOP/s against this machine's large-matmul
rate measured in the same run.  Targets (issue 2): speedup >= 0.9 x FLOPs ratio; achieved >= 75 % of matmul rate.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from rehyat.attention import hybrid_attention, hybrid_attention_recurrent
from rehyat.cost import AttentionSpec, attention_flops


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def matmul_rate(dtype: torch.dtype, size: int = 4096, repeats: int = 5) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.matmul(a, b)
    return 2 * size**3 / statistics.median(timed(lambda: torch.matmul(a, b)) for _ in range(repeats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[21, 41], help="latent frames")
    ap.add_argument("--frame-tokens", type=int, default=1560)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--feature-dim", type=int, default=256)
    ap.add_argument("--chunk-frames", type=int, default=3)
    ap.add_argument("--overlap-frames", type=int, default=1)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--min-time", type=float, default=20.0, help="repeat until each op has run this many seconds")
    ap.add_argument("--min-repeats", type=int, default=3, help="timed rounds at least (median of these)")
    ap.add_argument("--max-repeats", type=int, default=5)
    ap.add_argument("--json", help="also write results here")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)

    rate = matmul_rate(dtype)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, threads={torch.get_num_threads()}, "
          f"{args.dtype}; large-matmul rate {rate / 1e9:.1f} GFLOP/s")
    print("| latent frames | tokens | SDPA s | hybrid s | recurrent s | speedup hybrid | speedup recurrent | "
          "FLOPs ratio | hybrid/ratio | recurrent FLOPs ratio | recurrent/ratio | hybrid % of matmul | "
          "recurrent % of matmul | SDPA % of matmul |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for frames in args.frames:
        n = frames * args.frame_tokens
        b, h, d, f = 1, args.heads, args.head_dim, args.feature_dim
        q, k, v = (torch.randn(b, n, h, d, dtype=dtype) for _ in range(3))
        fq, fk = (torch.rand(b, n, h, f, dtype=dtype) / f for _ in range(2))
        kw = dict(frame_tokens=args.frame_tokens, chunk_frames=args.chunk_frames, overlap_frames=args.overlap_frames)
        ops = {
            "sdpa": lambda: F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)),
            "hybrid": lambda: hybrid_attention(q, k, v, fq, fk, **kw),
            "recurrent": lambda: hybrid_attention_recurrent(q, k, v, fq, fk, **kw),
        }
        times = {name: [] for name in ops}
        with torch.inference_mode():
            hybrid_attention(q[:, : 2 * args.frame_tokens], k[:, : 2 * args.frame_tokens], v[:, : 2 * args.frame_tokens],
                             fq[:, : 2 * args.frame_tokens], fk[:, : 2 * args.frame_tokens], **kw)  # backend self-check
            # interleave the ops so background load affects all of them alike
            while True:
                for name, fn in ops.items():
                    times[name].append(timed(fn))
                reps = len(times["sdpa"])
                if reps >= args.max_repeats or (reps >= args.min_repeats
                                                and min(sum(t) for t in times.values()) >= args.min_time):
                    break
        med = {name: statistics.median(t) for name, t in times.items()}
        fl = {
            "sdpa": attention_flops(AttentionSpec("softmax"), batch=b, heads=h, head_dim=d, frames=frames,
                                    frame_tokens=args.frame_tokens).flops,
            "hybrid": attention_flops(AttentionSpec("hybrid", args.chunk_frames, args.overlap_frames, False, f), batch=b,
                                      heads=h, head_dim=d, frames=frames, frame_tokens=args.frame_tokens).flops,
            "recurrent": attention_flops(AttentionSpec("hybrid_recurrent", args.chunk_frames, args.overlap_frames, True, f),
                                         batch=b, heads=h, head_dim=d, frames=frames, frame_tokens=args.frame_tokens).flops,
        }
        ratio = fl["sdpa"] / fl["hybrid"]
        ratio_rec = fl["sdpa"] / fl["recurrent"]
        row = dict(frames=frames, tokens=n, repeats=len(times["sdpa"]), seconds=med, samples=times, flops=fl,
                   speedup_hybrid=med["sdpa"] / med["hybrid"], speedup_recurrent=med["sdpa"] / med["recurrent"],
                   flops_ratio=ratio, flops_ratio_recurrent=ratio_rec, matmul_rate=rate,
                   achieved={name: fl[name] / med[name] / rate for name in ops})
        rows.append(row)
        print(f"| {frames} | {n} | {med['sdpa']:.2f} | {med['hybrid']:.2f} | {med['recurrent']:.2f} | "
              f"{row['speedup_hybrid']:.2f}x | {row['speedup_recurrent']:.2f}x | {ratio:.2f}x | "
              f"{row['speedup_hybrid'] / ratio:.2f} | {ratio_rec:.2f}x | {row['speedup_recurrent'] / ratio_rec:.2f} | "
              f"{100 * row['achieved']['hybrid']:.0f}% | {100 * row['achieved']['recurrent']:.0f}% | "
              f"{100 * row['achieved']['sdpa']:.0f}% |", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(args=vars(args), torch=torch.__version__, threads=torch.get_num_threads(), rows=rows), fh, indent=1)


if __name__ == "__main__":
    main()
