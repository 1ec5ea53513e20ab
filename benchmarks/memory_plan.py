"""Check the ``--dry-run`` memory plan against peaks measured on CPU at reduced depth, same width (issue 16).

    python benchmarks/memory_plan.py --layers 2 --latent 16,9,32,32 --out runs/memory_plan

For each case (stage 2 full fine-tuning without / with gradient checkpointing of the Wan blocks, stage 1
teacher-forced distillation) the Wan2.1-1.3B architecture (width 1536, 12 heads, FFN 8960) is cut to ``--layers``
blocks, all converted to ReHyAt (``paper-main`` chunking), and

* **plan** — :func:`rehyat.distill.memory_plan.simulate` + ``per_gpu(..., "single")`` for the CPU target (the same
  code ``--dry-run`` runs, meta device, nothing allocated);
* **measured** — a child process (``MALLOC_MMAP_THRESHOLD_=65536`` so freed blocks go back to the OS, one thread)
  builds the same model with random weights and runs two training steps exactly as the stage trains (stage 2:
  forward, flow-matching MSE, backward, clip, AdamW, ``zero_grad(set_to_none=True)``; stage 1: teacher-forced
  forward with every block's student backward inside it, AdamW on φ); the peak is its resident-set high-water mark
  minus the resident set before the model was built (``rehyat.wan.memory.measure_peak(method="rss")``).

Prints a table, writes ``OUT/results.json``, exits 1 if any case's |plan - measured| / measured exceeds
``--tolerance`` (0.15).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

CASES = {"stage2": dict(stage="stage2", checkpointing=False), "stage2-checkpointing":
         dict(stage="stage2", checkpointing=True), "stage1": dict(stage="stage1", checkpointing=False)}


def _arch(layers: int) -> dict:
    from rehyat.distill.memory_plan import ARCHITECTURES

    return dict(ARCHITECTURES["wan2.1-1.3b"], num_layers=layers)


def _spec(case: str, layers: int, latent: tuple, text_len: int):
    from rehyat.config import get_preset
    from rehyat.distill.memory_plan import StepSpec

    c = CASES[case]
    return StepSpec(c["stage"], _arch(layers), get_preset("paper-main").replace(blocks="all"), latent, 1, text_len,
                    checkpointing=c["checkpointing"], device="cpu")


def plan(case: str, layers: int, latent: tuple, text_len: int) -> dict:
    from rehyat.distill.memory_plan import per_gpu, simulate

    sim = simulate(_spec(case, layers, latent, text_len))
    return per_gpu(sim, "single", 1, 4) | {"tokens": sim["tokens"], "parameters_count": sim["total_parameters"]}


def measure(case: str, layers: int, latent: tuple, text_len: int) -> int:
    """Peak RSS increase (bytes) of building the model and running two real training steps (in this process)."""
    import torch
    import torch.nn.functional as F
    from diffusers import WanTransformer3DModel

    from rehyat.wan.convert import convert_wan_to_rehyat
    from rehyat.wan.memory import measure_peak

    spec = _spec(case, layers, latent, text_len)
    torch.manual_seed(0)

    def run():
        model = convert_wan_to_rehyat(WanTransformer3DModel(**spec.arch), config=spec.rehyat, seed=0)
        model.requires_grad_(False)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(spec.batch, *spec.latent, generator=g)
        t = torch.full((spec.batch,), 500.0)
        emb = torch.randn(spec.batch, spec.text_len, spec.arch["text_dim"], generator=g)
        if spec.stage == "stage2":
            model.requires_grad_(True)
            if spec.checkpointing:
                model.enable_gradient_checkpointing()
            model.train()
        else:
            from rehyat.distill.teacher_forcing import DistillSettings, enable_distillation

            for p in enable_distillation(model, DistillSettings(linear_scale=spec.rehyat.linear_scale)).values():
                p.requires_grad_(True)
            model.eval()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-5)
        for _ in range(2):
            if spec.stage == "stage2":
                out = model(hidden_states=x, timestep=t, encoder_hidden_states=emb, return_dict=False)[0]
                loss = F.mse_loss(out.float(), x)
                loss.backward()
                del out, loss
            else:
                with torch.no_grad():
                    model(hidden_states=x, timestep=t, encoder_hidden_states=emb, return_dict=False)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

    return measure_peak(run, "rss")[1]


def _child(args) -> None:
    import torch

    torch.set_num_threads(1)
    latent = tuple(int(x) for x in args.latent.split(","))
    t0 = time.time()
    peak = measure(args.case, args.layers, latent, args.text_len)
    print(json.dumps({"measured": peak, "seconds": time.time() - t0}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--latent", default="16,9,32,32", help="C,F,H,W of one latent (9 x 256 = 2304 tokens)")
    ap.add_argument("--text-len", type=int, default=512)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--tolerance", type=float, default=0.15)
    ap.add_argument("--out", default="runs/memory_plan")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # child process: measure one case
    args = ap.parse_args(argv)
    if args.case:
        _child(args)
        return 0
    latent = tuple(int(x) for x in args.latent.split(","))
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    rows = []
    for case in args.cases.split(","):
        p = plan(case, args.layers, latent, args.text_len)
        cmd = [sys.executable, __file__, "--case", case, "--layers", str(args.layers), "--latent", args.latent,
               "--text-len", str(args.text_len)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 2
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        err = (p["peak"] - m["measured"]) / m["measured"]
        rows.append({"case": case, "layers": args.layers, "latent": list(latent), "tokens": p["tokens"],
                     "parameters": p["parameters_count"], "plan": p, "measured": m["measured"],
                     "relative_error": err, "measure_seconds": m["seconds"]})
        print(json.dumps({k: rows[-1][k] for k in ("case", "tokens", "measured", "relative_error")}), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"args": vars(args), "rows": rows, "machine": {"python": sys.version.split()[0],
                                                             "cpu": platform.processor() or platform.machine()}}
    import torch

    result["machine"]["torch"] = torch.__version__
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(markdown(result))
    return 0 if all(abs(r["relative_error"]) <= args.tolerance for r in rows) else 1


def markdown(result: dict) -> str:
    g = lambda b: f"{b / 2**30:.3f}"  # noqa: E731
    lines = ["| case | tokens | params | grads | optimizer | activations | plan peak (GiB) | measured peak (GiB) | "
             "plan / measured - 1 |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        p = r["plan"]
        lines.append(f"| {r['case']} | {r['tokens']} | {g(p['parameters'])} | {g(p['gradients'])} | "
                     f"{g(p['optimizer_state'])} | {g(p['activations'])} | {g(p['peak'])} | {g(r['measured'])} | "
                     f"{100 * r['relative_error']:+.1f} % |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
