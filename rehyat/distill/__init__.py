"""Two-stage conversion of a softmax Wan model to ReHyAt (``python -m rehyat.distill``; docs/distill.md).

* :mod:`.stage1` — attention distillation of φ_q, φ_k per converted block with layer-wise teacher forcing;
* :mod:`.stage2` — flow-matching fine-tuning (all / φ / LoRA) on a latent dataset;
* :mod:`.encode` — mp4 + prompts -> latent dataset with the Wan VAE and umT5 encoder;
* :mod:`.proxy` — the video-like random teacher of the proxy benchmark (``benchmarks/distill_proxy.py``).

Shared: the accelerate engine — DDP / FSDP / DeepSpeed, mixed precision, accumulation, resumable atomic
checkpoints, EMA, trackers (:mod:`.engine`); config, metrics, curves (:mod:`.common`); the ``--dry-run`` memory
plan (:mod:`.memory_plan`).
"""

from .data import LatentDataset, make_synthetic_dataset
from .stage1 import Stage1Config, evaluate_stage1, train_stage1
from .stage2 import Stage2Config, evaluate_flow_loss, train_stage2

__all__ = ["LatentDataset", "Stage1Config", "Stage2Config", "evaluate_flow_loss", "evaluate_stage1",
           "make_synthetic_dataset", "train_stage1", "train_stage2"]
