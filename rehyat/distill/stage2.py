"""Stage 2: flow-matching fine-tuning of the converted model on a latent dataset.

``python -m rehyat.distill stage2 --model runs/s1/rehyat --data DATASET --out runs/s2`` (see ``docs/distill.md``).

Objective (:mod:`rehyat.distill.flow`): ``x_t = (1-σ) x_0 + σ ε`` at a timestep drawn from diffusers'
``FlowMatchEulerDiscreteScheduler(shift=flow_shift)`` training schedule, target velocity ``ε - x_0``, MSE.  Trainable
set: ``all`` (the whole DiT, as in the paper), ``phi`` (feature maps only), ``lora`` (peft LoRA on the attention
projections) or ``lora+phi``.  bf16 autocast and gradient checkpointing default to on for CUDA.  Data order, noise and
timesteps are functions of ``(seed, global sample index)``, so a resumed run sees exactly the samples of an
uninterrupted one, and ``W`` ranks x batch ``b`` see the same samples as one rank with batch ``W*b``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .common import (CONFIG_NAME, EMA_EXPORT_DIR, EXPORT_DIR, SUMMARY_NAME, DistInfo, MetricsWriter, SimulatedKill,
                     atomic_write_json, config_hash, flat_hparams, generator, plot_curves, progress, versions)
from .data import LatentDataset
from .engine import (EMAState, RunCheckpoints, TrainableTensors, accelerator_session, is_fsdp, make_lr_scheduler,
                     trainable_parameters)
from .flow import FlowMatching, flow_matching_loss
from .models import parse_dtype, resolve_student
from .options import RESUME_FREE, TrainingOptions, check_training_options

log = logging.getLogger("rehyat.distill")
TRAINABLE = ("all", "phi", "lora", "lora+phi")


@dataclass
class Stage2Config(TrainingOptions):
    model: str = field(default="tiny", metadata={"help": "ReHyAt checkpoint folder (stage-1 OUT/rehyat) or 'tiny'"})
    base: str | None = field(default=None, metadata={"help": "base Wan folder (default: the checkpoint's own)"})
    data: str = field(default="", metadata={"help": "latent dataset folder (docs/distill.md)"})
    out: str = "runs/stage2"
    trainable: str = field(default="all", metadata={"help": "all | phi | lora | lora+phi"})
    lora_rank: int = 16
    lora_alpha: float = 16.0
    lora_targets: str = "to_q,to_k,to_v,to_out.0"
    steps: int = 1000
    batch_size: int = field(default=1, metadata={"help": "samples per process per micro-batch"})
    lr: float = 1e-5
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    flow_shift: float = 3.0
    timestep_weighting: str = field(default="uniform", metadata={
        "help": "uniform | logit_normal | mode (diffusers' compute_density_for_timestep_sampling)"})
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    max_sequence_length: int = 512
    seed: int = 0
    device: str = "auto"
    dtype: str = field(default="float32", metadata={"help": "master weight dtype (keep float32 for training)"})
    mixed_precision: str = field(default="auto", metadata={"help": "auto (launcher's, else bf16 on CUDA) | bf16 | "
                                                                   "fp16 | no"})
    gradient_checkpointing: str = field(default="auto", metadata={"help": "auto (on for CUDA) | on | off (per Wan "
                                                                          "block)"})
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 1
    eval_every: int = 0
    eval_samples: int = 4
    resume: bool = True
    progress: bool = True
    stop_after: int | None = None
    # --dry-run only: the latent shape of the plan (default: the dataset's, else 81 frames at 480 x 832)
    latent_frames: int | None = None
    latent_height: int | None = None
    latent_width: int | None = None

    def __post_init__(self):
        check_training_options(self)
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, got {self.trainable!r}")
        if not self.data and not self.dry_run:
            raise ValueError("stage 2 needs --data DATASET (a latent dataset, see docs/distill.md)")


def set_trainable(model, trainable: str) -> None:
    """``requires_grad`` of the chosen set: the whole DiT, the feature maps (``.attn1.processor.``), LoRA or both."""
    for name, p in model.named_parameters():
        is_phi = ".attn1.processor." in name
        is_lora = "lora_" in name
        p.requires_grad_({"all": True, "phi": is_phi, "lora": is_lora, "lora+phi": is_lora or is_phi}[trainable])


def add_lora(model, cfg: Stage2Config) -> None:
    from peft import LoraConfig

    targets = [t for t in cfg.lora_targets.split(",") if t]
    model.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=targets,
                                 init_lora_weights=True))


def gradient_checkpointing_on(cfg: Stage2Config, device_type: str) -> bool:
    gc = cfg.gradient_checkpointing
    if gc not in ("auto", "on", "off"):
        raise ValueError(f"gradient_checkpointing must be auto, on or off, got {gc!r}")
    return gc == "on" or (gc == "auto" and device_type == "cuda")


def build_stage2_model(cfg: Stage2Config, device: torch.device | str, *, move: bool = True):
    """Converted model with the chosen trainable set, for ``device`` (gradient checkpointing ``auto`` follows its
    type; ``move=False`` leaves the weights on the CPU, for FSDP to shard).  Returns ``(model, base folder or None,
    checkpoint folder)``."""
    from rehyat.wan.checkpoint import is_adapter_checkpoint, load_rehyat, read_rehyat_config, resolve_base_model

    device = torch.device(device)
    ckpt = resolve_student(cfg.model)
    adapter = is_adapter_checkpoint(ckpt) and read_rehyat_config(ckpt)["weights"] != "full"
    base = resolve_base_model(ckpt, cfg.base) if adapter else None
    model = load_rehyat(ckpt, base, torch_dtype=parse_dtype(cfg.dtype))
    model.requires_grad_(False)
    if cfg.trainable.startswith("lora"):
        add_lora(model, cfg)
    set_trainable(model, cfg.trainable)
    if gradient_checkpointing_on(cfg, device.type):
        model.enable_gradient_checkpointing()
    if move:
        model.to(device)
    model.train()
    return model, None if base is None else str(Path(base).resolve()), ckpt


class Stage2Sampler:
    """Deterministic batches: epoch permutations keyed by ``(seed, epoch)``, noise/timesteps by ``(seed, sample)``."""

    def __init__(self, cfg: Stage2Config, info: DistInfo):
        self.cfg, self.info = cfg, info
        self.data = LatentDataset(cfg.data, cfg.max_sequence_length, require_latents=True)
        self.flow = FlowMatching(shift=cfg.flow_shift, weighting=cfg.timestep_weighting, logit_mean=cfg.logit_mean,
                                 logit_std=cfg.logit_std, mode_scale=cfg.mode_scale)
        self._perm: dict[int, torch.Tensor] = {}

    def _item_index(self, sample: int) -> int:
        n = len(self.data)
        epoch, pos = divmod(sample, n)
        if epoch not in self._perm:
            self._perm = {epoch: torch.randperm(n, generator=generator(self.cfg.seed, 10, epoch))}
        return int(self._perm[epoch][pos])

    def _sample(self, sample: int, key: int = 11):
        item = self.data.item(self._item_index(sample) if key == 11 else sample % len(self.data))
        g = generator(self.cfg.seed, key, sample)
        x0 = item["latents"].unsqueeze(0)
        noise = torch.randn(x0.shape, generator=g)
        t, sigma = self.flow.sample(1, g)
        return (self.flow.noisy(x0, noise, sigma)[0], t[0], item["prompt_embeds"],
                self.flow.target(x0, noise)[0])

    def _collate(self, samples):
        shapes = {tuple(s[0].shape) for s in samples}
        if len(shapes) > 1:
            raise ValueError(f"items of one batch differ in latent shape {sorted(shapes)}; use batch_size 1 or a "
                             f"dataset with one latent shape")
        return tuple(torch.stack([s[i] for s in samples]) for i in range(4))

    def batch(self, micro_step: int):
        """``(x_t, timestep, prompt_embeds, target)`` of this process for micro-batch ``micro_step`` (optimiser step
        ``s``, accumulation index ``m``: ``micro_step = s * accumulation + m``): global samples
        ``[micro_step * W * b, (micro_step + 1) * W * b)``, this rank's slice of them."""
        b, w = self.cfg.batch_size, self.info.world_size
        first = micro_step * b * w + self.info.rank * b
        return self._collate([self._sample(first + j) for j in range(b)])

    def eval_batches(self):
        for k in range(self.cfg.eval_samples):
            yield self._collate([self._sample(k, key=12)])


def _forward(model, x, t, emb, device):
    """The (accelerate-prepared) transformer's prediction; mixed precision is the prepared model's autocast."""
    dt = next(p for p in model.parameters()).dtype
    return model(hidden_states=x.to(device, dt), timestep=t.to(device), encoder_hidden_states=emb.to(device, dt),
                 return_dict=False)[0]


@torch.no_grad()
def evaluate_flow_loss(model, sampler: Stage2Sampler, device: torch.device) -> float:
    """Mean flow-matching loss over fixed held-out (item, noise, timestep) draws (every process computes the same
    draws; under FSDP all must take part in the forward)."""
    was = model.training
    model.eval()
    losses = [float(flow_matching_loss(_forward(model, x, t, e, device), v.to(device)))
              for x, t, e, v in sampler.eval_batches()]
    model.train(was)
    return sum(losses) / len(losses)


def _as_float(x) -> float | None:
    if x is None:
        return None
    from torch.distributed.tensor import DTensor

    return float(x.full_tensor() if isinstance(x, DTensor) else x)


def train_stage2(cfg: Stage2Config, *, fail_at_step: int | None = None) -> dict:
    """Run (or resume) stage 2; returns the summary (also ``OUT/summary.json``).  ``fail_at_step``: test hook, raise
    :class:`SimulatedKill` in that (0-based) step after the backward, before the optimiser step.  ``--dry-run``
    returns the memory plan instead."""
    if cfg.dry_run:
        from .memory_plan import plan_for_config

        return plan_for_config(cfg, "stage2")
    out = Path(cfg.out)
    with accelerator_session(cfg, out, prepares_model=True) as acc:
        return _train(cfg, acc, fail_at_step)


def _train(cfg: Stage2Config, acc, fail_at_step) -> dict:
    from accelerate.utils import set_seed

    out = Path(cfg.out)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    acc.wait_for_everyone()
    set_seed(cfg.seed)
    fsdp = is_fsdp(acc)
    # Under FSDP the model is built on the CPU and sharded onto the devices by prepare (it may not fit one GPU).
    model, base, src = build_stage2_model(cfg, acc.device, move=not fsdp)
    n_train = sum(p.numel() for _, p in trainable_parameters(model))
    if not n_train:
        raise ValueError("nothing to train: no parameter requires grad")
    opt = torch.optim.AdamW([p for _, p in trainable_parameters(model)], lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = make_lr_scheduler(opt, cfg.lr_schedule, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
    model, opt, sched = acc.prepare(model, opt, sched)
    inner = acc.unwrap_model(model)
    named = trainable_parameters(inner)  # DTensor shards under FSDP
    params = [p for _, p in named]
    ema = EMAState(named, cfg.ema_decay, cfg.ema_update_after_step, cfg.ema_warmup) if cfg.ema else None
    ckpt = RunCheckpoints(acc, out, cfg.keep_checkpoints)
    if not fsdp:
        acc.register_for_checkpointing(TrainableTensors(inner))
    if ema is not None:
        acc.register_for_checkpointing(ema)
    sampler = Stage2Sampler(cfg, DistInfo.of(acc))
    chash = config_hash(cfg, RESUME_FREE)
    resumed = ckpt.resume(chash) if cfg.resume else None
    start = resumed or 0
    metrics = MetricsWriter(out, acc.is_main_process, resume_step=resumed, accelerator=acc)
    acc.init_trackers("stage2", config=flat_hparams(cfg))
    accum = acc.gradient_accumulation_steps
    if acc.is_main_process:
        atomic_write_json(out / CONFIG_NAME, {"stage": "stage2", "config": dataclasses.asdict(cfg),
                                              "config_hash": chash, "source_checkpoint": str(src), "base": base,
                                              "trainable_parameters": n_train, "world_size": acc.num_processes,
                                              "distributed_type": str(acc.distributed_type),
                                              "mixed_precision": acc.mixed_precision,
                                              "global_batch": acc.num_processes * cfg.batch_size * accum,
                                              "versions": versions()})
    dev = acc.device
    bar = progress(cfg.steps, start, "stage2", cfg.progress and acc.is_main_process)
    t0, step, last, last_eval = time.time(), start, None, None
    if cfg.eval_every and resumed is None:
        last_eval = evaluate_flow_loss(model, sampler, dev)
        metrics.write(stage="stage2", kind="eval", step=0, block=None, loss=last_eval)
    try:
        while step < cfg.steps:
            losses, ts, gn = [], [], None
            for micro in range(accum):
                with acc.accumulate(model):
                    x, t, emb, target = sampler.batch(step * accum + micro)
                    loss = flow_matching_loss(_forward(model, x, t, emb, dev), target.to(dev))
                    acc.backward(loss)
                    losses.append(loss.detach().float())
                    ts += t.tolist()
                    if fail_at_step is not None and step == fail_at_step and micro == accum - 1:
                        raise SimulatedKill(f"simulated kill in step {step}")
                    if acc.sync_gradients and cfg.grad_clip > 0:
                        gn = _as_float(acc.clip_grad_norm_(params, cfg.grad_clip))
                    lr = sched.get_last_lr()[0]
                    opt.step()
                    opt.zero_grad(set_to_none=True)
            sched.step()
            if ema is not None:
                ema.step()
            step += 1
            last = float(acc.reduce(torch.stack(losses).mean(), reduction="mean"))
            if step % cfg.log_every == 0 or step == cfg.steps:
                metrics.write(stage="stage2", kind="train", step=step, block=None, loss=last, grad_norm=gn, lr=lr,
                              timestep=ts, elapsed=time.time() - t0)
            bar.update(1)
            bar.set_postfix(loss=f"{last:.4g}")
            if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                last_eval = evaluate_flow_loss(model, sampler, dev)
                metrics.write(stage="stage2", kind="eval", step=step, block=None, loss=last_eval)
            stop = cfg.stop_after is not None and step - start >= cfg.stop_after
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop:
                ckpt.save(step, chash)
            if stop:
                break
    finally:
        bar.close()
        metrics.close()
    summary = {"stage": "stage2", "step": step, "finished": step >= cfg.steps, "last_loss": last,
               "last_eval_loss": last_eval, "resumed_from": resumed, "trainable": cfg.trainable,
               "trainable_parameters": n_train, "elapsed_s": time.time() - t0, "world_size": acc.num_processes,
               "distributed_type": str(acc.distributed_type), "mixed_precision": acc.mixed_precision,
               "global_batch": acc.num_processes * cfg.batch_size * accum, "tensorboard": _tb_dir(cfg, out)}
    exported = inner
    if step >= cfg.steps:
        path, exported = export_run(acc, model, cfg, base, out / EXPORT_DIR)
        summary["export"] = str(path)
        if ema is not None:
            with ema.applied():
                summary["ema_export"] = str(export_run(acc, model, cfg, base, out / EMA_EXPORT_DIR)[0])
    if acc.is_main_process:
        curves = plot_curves(out, "stage2")
        summary["curves"] = None if curves is None else str(curves)
        atomic_write_json(out / SUMMARY_NAME, summary)
        log.info("stage2 %s at step %d/%d: last loss %s, held-out loss %s; export %s", "finished" if
                 summary["finished"] else "stopped", step, cfg.steps, last, last_eval, summary.get("export"))
    summary["model"] = exported
    return summary


def _tb_dir(cfg, out: Path) -> str | None:
    return str(out / "logs" / "stage2") if "tensorboard" in cfg.report_to else None


def export_run(acc, model, cfg: Stage2Config, base: str | None, dest: Path):
    """Export the trained model (every process calls this).  Without FSDP and LoRA the live model is written as it
    is; otherwise its full state dict (gathered from the shards under FSDP: the consolidation) is loaded into a
    freshly built model on the main process and that one is exported — merging LoRA never touches the training
    model.  Returns ``(dest, the exported model on the main process / the live model elsewhere)``."""
    inner = acc.unwrap_model(model)
    if not is_fsdp(acc) and not cfg.trainable.startswith("lora"):
        if acc.is_main_process:
            export_stage2(inner, cfg, base, dest)
        acc.wait_for_everyone()
        return dest, inner
    state = acc.get_state_dict(model)  # collective under FSDP; the full tensors land on the main process
    exported = inner
    if acc.is_main_process:
        exported, _, _ = build_stage2_model(dataclasses.replace(cfg, gradient_checkpointing="off"), "cpu")
        exported.load_state_dict(state, strict=True)
        export_stage2(exported, cfg, base, dest)
    acc.wait_for_everyone()
    return dest, exported


def export_stage2(model, cfg: Stage2Config, base: str | None, dest: Path) -> Path:
    """ReHyAt checkpoint of the fine-tuned model: feature maps only for ``phi`` (on the same base), otherwise full
    weights (LoRA merged into the base weights first; the adapter itself is also kept in
    ``lora_adapter.safetensors``)."""
    from rehyat.wan.checkpoint import save_rehyat

    if cfg.trainable == "phi":
        return save_rehyat(model, dest, base_model=base)
    if cfg.trainable.startswith("lora"):
        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import save_file

        dest.mkdir(parents=True, exist_ok=True)
        lora = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
        save_file(lora, str(dest / "lora_adapter.safetensors"))
        model.fuse_lora(lora_scale=1.0)
        model.unload_lora()
    return save_rehyat(model, dest, base_model=base, full_weights=True)


def consolidate_checkpoint(run_dir: str | Path, dest: str | Path, step: int | None = None) -> Path:
    """A ReHyAt model from a stage-2 run's checkpoint (the latest, or ``step``) — sharded (FSDP, merged with
    accelerate's ``merge_fsdp_weights``) or not — in one process, without the processes that wrote it (a killed run
    of a model too big for one GPU exports this way)."""
    import json
    import tempfile

    from safetensors.torch import load_file

    from .common import CKPT_DIR
    from .engine import STATE_NAME, checkpoint_step_dirs

    run = Path(run_dir)
    cfg = Stage2Config(**json.loads((run / CONFIG_NAME).read_text())["config"])
    dirs = {json.loads((d / STATE_NAME).read_text())["step"]: d for d in checkpoint_step_dirs(run)}
    if not dirs or (step is not None and step not in dirs):
        raise FileNotFoundError(f"{run / CKPT_DIR}: no checkpoint{'' if step is None else f' of step {step}'} "
                                f"(have {sorted(dirs)})")
    ckpt = dirs[max(dirs) if step is None else step]
    model, base, _ = build_stage2_model(dataclasses.replace(cfg, gradient_checkpointing="off"), "cpu")
    if (ckpt / "pytorch_model_fsdp_0").is_dir():
        from accelerate.utils import merge_fsdp_weights

        with tempfile.TemporaryDirectory() as tmp:
            merge_fsdp_weights(str(ckpt / "pytorch_model_fsdp_0"), tmp, safe_serialization=True)
            model.load_state_dict(load_file(str(Path(tmp) / "model.safetensors")), strict=True)
    else:
        TrainableTensors(model).load_state_dict(torch.load(ckpt / "custom_checkpoint_0.pkl", weights_only=False))
    return export_stage2(model, cfg, base, Path(dest))
