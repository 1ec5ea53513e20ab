"""The built-in default job (``python -m evaluation.run`` with no ``--suite``): offline, CPU, a few minutes.

1. Generate a small video set with the tiny random ReHyAt model (``rehyat.tiny``; VBench prompts, VBench naming).
2. ``vbench`` on it in custom-input mode: ``temporal_flickering`` runs through vbench's own code (labelled
   non-standard: custom input, no RAFT static filter); every other VBench dimension is preflighted and reported as
   ``missing_weights`` / ``skipped`` with the file, URL and expected path.
3. ``vbench2``: all 18 dimensions preflighted the same way (they need checkpoints and, mostly, a GPU).
4. ``fidelity``: the same prompts and seeds through the softmax teacher (``tiny-softmax``) and ReHyAt (``tiny``).

Only the offline-capable parts (temporal_flickering and the fidelity metrics) make the exit code non-zero when they fail.
"""
from __future__ import annotations

import copy

from evaluation import prompts as P
from evaluation.context import RunContext
from evaluation.generation import GenJob, gen_settings, generate_set, load_generator
from evaluation.registry import DimensionOutcome, Suite, get_suite, register_suite

DEFAULT_CANDIDATE = "tiny"
DEFAULT_REFERENCE = "tiny-softmax"
N_PROMPTS = 3
VIDEOS_PER_PROMPT = 2


@register_suite
class DefaultSuite(Suite):
    name = "default"
    description = ("built-in offline job: tiny ReHyAt model -> small set -> VBench (temporal_flickering; others "
                   "preflighted) + VBench-2.0 preflight + teacher fidelity vs the tiny softmax model")
    dimensions = {}
    explicit_in_default = ("temporal_flickering", "psnr", "ssim", "latent_rel_err")

    def run(self, ctx: RunContext, dimensions: list[str]) -> list[DimensionOutcome]:
        args = ctx.args
        cand_spec = args.model or DEFAULT_CANDIDATE
        ref_spec = getattr(args, "reference", None) or DEFAULT_REFERENCE
        ctx.log(f"[default] loading candidate {cand_spec!r} and reference {ref_spec!r}")
        candidate = load_generator(cand_spec, device=ctx.device, label=args.label)
        reference = load_generator(ref_spec, device=ctx.device, label=getattr(args, "reference_label", None))
        st = gen_settings(args, candidate)
        try:
            tf_prompts = [e["prompt_en"] for e in P.load_full_info("vbench")
                          if "temporal_flickering" in e["dimension"]][:N_PROMPTS]
        except ModuleNotFoundError as exc:  # vbench not installed: the vbench suite records why; fidelity still runs
            ctx.log(f"[default] {exc}")
            from evaluation.suites.fidelity import DEFAULT_PROMPTS

            tf_prompts = DEFAULT_PROMPTS[:N_PROMPTS]
        jobs = [GenJob(p, args.seed + i, P.v1_filename(p, i)) for p in tf_prompts for i in range(VIDEOS_PER_PROMPT)]
        videos = ctx.out_dir / "videos" / "default" / candidate.label
        ctx.log(f"[default] generating {len(jobs)} videos ({st['num_frames']}x{st['height']}x{st['width']}) "
                f"into {videos}")
        generate_set(candidate, jobs, videos, num_frames=st["num_frames"], height=st["height"], width=st["width"],
                     fps=st["fps"], progress=lambda it: ctx.progress(it, desc="generating"))

        outcomes: list[DimensionOutcome] = []
        sub = copy.copy(args)
        sub.model, sub.videos, sub.mode, sub.label = None, str(videos), "custom", candidate.label
        sub_ctx = copy.copy(ctx)
        sub_ctx.args = sub
        for suite_name in ("vbench", "vbench2"):
            suite = get_suite(suite_name)
            outcomes += suite.run(sub_ctx, list(suite.dimensions))

        fid = copy.copy(args)
        fid.num_prompts = N_PROMPTS
        fid.prompts = getattr(args, "prompts", None)
        fid.seeds_per_prompt = getattr(args, "seeds_per_prompt", 1) or 1
        fid_ctx = copy.copy(ctx)
        fid_ctx.args = fid
        fidelity = get_suite("fidelity")
        outcomes += fidelity.run(fid_ctx, list(fidelity.dimensions), candidate=candidate, reference=reference)
        ctx.log("[default] report: the run directory feeds `reports` (evaluation.store.load_records(RUN_DIR))")
        return outcomes
