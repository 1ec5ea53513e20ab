"""VBench-2.0 (18 dimensions, 5 categories) through the ``vbench2`` package.

``vbench2==0.1.1`` pins ~190 packages (transformers 4.47, diffusers 0.32, numpy 1.26, …) that cannot share our
environment, so its compute functions normally run in another interpreter (``--vbench2-python`` or
``$REHYAT_VBENCH2_PYTHON``: a python executable or a venv folder) via ``evaluation/upstream_worker.py``; in-process when
``import vbench2`` works here.  An upstream ``*_eval_results.json`` produced elsewhere can be ingested with
``--vbench2-results FILE``.  Prompts are read from the installed wheel's ``VBench2_full_info.json``.
Weights: ``vbench2/utils.py::init_submodules`` of 0.1.1 (never called — it downloads) and docs/vbench-upstream.md.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from evaluation import prompts as P
from evaluation.aggregate import V2_CATEGORIES
from evaluation.context import RunContext
from evaluation.generation import GenJob
from evaluation.registry import Artifact, Dimension, DimensionOutcome, register_suite
from evaluation.suites._upstream import DimensionInput, UpstreamSuite, VideoItem
from evaluation.videos import list_videos
from evaluation.weights import artifact_path

R2 = "VBENCH2_CACHE_DIR"
GD = "https://drive.google.com/uc?id="
LLAVA = (Artifact("lmms-lab/LLaVA-Video-7B-Qwen2", "https://huggingface.co/lmms-lab/LLaVA-Video-7B-Qwen2",
                  "LLaVA-Video-7B-Qwen2 (full model folder)", root=R2, kind="dir"),
         Artifact("hub/models--google--siglip-so400m-patch14-384",
                  "https://huggingface.co/google/siglip-so400m-patch14-384 (HF cache layout)",
                  "SigLIP vision tower named by LLaVA-Video's config", root="HF_HOME", kind="dir"))
QWEN = Artifact("Qwen/Qwen2.5-7B-Instruct", "https://huggingface.co/Qwen/Qwen2.5-7B-Instruct",
                "Qwen2.5-7B-Instruct (full model folder)", root=R2, kind="dir")
HF_CLIP = Artifact("hub/models--openai--clip-vit-base-patch32",
                   "https://huggingface.co/openai/clip-vit-base-patch32 (HF cache layout)",
                   "CLIP text encoder loaded by the YOLO-World config", root="HF_HOME", kind="dir")
COTRACKER = (Artifact("hub/facebookresearch_co-tracker_main", "https://github.com/facebookresearch/co-tracker "
                      "(torch.hub repo; pin the commit)", "CoTracker hub code", root="TORCH_HOME", kind="dir"),
             Artifact("hub/checkpoints/cotracker2.pth", "https://huggingface.co/facebook/cotracker/resolve/main/"
                      "cotracker2.pth", "CoTracker2 weights (torch-hub cache)", root="TORCH_HOME"))
# with an explicit ref, torch.hub uses the cached repo folder and skips its "is the default branch main?" probe of
# github.com (which it does for "facebookresearch/co-tracker", the value upstream's init_submodules passes)
COTRACKER_REPO = "facebookresearch/co-tracker:main"
RAFT2 = Artifact("raft_model/models/raft-things.pth", "https://dl.dropboxusercontent.com/s/4j4z58wuv8o0mfz/models.zip "
                 "(unzip into raft_model/)", "RAFT (things)", root=R2)
YOLO_XL = Artifact("YOLO-World/yolo_world_v2_xl_obj365v1_goldg_cc3mlite_pretrain-5daf1395.pth",
                   GD + "1qo-K1kum7yiEwIlN1TWDvABXX6qriUen", "YOLO-World v2-XL", root=R2)
ANOMALY = tuple(Artifact(f"anomaly_detector/{k}.pth", GD + fid, f"SimMIM ViT-B {k} anomaly classifier", root=R2)
                for k, fid in (("human", "1mlSURYOi_vN9ST1wzEhJaVO6-ZoES8UT"), ("face", "1e2qTjrtsYlkWLql0qj8DqaNZ09KuV8Qo"),
                               ("hand", "1j3QeAcAtdLe5BFgK-c33UaHV6-iUto0i")))

_CAT = {d: c for c, dims in V2_CATEGORIES.items() for d in dims}
_LLAVA_ONLY = ["Human_Clothes", "Composition", "Dynamic_Spatial_Relationship", "Dynamic_Attribute",
               "Motion_Rationality", "Mechanics", "Thermotics", "Material"]
_LLAVA_QWEN = ["Complex_Landscape", "Complex_Plot", "Human_Interaction", "Motion_Order_Understanding"]
_CUSTOM_OK = {"Human_Anatomy", "Human_Identity", "Human_Clothes", "Diversity", "Multi-View_Consistency"}


def _artifacts(name: str) -> tuple[Artifact, ...]:
    if name == "Human_Anatomy":
        return (YOLO_XL, *ANOMALY, HF_CLIP)
    if name == "Human_Identity":
        return (Artifact("arcface/resnet18_110.pth", GD + "1m387vGTQ4GW4I4PQfBsCC-Y9aEp6zjvy", "ArcFace resnet18",
                         root=R2),
                Artifact("hub/checkpoints/retinaface_resnet50_2020-07-20-f168fae3c.zip",
                         "https://github.com/ternaus/retinaface/releases/download/0.01/"
                         "retinaface_resnet50_2020-07-20-f168fae3c.zip", "RetinaFace resnet50 (torch model_zoo cache)",
                         root="TORCH_HOME"))
    if name == "Diversity":
        return (Artifact("hub/checkpoints/vgg19-dcbb9e9d.pth", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
                         "torchvision VGG19 ImageNet (file name unconfirmed)", root="TORCH_HOME"),)
    if name == "Camera_Motion":
        return COTRACKER
    if name == "Multi-View_Consistency":
        return (RAFT2, *COTRACKER)
    if name == "Instance_Preservation":
        return (Artifact("YOLO-World/yolo_world_v2_l_obj365v1_goldg_pretrain_1280ft-9babe3f6.pth",
                         GD + "1Jm05vcIKzETX-mSLXeKijbd1sv2PaTSe", "YOLO-World v2-L (vbench2 0.1.1 method)", root=R2),
                HF_CLIP)
    if name in _LLAVA_ONLY:
        return LLAVA
    if name in _LLAVA_QWEN:
        return (*LLAVA, QWEN)
    raise KeyError(name)


_NO_CODE = "vbench2 0.1.1's wheel (and sdist) ships {what} without its Python code, so the module cannot import"
_CUDA = "; upstream hard-codes CUDA"
_LLAVA_WHY = ("never run here: needs LLaVA-NeXT's `llava` package (GitHub only; the PyPI name `llava` is an unrelated "
              "placeholder, and " + _NO_CODE.format(what="third_party/LLaVA_NeXT") + ") and LLaVA-Video-7B weights"
              + _CUDA)
NOT_EXERCISED = {
    "Human_Anatomy": "never run here: " + _NO_CODE.format(what="third_party/ViTDetector and YOLO-World") + _CUDA,
    "Human_Identity": "never run here: " + _NO_CODE.format(what="third_party/arcface (its resnet_face18 embeds every "
                                                                "face)") + ", and RetinaFace's `retinaface` (PyPI: "
                      "retinaface-pytorch) is not installed" + _CUDA,
    "Multi-View_Consistency": "never run here: " + _NO_CODE.format(what="third_party/Dense_match and RAFT (both on "
                                                                        "its scored path)") + _CUDA,
    "Instance_Preservation": "never run here: needs mmdet/mmyolo with YOLO-World (GitHub only) and "
                             + _NO_CODE.format(what="third_party/YOLO-World") + _CUDA,
    **{d: _LLAVA_WHY for d in _LLAVA_ONLY},
    **{d: _LLAVA_WHY.replace("weights", "and Qwen2.5-7B-Instruct weights") for d in _LLAVA_QWEN},
}
EXERCISED = {"Diversity": "random-init torchvision VGG19 == vbench2's own VBench2.evaluate (CPU), per prompt and "
                          "aggregate",
             "Camera_Motion": "random-init CoTracker2 through co-tracker's torch-hub code (vendored in the test) == "
                              "vbench2's own VBench2.evaluate (CPU; its video.cuda() moved to --device), per video and "
                              "aggregate"}
# run on --device cpu: Diversity takes the device; Camera_Motion hard-codes CUDA only as `video.cuda()`, which the
# worker moves to --device (upstream_worker.cuda_calls_to)
_CPU_OK = {"Diversity", "Camera_Motion"}

_GPU_GB = {"Human_Anatomy": 5, "Human_Identity": 2, "Diversity": 28, "Camera_Motion": 18, "Multi-View_Consistency": 18,
           "Instance_Preservation": 3, **{d: 38 for d in _LLAVA_ONLY}, **{d: 50 for d in _LLAVA_QWEN}}

DIMENSIONS = {
    n: Dimension(n, "vbench2", f"VBench-2.0 {n.replace('_', ' ')}", _CAT[n], _artifacts(n), (),
                 needs_gpu=n not in _CPU_OK, gpu_mem_gb=_GPU_GB[n], custom_input=n in _CUSTOM_OK,
                 offline_capable=False, aggregation="set", exercised=EXERCISED.get(n),
                 not_exercised=NOT_EXERCISED.get(n), extras={"per_prompt": n == "Diversity"})
    for n in [d for dims in V2_CATEGORIES.values() for d in dims]
}


@register_suite
class VBench2Suite(UpstreamSuite):
    name = "vbench2"
    package = "vbench2"
    description = "VBench-2.0 (18 dimensions, 5 categories) via vbench2, in-process or in its own interpreter"
    dimensions = DIMENSIONS
    input_options = (
        ("videos", "--videos DIR", "score videos on disk (DIR/{Dimension}/{prompt[:180]}-{i}.mp4, or a flat folder)"),
        ("model", "--model SPEC", "generate the official prompt set with a model, then score it"),
        ("vbench2_results", "--vbench2-results FILE", "ingest an upstream *_eval_results.json computed elsewhere "
                                                      "(VBench-2.0's evaluate.py on a GPU machine)"))

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("vbench2")
        g.add_argument("--vbench2-python", default=os.environ.get("REHYAT_VBENCH2_PYTHON"),
                       help="python executable or venv folder where vbench2 and its pins are installed "
                            "(default $REHYAT_VBENCH2_PYTHON; else in-process if `import vbench2` works)")
        g.add_argument("--vbench2-results", default=None,
                       help="ingest an upstream {name}_eval_results.json instead of evaluating")

    def all_slots(self):
        return P.v2_slots(list(self.dimensions))

    def submodules(self, dim: Dimension, pf):
        p = {a.path: str(artifact_path(a)) for a in dim.artifacts}
        n = dim.name
        if n == "Multi-View_Consistency":
            return {"raft": p[RAFT2.path], "repo": COTRACKER_REPO, "model": "cotracker2"}
        if n == "Camera_Motion":
            return {"repo": COTRACKER_REPO, "model": "cotracker2"}
        if n == "Human_Identity":
            return {"model": p["arcface/resnet18_110.pth"]}
        if n == "Instance_Preservation":
            return {"model": p["YOLO-World/yolo_world_v2_l_obj365v1_goldg_pretrain_1280ft-9babe3f6.pth"]}
        if n == "Human_Anatomy":
            cfg = "vbench2/third_party/ViTDetector/simmim_finetune__vit_base__img224__800ep.yaml"
            return {"detector_config": "vbench2/third_party/YOLO-World/yolo_world_v2_xl_vlpan_bn_2e-3_100e_4x8gpus_"
                                       "obj365v1_goldg_train_lvis_minival.py",
                    "detector_weights": p[YOLO_XL.path],
                    "analyzer_configs": {
                        "human": {"cfg_path": cfg, "weight_path": p["anomaly_detector/human.pth"],
                                  "threshold": 0.4545454545454546},
                        "face": {"cfg_path": cfg, "weight_path": p["anomaly_detector/face.pth"],
                                 "threshold": 0.30303030303030304},
                        "hand": {"cfg_path": cfg, "weight_path": p["anomaly_detector/hand.pth"], "threshold": 0.3232}},
                    "batch_size": 128}
        if n in _LLAVA_ONLY:
            return {"llava": p[LLAVA[0].path]}
        if n in _LLAVA_QWEN:
            return {"llava": p[LLAVA[0].path], "qwen": p[QWEN.path]}
        return {}

    def generation_jobs(self, ctx: RunContext, dims: list[str]) -> list[GenJob]:
        base, limit = ctx.args.seed, getattr(ctx.args, "limit_prompts", None)
        slots = P.v2_slots(dims)
        if limit:
            keep = {d: list(dict.fromkeys(s.prompt for s in slots if s.dimensions[0] == d))[:limit] for d in dims}
            slots = [s for s in slots if s.prompt in keep[s.dimensions[0]]]
        return [GenJob(s.prompt, base + s.index, f"{s.dimensions[0]}/{s.filename}") for s in slots]

    def _dim_folder(self, videos_dir: Path, dim: str) -> tuple[Path, str]:
        sub = videos_dir / dim
        return (sub, f"{dim}/") if sub.is_dir() else (videos_dir, "")

    def standard_input(self, ctx: RunContext, dim: Dimension, videos_dir: Path) -> DimensionInput:
        folder, prefix = self._dim_folder(videos_dir, dim.name)
        present = set(list_videos(folder))
        full = P.load_full_info("vbench2")
        items, missing = [], []
        expected = set()
        for s in P.v2_slots([dim.name]):
            expected.add(s.filename)
            if s.filename in present:
                items.append(VideoItem(prefix + s.filename, folder / s.filename, s.prompt, full[s.entry]))
            else:
                missing.append(prefix + s.filename)
        known = expected if prefix else {s.filename for s in self.all_slots()}
        bad = [(prefix + n, "does not match any '{prompt[:180]}-{i}.mp4' of this dimension's VBench-2.0 prompts")
               for n in sorted(present) if n not in known]
        return DimensionInput(items, bad, missing)

    def run(self, ctx: RunContext, dimensions: list[str]) -> list[DimensionOutcome]:
        results = getattr(ctx.args, "vbench2_results", None)
        if not results:
            return super().run(ctx, dimensions)
        path = Path(results)
        label = ctx.args.label or path.name.replace("_eval_results.json", "")
        videos_dir = Path(ctx.args.videos) if ctx.args.videos else path.parent
        return [self.ingest_results_file(ctx, self.dimensions[d], label, videos_dir, path) for d in dimensions]

    def run_dimension(self, ctx, dim, label, videos_dir, mode, gen_log, share=None):
        results = getattr(ctx.args, "vbench2_results", None)
        if results:
            return self.ingest_results_file(ctx, dim, label, videos_dir, Path(results))
        return super().run_dimension(ctx, dim, label, videos_dir, mode, gen_log, share=share)

    def ingest_results_file(self, ctx, dim, label, videos_dir, path: Path) -> DimensionOutcome:
        """Ingest upstream output: a dimension absent from the file gets status ``skipped`` (never 0)."""
        store = ctx.store
        if store.is_done(self.name, label, None, dim.name):
            return self._agg_outcome(ctx, dim, label)
        data = json.loads(path.read_text())
        prov = ctx.provenance(source=f"ingested {path}", runner="results_file")
        if dim.name not in data:
            store.add(suite=self.name, model=label, video=None, dimension=dim.name, score=None, status="skipped",
                      message=f"{dim.name} not in {path}", provenance=prov)
            return self._agg_outcome(ctx, dim, label)
        expected = {s.filename for s in P.v2_slots([dim.name])}
        vids = data[dim.name][1] if isinstance(data[dim.name][1], list) else []
        got = {Path(v.get("video_path", "")).name for v in vids}
        missing = sorted(expected - got)
        deviations = [f"{len(missing)} of {len(expected)} official videos absent from the results"] if missing else []
        items = [VideoItem(f"{dim.name}/{Path(v['video_path']).name}", Path(v["video_path"]),
                           P.prompt_from_filename(v["video_path"])) for v in vids if v.get("video_path")]
        status = "non_standard" if deviations else "ok"
        score = self.ingest(ctx, dim, label, items, data, status, deviations, prov, {"protocol_deviations": deviations},
                            {})
        store.add(suite=self.name, model=label, video=None, dimension=dim.name, score=score, status=status,
                  message="; ".join(deviations) or None, details={"n_videos": len(items), "missing": missing[:50]},
                  provenance={**prov, "protocol_deviations": deviations})
        return self._agg_outcome(ctx, dim, label)
