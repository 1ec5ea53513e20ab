"""Shared machinery of the ``vbench`` and ``vbench2`` suites: video indexing and validation, calling upstream compute
functions (in-process or through another interpreter), and turning their output into store records."""
from __future__ import annotations

import math

import importlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from evaluation import distributed
from evaluation import prompts as P
from evaluation.context import RunContext
from evaluation.registry import Dimension, DimensionOutcome, Suite, UsageError
from evaluation.store import FINAL_STATUSES
from evaluation.videos import check_video, list_videos
from evaluation.weights import OFFLINE_ENV, preflight, root_dir

# the checkpoint root each upstream package reads (once, at import) from the environment
CACHE_ROOT = {"vbench": "VBENCH_CACHE_DIR", "vbench2": "VBENCH2_CACHE_DIR"}


@lru_cache(maxsize=4)
def inprocess_import_error(package: str) -> str | None:
    from evaluation.upstream_worker import install_import_compat

    install_import_compat()  # e.g. vbench2.utils imports torchvision.io.write_video, gone in torchvision 0.25+
    try:
        importlib.import_module(package)
    except Exception as exc:  # e.g. vbench2's __init__ imports gdown, scenedetect, … (its own pins)
        return f"{type(exc).__name__}: {exc}"
    return None


def resolve_python(spec: str) -> str:
    """A python executable, or a venv folder (its bin/python)."""
    p = Path(os.path.expanduser(spec))
    if p.is_dir():
        for cand in (p / "bin" / "python", p / "Scripts" / "python.exe"):
            if cand.exists():
                return str(cand)
    return str(p)


@dataclass
class VideoItem:
    rel: str  # record `video` (relative to the videos folder)
    path: Path
    prompt: str
    entry: dict | None = None  # the upstream full-info entry (standard mode)
    source: str | None = None  # original file when `path` is a derived copy (static filter)


@dataclass
class DimensionInput:
    items: list[VideoItem]
    bad_names: list[tuple[str, str]] = field(default_factory=list)  # (rel, message)
    missing: list[str] = field(default_factory=list)  # expected but absent (standard mode)
    deviations: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)


class UpstreamSuite(Suite):
    package: str = ""  # "vbench" or "vbench2"
    chunk_size: int = 16  # videos per upstream call for "video_mean" dimensions (per-video resume granularity)

    # ------------------------------------------------------------------ hooks for subclasses
    def submodules(self, dim: Dimension, pf) -> object:  # pragma: no cover - abstract
        raise NotImplementedError

    def standard_input(self, ctx: RunContext, dim: Dimension, videos_dir: Path) -> DimensionInput:  # pragma: no cover
        raise NotImplementedError

    def generation_jobs(self, ctx: RunContext, dims: list[str]):  # pragma: no cover
        raise NotImplementedError

    def runner_mode(self, ctx: RunContext) -> tuple[str, str | None]:
        """('external', python) when ``--<package>-python`` is given; else ('inprocess', None) when the package
        imports here; else ('unavailable', reason)."""
        py = getattr(ctx.args, f"{self.package}_python", None)
        if py:
            exe = resolve_python(py)
            if not (Path(exe).is_file() or shutil.which(exe)):
                return "unavailable", (f"--{self.package}-python {py}: no python interpreter there (give a python "
                                       "executable or a venv folder)")
            return "external", exe
        err = inprocess_import_error(self.package)
        if err is None:
            return "inprocess", None
        return "unavailable", (f"{self.package} is not importable here ({err}) and no external interpreter is "
                               f"configured: install its dependencies in a separate venv and pass "
                               f"--{self.package}-python PATH (or set $REHYAT_{self.package.upper()}_PYTHON); "
                               "see docs/evaluation.md")

    # ------------------------------------------------------------------ helpers
    def model_label(self, ctx: RunContext, videos_dir: Path) -> str:
        return ctx.args.label or videos_dir.resolve().name

    def custom_input(self, dim: Dimension, videos_dir: Path) -> DimensionInput:
        items, bad = [], []
        for name in list_videos(videos_dir):
            if Path(name).suffix.lower() not in P.VIDEO_EXTS:
                bad.append((name, f"not a video file name (expected {P.VIDEO_EXTS})"))
                continue
            prompt = P.prompt_from_filename(name)
            if not prompt:
                bad.append((name, "cannot derive a prompt from the file name"))
                continue
            items.append(VideoItem(name, videos_dir / name, prompt))
        return DimensionInput(items, bad, deviations=["custom_input mode (not the official prompt suite)"])

    def resolve_mode(self, ctx: RunContext, videos_dir: Path) -> str:
        mode = getattr(ctx.args, "mode", "auto") or "auto"
        if mode != "auto":
            return mode
        names = set(list_videos(videos_dir)) if videos_dir.is_dir() else set()
        for sub in (videos_dir.iterdir() if videos_dir.is_dir() else []):
            if sub.is_dir():
                names |= {f"{sub.name}/{n}" for n in list_videos(sub)}
        official = {s.filename for s in self.all_slots()} | {f"{d}/{s.filename}" for s in self.all_slots()
                                                             for d in s.dimensions}
        return "standard" if names & official else "custom"

    def all_slots(self):  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ main loop
    def run(self, ctx: RunContext, dimensions: list[str]) -> list[DimensionOutcome]:
        args = ctx.args
        if getattr(args, "model", None):
            videos_dir, label = self.generate(ctx, dimensions)
        else:
            if not getattr(args, "videos", None):
                raise UsageError(f"--suite {self.name}: give --videos DIR or --model SPEC")
            videos_dir = Path(args.videos)
            if not videos_dir.is_dir():
                raise UsageError(f"--videos {videos_dir}: not a directory")
            label = self.model_label(ctx, videos_dir)
        try:
            P.package_dir(self.package)
        except ModuleNotFoundError as exc:  # the upstream wheel (prompt data, code) is not installed
            for dname in dimensions:
                if not ctx.store.is_done(self.name, label, None, dname):
                    ctx.store.add(suite=self.name, model=label, video=None, dimension=dname, score=None,
                                  status="error", message=str(exc), provenance=ctx.provenance())
            return [self._agg_outcome(ctx, self.dimensions[d], label) for d in dimensions]
        mode = self.resolve_mode(ctx, videos_dir)
        ctx.log(f"[{self.name}] model={label} videos={videos_dir} mode={mode} device={ctx.device}")
        gen_log = {}
        try:
            from evaluation.generation import read_generation_log

            gen_log = read_generation_log(videos_dir)
        except OSError:
            pass
        shard = distributed.current()
        if shard.world > 1:
            # sharded pass: this rank's videos of per-video-mean dimensions, whole other dimensions round-robin
            ctx._shard = shard  # read by pre-steps that shard themselves (the static filter)
            try:
                for i, dname in enumerate(dimensions):
                    dim = self.dimensions[dname]
                    if dim.aggregation == "video_mean":
                        self.run_dimension(ctx, dim, label, videos_dir, mode, gen_log, share=shard)
                    elif shard.owns(i):
                        self.run_dimension(ctx, dim, label, videos_dir, mode, gen_log)
            finally:
                ctx._shard = None
            distributed.barrier()
            if shard.rank != 0:
                return []  # rank 0 merges and reports
            merged = distributed.merge_shards(ctx.store, ctx.out_dir)
            ctx.log(f"[{self.name}] merged {merged['added']} record(s) of {shard.world - 1} other rank(s)")
        outcomes = []
        for dname in ctx.progress(dimensions, desc=f"{self.name} dimensions"):
            dim = self.dimensions[dname]
            outcomes.append(self.run_dimension(ctx, dim, label, videos_dir, mode, gen_log))
        return outcomes

    def _agg_outcome(self, ctx, dim, label) -> DimensionOutcome:
        rec = ctx.store.get(self.name, label, None, dim.name)
        per_video = [r for r in ctx.store.records(self.name, label, dim.name) if r["video"] is not None]
        missing = [f"${m['root']}/{m['path']}" for m in (rec.get("details") or {}).get("missing", [])
                   if isinstance(m, dict)]
        return DimensionOutcome(self.name, label, dim.name, rec["status"], rec["score"], rec["message"],
                                sum(r["status"] in FINAL_STATUSES for r in per_video),
                                sum(r["status"] == "error" for r in per_video), missing)

    def run_dimension(self, ctx: RunContext, dim: Dimension, label: str, videos_dir: Path, mode: str,
                      gen_log: dict, share: distributed.Shard | None = None) -> DimensionOutcome | None:
        """Score one dimension and write its aggregate record.  With ``share`` (a per-video-mean dimension under
        torchrun) only this rank's share of the pending videos is scored and no aggregate is written (None)."""
        store, suite = ctx.store, self.name
        if store.is_done(suite, label, None, dim.name):
            return None if share else self._agg_outcome(ctx, dim, label)
        base_prov = ctx.provenance(mode=mode, upstream_package=self.package, rank=distributed.rank_if_sharded())

        def agg(status, score=None, message=None, details=None, **prov):
            if share is not None:  # rank 0 writes the aggregate after the merge
                return None
            store.add(suite=suite, model=label, video=None, dimension=dim.name, score=score, status=status,
                      message=message, details=details or {}, provenance={**base_prov, **prov})
            return self._agg_outcome(ctx, dim, label)

        runner, python = self.runner_mode(ctx)
        pf = preflight(dim, hash_cache=ctx.hash_cache, python=python if runner == "external" else None)
        if not pf.ok:
            return agg(pf.status, message=pf.message, details={"missing": pf.missing})
        if mode == "custom" and not dim.custom_input:
            return agg("skipped", message=f"{dim.name} needs the official prompt suite's auxiliary_info; upstream "
                                          "does not support it in custom_input mode (use the official naming)")
        if dim.needs_gpu and not str(ctx.device).startswith("cuda"):
            return agg("skipped", message=f"{dim.name}: upstream code hard-codes CUDA "
                                          f"(needs ~{dim.gpu_mem_gb} GB GPU memory); run with --device cuda")
        if runner == "unavailable":
            return agg("error", message=python)

        try:
            inp = (self.custom_input(dim, videos_dir) if mode == "custom"
                   else self.standard_input(ctx, dim, videos_dir))
        except Exception as exc:  # e.g. the static filter could not be built; the other dimensions go on
            ctx.log(f"[{self.name}] {dim.name}: preparing the input failed: {type(exc).__name__}: {exc}")
            return agg("error", message=f"{dim.name}: preparing the input failed: {type(exc).__name__}: {exc}")
        deviations = list(inp.deviations)
        if inp.missing:
            deviations.append(f"{len(inp.missing)} expected video(s) missing")
        prov_common = dict(checkpoint_hashes=pf.checkpoint_hashes, protocol_deviations=deviations,
                           runner=runner, python=python or sys.executable)
        for rel, msg in inp.bad_names:
            if not store.is_done(suite, label, rel, dim.name):
                store.add(suite=suite, model=label, video=rel, dimension=dim.name, score=None, status="error",
                          message=f"mis-named file: {msg}", provenance={**base_prov, **prov_common})
        # validate files
        valid: list[VideoItem] = []
        for it in ctx.progress(inp.items, desc=f"{dim.name}: checking files"):
            if store.is_done(suite, label, it.rel, dim.name):
                valid.append(it)
                continue
            chk = check_video(it.path, min_frames=dim.min_frames, min_side=dim.min_side,
                              min_side_why=dim.extras.get("min_side_why", ""))
            if chk.ok:
                valid.append(it)
            else:
                store.add(suite=suite, model=label, video=it.rel, dimension=dim.name, score=None, status="error",
                          message=chk.message, details={"path": str(it.path)},
                          provenance={**base_prov, **prov_common, "seed": gen_log.get(it.rel, {}).get("seed")})
        n_bad = len(inp.items) - len(valid) + len(inp.bad_names)
        if n_bad:
            deviations.append(f"{n_bad} file(s) unusable (see per-video error records)")
        if not valid:
            return agg("error", message=f"{dim.name}: no valid video to score in {videos_dir} ({mode} mode)"
                                        + (f"; missing e.g. {inp.missing[:3]}" if inp.missing else ""),
                       **prov_common)
        status = "non_standard" if deviations else "ok"
        submodules = self.submodules(dim, pf)
        pending = [it for it in valid if not store.is_done(suite, label, it.rel, dim.name)]
        work = ctx.work_dir(self.name, label, dim.name)
        rank_tag = f"rank{distributed.current().rank}_" if distributed.current().world > 1 else ""
        try:
            if dim.aggregation == "video_mean":
                if share is not None:  # a stable share of all valid videos (resume-safe), less those done
                    pending = [it for it in share.take(valid) if not store.is_done(suite, label, it.rel, dim.name)]
                chunks = [pending[i:i + self.chunk_size] for i in range(0, len(pending), self.chunk_size)]
                for ci, chunk in enumerate(ctx.progress(chunks, desc=f"{dim.name}: scoring")):
                    self._score(ctx, dim, label, chunk, submodules, work, f"{rank_tag}chunk{ci}", runner, python,
                                status, deviations, base_prov, prov_common, gen_log)
                if share is not None:
                    return None
                scores = []
                for it in valid:
                    rec = store.get(suite, label, it.rel, dim.name)
                    if rec and rec["status"] in FINAL_STATUSES:
                        scores.append(rec["score"])
                if not scores:
                    return agg("error", message=f"{dim.name}: upstream scored none of {len(valid)} video(s)",
                               **prov_common)
                # exactly rounded, so the aggregate does not depend on the order in which (resumed) chunks were
                # scored; upstream's np.mean in its listing order can differ from it in the last bit
                agg_score = math.fsum(scores) / len(scores)
                details = {"n_videos": len(scores), "aggregation": "mean over videos (as upstream)"}
            else:
                agg_score = self._score(ctx, dim, label, valid, submodules, work, f"{rank_tag}all", runner, python,
                                        status, deviations, base_prov, prov_common, gen_log)
                details = {"n_videos": len(valid), "aggregation": "upstream aggregate over the whole set"}
        except Exception as exc:  # upstream failure: this dimension fails, the others go on
            ctx.log(f"[{self.name}] {dim.name} failed: {type(exc).__name__}: {exc}")
            return agg("error", message=f"{dim.name}: upstream evaluator failed: {type(exc).__name__}: {exc}",
                       **prov_common)
        details.update(inp.details)
        if inp.missing:
            details["missing_videos"] = inp.missing[:50]
        msg = "; ".join(deviations) if deviations else None
        return agg(status, agg_score, msg, details, **prov_common)

    # ------------------------------------------------------------------ upstream call
    def _full_info(self, dim: Dimension, items: list[VideoItem]) -> list[dict]:
        by_prompt: dict[tuple, dict] = {}
        for it in items:
            key = (it.prompt, json.dumps(it.entry.get("auxiliary_info"), sort_keys=True) if it.entry else None)
            if key not in by_prompt:
                e = {"prompt_en": it.prompt, "dimension": [dim.name], "video_list": []}
                if it.entry and "auxiliary_info" in it.entry:
                    e["auxiliary_info"] = it.entry["auxiliary_info"]
                by_prompt[key] = e
            by_prompt[key]["video_list"].append(str(Path(it.path).resolve()))
        return list(by_prompt.values())

    def call_upstream(self, dim: Dimension, full_info_path: Path, submodules, device: str, work: Path, tag: str,
                      runner: str, python: str | None) -> dict:
        from evaluation import upstream_worker

        job = {"package": self.package, "dimension": dim.name, "full_info": str(full_info_path), "device": device,
               "submodules": submodules, "kwargs": dim.extras.get("kwargs", {}),
               "output": str(work / f"{tag}_eval_results.json"),
               "chdir_site_packages": self.package == "vbench2", "env": OFFLINE_ENV,
               "cache_dir": str(root_dir(CACHE_ROOT[self.package])),
               "trusted_checkpoints": bool(dim.extras.get("trusted_checkpoints"))}
        if runner == "inprocess":
            return upstream_worker.run_job(job)
        job_path = work / f"{tag}_job.json"
        job_path.write_text(json.dumps(job, indent=1))
        env = {**os.environ, **OFFLINE_ENV}
        proc = subprocess.run([python, upstream_worker.__file__, str(job_path)], env=env, capture_output=True,
                              text=True)
        (work / f"{tag}_worker.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"external evaluator {python} exited {proc.returncode}: {' | '.join(tail)}")
        return json.loads(Path(job["output"]).read_text())

    def _score(self, ctx, dim, label, items, submodules, work, tag, runner, python, status, deviations, base_prov,
               prov_common, gen_log):
        info_path = work / f"{tag}_full_info.json"
        info_path.write_text(json.dumps(self._full_info(dim, items), indent=1))
        result = self.call_upstream(dim, info_path, submodules, ctx.device, work, tag, runner, python)
        return self.ingest(ctx, dim, label, items, result, status, deviations, base_prov, prov_common, gen_log)

    def ingest(self, ctx, dim, label, items, result, status, deviations, base_prov, prov_common, gen_log):
        """Turn upstream ``{dim: [score, video_results]}`` into per-video records; return the upstream aggregate."""
        score, video_results = result[dim.name][0], result[dim.name][1]
        by_path = {str(Path(it.path).resolve()): it for it in items}
        by_name = {}
        for it in items:
            by_name.setdefault(Path(it.path).name, it)
        seen = set()
        returned = {str(Path(vr["video_path"]).resolve()) for vr in video_results
                    if isinstance(vr, dict) and vr.get("video_path")} if isinstance(video_results, list) else set()
        for vr in video_results if isinstance(video_results, list) else []:
            vp = vr.get("video_path")
            it = by_path.get(str(Path(vp).resolve())) if vp else None
            if it is None and vp:
                it = by_name.get(Path(vp).name)
            if it is None or "video_results" not in vr:
                continue
            val = vr["video_results"]
            extra = {k: v for k, v in vr.items() if k not in ("video_path", "video_results")}
            if it.source:
                extra["source"] = it.source
            seen.add(it.rel)
            group = [o for o in items if o.prompt == it.prompt]
            if dim.extras.get("per_prompt") and any(str(Path(o.path).resolve()) not in returned for o in group):
                # one upstream result per prompt (VBench-2.0 Diversity: over all its videos), reported under the
                # prompt's first video as upstream does; its other videos are part of that record, not missing
                seen.update(o.rel for o in group)
                extra["videos"] = [o.rel for o in group]
            gen = gen_log.get(it.source or it.rel, {})
            try:
                fval = float(val)
            except (TypeError, ValueError):
                ctx.store.add(suite=self.name, model=label, video=it.rel, dimension=dim.name, score=None,
                              status="error", message=f"upstream returned a non-numeric result {val!r}",
                              details=extra, provenance={**base_prov, **prov_common})
                continue
            ctx.store.add(suite=self.name, model=label, video=it.rel, dimension=dim.name, score=fval, status=status,
                          message="; ".join(deviations) if deviations else None, details=extra,
                          provenance={**base_prov, **prov_common, "seed": gen.get("seed"),
                                      "model_config_hash": gen.get("config_hash")})
        for it in items:
            if it.rel not in seen and not ctx.store.is_done(self.name, label, it.rel, dim.name):
                ctx.store.add(suite=self.name, model=label, video=it.rel, dimension=dim.name, score=None,
                              status="error", message="upstream evaluator returned no result for this video",
                              provenance={**base_prov, **prov_common})
        if score is None or (isinstance(score, float) and np.isnan(score)):
            raise RuntimeError(f"upstream aggregate is {score!r}")
        return float(score)

    # ------------------------------------------------------------------ generation
    def generate(self, ctx: RunContext, dims: list[str]) -> tuple[Path, str]:
        from evaluation.generation import gen_settings, generate_set, load_generator

        args = ctx.args
        gen = load_generator(args.model, device=ctx.device, label=args.label)
        jobs = self.generation_jobs(ctx, dims)  # honours --limit-prompts (first N prompts of each dimension)
        out = Path(args.video_dir or (ctx.out_dir / "videos" / self.name / gen.label))
        ctx.log(f"[{self.name}] generating {len(jobs)} video(s) with {gen.label} into {out}")
        st = gen_settings(args, gen)
        generate_set(gen, jobs, out, num_frames=st["num_frames"], height=st["height"], width=st["width"],
                     fps=st["fps"], progress=lambda it: ctx.progress(it, desc="generating"))
        distributed.barrier()  # every rank's share is written; then the scoring is sharded too
        return out, gen.label
