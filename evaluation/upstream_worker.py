"""Run ONE upstream dimension compute function (``vbench.<dim>.compute_<dim>`` / ``vbench2.<dim>.compute_<dim>``).

Used in-process (:func:`run_job`) or as a stand-alone script under another interpreter whose environment holds the
upstream pins (VBench-2.0's ~190 pins cannot share our venv)::

    /path/to/vbench2-venv/bin/python evaluation/upstream_worker.py JOB.json

This file imports only the standard library at module level so that it runs in any environment.  The job JSON holds
``package``, ``dimension``, ``full_info`` (a full-info JSON that already lists ``video_list`` per prompt), ``device``,
``submodules`` (built by the harness from explicit local paths — upstream ``init_submodules``, which downloads, is
never called), ``kwargs``, ``output`` and optionally ``env``, ``cache_dir`` (the package's checkpoint root as the
harness resolved it) and ``trusted_checkpoints`` (see :func:`run_job`).  The output is upstream's
``{dim: [score, video_results]}``.

What this worker changes around upstream's code, and nothing else (docs/evaluation.md, "What the harness changes"):

- ``cache_dir``: vbench / vbench2 read ``$VBENCH_CACHE_DIR`` / ``$VBENCH2_CACHE_DIR`` **once, at import**, into module
  constants (``vbench.utils.CACHE_DIR``, copied into e.g. ``vbench.temporal_style``, and baked into the default
  vocabulary path of ViCLIP's tokenizer); in a long-lived process those can point at another cache than the one the
  harness checked, so they are set to the harness's root before and after the dimension module is imported.
- ``trusted_checkpoints``: torch >= 2.6 loads with ``weights_only=True`` unless told otherwise; upstream 0.1.5's AMT
  loader reads a full training checkpoint that needs ``weights_only=False`` (fixed upstream after 0.1.5,
  Vchitect/VBench PR #115).  For such a dimension ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` is set for the call (torch's
  own switch; it only affects ``torch.load`` calls that do not pass ``weights_only``).
- :func:`install_import_compat`: names that upstream modules import at module level but that newer numpy/torchvision
  removed (or that the vbench2 wheel omits), and that the scored code never calls, are provided so that the import
  succeeds (each raises if called).
- :func:`default_map_location`: a ``torch.load`` without ``map_location`` of a GPU-saved checkpoint on a machine
  without CUDA is given the requested device (device only).
- :func:`cuda_calls_to`: with a ``device`` that is not CUDA, ``Tensor.cuda()`` calls in upstream code (VBench-2.0's
  Camera_Motion moves every video there) move the tensor to that device instead (device only).
- :func:`single_process_view`: under torchrun the harness shards the videos itself; upstream's own sharding and
  CUDA all_gather stay off.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import types

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


def _removed(name: str, why: str = "was removed from this library version"):
    def missing(*_a, **_k):
        raise NotImplementedError(f"{name} {why}; the harness only provides the name "
                                  "so that an upstream module imports (docs/evaluation.md)")

    missing.__name__ = name.rsplit(".", 1)[-1]
    return missing


def install_import_compat() -> list[str]:
    """Provide import-time names that vbench 0.1.5 / vbench2 0.1.1 modules import but never call on the scored path.

    - ``numpy.lib.function_base.disp`` (removed in numpy 2): imported by UMT's Kinetics dataset module, which
      ``vbench.human_action`` pulls in through ``vbench.third_party.umt.datasets``.
    - ``torchvision.io.write_video`` (removed in torchvision 0.25+): imported by ``vbench2.utils`` for clip splitting.
    - ``vbench2.third_party.cotracker.utils.visualizer.Visualizer``: imported by Camera_Motion, Human_Identity and
      Multi-View_Consistency to draw tracks when ``save_video=True``, which their compute functions never pass; the
      vbench2 0.1.1 wheel ships ``third_party/cotracker`` without its Python code (a source checkout has it, and then
      nothing is provided).

    Returns the names provided (none when the installed versions still have them)."""
    added = []
    try:
        import numpy.lib as nplib

        try:
            importlib.import_module("numpy.lib.function_base").disp  # noqa: B018
        except (ImportError, AttributeError):
            mod = types.ModuleType("numpy.lib.function_base")
            mod.disp = _removed("numpy.lib.function_base.disp")
            sys.modules["numpy.lib.function_base"] = mod
            nplib.function_base = mod
            added.append("numpy.lib.function_base.disp")
    except ImportError:
        pass
    try:
        import torchvision.io as tvio

        if not hasattr(tvio, "write_video"):
            tvio.write_video = _removed("torchvision.io.write_video")
            added.append("torchvision.io.write_video")
    except ImportError:
        pass
    added += _wheel_omitted_visualizer()
    return added


VISUALIZER = "vbench2.third_party.cotracker.utils.visualizer"


def _wheel_omitted_visualizer() -> list[str]:
    """Provide ``Visualizer`` (raises if called) when the installed vbench2 lacks ``third_party/cotracker/utils``.
    Found by file (``find_spec`` of the top-level name does not run ``vbench2/__init__``)."""
    import importlib.util

    spec = importlib.util.find_spec("vbench2")
    if spec is None or not spec.origin or VISUALIZER in sys.modules:
        return []
    here = os.path.join(os.path.dirname(spec.origin), "third_party", "cotracker", "utils", "visualizer.py")
    if os.path.exists(here):
        return []
    pkg = types.ModuleType(VISUALIZER.rsplit(".", 1)[0])
    pkg.__path__ = []  # a package with no files: nothing else imports from it
    mod = types.ModuleType(VISUALIZER)
    mod.Visualizer = _removed(VISUALIZER + ".Visualizer", "is not in the vbench2 wheel (no third_party code)")
    pkg.visualizer = mod
    sys.modules[pkg.__name__], sys.modules[mod.__name__] = pkg, mod
    return [VISUALIZER + ".Visualizer"]


@contextlib.contextmanager
def default_map_location(device: str):
    """``torch.load`` calls that pass no ``map_location`` load onto ``device`` (a GPU-saved checkpoint otherwise
    fails on a machine without CUDA).  Applied only where upstream hard-codes the load device."""
    import torch

    real = torch.load

    def load(*args, **kwargs):
        if "map_location" not in kwargs and len(args) < 2:
            kwargs["map_location"] = device
        return real(*args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = real


@contextlib.contextmanager
def cuda_calls_to(device: str):
    """While active, ``Tensor.cuda()`` moves the tensor to ``device`` when that is not a CUDA device (VBench-2.0's
    Camera_Motion calls ``video.cuda()`` whatever device it was given); with a CUDA device nothing changes."""
    if str(device).startswith("cuda"):
        yield
        return
    import torch

    real = torch.Tensor.cuda

    def to_device(self, *_args, **_kwargs):
        return self.to(device)

    torch.Tensor.cuda = to_device
    try:
        yield
    finally:
        torch.Tensor.cuda = real


VICLIP_VOCAB = os.path.join("ViCLIP", "bpe_simple_vocab_16e6.txt.gz")


def point_cache_dir(package: str, cache_dir: str | None) -> None:
    """Set the package's import-time ``CACHE_DIR`` constants (every loaded ``package.*`` module) to ``cache_dir``,
    and the default vocabulary of vbench's ViCLIP tokenizer, which is a default argument computed from CACHE_DIR when
    ``simple_tokenizer`` is imported (ViCLIP's text tower builds a tokenizer with it)."""
    if not cache_dir:
        return
    for name, mod in list(sys.modules.items()):
        if (name == package or name.startswith(package + ".")) and isinstance(getattr(mod, "CACHE_DIR", None), str):
            mod.CACHE_DIR = cache_dir
    tok = sys.modules.get(f"{package}.third_party.ViCLIP.simple_tokenizer")
    if tok is not None and hasattr(tok, "SimpleTokenizer"):
        tok.SimpleTokenizer.__init__.__defaults__ = (os.path.join(cache_dir, VICLIP_VOCAB),)


@contextlib.contextmanager
def single_process_view():
    """Upstream's compute functions shard their video list and all_gather the results (over CUDA tensors) whenever a
    torch.distributed process group is initialised; the harness shards the work itself (evaluation/distributed.py,
    whose barriers initialise a gloo group), so during the call upstream sees no process group."""
    try:
        import torch.distributed as dist
    except ImportError:
        yield
        return
    real = dist.is_initialized
    dist.is_initialized = lambda: False
    try:
        yield
    finally:
        dist.is_initialized = real


@contextlib.contextmanager
def _env(values: dict):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_job(job: dict) -> dict:
    for k, v in {**OFFLINE, **job.get("env", {})}.items():
        os.environ.setdefault(k, str(v))
    package, dimension = job["package"], job["dimension"]
    install_import_compat()
    cache_dir = job.get("cache_dir")
    if cache_dir:
        try:
            importlib.import_module(f"{package}.utils")  # the module that reads the variable
        except ModuleNotFoundError:  # a package without it has no such constant
            pass
        point_cache_dir(package, cache_dir)
    mod_name = module_name(package, dimension)
    mod = importlib.import_module(mod_name)
    point_cache_dir(package, cache_dir)  # modules that copied the constant at their own import
    fn = getattr(mod, "compute_" + mod_name.split(".", 1)[1])
    cwd = os.getcwd()
    if job.get("chdir_site_packages"):
        # VBench-2.0 resolves some configs relative to the folder holding the package ("vbench2/third_party/...").
        os.chdir(os.path.dirname(os.path.dirname(importlib.import_module(package).__file__)))
    during = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"} if job.get("trusted_checkpoints") else {}
    try:
        with _env(during), single_process_view(), cuda_calls_to(job.get("device", "cpu")):
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
