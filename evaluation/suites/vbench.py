"""VBench (v1, 16 dimensions) through the ``vbench`` package's own ``compute_<dimension>`` functions.

Weights manifest: docs/vbench-upstream.md and ``vbench/utils.py::init_submodules`` of vbench 0.1.5 (which this
harness never calls: it downloads).  Submodules are built here from explicit local paths.  Which dimensions have run
end to end here on random-initialised networks (tests/evaluation/upstream_arch/) and which never ran, and why: the
``exercised`` / ``not_exercised`` fields below (shown by ``--list``).
"""
from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from evaluation import distributed
from evaluation import prompts as P
from evaluation.aggregate import QUALITY_LIST, SEMANTIC_LIST
from evaluation.context import RunContext
from evaluation.generation import GenJob
from evaluation.registry import Artifact, Dimension, register_suite
from evaluation.suites._upstream import DimensionInput, UpstreamSuite, VideoItem
from evaluation.videos import RAFT_MIN_SIDE, check_video, list_videos
from evaluation.weights import artifact_path, preflight

HF = "https://huggingface.co/OpenGVLab/VBench_Used_Models/resolve/main/"
CLIP_B32 = Artifact(
    "clip_model/ViT-B-32.pt",
    "https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/"
    "ViT-B-32.pt", "OpenAI CLIP ViT-B/32",
    sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af")
CLIP_L14 = Artifact(
    "clip_model/ViT-L-14.pt",
    "https://openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/"
    "ViT-L-14.pt", "OpenAI CLIP ViT-L/14",
    sha256="b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836")
RAFT = Artifact("raft_model/models/raft-things.pth", "https://dl.dropboxusercontent.com/s/4j4z58wuv8o0mfz/models.zip "
                "(unzip into raft_model/)", "RAFT (things), also temporal_flickering's static filter")
GRIT = Artifact("grit_model/grit_b_densecap_objectdet.pth", HF + "grit_b_densecap_objectdet.pth", "GRiT-B DenseCap+ObjDet")
BERT = Artifact("hub/models--bert-base-uncased", "https://huggingface.co/bert-base-uncased (HF cache layout)",
                "bert-base-uncased tokenizer/model in the Hugging Face cache", root="HF_HOME", kind="dir")
VICLIP = (Artifact("ViCLIP/ViClip-InternVid-10M-FLT.pth", HF + "ViClip-InternVid-10M-FLT.pth", "ViCLIP-L"),
          Artifact("ViCLIP/bpe_simple_vocab_16e6.txt.gz",
                   "https://raw.githubusercontent.com/openai/CLIP/main/clip/bpe_simple_vocab_16e6.txt.gz "
                   "(identical to the file inside the openai-clip package)", "CLIP BPE vocabulary"))


def _d(name, category, artifacts=(), modules=(), custom=True, agg="set", offline=False, desc="", exercised=None,
       not_exercised=None, requirements=(), min_side=0, **extras):
    return Dimension(name, "vbench", desc, category, tuple(artifacts), tuple(modules), custom_input=custom,
                     offline_capable=offline, aggregation=agg, extras=extras, exercised=exercised,
                     not_exercised=not_exercised, python_requirements=tuple(requirements), min_side=min_side)


_RAFT_WHY = "RAFT's correlation pyramid: smaller frames give NaN flow, which upstream silently counts as not moving"


_EQ = "== vbench's own VBench.evaluate (local mode, CPU), per video and aggregate"
_NO_DETECTRON2 = ("never run here: GRiT needs detectron2, which is not on PyPI (build it from "
                  "github.com/facebookresearch/detectron2 against your torch/CUDA, as VBench's README says)")
DIMENSIONS = {d.name: d for d in [
    _d("subject_consistency", "quality", [
        Artifact("dino_model/facebookresearch_dino_main", "https://github.com/facebookresearch/dino (hub code)",
                 "DINO torch.hub repository", kind="dir"),
        Artifact("hub/checkpoints/dino_vitbase16_pretrain.pth",
                 "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth",
                 "DINO ViT-B/16 (DINO's hubconf loads it from the torch-hub cache)", root="TORCH_HOME")],
       desc="DINO feature consistency (frame-weighted)",
       exercised=f"random-init DINO ViT-B/16 through DINO's hub code {_EQ}"),
    _d("background_consistency", "quality", [CLIP_B32], ["clip"], desc="CLIP ViT-B/32 consistency",
       exercised=f"random-init CLIP (smallest ViT that clip's build_model accepts) {_EQ}"),
    _d("temporal_flickering", "quality", [], [], agg="video_mean", offline=True,
       desc="(255 - mean|frame_t - frame_t+1|)/255; standard protocol needs the RAFT static filter",
       exercised=f"no network; standard protocol with a random-init RAFT static filter; {_EQ}"),
    _d("motion_smoothness", "quality", [Artifact("amt_model/amt-s.pth", "https://huggingface.co/lalala125/AMT/resolve/"
                                                 "main/amt-s.pth", "AMT-S")], ["omegaconf"], agg="video_mean",
       desc="AMT-S frame interpolation error", trusted_checkpoints=True,
       exercised=f"random-init AMT-S (vbench's config) {_EQ}"),
    _d("dynamic_degree", "quality", [RAFT], ["easydict"], agg="video_mean", desc="RAFT flow: fraction dynamic",
       min_side=RAFT_MIN_SIDE, min_side_why=_RAFT_WHY,
       exercised=f"random-init RAFT {_EQ}"),
    _d("aesthetic_quality", "quality", [CLIP_L14, Artifact(
        "aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth",
        "https://github.com/LAION-AI/aesthetic-predictor/blob/main/sa_0_4_vit_l_14_linear.pth?raw=true",
        "LAION aesthetic head")], ["clip"], agg="video_mean", desc="LAION aesthetic predictor / 10",
       exercised=f"random-init CLIP (768-d, smallest ViT build_model accepts) + linear head {_EQ}"),
    _d("imaging_quality", "quality", [Artifact(
        "pyiqa_model/musiq_spaq_ckpt-358bb6af.pth",
        "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/musiq_spaq_ckpt-358bb6af.pth",
        "MUSIQ (SPAQ)")], ["pyiqa"], desc="MUSIQ / 100", exercised=f"random-init pyiqa MUSIQ {_EQ}"),
    _d("object_class", "semantic", [GRIT, BERT], ["detectron2"], custom=False, desc="GRiT detection frame ratio",
       not_exercised=_NO_DETECTRON2),
    _d("multiple_objects", "semantic", [GRIT, BERT], ["detectron2"], custom=False, desc="GRiT, both objects",
       not_exercised=_NO_DETECTRON2),
    _d("human_action", "semantic", [Artifact("umt_model/l16_ptk710_ftk710_ftk400_f16_res224.pth",
                                             HF + "l16_ptk710_ftk710_ftk400_f16_res224.pth", "UMT-L/16 K400")],
       ["timm", "clip"], agg="video_mean", desc="UMT Kinetics-400 top-5",
       exercised=f"random-init UMT ViT-L/16 (one class's head bias raised so a label can match) {_EQ}"),
    _d("color", "semantic", [GRIT, BERT], ["detectron2"], custom=False, desc="GRiT dense captions colour",
       not_exercised=_NO_DETECTRON2),
    _d("spatial_relationship", "semantic", [GRIT, BERT], ["detectron2"], custom=False, desc="GRiT box rules",
       not_exercised=_NO_DETECTRON2),
    _d("scene", "semantic", [Artifact("caption_model/tag2text_swin_14m.pth",
                                      "https://huggingface.co/spaces/xinyu1205/recognize-anything/resolve/main/"
                                      "tag2text_swin_14m.pth", "Tag2Text Swin-B"), BERT], ["timm", "fairscale"],
       custom=False, desc="Tag2Text captions", requirements=["transformers<5"],
       not_exercised="never run here: Tag2Text imports transformers 4 internals (vbench pins transformers==4.33.2), "
                     "which cannot share this venv with diffusers 0.42 (transformers 5); run it with --vbench-python "
                     "in a venv with vbench's pins"),
    _d("temporal_style", "semantic", VICLIP, ["clip", "einops", "ftfy"], agg="video_mean",
       desc="ViCLIP video-text cosine", exercised=f"random-init ViCLIP-L/14 {_EQ}"),
    _d("appearance_style", "semantic", [CLIP_B32], ["clip"], custom=False, desc="CLIP frame-style cosine",
       exercised=f"random-init CLIP (smallest ViT that clip's build_model accepts) {_EQ}"),
    _d("overall_consistency", "semantic", VICLIP, ["clip", "einops", "ftfy"], agg="video_mean",
       desc="ViCLIP video-text cosine", exercised=f"random-init ViCLIP-L/14 {_EQ}"),
]}
assert set(DIMENSIONS) == set(QUALITY_LIST) | set(SEMANTIC_LIST)
# the temporal_flickering protocol's pre-step (vbench/cli/static_filter.py), preflighted like a dimension
STATIC_FILTER = Dimension("static_filter", "vbench", "RAFT static filter for temporal_flickering", None, (RAFT,))


def _vbench_dir() -> Path:
    return P.package_dir("vbench")


@register_suite
class VBenchSuite(UpstreamSuite):
    name = "vbench"
    package = "vbench"
    description = "VBench (16 dimensions) via the vbench package; Quality/Semantic/Total only when complete"
    dimensions = DIMENSIONS
    # (args attribute, flag, what it does): the ways to give this suite its videos; without any, evaluation.run
    # names them all and runs the checkpoint preflight
    input_options = (
        ("videos", "--videos DIR", "score videos on disk: the official set ({prompt}-{i}.mp4) or any names with "
                                   "--mode custom"),
        ("model", "--model SPEC", "generate the official prompt set with a model, then score it (a Wan/ReHyAt folder; "
                                  "tiny = random-weight pipeline check)"))

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("vbench")
        g.add_argument("--vbench-python", default=os.environ.get("REHYAT_VBENCH_PYTHON"),
                       help="run vbench's compute functions under this python executable / venv folder (where its "
                            "model dependencies are installed); default: in-process")
        g.add_argument("--static-filter", choices=["auto", "off"], default="auto",
                       help="temporal_flickering in standard mode: run VBench's RAFT static filter over the 25 samples "
                            "per prompt when RAFT is present (auto), else score prompt-0..4 as non-standard")

    def all_slots(self):
        return P.v1_slots(list(self.dimensions), sampling=True)

    def submodules(self, dim: Dimension, pf):
        p = {a.path: str(artifact_path(a)) for a in dim.artifacts}
        n = dim.name
        if n == "temporal_flickering":
            return []
        if n == "subject_consistency":
            return {"repo_or_dir": p["dino_model/facebookresearch_dino_main"] + "/",
                    "path": p["hub/checkpoints/dino_vitbase16_pretrain.pth"], "model": "dino_vitb16",
                    "source": "local", "read_frame": False}
        if n == "background_consistency":
            return [p[CLIP_B32.path], False]
        if n == "appearance_style":
            return {"name": p[CLIP_B32.path]}
        if n == "motion_smoothness":
            return {"config": str(_vbench_dir() / "third_party/amt/cfgs/AMT-S.yaml"), "ckpt": p["amt_model/amt-s.pth"]}
        if n == "dynamic_degree":
            return {"model": p[RAFT.path]}
        if n == "aesthetic_quality":
            return [p[CLIP_L14.path], str(Path(p["aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth"]).parent)]
        if n == "imaging_quality":
            return {"model_path": p["pyiqa_model/musiq_spaq_ckpt-358bb6af.pth"]}
        if n in ("object_class", "multiple_objects", "color", "spatial_relationship"):
            return {"model_weight": p[GRIT.path]}
        if n == "human_action":
            return [p["umt_model/l16_ptk710_ftk710_ftk400_f16_res224.pth"]]
        if n == "scene":
            return {"pretrained": p["caption_model/tag2text_swin_14m.pth"], "image_size": 384, "vit": "swin_b"}
        if n in ("temporal_style", "overall_consistency"):
            return {"pretrain": p[VICLIP[0].path]}
        raise KeyError(n)

    def generation_jobs(self, ctx: RunContext, dims: list[str]) -> list[GenJob]:
        base, limit = ctx.args.seed, getattr(ctx.args, "limit_prompts", None)
        slots = P.v1_slots(dims, sampling=True)
        if limit:
            keep = set()
            for d in dims:
                keep |= set(list(dict.fromkeys(s.prompt for s in slots if d in s.dimensions))[:limit])
            slots = [s for s in slots if s.prompt in keep]
        return [GenJob(s.prompt, base + s.index, s.filename) for s in slots]

    # ------------------------------------------------------------------ standard-mode input
    def standard_input(self, ctx: RunContext, dim: Dimension, videos_dir: Path) -> DimensionInput:
        present = set(list_videos(videos_dir))
        ext = ".mp4"
        for name in sorted(present):  # upstream: all videos share the extension of the first file listed
            if Path(name).suffix.lower() in P.VIDEO_EXTS:
                ext = Path(name).suffix
                break
        full = P.load_full_info("vbench")
        slots = P.v1_slots([dim.name], ext=ext)
        if dim.name == "temporal_flickering":
            res = self._temporal_flickering_input(ctx, dim, videos_dir, present, ext, full)
            if res is not None:
                return res
        items, missing = [], []
        for s in slots:
            if s.filename in present:
                items.append(VideoItem(s.filename, videos_dir / s.filename, s.prompt, full[s.entry]))
            else:
                missing.append(s.filename)
        inp = DimensionInput(items, self._misnamed(present, ext), missing)
        if dim.name == "temporal_flickering":
            inp.deviations.append(self._no_filter_reason(ctx))
        return inp

    def _misnamed(self, present: set[str], ext: str) -> list[tuple[str, str]]:
        """Files that match no slot of any VBench dimension (with 25 temporal_flickering samples)."""
        known = {s.filename for s in P.v1_slots(list(self.dimensions), sampling=True, ext=ext)}
        bad = []
        for name in sorted(present):
            if name in known:
                continue
            bad.append((name, f"does not match any '{{prompt}}-{{i}}{ext}' of the VBench prompt suite"))
        return bad

    def _no_filter_reason(self, ctx: RunContext) -> str:
        if getattr(ctx.args, "static_filter", "auto") == "off":
            return "temporal_flickering without the RAFT static filter (--static-filter off)"
        pf = preflight(STATIC_FILTER)
        why = pf.message if not pf.ok else "only prompt-0..4 present (the filter needs the 25 samples per prompt)"
        return f"temporal_flickering without the RAFT static filter (non-standard): {why}"

    def _temporal_flickering_input(self, ctx, dim, videos_dir, present, ext, full) -> DimensionInput | None:
        """Standard protocol: 25 samples per prompt -> VBench's StaticFilter keeps up to 5 static ones as prompt-0..4."""
        if getattr(ctx.args, "static_filter", "auto") == "off":
            return None
        raft_pf = preflight(STATIC_FILTER, hash_cache=ctx.hash_cache)
        if not raft_pf.ok:
            return None
        samples = [s for s in P.v1_slots([dim.name], sampling=True, ext=ext)]
        if not any(s.filename in present and s.index >= P.V1_VIDEOS_PER_PROMPT for s in samples):
            return None  # only prompt-0..4 given: nothing to filter
        static = self._run_static_filter(ctx, videos_dir, present, samples, raft_pf)
        filtered = ctx.work_dir("vbench", "filtered_videos")
        items, missing, counts = [], [], {}
        by_prompt: dict[str, list[str]] = {}
        # upstream iterates sorted(glob(*.mp4)) and keeps the first 5 static videos per prompt
        for name in sorted(n for n in present if n in static):
            prompt = P.prompt_from_filename(name)
            if static[name] and len(by_prompt.setdefault(prompt, [])) < P.V1_VIDEOS_PER_PROMPT:
                by_prompt[prompt].append(name)
        for e_i, e in enumerate(full):
            if dim.name not in e["dimension"]:
                continue
            chosen = by_prompt.get(e["prompt_en"], [])
            counts[e["prompt_en"]] = len(chosen)
            for i in range(P.V1_VIDEOS_PER_PROMPT):
                if i < len(chosen):
                    target = filtered / P.v1_filename(e["prompt_en"], i, ext)
                    if not target.exists():  # atomic: under torchrun every rank prepares the same inputs
                        tmp = target.with_name(f".tmp{os.getpid()}-{target.name}")
                        shutil.copyfile(videos_dir / chosen[i], tmp)
                        os.replace(tmp, target)
                    items.append(VideoItem(target.name, target, e["prompt_en"], e, source=chosen[i]))
                else:
                    missing.append(P.v1_filename(e["prompt_en"], i, ext))
        inp = DimensionInput(items, self._misnamed(present, ext), missing)
        inp.details["static_filter"] = {"raft_sha256": raft_pf.checkpoint_hashes.get(RAFT.path),
                                        "static_per_prompt_lt5": {k: v for k, v in counts.items() if v < 5}}
        return inp

    def _run_static_filter(self, ctx, videos_dir, present, samples, raft_pf) -> dict[str, bool]:
        """Per sample file: static or not, via ``vbench.cli.static_filter.StaticFilter``; resumable (store records
        under dimension ``static_filter``)."""
        store = ctx.store
        label = getattr(ctx, "_current_label", None) or self.model_label(ctx, videos_dir)
        out: dict[str, bool] = {}
        todo = []
        for s in samples:
            if s.filename not in present:
                continue
            rec = store.get(self.name, label, s.filename, "static_filter")
            if rec and rec["status"] == "ok":
                out[s.filename] = bool(rec["score"])
            else:
                todo.append(s.filename)
        shard = getattr(ctx, "_shard", None)  # set during the sharded pass under torchrun
        if shard is not None and shard.world > 1:  # each rank classifies its share, then reads the others' records
            try:
                self._classify(ctx, videos_dir, shard.take(todo), raft_pf, label, out)
            finally:  # every rank must reach the barrier, also when RAFT cannot be built
                distributed.barrier()
            for rec in distributed.gather_records(ctx.out_dir, self.name, "static_filter"):
                if rec["model"] == label and rec["status"] == "ok" and rec["video"] in todo:
                    out[rec["video"]] = bool(rec["score"])
            return out
        self._classify(ctx, videos_dir, todo, raft_pf, label, out)
        return out

    def _classify(self, ctx, videos_dir, todo, raft_pf, label, out) -> None:
        """Run vbench's StaticFilter on ``todo`` (file names), one ``static_filter`` record each, into ``out``."""
        if not todo:
            return
        store = ctx.store
        import vbench.cli.static_filter as sf

        from evaluation.upstream_worker import default_map_location

        sf.DEVICE = ctx.device  # upstream hard-codes 'cuda' in a module constant read by get_frames
        args = argparse.Namespace(model=str(artifact_path(RAFT)), small=False, mixed_precision=False,
                                  alternate_corr=False)
        # StaticFilter calls torch.load without map_location: RAFT's file holds GPU-saved storages (device only)
        with default_map_location(ctx.device):
            flt = sf.StaticFilter(args, device=ctx.device)
        prov = ctx.provenance(checkpoint_hashes=raft_pf.checkpoint_hashes, rank=distributed.rank_if_sharded())
        for name in ctx.progress(todo, desc="static filter (RAFT)"):
            chk = check_video(videos_dir / name, min_side=RAFT_MIN_SIDE, min_side_why=_RAFT_WHY)
            if not chk.ok:
                store.add(suite=self.name, model=label, video=name, dimension="static_filter", score=None,
                          status="error", message=chk.message, provenance=prov)
                continue
            try:
                is_static = bool(flt.infer(str(videos_dir / name)))
            except Exception as exc:  # an upstream failure on one file: that file is an error, the others go on
                store.add(suite=self.name, model=label, video=name, dimension="static_filter", score=None,
                          status="error", message=f"static filter failed: {type(exc).__name__}: {exc}",
                          provenance=prov)
                continue
            store.add(suite=self.name, model=label, video=name, dimension="static_filter", score=float(is_static),
                      status="ok", details={"static": is_static}, provenance=prov)
            out[name] = is_static

    def run_dimension(self, ctx, dim, label, videos_dir, mode, gen_log, share=None):
        ctx._current_label = label
        return super().run_dimension(ctx, dim, label, videos_dir, mode, gen_log, share=share)
