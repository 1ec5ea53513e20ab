"""φ at matmul speed: the polynomial feature map's forward against its own two matmuls, side by side.

    python benchmarks/feature_maps.py --tokens 32760 --heads 12 --head-dim 128 --threads 2 --rounds 7

Inputs ``x: [1, N, H, D]`` (Wan's layout).  Measured in interleaved rounds (median): the map in inference
(``rehyat.feature_maps.PolynomialFeatureMap``: head-major GEMMs, tiled, elementwise in place), its two per-head
matmuls as bare ``torch.bmm`` on contiguous head-major inputs (the rate to reach), and the einsum formulation the map
used before (separate passes, layout copies).  Prints GFLOP/s of the two matmuls' FLOPs and the ratio map / bmm.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=32760, help="N (21 latent frames x 1560 tokens = Wan 480x832)")
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--hidden-dim", type=int, default=256)
    ap.add_argument("--feature-dim", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from rehyat.feature_maps import build_feature_map

    n, h, d = args.tokens, args.heads, args.head_dim
    torch.manual_seed(0)
    phi = build_feature_map("polynomial", h, d, hidden_dim=args.hidden_dim, feature_dim=args.feature_dim).eval()
    x = torch.randn(1, n, h, d)
    w1, b1, w2, b2 = (p.detach() for p in (phi.fc1.weight, phi.fc1.bias, phi.fc2.weight, phi.fc2.bias))
    xh = x[0].transpose(0, 1).contiguous()
    hid = torch.empty(h, n, args.hidden_dim)

    def bmm_only():
        torch.bmm(xh, w1, out=hid)
        return torch.bmm(hid, w2)

    def the_map():
        with torch.no_grad():
            return phi(x)

    def einsum_form():
        with torch.no_grad():
            y = torch.einsum("bnhi,hio->bnho", x * d ** -0.25, w1) + b1
            psi = F.softplus(torch.einsum("bnhi,hio->bnho", F.gelu(y), w2) + b2)
            a, b = psi.chunk(2, dim=-1)
            return torch.cat([a, b.pow(2)], dim=-1)

    fns = {"bmm (two matmuls)": bmm_only, "phi (this map)": the_map, "phi (einsum form, before)": einsum_form}
    flops = 2 * n * h * d * args.hidden_dim + 2 * n * h * args.hidden_dim * args.feature_dim
    for fn in fns.values():
        fn()  # warm-up: allocator, thread pool
    times = {k: [] for k in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = {k: {"median_ms": v * 1e3, "gflops": flops / v / 1e9} for k, v in med.items()}
    ratio = med["bmm (two matmuls)"] / med["phi (this map)"]
    print(f"N={n} H={h} D={d} -> {args.hidden_dim} -> {args.feature_dim}, threads={torch.get_num_threads()}, "
          f"rounds={args.rounds} (interleaved), torch {torch.__version__}")
    print("| form | median ms | GFLOP/s (of the two matmuls' FLOPs) |\n|---|---|---|")
    for k, r in rows.items():
        print(f"| {k} | {r['median_ms']:.0f} | {r['gflops']:.0f} |")
    print(f"\nphi / bmm rate: {ratio:.2f} (target >= 0.80)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "ratio": ratio}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
