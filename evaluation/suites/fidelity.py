"""Teacher fidelity: the same prompts and seeds through a reference model (e.g. the softmax teacher) and a candidate
(e.g. ReHyAt); PSNR and SSIM per frame and per video (scikit-image implementations) on the decoded uint8 frames, and
the relative error of the final latents.  Works for any pair of :class:`~evaluation.generation.VideoGenerator`.

Definitions (per video, frames compared in memory — no video codec in between):

* ``psnr``: ``skimage.metrics.peak_signal_noise_ratio(ref, cand, data_range=255)`` over the whole ``[T,H,W,3]`` clip
  (i.e. from the clip's mean squared error); ``details.per_frame`` holds the same per frame.  Identical clips: +inf.
* ``ssim``: mean over frames of ``skimage.metrics.structural_similarity(..., channel_axis=-1, data_range=255)``.
* ``latent_rel_err``: ``||z_cand - z_ref||_F / ||z_ref||_F`` (float64); per latent frame when latents are
  ``[C,T,H,W]`` or ``[B,C,T,H,W]``.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from evaluation.context import RunContext
from evaluation.generation import config_hash, gen_settings, load_generator
from evaluation.registry import Dimension, DimensionOutcome, Suite, UsageError, register_suite
from evaluation.store import FINAL_STATUSES

DEFAULT_PROMPTS = [
    "A red kite drifting over a green hill under a clear sky",
    "Waves rolling onto a sandy beach at sunset",
    "A cat walking slowly across a wooden floor",
    "City traffic at night seen from above, long exposure style",
    "Leaves falling from a tree in autumn wind",
    "A sailboat crossing a calm lake in the morning mist",
    "Snow falling on a quiet mountain village",
    "A chef slicing vegetables on a cutting board",
]

DIMENSIONS = {
    "psnr": Dimension("psnr", "fidelity", "PSNR (dB) candidate vs reference frames, skimage", offline_capable=True,
                      aggregation="video_mean"),
    "ssim": Dimension("ssim", "fidelity", "SSIM candidate vs reference frames, skimage", offline_capable=True,
                      aggregation="video_mean"),
    "latent_rel_err": Dimension("latent_rel_err", "fidelity", "||z_c - z_r|| / ||z_r|| of final latents",
                                offline_capable=True, aggregation="video_mean"),
}


def psnr_video(ref: np.ndarray, cand: np.ndarray) -> tuple[float, list[float]]:
    from skimage.metrics import peak_signal_noise_ratio

    _check_pair(ref, cand)
    with np.errstate(divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_frame = [float(peak_signal_noise_ratio(r, c, data_range=255)) for r, c in zip(ref, cand)]
        whole = float(peak_signal_noise_ratio(ref, cand, data_range=255))
    return whole, per_frame


def ssim_video(ref: np.ndarray, cand: np.ndarray) -> tuple[float, list[float]]:
    from skimage.metrics import structural_similarity

    _check_pair(ref, cand)
    side = min(ref.shape[1], ref.shape[2])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        raise ValueError(f"frames of {ref.shape[1]}x{ref.shape[2]} are too small for SSIM")
    per_frame = [float(structural_similarity(r, c, channel_axis=-1, data_range=255, win_size=win))
                 for r, c in zip(ref, cand)]
    return float(np.mean(per_frame)), per_frame


def latent_rel_err(ref, cand) -> tuple[float, list[float] | None]:
    import torch

    r = torch.as_tensor(ref).detach().to("cpu", torch.float64)
    c = torch.as_tensor(cand).detach().to("cpu", torch.float64)
    if r.shape != c.shape:
        raise ValueError(f"latent shapes differ: reference {tuple(r.shape)} vs candidate {tuple(c.shape)}")
    den = torch.linalg.vector_norm(r)
    if den == 0:
        raise ValueError("reference latents are all zero; relative error undefined")
    whole = float(torch.linalg.vector_norm(c - r) / den)
    per = None
    if r.ndim in (4, 5):  # [C, T, H, W] (rehyat's VideoSample) or [B, C, T, H, W]
        axis = r.ndim - 3
        per = []
        for t in range(r.shape[axis]):
            rt, ct = r.select(axis, t), c.select(axis, t)
            d = torch.linalg.vector_norm(rt)
            per.append(float(torch.linalg.vector_norm(ct - rt) / d) if d > 0 else None)
    return whole, per


def _check_pair(ref: np.ndarray, cand: np.ndarray) -> None:
    if ref.shape != cand.shape:
        raise ValueError(f"frame shapes differ: reference {ref.shape} vs candidate {cand.shape}")
    if ref.dtype != np.uint8 or cand.dtype != np.uint8:
        raise ValueError("frames must be uint8")


@register_suite
class FidelitySuite(Suite):
    name = "fidelity"
    description = "teacher fidelity: PSNR/SSIM per frame and video, latent relative error (reference vs candidate)"
    dimensions = DIMENSIONS

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("fidelity")
        g.add_argument("--reference", default=None, help="reference generator spec (e.g. the softmax teacher)")
        g.add_argument("--reference-label", default=None)
        g.add_argument("--prompts", default=None, help="text file, one prompt per line (default: built-in list)")
        g.add_argument("--num-prompts", type=int, default=None, help="use the first N prompts")
        g.add_argument("--seeds-per-prompt", type=int, default=1)

    def prompts(self, args) -> list[str]:
        if args.prompts:
            lines = [ln.strip() for ln in Path(args.prompts).read_text(encoding="utf-8").splitlines()]
            plist = [ln for ln in lines if ln and not ln.startswith("#")]
        else:
            plist = list(DEFAULT_PROMPTS)
        return plist[: args.num_prompts] if args.num_prompts else plist

    def run(self, ctx: RunContext, dimensions: list[str], *, candidate=None, reference=None) -> list[DimensionOutcome]:
        args = ctx.args
        if candidate is None:
            if not args.model or not args.reference:
                raise UsageError("--suite fidelity needs --model CANDIDATE and --reference REFERENCE generator specs")
            candidate = load_generator(args.model, device=ctx.device, label=args.label)
            reference = load_generator(args.reference, device=ctx.device, label=args.reference_label)
        cand_label, ref_label = candidate.label, reference.label
        if cand_label == ref_label:
            ref_label = f"{ref_label} (reference)"
        store = ctx.store
        st = gen_settings(args, candidate)
        prov = ctx.provenance(model_config_hash=config_hash(candidate.config()),
                              reference_config_hash=config_hash(reference.config()),
                              model_config=candidate.config(), reference_config=reference.config(),
                              num_frames=st["num_frames"], height=st["height"], width=st["width"])
        jobs = [(pi, p, args.seed + k) for pi, p in enumerate(self.prompts(args))
                for k in range(args.seeds_per_prompt)]
        for pi, prompt, seed in ctx.progress(jobs, desc=f"fidelity {cand_label} vs {ref_label}"):
            video = f"p{pi:03d}-s{seed}"
            todo = [d for d in dimensions if not store.is_done(self.name, cand_label, video, d)]
            if not todo:
                continue
            base = {"reference": ref_label, "prompt": prompt, "seed": seed}
            try:
                r = reference.generate(prompt, seed, st["num_frames"], st["height"], st["width"])
                c = candidate.generate(prompt, seed, st["num_frames"], st["height"], st["width"])
            except Exception as exc:
                for d in todo:
                    store.add(suite=self.name, model=cand_label, video=video, dimension=d, score=None,
                              status="error", message=f"generation failed: {type(exc).__name__}: {exc}",
                              details=base, provenance={**prov, "seed": seed})
                continue
            for d in todo:
                try:
                    if d == "psnr":
                        score, per = psnr_video(np.asarray(r.frames), np.asarray(c.frames))
                    elif d == "ssim":
                        score, per = ssim_video(np.asarray(r.frames), np.asarray(c.frames))
                    else:
                        if r.latents is None or c.latents is None:
                            store.add(suite=self.name, model=cand_label, video=video, dimension=d, score=None,
                                      status="skipped", message="a generator returned no latents", details=base,
                                      provenance={**prov, "seed": seed})
                            continue
                        score, per = latent_rel_err(r.latents, c.latents)
                except Exception as exc:
                    store.add(suite=self.name, model=cand_label, video=video, dimension=d, score=None, status="error",
                              message=f"{type(exc).__name__}: {exc}", details=base, provenance={**prov, "seed": seed})
                    continue
                store.add(suite=self.name, model=cand_label, video=video, dimension=d, score=score, status="ok",
                          details={**base, "per_frame": per}, provenance={**prov, "seed": seed})
        outcomes = []
        for d in dimensions:
            recs = [x for x in store.records(self.name, cand_label, d) if x["video"] is not None]
            good = [x["score"] for x in recs if x["status"] in FINAL_STATUSES]
            bad = [x for x in recs if x["status"] not in FINAL_STATUSES]
            if not recs:
                status, msg = "error", "no video was evaluated"
            elif not bad:
                status, msg = "ok", None
            else:
                kinds = {x["status"] for x in bad}
                status = ("skipped" if kinds == {"skipped"} else "error") if not good else "partial"
                msg = f"{len(bad)} of {len(recs)} video(s) not scored: {bad[0]['message']}"
            mean = float(np.mean(good)) if good else None
            outcomes.append(DimensionOutcome(self.name, cand_label, d, status, mean, msg, len(good), len(bad)))
        return outcomes
