"""``python -m rehyat.export {onnx,executorch,generate}`` — the recurrent chunk step as static graphs, and videos
from them.

    python -m rehyat.export onnx --model tiny --height 32 --width 32 --out export/tiny
    python -m rehyat.export onnx --model /models/rehyat-long-video --height 480 --width 832 --out DIR --graphs blocks
    python -m rehyat.export executorch --model tiny --height 32 --width 32 --out export/tiny-pte [--backend portable]
    python -m rehyat.export generate --export export/tiny --prompt "a cat" --seed 0 --num-frames 17 --out cat.mp4

``onnx`` / ``executorch`` (one subcommand per format of :mod:`rehyat.export.formats`) write ``transformer.onnx`` /
``transformer.pte`` (the whole fully converted causal transformer: one chunk, one denoising step, one CFG branch,
every layer's state in and out) and/or ``block_{i}.onnx`` / ``block_{i}.pte`` (one graph per block), ONNX with
external weights (``*.onnx.data``), and the sidecar ``rehyat_export.json`` (format and runtime, names, shapes,
dtypes, state layout), then check the graphs in their runtime (onnxruntime / ExecuTorch) against the eager recurrent
forward on random inputs (``--no-check`` skips it).  All shapes are static: the frame size is fixed at export, the
video length is not.  float32, CPU.

``generate`` samples a video chunk by chunk with the transformer in the export's runtime (the driver carries the
states); text encoder, scheduler and VAE stay in PyTorch.  Needs the format's extra: ``pip install 'rehyat[export]'``
(ONNX) or ``'rehyat[executorch]'`` (scripts/install.sh --test installs both).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rehyat.cli import EXIT_USER_ERROR, add_debug_flag, run_cli

PROG = "rehyat.export"


def _parser() -> argparse.ArgumentParser:
    from .exporter import GRAPH_CHOICES
    from .formats import FORMATS

    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for fmt in FORMATS.values():
        sp = sub.add_parser(fmt.name, help=f"export the chunk step(s) to {fmt.suffix} files + sidecar")
        sp.set_defaults(format=fmt.name)
        sp.add_argument("--model", required=True, help="tiny | converted pipeline folder | ReHyAt checkpoint folder "
                                                       "(every block converted, causal: e.g. the long-video preset)")
        sp.add_argument("--base", default=None, help="base Wan diffusers folder for a ReHyAt checkpoint")
        sp.add_argument("--height", type=int, required=True, help="video frame height in pixels (fixed in the graph)")
        sp.add_argument("--width", type=int, required=True, help="video frame width in pixels (fixed in the graph)")
        sp.add_argument("--out", required=True, help="output folder")
        sp.add_argument("--graphs", default="transformer",
                        help=f"comma list of {', '.join(GRAPH_CHOICES)} (blocks: one graph per block)")
        sp.add_argument("--text-tokens", type=int, default=None,
                        help="text sequence length fixed in the graph (default: the model's max_sequence_length)")
        fmt.add_arguments(sp)
        sp.add_argument("--no-check", action="store_true", help=f"skip the {fmt.runtime}-vs-eager check")
        sp.add_argument("--threads", type=int, default=None, help=f"{fmt.runtime} intra-op threads for the check")
        add_debug_flag(sp)

    sp = sub.add_parser("generate", help="generate a video chunk by chunk with the exported transformer")
    sp.add_argument("--export", required=True, help=f"folder written by {' / '.join(map(repr, FORMATS))}")
    sp.add_argument("--prompt", required=True)
    sp.add_argument("--negative-prompt", default=None, help="default: Wan's standard negative prompt")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--num-frames", type=int, default=None, help="4k+1 frames (tiny default 17, Wan 81)")
    sp.add_argument("--steps", type=int, default=None, help="denoising steps (tiny default 2, Wan 50)")
    sp.add_argument("--guidance-scale", type=float, default=None)
    sp.add_argument("--model", default=None, help="host pipeline (text encoder, scheduler, VAE); default: the "
                                                  "exported model's")
    sp.add_argument("--out", required=True, help="output .mp4")
    sp.add_argument("--threads", type=int, default=None, help="the runtime's intra-op threads")
    add_debug_flag(sp)
    return p


def _export(args) -> int:
    from rehyat.generate import model_defaults

    from .exporter import export_pipeline, load_exportable, read_sidecar
    from .formats import get_format

    fmt = get_format(args.format)
    fmt.require()
    graphs = [g.strip() for g in args.graphs.split(",") if g.strip()]
    pipe = load_exportable(args.model, base_model=args.base)
    t0 = time.perf_counter()
    sidecar = export_pipeline(pipe, args.out, height=args.height, width=args.width,
                              text_tokens=args.text_tokens or model_defaults(args.model)["max_sequence_length"],
                              graphs=graphs, format=fmt.name, spec=args.model, base_model=args.base,
                              **fmt.options(args))
    side = read_sidecar(sidecar.parent)
    files = [f for g in side["graphs"].values() for f in g["files"]]
    print(f"[{PROG}] wrote {len(side['graphs'])} {fmt.name} graph(s) to {sidecar.parent} in "
          f"{time.perf_counter() - t0:.1f} s: {', '.join(files)}; sidecar {sidecar.name}")
    return 0 if args.no_check else _check(sidecar.parent, side, pipe.transformer, args.threads)


def _check(folder: Path, side: dict, transformer, threads: int | None) -> int:
    """The graphs in their runtime against the eager recurrent step; 1 if one disagrees."""
    from .graphs import BlockChunkStep
    from .verify import check_block, check_transformer

    geo = side["geometry"]
    worst = 0.0
    for name, graph in side["graphs"].items():
        if name == "transformer":
            agree = check_transformer(folder, transformer, threads=threads)
        else:
            block = transformer.blocks[int(name.split(".")[1])]
            step = BlockChunkStep(block, height=geo["post_patch_height"], width=geo["post_patch_width"],
                                  text_tokens=geo["text_tokens"])
            agree = check_block(folder / graph["files"][0], step, block, threads=threads)
        worst = max(worst, agree.rel)
        print(f"[{PROG}] {name}: {agree.describe()}")
    if worst > 1e-4:
        print(f"[{PROG}] error: {side['runtime']} disagrees with the eager step (relative {worst:.2g} > 1e-4)",
              file=sys.stderr)
        return 1
    return 0


def _generate(args) -> int:
    from rehyat.generate import DEFAULT_NEGATIVE_PROMPT, Mp4Writer, WAN_DEFAULTS, model_defaults

    from .driver import ExportedTransformerStep, exported_stream_video, load_host_pipeline

    step = ExportedTransformerStep(args.export, threads=args.threads)
    spec = args.model or step.sidecar["model"]["spec"]
    defaults = model_defaults(spec) if spec in ("tiny", "tiny-rehyat") else dict(WAN_DEFAULTS)
    out = Path(args.out)
    if out.suffix != ".mp4":
        raise ValueError(f"--out must name an .mp4 file, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    pipe = load_host_pipeline(spec, base_model=step.sidecar["model"].get("base"))
    t0 = time.perf_counter()
    with Mp4Writer(out) as writer:
        for chunk in exported_stream_video(
                args.export, args.prompt, args.seed, num_frames=args.num_frames or defaults["num_frames"],
                num_inference_steps=args.steps or defaults["num_inference_steps"],
                guidance_scale=defaults["guidance_scale"] if args.guidance_scale is None else args.guidance_scale,
                negative_prompt=DEFAULT_NEGATIVE_PROMPT if args.negative_prompt is None else args.negative_prompt,
                pipe=pipe, step=step):
            writer.write(chunk.frames)
            print(f"[{PROG}] chunk {chunk.index + 1}/{chunk.num_chunks}: latent frames {chunk.latent_frames}, "
                  f"{len(chunk.frames)} video frames, state cache {chunk.state_bytes / 2**20:.2f} MiB, "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
    print(f"[{PROG}] wrote {out} ({writer.frames} frames); transformer in {step.format.runtime}, text encoder / "
          f"scheduler / VAE in PyTorch")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run = _generate if args.cmd == "generate" else _export
    try:
        return run_cli(lambda: run(args), debug=args.debug, prog=PROG)
    except ModuleNotFoundError as e:  # an optional extra: 'export' (onnx, onnxruntime) or 'executorch'
        if args.debug:
            raise
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
