"""Stage-1 proxy benchmark: how well does each student approximate a video-like softmax teacher's attention?

    python benchmarks/distill_proxy.py --steps 150 --out runs/distill_proxy

Teacher: :func:`rehyat.distill.proxy.build_proxy_teacher` (random-weight Wan-shaped 2-block transformer, 2 heads x
128, aligned q/k + shared q/k bias + Wan's 3D RoPE with a "spatial" and a "temporal" head), fed smooth moving latents
(16 x 9 x 16 x 16 -> 9 latent frames x 64 tokens = 576 tokens) noised at flow-matching timesteps.  Every student gets
the same stage-1 budget (``rehyat.distill.stage1``: same steps, lr, schedule, seed, inputs, L1 loss) and is scored on
held-out latents (other seeds) by the relative L2 error ||y - y_teacher|| / ||y_teacher|| of the per-head attention
output, pooled over the eval inputs and averaged over the 2 blocks.  Students: ReHyAt (hybrid) for T_c in {1,2,3},
T_o in {0,1} with each joint normaliser (``--normalisers kernel,paper``: fq.fk standing in for exp(s), or the paper's
stabiliser inside the exponential only), each without and with the learned per-head log-scale of the linear branch
(data-initialised); linear-only with the same feature map; chunk-local softmax only (no parameters: evaluated, not
trained).  ``--teacher-temperature`` scales the teacher's q/k RMSNorm gains, hence its logits (1.2: log-sum-exp about
30; the run prints the teacher's mean log-sum-exp and max logit per block, so the score scale is on record).

The normaliser ablation of docs/attention.md::

    python benchmarks/distill_proxy.py --steps 150 --out runs/proxy_t12              # large logits
    python benchmarks/distill_proxy.py --steps 150 --teacher-temperature 0.7 --out runs/proxy_t07   # small logits
    python benchmarks/distill_proxy.py --steps 600 --chunk-frames 3 --overlap-frames 1 --out runs/proxy_t12_long
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/distill_proxy")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--feature-map", default="polynomial")
    ap.add_argument("--feature-map-kwargs", default='{"hidden_dim": 128, "feature_dim": 128}')
    ap.add_argument("--train-items", type=int, default=64)
    ap.add_argument("--eval-items", type=int, default=8)
    ap.add_argument("--eval-samples", type=int, default=16)
    ap.add_argument("--latent", default="16,9,16,16", help="C,F,H,W of the latents")
    ap.add_argument("--chunk-frames", default="1,2,3")
    ap.add_argument("--overlap-frames", default="0,1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-scale", action="store_true", help="skip the hybrid + learned linear-scale rows")
    ap.add_argument("--normalisers", default="kernel,paper", help="joint normalisers to compare (kernel, paper)")
    ap.add_argument("--teacher-temperature", type=float, default=1.2,
                    help="q/k gain of the proxy teacher (1.2: log-sum-exp ~30; smaller: smaller logits)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from rehyat.distill.common import DistInfo
    from rehyat.distill.data import LatentDataset, make_synthetic_dataset
    from rehyat.distill.flow import FlowMatching
    from rehyat.distill.proxy import attention_stats, build_proxy_teacher
    from rehyat.distill.stage1 import Stage1Config, Stage1Inputs, build_stage1_model, evaluate_stage1, train_stage1
    from rehyat.wan.convert import rehyat_processors

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(x) for x in args.latent.split(","))
    t_start = time.time()
    teacher_dir = out / "teacher"
    build_proxy_teacher(seed=args.seed, temperature=args.teacher_temperature).save_pretrained(teacher_dir)
    train_ds = make_synthetic_dataset(out / "train_data", num_items=args.train_items, latent_shape=shape,
                                      text_dim=32, seed=args.seed + 1)
    eval_ds = make_synthetic_dataset(out / "eval_data", num_items=args.eval_items, latent_shape=shape, text_dim=32,
                                     seed=args.seed + 2)
    fmk = json.loads(args.feature_map_kwargs)
    base = dict(teacher=str(teacher_dir), source="dataset", data=str(train_ds), max_sequence_length=32,
                feature_map=args.feature_map, feature_map_kwargs=fmk, steps=args.steps, lr=args.lr,
                lr_schedule="cosine", warmup_steps=min(20, args.steps // 10), loss="l1", seed=args.seed,
                checkpoint_every=10**9, progress=False, resume=False, eval_samples=args.eval_samples,
                flow_shift=3.0)

    def held_out_error(model, cfg) -> dict:
        procs = rehyat_processors(model)
        settings = next(iter(procs.values()))._distill
        inp = Stage1Inputs(dataclasses.replace(cfg, data=str(eval_ds)), DistInfo(), 16, 32, torch.device("cpu"))
        per_block = evaluate_stage1(model, procs, settings, inp)
        return {"per_block": per_block, "mean": sum(per_block.values()) / len(per_block)}

    # attention-map statistics of the teacher on the held-out inputs
    cfg0 = Stage1Config(**base, out=str(out / "stats"), chunk_frames=3, overlap_frames=1)
    model, procs, settings, _ = build_stage1_model(cfg0, torch.device("cpu"))
    caps: dict[int, list] = {}
    settings.on_qkv = lambda b, q, k, v: caps.setdefault(b, []).append((q.detach(), k.detach()))
    settings.mode = "teacher"
    fm = FlowMatching(3.0)
    ev = LatentDataset(eval_ds, 32)
    g = torch.Generator().manual_seed(123)
    for i in range(len(ev)):
        x0 = ev.item(i)["latents"][None]
        t, sigma = fm.sample(1, g)
        with torch.no_grad():
            model(hidden_states=fm.noisy(x0, torch.randn(x0.shape, generator=g), sigma), timestep=t,
                  encoder_hidden_states=ev.item(i)["prompt_embeds"][None], return_dict=False)
    ft = (shape[2] // 2) * (shape[3] // 2)
    stats = {}
    for b, lst in caps.items():
        per = [attention_stats(q, k, ft, shape[3] // 2) for q, k in lst]
        stats[b] = {key: [sum(p[key][h] for p in per) / len(per) for h in range(len(per[0][key]))] for key in per[0]}
        # the score scale the normalisers react to: mean over queries of log-sum-exp and of the row max of s
        s = [torch.einsum("bnhd,bmhd->bhnm", q.double(), k.double()) * q.shape[-1] ** -0.5 for q, k in lst]
        stats[b]["mean_lse"] = float(torch.stack([x.logsumexp(-1).mean() for x in s]).mean())
        stats[b]["mean_row_max"] = float(torch.stack([x.amax(-1).mean() for x in s]).mean())
    del model, procs, settings

    rows = []

    def run(label, kind, tc, to, train=True, scale=False, normaliser="kernel"):
        cfg = Stage1Config(**base, out=str(out / label), student_kind=kind, chunk_frames=tc, overlap_frames=to,
                           learn_linear_scale=scale, normaliser=normaliser)
        t0 = time.time()
        before = {}
        if train:
            res = train_stage1(cfg, model_hook=lambda m: before.update(held_out_error(m, cfg)))
            model, last = res["model"], res["last_loss"]
        else:
            model, *_ = build_stage1_model(cfg, torch.device("cpu"))
            last = None
        err = held_out_error(model, cfg)
        name = f"{kind} ({normaliser})" if kind == "hybrid" else kind
        row = {"student": label, "kind": name + (" + scale" if scale else ""), "normaliser": normaliser,
               "scale": scale, "T_c": tc if kind != "linear" else None,
               "T_o": to if kind != "linear" else None, "trained_steps": args.steps if train else 0,
               "rel_l2": err["mean"], "rel_l2_per_block": err["per_block"],
               "rel_l2_untrained": before.get("mean"), "final_train_loss": last, "seconds": time.time() - t0}
        rows.append(row)
        print(json.dumps(row), flush=True)

    tcs = [int(x) for x in args.chunk_frames.split(",")]
    tos = [int(x) for x in args.overlap_frames.split(",")]
    for tc in tcs:
        for to in tos:
            for nm in args.normalisers.split(","):
                run(f"hybrid_{nm}_tc{tc}_to{to}", "hybrid", tc, to, normaliser=nm)
                if not args.no_scale:
                    run(f"hybrid_{nm}_scale_tc{tc}_to{to}", "hybrid", tc, to, scale=True, normaliser=nm)
    run("linear", "linear", 1, 0)
    for tc in tcs:
        for to in tos:
            run(f"chunk_local_tc{tc}_to{to}", "chunk_local", tc, to, train=False)

    lin = next(r["rel_l2"] for r in rows if r["kind"] == "linear")
    for r in rows:
        r["ratio_vs_linear"] = r["rel_l2"] / lin
    result = {"args": vars(args), "attention_stats": stats, "rows": rows, "seconds": time.time() - t_start,
              "machine": {"python": sys.version.split()[0], "torch": torch.__version__, "cpu": platform.processor()
                          or platform.machine(), "threads": torch.get_num_threads()}}
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    st = result["attention_stats"]
    lines = ["teacher score scale (held-out): " + ", ".join(
        f"block {b}: mean log-sum-exp {v['mean_lse']:.1f}, mean row max {v['mean_row_max']:.1f}"
        for b, v in sorted(st.items())), "",
        "| student | T_c | T_o | rel. L2 error (held-out) | untrained φ | ratio vs linear-only |",
        "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        f = lambda x: "—" if x is None else f"{x:.4f}"  # noqa: E731
        lines.append(f"| {r['kind']} | {r['T_c'] if r['T_c'] is not None else '—'} | "
                     f"{r['T_o'] if r['T_o'] is not None else '—'} | {f(r['rel_l2'])} | {f(r['rel_l2_untrained'])} | "
                     f"{r['ratio_vs_linear']:.3f} |")
    lines += ["", "| block | head | norm. entropy | self | own frame (uniform) | ±1 frame (uniform) | "
                  "3x3 spatial, any frame (uniform) |", "|---|---|---|---|---|---|---|"]
    for b, st in sorted(result["attention_stats"].items()):
        for h in range(len(st["norm_entropy"])):
            lines.append(f"| {b} | {h} | {st['norm_entropy'][h]:.3f} | {st['self'][h]:.3f} | "
                         f"{st['own_frame'][h]:.3f} ({st['own_frame_uniform'][h]:.3f}) | "
                         f"{st['pm1_frames'][h]:.3f} ({st['pm1_frames_uniform'][h]:.3f}) | "
                         f"{st['spatial_3x3_any_frame'][h]:.3f} ({st['spatial_3x3_any_frame_uniform'][h]:.3f}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
