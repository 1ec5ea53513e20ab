"""The training engine of both stages: ``accelerate`` set up from a stage config.

One :class:`accelerate.Accelerator` per run (:func:`accelerator_session`) provides the process group (``accelerate
launch``, ``torchrun`` or one plain process), device placement, mixed precision, gradient accumulation, DDP / FSDP /
DeepSpeed wrapping (whatever the launcher configured; ``--parallelism fsdp`` builds an FSDP2 plugin that shards per
``WanTransformerBlock``), ``set_seed``, trackers (TensorBoard under ``OUT/logs`` by default) and the training state
(``save_state`` / ``load_state``: optimiser, LR schedule, every rank's RNG, the sharded model under FSDP).  What is
left here is the glue a resumable run needs around them:

* :class:`RunCheckpoints` — ``OUT/checkpoints/step_XXXXXXXX/`` = ``accelerator.save_state`` written under
  ``.partial`` and renamed when every rank has written its part, plus ``rehyat_state.json`` (step, config hash, world
  size) and an atomically replaced ``latest`` pointer: a kill at any moment leaves the previous checkpoint selected.
* :class:`TrainableTensors` / :class:`EMAState` — the model tensors of a checkpoint outside FSDP are only the trainable
  ones (stage 1: φ, not the frozen teacher) and the optional EMA (``diffusers.training_utils.EMAModel``), both
  registered with ``register_for_checkpointing``.
* :func:`make_lr_scheduler` — transformers' schedules (diffusers' ``get_scheduler`` is a copy of them without the
  floor ``--min-lr-ratio`` needs).
* :func:`reduce_mean_` — gradients or statistics averaged over processes with ``accelerate.utils.reduce`` (stage 1
  backpropagates inside the forward, which DDP's reducer does not support, so its φ gradients are reduced this way).
"""

from __future__ import annotations

import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

import torch

from .common import CKPT_DIR, LATEST_NAME, atomic_write_bytes, atomic_write_json
from .options import LR_SCHEDULES, MIXED_PRECISION, PARALLELISM

log = logging.getLogger("rehyat.distill")

STATE_NAME = "rehyat_state.json"
WRAP_CLASS = "WanTransformerBlock"  # FSDP unit and gradient-checkpointing unit


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda``/``cpu`` pass through (accelerate picks the index)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    return dev.type


def resolve_mixed_precision(mixed_precision: str, device: str) -> str:
    """``auto`` = the launcher's choice (``accelerate launch --mixed_precision``) if it made one, else bf16 on CUDA
    and none on CPU; an explicit value wins over the launcher."""
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {mixed_precision!r}")
    if mixed_precision != "auto":
        return mixed_precision
    env = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if env != "no":
        return env
    return "bf16" if device == "cuda" else "no"


def fsdp_requested(parallelism: str) -> bool:
    if parallelism not in PARALLELISM:
        raise ValueError(f"parallelism must be one of {PARALLELISM}, got {parallelism!r}")
    return parallelism == "fsdp" or (parallelism == "auto" and
                                     os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true")


def fsdp_version() -> int:
    """2 (``fully_shard``) where the installed torch / accelerate support it, else 1."""
    from accelerate.utils import is_torch_version
    from accelerate.utils.constants import FSDP2_PYTORCH_VERSION

    return 2 if is_torch_version(">=", FSDP2_PYTORCH_VERSION) else 1


def make_fsdp_plugin():
    """accelerate's FSDP plugin: one unit per Wan block, sharded state dicts, parameters resharded after forward.
    Options given to ``accelerate launch`` (``--fsdp_*``, environment ``FSDP_*``) win over these defaults."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    defaults = {"FSDP_VERSION": ("fsdp_version", fsdp_version()),
                "FSDP_AUTO_WRAP_POLICY": ("auto_wrap_policy", "transformer_based_wrap"),
                "FSDP_TRANSFORMER_CLS_TO_WRAP": ("transformer_cls_names_to_wrap", [WRAP_CLASS]),
                "FSDP_STATE_DICT_TYPE": ("state_dict_type", "SHARDED_STATE_DICT"),
                "FSDP_RESHARD_AFTER_FORWARD": ("reshard_after_forward", True)}
    launched = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    kw = {name: value for env, (name, value) in defaults.items() if not (launched and env in os.environ)}
    if launched and os.environ.get("FSDP_CPU_RAM_EFFICIENT_LOADING", "false").lower() == "true":
        log.warning("FSDP cpu_ram_efficient_loading is off: accelerate %s's loader fails on diffusers models with a "
                    "root-level parameter (Wan's scale_shift_table); every process loads the weights on the CPU "
                    "before sharding", __import__("accelerate").__version__)
    # accelerate's loader expects transformers' get_parameter_or_buffer and breaks on Wan's top-level parameter
    kw["cpu_ram_efficient_loading"] = False
    return FullyShardedDataParallelPlugin(**kw)


def _fsdp_on_cpu(plugin) -> None:
    """accelerate's ``AcceleratorState`` turns a distributed run into FSDP only for accelerator device types; with
    ``cpu=True`` (gloo) it stays ``MULTI_CPU`` and ``prepare`` silently wraps the model in DDP instead.  torch's
    ``fully_shard`` itself runs on CPU with gloo, so set the state to FSDP explicitly: the CPU run then executes
    accelerate's own FSDP2 code (wrapping, sharded save/load, consolidation).  A test path, not a fast one."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    AcceleratorState._shared_state["distributed_type"] = DistributedType.FSDP
    AcceleratorState._shared_state["fsdp_plugin"] = plugin


def _undo_fsdp_on_cpu() -> None:
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    if PartialState._shared_state.get("distributed_type") == DistributedType.FSDP and \
            PartialState._shared_state.get("device", torch.device("cpu")).type == "cpu":
        PartialState._shared_state["distributed_type"] = DistributedType.MULTI_CPU


def trackers_from(report_to: str) -> list[str]:
    names = [t.strip() for t in report_to.split(",") if t.strip() and t.strip() != "none"]
    if "tensorboard" in names:
        from accelerate.utils import is_tensorboard_available

        if not is_tensorboard_available():
            raise ValueError("--report-to tensorboard needs the tensorboard package (pip install tensorboard; "
                             "scripts/install.sh installs it), or pass --report-to none")
    return names


def single_cpu_launch_of_several() -> bool:
    """True in a process started by accelerate's simple launcher with ``--cpu`` and ``--num_processes`` > 1 (it sets
    the rendezvous address for N > 1 but starts one python, with no WORLD_SIZE and no MPI rank variables)."""
    env = os.environ
    return (env.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in env and "WORLD_SIZE" not in env
            and not any(k in env for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")))


@contextmanager
def accelerator_session(cfg, out: Path, *, prepares_model: bool):
    """An ``Accelerator`` for one run of a stage; its trackers are finished and accelerate's process-wide state is
    reset at the end (so the next run in this process may use other settings).  The process group is left alone: it
    lives as long as the process (``python -m rehyat.distill`` destroys it at exit)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DistributedDataParallelKwargs, DistributedType, ProjectConfiguration

    device = resolve_device(cfg.device)
    mp = resolve_mixed_precision(cfg.mixed_precision, device)
    if cfg.gradient_accumulation_steps < 1:
        raise ValueError(f"gradient_accumulation_steps must be >= 1, got {cfg.gradient_accumulation_steps}")
    plugin = None
    if fsdp_requested(cfg.parallelism):
        if not prepares_model:
            raise ValueError("stage 1 trains only the feature maps of a frozen teacher: run it with DDP (the default "
                             "of a multi-process launch); FSDP is for stage 2's full fine-tuning")
        plugin = make_fsdp_plugin()
    acc = Accelerator(cpu=device == "cpu", mixed_precision=mp,
                      gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                      log_with=trackers_from(cfg.report_to) or None,
                      project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
                      step_scheduler_with_optimizer=False, fsdp_plugin=plugin,
                      kwargs_handlers=[DistributedDataParallelKwargs(gradient_as_bucket_view=True)])
    if acc.num_processes == 1 and single_cpu_launch_of_several():
        log.warning("`accelerate launch --cpu --num_processes N` started ONE process: accelerate %s's multi-CPU "
                    "launcher is mpirun (--mpirun_hostfile), without a hostfile it runs a single python. For N CPU "
                    "processes use `accelerate launch --multi_gpu --num_processes N` on a machine without GPUs (gloo) "
                    "or `torchrun --nproc_per_node N -m rehyat.distill ...`", __import__("accelerate").__version__)
    if plugin is not None and acc.distributed_type == DistributedType.MULTI_CPU:
        log.warning("FSDP on CPU: accelerate %s keeps a CPU run MULTI_CPU (DDP) whatever the plugin says; "
                    "switching its state to FSDP so the run exercises accelerate's FSDP%d code on gloo",
                    __import__("accelerate").__version__, plugin.fsdp_version)
        _fsdp_on_cpu(plugin)
    elif plugin is not None and acc.distributed_type != DistributedType.FSDP:
        log.warning("--parallelism fsdp with one process: nothing to shard, training unsharded")
    try:
        yield acc
    finally:
        for tracker in acc.trackers:
            tracker.finish()
        _undo_fsdp_on_cpu()
        AcceleratorState._reset_state()
        GradientState._reset_state()


def is_fsdp(acc) -> bool:
    from accelerate.utils import DistributedType

    return acc.distributed_type == DistributedType.FSDP


def make_lr_scheduler(optimizer, schedule: str, warmup_steps: int, total_steps: int, min_lr_ratio: float):
    """``cosine`` (to ``min_lr_ratio`` x lr), ``linear`` (to ``min_lr_ratio`` x lr) or ``constant``, each after
    ``warmup_steps`` of linear warm-up — transformers' ``get_scheduler`` (``cosine_with_min_lr``,
    ``warmup_stable_decay`` without a stable phase, ``constant_with_warmup``), stepped once per optimiser step."""
    from transformers import get_scheduler

    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r} ({', '.join(LR_SCHEDULES)})")
    if schedule == "constant":
        return get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=warmup_steps)
    if schedule == "cosine":
        return get_scheduler("cosine_with_min_lr", optimizer, num_warmup_steps=warmup_steps,
                             num_training_steps=total_steps, scheduler_specific_kwargs={"min_lr_rate": min_lr_ratio})
    return get_scheduler("warmup_stable_decay", optimizer, num_warmup_steps=warmup_steps,
                         scheduler_specific_kwargs={"num_stable_steps": 0, "decay_type": "linear",
                                                    "num_decay_steps": max(1, total_steps - warmup_steps),
                                                    "min_lr_ratio": min_lr_ratio})


def reduce_mean_(acc, tensors: list[torch.Tensor]) -> None:
    """In place: each tensor becomes its mean over processes (one flat buffer, one ``accelerate.utils.reduce``)."""
    if acc.num_processes == 1 or not tensors:
        return
    from accelerate.utils import reduce
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    flat = reduce(_flatten_dense_tensors([t.to(torch.float32) for t in tensors]), reduction="mean")
    for t, r in zip(tensors, _unflatten_dense_tensors(flat, tensors)):
        t.copy_(r)


# --------------------------------------------------------------------------------------------------------------------
# What a checkpoint holds besides accelerate's own state
# --------------------------------------------------------------------------------------------------------------------

class TrainableTensors:
    """Checkpointable view of a model's trainable tensors (``register_for_checkpointing``): stage 1's checkpoint
    holds φ, not the frozen teacher; loading refuses a checkpoint whose tensor names differ."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.model.named_parameters() if v.requires_grad}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.model.named_parameters())
        want = {k for k, v in params.items() if v.requires_grad}
        if set(state) != want:
            raise ValueError(f"checkpoint trainable tensors do not match the model: missing "
                             f"{sorted(want - set(state))[:4]}, unexpected {sorted(set(state) - want)[:4]}")
        with torch.no_grad():
            for k, v in state.items():
                params[k].copy_(v)


def trainable_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


class EMAState:
    """``diffusers.training_utils.EMAModel`` of the trainable parameters, checkpointable under FSDP too: its shadow
    tensors are sharded like the parameters (DTensors); the checkpoint stores them whole (gathered one by one to the
    CPU) and loading re-shards them."""

    def __init__(self, named_params: list[tuple[str, torch.nn.Parameter]], decay: float, update_after_step: int,
                 warmup: bool):
        from diffusers.training_utils import EMAModel

        self.names = [n for n, _ in named_params]
        self.params = [p for _, p in named_params]
        self.ema = EMAModel(self.params, decay=decay, update_after_step=update_after_step, use_ema_warmup=warmup)

    def step(self) -> None:
        self.ema.step(self.params)

    def state_dict(self) -> dict:
        st = dict(self.ema.state_dict())
        st["shadow_params"] = [_full_cpu(s) for s in self.ema.shadow_params]
        st["names"] = list(self.names)
        return st

    def load_state_dict(self, state: dict) -> None:
        if state.get("names") != self.names:
            raise ValueError("EMA checkpoint tracks other parameters than this model's trainable set")
        state = dict(state)
        full = state.pop("shadow_params")
        state.pop("names")
        self.ema.load_state_dict(state | {"shadow_params": [s.detach().clone() for s in self.ema.shadow_params]})
        with torch.no_grad():
            for s, f in zip(self.ema.shadow_params, full):
                _copy_full_into(s, f)

    @contextmanager
    def applied(self):
        """The model's trainable parameters hold the EMA weights inside the block (restored afterwards)."""
        self.ema.store(self.params)
        self.ema.copy_to(self.params)
        try:
            yield
        finally:
            self.ema.restore(self.params)


def _full_cpu(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().cpu().clone()


def _copy_full_into(dst: torch.Tensor, full: torch.Tensor) -> None:
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(dst, DTensor):
        dst.copy_(distribute_tensor(full.to(dst.device, dst.dtype), dst.device_mesh, dst.placements))
    else:
        dst.copy_(full)


# --------------------------------------------------------------------------------------------------------------------
# Atomic, resumable checkpoints around accelerator.save_state / load_state
# --------------------------------------------------------------------------------------------------------------------

class RunCheckpoints:
    """``OUT/checkpoints/step_XXXXXXXX/`` (see the module docstring); the last ``keep`` are kept."""

    def __init__(self, acc, out_dir: Path, keep: int = 2):
        self.acc, self.root, self.keep = acc, Path(out_dir) / CKPT_DIR, max(1, keep)
        if not is_fsdp(acc):
            # Outside FSDP the model tensors a checkpoint needs are TrainableTensors (registered by the stage):
            # accelerate's whole-model copy (the frozen teacher in stage 1) is neither written nor read.
            acc.register_save_state_pre_hook(lambda models, weights, output_dir: weights.clear())
            acc.register_load_state_pre_hook(lambda models, input_dir: models.clear())

    @staticmethod
    def _name(step: int) -> str:
        return f"step_{step:08d}"

    def save(self, step: int, config_hash: str) -> Path:
        acc = self.acc
        tmp, final = self.root / (self._name(step) + ".partial"), self.root / self._name(step)
        if acc.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))  # every rank writes its RNG state (and its shards under FSDP)
        acc.wait_for_everyone()
        if acc.is_main_process:
            atomic_write_json(tmp / STATE_NAME, {"step": step, "config_hash": config_hash,
                                                 "world_size": acc.num_processes,
                                                 "distributed_type": str(acc.distributed_type)})
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            atomic_write_bytes(self.root / LATEST_NAME, (final.name + "\n").encode())
            self._prune()
        acc.wait_for_everyone()
        return final

    def _prune(self) -> None:
        done = sorted(p for p in self.root.glob("step_*") if p.is_dir() and not p.name.endswith(".partial"))
        for p in done[: -self.keep]:
            shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob("*.partial"):
            shutil.rmtree(p, ignore_errors=True)

    def latest(self) -> Path | None:
        ptr = self.root / LATEST_NAME
        if ptr.is_file():
            p = self.root / ptr.read_text().strip()
            if (p / STATE_NAME).is_file():
                return p
        done = sorted(p for p in self.root.glob("step_*") if (p / STATE_NAME).is_file() and p.suffix != ".partial")
        return done[-1] if done else None

    def resume(self, config_hash: str) -> int | None:
        """Restore the latest checkpoint; its step, or ``None`` when there is none.  Refuses a checkpoint of another
        configuration or another world size (the data split depends on it)."""
        import json

        latest = self.latest()
        if latest is None:
            return None
        meta = json.loads((latest / STATE_NAME).read_text())
        if meta["config_hash"] != config_hash:
            raise ValueError(f"{latest} was written with a different configuration ({meta['config_hash']} != "
                             f"{config_hash}); use a new --out or --no-resume")
        if meta["world_size"] != self.acc.num_processes:
            raise ValueError(f"{latest} was written by {meta['world_size']} processes, this run has "
                             f"{self.acc.num_processes} (the data split depends on it)")
        if meta.get("distributed_type", str(self.acc.distributed_type)) != str(self.acc.distributed_type):
            raise ValueError(f"{latest} was written by a {meta['distributed_type']} run, this one is "
                             f"{self.acc.distributed_type} (their checkpoints differ: sharded or not)")
        self.acc.load_state(str(latest))
        return int(meta["step"])


def checkpoint_step_dirs(out_dir: Path) -> Iterable[Path]:
    return sorted(p for p in (Path(out_dir) / CKPT_DIR).glob("step_*") if (p / STATE_NAME).is_file())
