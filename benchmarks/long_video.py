"""Long videos end to end at the Wan2.1-1.3B width: peak memory and time of the whole ``generate`` call vs length.

One ``rehyat.generate.generate_videos`` call per measurement (text encoding, sampling, VAE decode, mp4 writing and
the decode-back check), with a random-weight pipeline of the real shapes:

* transformer: Wan2.1-1.3B's config (dim 1536, 12 heads x 128, FFN 8960, text dim 4096) with ``--layers`` blocks
  (memory per block does not depend on the block, so fewer than 30 are enough);
* VAE: Wan2.1's configuration (``AutoencoderKLWan()`` defaults: base_dim 96, z 16, 4x time / 8x space), random
  weights, float32;
* text encoder: a one-layer UMT5 with d_model 4096 over the tiny model's byte tokenizer (UMT5-XXL's 5.7 B parameters
  do not fit this machine; the encoder runs once per video in every variant), 512 text tokens;
* scheduler: UniPC flow-matching, ``flow_shift`` 3, ``--steps`` steps (>= 2 so the per-step state cache is used),
  CFG on (guidance 5).

Variants (``--variants``):

* ``stream``    — all blocks converted, causal (``long-video``: T_c = 3, T_o = 1), ``mode="stream"``: chunk by chunk
  through every step, decoded and appended to the mp4 as it goes;
* ``recurrent`` — the same model, ``mode="recurrent"``: stock ``WanPipeline`` loop with every transformer call swept
  chunk by chunk, whole-video VAE decode, then the mp4;
* ``dense``     — the stock ``WanPipeline`` with the dense (softmax) transformer, ``mode="parallel"``.

Lengths: ``--base-latent`` latent frames (default 2 x T_c = 6: two full chunks) times 1, 2, 4, 8.  Every
measurement runs in a fresh process (``--lock FILE`` holds that flock around each, for shared machines), after a
small warm-up generation in that process (first-call allocations are not the call's), and reports:

* peak RSS: the process's resident high-water mark (``VmHWM`` reset via ``/proc/self/clear_refs``) above the RSS at
  the start of the call — everything, numpy frames and encoder buffers included; the script re-executes itself with
  ``MALLOC_MMAP_THRESHOLD_=65536`` so freed blocks leave the RSS;
* peak tensors: live tensor storages created during the call (:class:`rehyat.wan.memory.LiveTensorTracker`, in the
  same call; its per-op bookkeeping is in the timings);
* time to the first frames handed to the mp4 and total time (the sidecar's ``first_chunk_written_seconds`` /
  ``generation_seconds``); the whole-video modes write everything at the end.

    # as recorded in BENCHMARKS.md (shared 2-core machine; each measurement a few minutes)
    python benchmarks/long_video.py --layers 2 --steps 2 --lock /tmp/rehyat-cpu.lock --out runs/long_video.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if "MALLOC_MMAP_THRESHOLD_" not in os.environ and "--no-reexec" not in sys.argv:
    os.execve(sys.executable, [sys.executable, *sys.argv], dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536"))

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

VARIANTS = ("stream", "recurrent", "dense")
MODE = {"stream": "stream", "recurrent": "recurrent", "dense": "parallel"}
WAN_1P3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                text_dim=4096, freq_dim=256, ffn_dim=8960, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                eps=1e-6)
TEXT_ENCODER = dict(d_model=4096, d_kv=64, d_ff=256, num_layers=1, num_heads=4)
PROMPT = "a red fox running through fresh snow, long tracking shot"


def build_pipeline(variant: str, layers: int):
    """The random-weight 1.3B-width pipeline of ``variant`` (converted in place for stream / recurrent)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from rehyat.tiny import TINY_SCHEDULER_CONFIG, build_byte_tokenizer
    from rehyat.wan import convert_pipeline

    tokenizer = build_byte_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = WanTransformer3DModel(**WAN_1P3B, num_layers=layers).eval()
        vae = AutoencoderKLWan().eval()  # Wan2.1's VAE configuration
        t5 = UMT5Config(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                        **TEXT_ENCODER)
        text_encoder = UMT5EncoderModel(t5).eval()
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae,
                       scheduler=UniPCMultistepScheduler(**TINY_SCHEDULER_CONFIG))
    if variant != "dense":
        convert_pipeline(pipe, "long-video", seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def frames_of(latent: int) -> int:
    return (latent - 1) * 4 + 1


def worker(args) -> dict:
    """One measurement in this process: warm-up, then the measured generate_videos call."""
    import rehyat.generate as G
    from rehyat.wan.memory import measure_peak, rss_supported

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = build_pipeline(args.variant, args.layers)
    mode = MODE[args.variant]
    common = dict(height=args.height, width=args.width, num_inference_steps=args.steps, guidance_scale=5.0,
                  max_sequence_length=512, videos_per_prompt=1, mode=mode, device="cpu", log=None)
    tmp = Path(tempfile.mkdtemp(prefix="long_video."))
    if args.warmup_latent:
        G.generate_videos(pipe, [PROMPT], tmp / "warmup", num_frames=frames_of(args.warmup_latent),
                          **dict(common, num_inference_steps=1))
    frames = frames_of(args.latent)
    out = tmp / "run"
    plan = None
    if mode == "stream":
        from rehyat.wan.stream import plan_stream

        plan = plan_stream(pipe, num_frames=frames, height=args.height, width=args.width,
                           num_inference_steps=args.steps, guidance_scale=5.0)

    def call():
        return G.generate_videos(pipe, [PROMPT], out, num_frames=frames, **common)

    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    if rss_supported():
        (_, tensors), rss = measure_peak(lambda: measure_peak(call, "tensors"), "rss")
    else:
        (_, tensors), rss = measure_peak(call, "tensors"), None
    wall = time.perf_counter() - t0
    meta = json.loads(next((out / "meta").glob("*.json")).read_text())
    return dict(variant=args.variant, mode=mode, multiple=args.multiple, frames=frames, latent_frames=args.latent,
                height=args.height, width=args.width, layers=args.layers, steps=args.steps,
                chunks=len(plan.chunks) if plan else None, state_cache_bytes=plan.cache_bytes if plan else None,
                peak_rss_bytes=rss, peak_tensors_bytes=tensors, wall_seconds=round(wall, 2),
                generation_seconds=meta["generation_seconds"],
                first_chunk_written_seconds=meta["first_chunk_written_seconds"], frames_written=meta["frames"],
                threads=torch.get_num_threads(), loadavg_start=round(load0, 2),
                loadavg_end=round(os.getloadavg()[0], 2), torch=torch.__version__, machine=platform.machine(),
                cpus=os.cpu_count(), time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def mib(b):
    return "n/a" if b is None else f"{b / 2**20:,.0f}"


def table(rows: list[dict]) -> str:
    lines = ["| variant | x | frames | latent frames | chunks | peak RSS MiB | peak tensors MiB | first frames on disk s "
             "| total s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['multiple']} | {r['frames']} | {r['latent_frames']} | "
                     f"{r['chunks'] or '-'} | {mib(r['peak_rss_bytes'])} | {mib(r['peak_tensors_bytes'])} | "
                     f"{r['first_chunk_written_seconds']:.0f} | {r['generation_seconds']:.0f} |")
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    for variant in VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        if len(mine) < 2:
            continue
        xs = "..".join(f"{r['multiple']}x" for r in (mine[0], mine[-1]))
        for key, label in (("peak_rss_bytes", "RSS"), ("peak_tensors_bytes", "tensors")):
            vals = [r[key] for r in mine if r[key] is not None]
            if vals:
                ratio = max(vals) / max(min(vals), 1)
                flat = " -> FLAT (<= 1.10)" if ratio <= 1.10 else ""
                out.append(f"{variant} peak {label} max/min over {xs} = {ratio:.3f}{flat}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--multiples", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--base-latent", type=int, default=6, help="latent frames at 1x (default 2 x T_c = two chunks)")
    ap.add_argument("--dense-max", type=int, default=8, help="largest multiple run with the dense model")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--width", type=int, default=416)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup-latent", type=int, default=2, help="latent frames of the warm-up call (0: none)")
    ap.add_argument("--lock", default=None, help="flock this file around each measurement (shared machines)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per measurement")
    ap.add_argument("--out", default=None, help="append one JSON line per measurement here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--multiple", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--latent", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no-reexec", action="store_true", help="do not re-exec with MALLOC_MMAP_THRESHOLD_")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)), flush=True)
        return
    print(f"# long_video benchmark: {args.height}x{args.width}, {args.layers} blocks at 1.3B width, {args.steps} "
          f"steps, CFG, Wan2.1 VAE config, random weights; threads={args.threads} cpus={os.cpu_count()} "
          f"MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_')}", flush=True)
    rows = []
    for variant in args.variants:
        for mult in args.multiples:
            if variant == "dense" and mult > args.dense_max:
                continue
            latent = args.base_latent * mult
            cmd = [sys.executable, __file__, "--worker", "--variant", variant, "--multiple", str(mult), "--latent",
                   str(latent), "--layers", str(args.layers), "--steps", str(args.steps), "--height",
                   str(args.height), "--width", str(args.width), "--threads", str(args.threads), "--warmup-latent",
                   str(args.warmup_latent)]
            cmd = ["timeout", str(args.timeout), *cmd]  # inside the lock: waiting for it does not count
            if args.lock:
                cmd = ["flock", args.lock, *cmd]
            t0 = time.time()
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                print(f"  {variant} {mult}x: failed (exit {r.returncode}) after {time.time() - t0:.0f}s\n"
                      f"{r.stderr[-2000:]}", flush=True)
                continue
            row = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"  {variant:9s} {mult}x ({row['frames']} frames): RSS {mib(row['peak_rss_bytes'])} MiB, tensors "
                  f"{mib(row['peak_tensors_bytes'])} MiB, first frames on disk {row['first_chunk_written_seconds']:.0f}"
                  f" s, total {row['generation_seconds']:.0f} s (load {row['loadavg_start']}-{row['loadavg_end']})",
                  flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    if rows:
        print("\n" + table(rows) + "\n")
        for line in verdicts(rows):
            print(line)
        cache = next((r["state_cache_bytes"] for r in rows if r["state_cache_bytes"]), None)
        if cache:
            print(f"stream per-step state cache: {mib(cache)} MiB (same at every length)")


if __name__ == "__main__":
    main()
