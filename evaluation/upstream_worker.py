"""Run ONE upstream dimension compute function (``vbench.<dim>.compute_<dim>`` / ``vbench2.<dim>.compute_<dim>``).

Used in-process (:func:`run_job`) or as a stand-alone script under another interpreter whose environment holds the
upstream pins (VBench-2.0's ~190 pins cannot share our venv)::

    /path/to/vbench2-venv/bin/python evaluation/upstream_worker.py JOB.json

This file imports only the standard library at module level so that it runs in any environment.  The job JSON holds
``package``, ``dimension``, ``full_info`` (a full-info JSON that already lists ``video_list`` per prompt), ``device``,
``submodules`` (built by the harness from explicit local paths — upstream ``init_submodules``, which downloads, is
never called), ``kwargs``, ``output`` and optionally ``env``.  The output is upstream's ``{dim: [score, video_results]}``.
"""
from __future__ import annotations

import importlib
import json
import os
import sys

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DIFFUSERS_OFFLINE": "1"}


def module_name(package: str, dimension: str) -> str:
    base = dimension.replace("-", "_").lower() if package == "vbench2" else dimension
    return f"{package}.{base}"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return obj


def run_job(job: dict) -> dict:
    for k, v in {**OFFLINE, **job.get("env", {})}.items():
        os.environ.setdefault(k, str(v))
    package, dimension = job["package"], job["dimension"]
    mod_name = module_name(package, dimension)
    mod = importlib.import_module(mod_name)
    fn = getattr(mod, "compute_" + mod_name.split(".", 1)[1])
    cwd = os.getcwd()
    if job.get("chdir_site_packages"):
        # VBench-2.0 resolves some configs relative to the folder holding the package ("vbench2/third_party/...").
        os.chdir(os.path.dirname(os.path.dirname(importlib.import_module(package).__file__)))
    try:
        score, video_results = fn(job["full_info"], job.get("device", "cpu"), job.get("submodules"),
                                  **job.get("kwargs", {}))
    finally:
        os.chdir(cwd)
    result = {dimension: [_jsonable(score), _jsonable(video_results)]}
    if job.get("output"):
        tmp = f"{job['output']}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
        os.replace(tmp, job["output"])
    return result


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as fh:
        job = json.load(fh)
    run_job(job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
