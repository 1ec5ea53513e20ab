"""Options both stage configs share: the training engine (accelerate), EMA, trackers and the ``--dry-run`` plan.

Each is a flag (``--gradient-accumulation-steps 4``) and a key of a config file, like every other stage option.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MIXED_PRECISION = ("auto", "bf16", "fp16", "no")
PARALLELISM = ("auto", "ddp", "fsdp")
LR_SCHEDULES = ("cosine", "linear", "constant")

# Keys that may differ between an interrupted run and its resumption.
RESUME_FREE = ("steps", "out", "progress", "resume", "stop_after", "checkpoint_every", "keep_checkpoints",
               "log_every", "device", "eval_every", "eval_samples", "report_to", "dry_run", "plan_gpus",
               "plan_gpu_gib")


@dataclass
class TrainingOptions:
    gradient_accumulation_steps: int = field(default=1, metadata={
        "help": "micro-batches per optimiser step (accelerate's accumulation; global batch = processes x "
                "batch size x this)"})
    parallelism: str = field(default="auto", metadata={
        "help": "auto (what `accelerate launch` configured: DDP for several processes, FSDP / DeepSpeed from its "
                "config) | ddp | fsdp (stage 2: accelerate's FSDP2 plugin, one unit per Wan block)"})
    report_to: str = field(default="tensorboard", metadata={
        "help": "accelerate trackers, comma-separated: tensorboard (offline, OUT/logs) | wandb | ... | none"})
    ema: bool = field(default=False, metadata={
        "help": "keep an EMA of the trained weights (diffusers EMAModel), exported beside the model (OUT/rehyat_ema)"})
    ema_decay: float = 0.9999
    ema_update_after_step: int = 0
    ema_warmup: bool = field(default=False, metadata={"help": "EMAModel's warm-up of the decay"})
    dry_run: bool = field(default=False, metadata={
        "help": "print the per-GPU memory plan (computed on the meta device) and exit; --teacher / --model may "
                "then name an architecture: wan2.1-1.3b, wan2.1-14b"})
    plan_gpus: int = field(default=0, metadata={"help": "GPUs of the --dry-run plan (0 = this launch's processes)"})
    plan_gpu_gib: float = field(default=80.0, metadata={"help": "GPU memory the --dry-run plan is checked against"})


def check_training_options(cfg) -> None:
    """Refuse bad engine values when the config is built (before any model is loaded)."""
    if cfg.gradient_accumulation_steps < 1:
        raise ValueError(f"gradient_accumulation_steps must be >= 1, got {cfg.gradient_accumulation_steps}")
    for name, allowed in (("parallelism", PARALLELISM), ("mixed_precision", MIXED_PRECISION),
                          ("lr_schedule", LR_SCHEDULES)):
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {getattr(cfg, name)!r}")
