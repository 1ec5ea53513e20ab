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
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .common import (CONFIG_NAME, EXPORT_DIR, SUMMARY_NAME, CheckpointManager, DistInfo, MetricsWriter,
                     SimulatedKill, atomic_write_json, barrier, config_hash, generator, init_distributed, lr_lambda,
                     make_optimizer, maybe_autocast, progress, seed_everything,
                     shutdown_distributed, versions)
from .data import LatentDataset
from .flow import FlowMatching, flow_matching_loss
from .models import parse_dtype, resolve_student

TRAINABLE = ("all", "phi", "lora", "lora+phi")
_RESUME_FREE = ("steps", "out", "progress", "resume", "stop_after", "checkpoint_every", "keep_checkpoints",
                "log_every", "device", "eval_every", "eval_samples")


@dataclass
class Stage2Config:
    model: str = field(default="tiny", metadata={"help": "ReHyAt checkpoint folder (stage-1 OUT/rehyat) or 'tiny'"})
    base: str | None = field(default=None, metadata={"help": "base Wan folder (default: the checkpoint's own)"})
    data: str = field(default="", metadata={"help": "latent dataset folder (docs/distill.md)"})
    out: str = "runs/stage2"
    trainable: str = field(default="all", metadata={"help": "all | phi | lora | lora+phi"})
    lora_rank: int = 16
    lora_alpha: float = 16.0
    lora_targets: str = "to_q,to_k,to_v,to_out.0"
    steps: int = 1000
    batch_size: int = field(default=1, metadata={"help": "samples per rank per step"})
    lr: float = 1e-5
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    flow_shift: float = 3.0
    timestep_weighting: str = field(default="uniform", metadata={"help": "uniform | logit_normal"})
    logit_mean: float = 0.0
    logit_std: float = 1.0
    max_sequence_length: int = 512
    seed: int = 0
    device: str = "auto"
    dtype: str = field(default="float32", metadata={"help": "master weight dtype (keep float32 for training)"})
    mixed_precision: str = field(default="auto", metadata={"help": "auto (bf16 on CUDA) | bf16 | fp16 | no"})
    gradient_checkpointing: str = field(default="auto", metadata={"help": "auto (on for CUDA) | on | off"})
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 1
    eval_every: int = 0
    eval_samples: int = 4
    resume: bool = True
    progress: bool = True
    stop_after: int | None = None

    def __post_init__(self):
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, got {self.trainable!r}")
        if not self.data:
            raise ValueError("stage 2 needs --data DATASET (a latent dataset, see docs/distill.md)")


def build_stage2_model(cfg: Stage2Config, device: torch.device):
    """Converted model with the chosen trainable set.  Returns ``(model, base folder or None, checkpoint folder)``."""
    from rehyat.wan.checkpoint import is_adapter_checkpoint, load_rehyat, read_rehyat_config, resolve_base_model

    ckpt = resolve_student(cfg.model)
    adapter = is_adapter_checkpoint(ckpt) and read_rehyat_config(ckpt)["weights"] != "full"
    base = resolve_base_model(ckpt, cfg.base) if adapter else None
    model = load_rehyat(ckpt, base, torch_dtype=parse_dtype(cfg.dtype))
    model.requires_grad_(False)
    if cfg.trainable.startswith("lora"):
        from peft import LoraConfig

        targets = [t for t in cfg.lora_targets.split(",") if t]
        model.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=targets,
                                     init_lora_weights=True))
        model.requires_grad_(False)
    for name, p in model.named_parameters():
        is_phi = ".attn1.processor." in name
        is_lora = "lora_" in name
        p.requires_grad_({"all": True, "phi": is_phi, "lora": is_lora, "lora+phi": is_lora or is_phi}[cfg.trainable])
    gc = cfg.gradient_checkpointing
    if gc == "on" or (gc == "auto" and device.type == "cuda"):
        model.enable_gradient_checkpointing()
    model.to(device)
    model.train()
    return model, None if base is None else str(Path(base).resolve()), ckpt


class Stage2Sampler:
    """Deterministic batches: epoch permutations keyed by ``(seed, epoch)``, noise/timesteps by ``(seed, sample)``."""

    def __init__(self, cfg: Stage2Config, info: DistInfo):
        self.cfg, self.info = cfg, info
        self.data = LatentDataset(cfg.data, cfg.max_sequence_length, require_latents=True)
        self.flow = FlowMatching(shift=cfg.flow_shift, weighting=cfg.timestep_weighting, logit_mean=cfg.logit_mean,
                                 logit_std=cfg.logit_std)
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

    def batch(self, step: int):
        b, w = self.cfg.batch_size, self.info.world_size
        first = step * b * w + self.info.rank * b
        return self._collate([self._sample(first + j) for j in range(b)])

    def eval_batches(self):
        for k in range(self.cfg.eval_samples):
            yield self._collate([self._sample(k, key=12)])


def _forward(model, x, t, emb, device, mp):
    dt = next(model.parameters()).dtype
    with maybe_autocast(device, mp):
        return model(hidden_states=x.to(device, dt), timestep=t.to(device), encoder_hidden_states=emb.to(device, dt),
                     return_dict=False)[0]


@torch.no_grad()
def evaluate_flow_loss(model, sampler: Stage2Sampler, device: torch.device, mp: str = "no") -> float:
    """Mean flow-matching loss over fixed held-out (item, noise, timestep) draws."""
    was = model.training
    model.eval()
    losses = [float(flow_matching_loss(_forward(model, x, t, e, device, mp), v.to(device)))
              for x, t, e, v in sampler.eval_batches()]
    model.train(was)
    return sum(losses) / len(losses)


def train_stage2(cfg: Stage2Config, *, fail_at_step: int | None = None) -> dict:
    """Run (or resume) stage 2; returns the summary (also ``OUT/summary.json``).  ``fail_at_step`` as in stage 1."""
    info = init_distributed(cfg.device)
    try:
        return _train(cfg, info, fail_at_step)
    finally:
        shutdown_distributed(info)


def _train(cfg: Stage2Config, info: DistInfo, fail_at_step) -> dict:
    out = Path(cfg.out)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    barrier(info)
    seed_everything(cfg.seed)
    dev = info.device
    model, base, src = build_stage2_model(cfg, dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg.lr, cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.lr_schedule, cfg.warmup_steps, cfg.steps,
                                                             cfg.min_lr_ratio))
    sampler = Stage2Sampler(cfg, info)
    ckpt = CheckpointManager(out, info, cfg.keep_checkpoints)
    chash = config_hash(cfg, _RESUME_FREE)
    resumed = ckpt.resume_training(model, opt, sched, chash) if cfg.resume else None
    start = resumed or 0
    ddp = model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    metrics = MetricsWriter(out, info, resume_step=resumed)
    n_train = sum(p.numel() for p in params)
    if info.is_main:
        atomic_write_json(out / CONFIG_NAME, {"stage": "stage2", "config": dataclasses.asdict(cfg),
                                              "config_hash": chash, "source_checkpoint": str(src), "base": base,
                                              "trainable_parameters": n_train, "world_size": info.world_size,
                                              "versions": versions()})

    def save(step: int):
        ckpt.save_training(step, model, opt, sched, chash)

    bar = progress(cfg.steps, start, "stage2", cfg.progress and info.is_main)
    t0, step, last = time.time(), start, None
    if cfg.eval_every and resumed is None:
        metrics.write(stage="stage2", kind="eval", step=0, block=None,
                      loss=evaluate_flow_loss(model, sampler, dev, cfg.mixed_precision))
    try:
        while step < cfg.steps:
            x, t, emb, target = sampler.batch(step)
            opt.zero_grad(set_to_none=True)
            pred = _forward(ddp, x, t, emb, dev, cfg.mixed_precision)
            loss = flow_matching_loss(pred, target.to(dev))
            loss.backward()
            if fail_at_step is not None and step == fail_at_step:
                raise SimulatedKill(f"simulated kill in step {step}")
            gn = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)) if cfg.grad_clip > 0 else None
            lr = sched.get_last_lr()[0]
            opt.step()
            sched.step()
            step += 1
            lv = loss.detach().float().clone()
            if info.enabled:
                torch.distributed.all_reduce(lv)
                lv /= info.world_size
            last = float(lv)
            if step % cfg.log_every == 0 or step == cfg.steps:
                metrics.write(stage="stage2", kind="train", step=step, block=None, loss=last, grad_norm=gn, lr=lr,
                              timestep=t.tolist(), elapsed=time.time() - t0)
            bar.update(1)
            bar.set_postfix(loss=f"{last:.4g}")
            if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                metrics.write(stage="stage2", kind="eval", step=step, block=None,
                              loss=evaluate_flow_loss(model, sampler, dev, cfg.mixed_precision))
            stop = cfg.stop_after is not None and step - start >= cfg.stop_after
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop:
                save(step)
            if stop:
                break
    finally:
        bar.close()
        metrics.close()
    summary = {"stage": "stage2", "step": step, "finished": step >= cfg.steps, "last_loss": last,
               "resumed_from": resumed, "trainable": cfg.trainable, "trainable_parameters": n_train,
               "elapsed_s": time.time() - t0, "world_size": info.world_size}
    if step >= cfg.steps:
        if info.is_main:
            summary["export"] = str(export_stage2(model, cfg, base, out / EXPORT_DIR))
        barrier(info)
    if info.is_main:
        atomic_write_json(out / SUMMARY_NAME, summary)
    summary["model"] = model
    return summary


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
