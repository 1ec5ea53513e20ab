"""Stage 1: per-block attention distillation of φ_q, φ_k with layer-wise teacher forcing.

``python -m rehyat.distill stage1 --teacher PATH --blocks 15 --out runs/s1`` (see ``docs/distill.md``).

Every step runs the frozen softmax teacher once on a batch of inputs; each converted block trains its own φ against
the teacher's attention output from the same q/k/v (:mod:`rehyat.distill.teacher_forcing`).  Inputs:

* ``source="trajectory"`` (default, no videos needed): states of the teacher's own Euler sampling trajectories
  (flow-matching, ``flow_shift``, ``num_inference_steps`` steps, optional CFG with the negative embedding) started
  from Gaussian noise, over prompt embeddings (a dataset folder, or a random pool for tests).  Step ``s`` uses
  position ``s % num_inference_steps`` of trajectory group ``s // num_inference_steps``; the teacher's output at one
  step is integrated to give the next state, so one teacher forward = one training step.  Noise seeds and prompt
  choices are functions of ``(seed, trajectory group, sample index)``, so a resumed run replays the current trajectory
  up to its position and sees exactly the states of an uninterrupted run.
* ``source="dataset"``: dataset latents noised at random training timesteps (``x_t = (1-σ) x_0 + σ ε``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import InitVar, dataclass, field
from pathlib import Path

import torch

from rehyat.config import ReHyAtConfig, apply_overrides

from .common import (CONFIG_NAME, EMA_EXPORT_DIR, EXPORT_DIR, SUMMARY_NAME, DistInfo, MetricsWriter, SimulatedKill,
                     atomic_write_json, config_hash, flat_hparams, generator, plot_curves, progress, versions)
from .data import LatentDataset, RandomPrompts
from .engine import (EMAState, RunCheckpoints, TrainableTensors, accelerator_session, make_lr_scheduler,
                     reduce_mean_, trainable_parameters)
from .flow import FlowMatching
from .models import load_teacher, parse_dtype
from .options import RESUME_FREE, TrainingOptions, check_training_options
from .teacher_forcing import DistillSettings, enable_distillation

log = logging.getLogger("rehyat.distill")
# A linear branch whose mean share of the normaliser is below this carries (almost) nothing: the hybrid is
# chunk-local softmax there.
LINEAR_SHARE_WARN = 1e-3

# Stage 1's flag for ReHyAtConfig.linear_scale keeps its historical name.
REHYAT_FLAG_NAMES = {"linear_scale": "learn_linear_scale"}

# Keys that may differ between an interrupted run and its resumption.
WAN_TRAJECTORY = dict(latent_frames=21, latent_height=60, latent_width=104, num_inference_steps=50)
TINY_TRAJECTORY = dict(latent_frames=5, latent_height=8, latent_width=8, num_inference_steps=4)
_RESUME_FREE = RESUME_FREE + ("diagnostics", "diag_queries", "diag_samples", "diag_positions")


@dataclass
class Stage1Config(TrainingOptions):
    teacher: str = field(default="tiny", metadata={"help": "local diffusers Wan folder (softmax teacher) or 'tiny'"})
    out: str = field(default="runs/stage1", metadata={"help": "output folder (checkpoints, metrics, rehyat/)"})
    teacher_subfolder: str | None = field(default=None, metadata={
        "help": "transformer of a pipeline folder to distil (Wan2.2 A14B: transformer or transformer_2)"})
    # The converted model's attention: one ReHyAtConfig, nested.  Its CLI flags (--preset, --blocks, --chunk-frames,
    # --overlap-frames, --causal, --feature-map, --feature-map-kwargs, --learn-linear-scale) and the same flat keys
    # in config files are folded into it by __post_init__.
    rehyat: ReHyAtConfig | dict = field(default_factory=lambda: ReHyAtConfig(linear_scale=True))
    preset: InitVar[str | None] = None
    blocks: InitVar[str | int | None] = None
    chunk_frames: InitVar[int | None] = None
    overlap_frames: InitVar[int | None] = None
    causal: InitVar[bool | None] = None
    feature_map: InitVar[str | None] = None
    feature_map_kwargs: InitVar[dict | str | None] = None
    learn_linear_scale: InitVar[bool | None] = None
    normaliser: InitVar[str | None] = None
    student_kind: str = field(default="hybrid", metadata={"help": "hybrid (ReHyAt) | linear | chunk_local"})
    # inputs
    source: str = field(default="trajectory", metadata={"help": "trajectory | dataset"})
    data: str | None = field(default=None, metadata={"help": "dataset folder (prompt embeds; latents for 'dataset')"})
    num_random_prompts: int = field(default=16, metadata={"help": "random prompt pool size when --data is not given"})
    random_prompt_len: int = 8
    max_sequence_length: int = 512
    latent_frames: int | None = field(default=None, metadata={
        "help": "latent frames of the trajectories (default 21 = Wan's 81 frames; 5 for --teacher tiny)"})
    latent_height: int | None = field(default=None, metadata={"help": "default 60 (480 px); 8 for --teacher tiny"})
    latent_width: int | None = field(default=None, metadata={"help": "default 104 (832 px); 8 for --teacher tiny"})
    num_inference_steps: int | None = field(default=None, metadata={
        "help": "trajectory length (default 50, Wan's sampler; 4 for --teacher tiny)"})
    guidance_scale: float = 5.0
    flow_shift: float = 3.0
    # optimisation
    steps: int = 1000
    batch_size: int = field(default=1, metadata={"help": "samples per process per micro-batch (CFG doubles the "
                                                          "forward batch)"})
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float = field(default=1.0, metadata={"help": "max grad norm per block (0 = off)"})
    loss: str = field(default="l1", metadata={"help": "l1 | mse on attention outputs"})
    output_loss_weight: float = 1.0
    xent_weight: float = field(default=0.0, metadata={"help": "weight of the Hedgehog attention-weight cross-entropy"})
    xent_queries: int = 64
    linear_scale_lr_mult: float = 30.0
    # runtime
    seed: int = 0
    device: str = "auto"
    dtype: str = field(default="float32", metadata={"help": "teacher weight dtype (φ always trains in float32)"})
    mixed_precision: str = field(default="auto", metadata={"help": "auto (launcher's, else bf16 on CUDA) | bf16 | "
                                                                   "fp16 | no"})
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 1
    eval_every: int = 0
    eval_samples: int = 2
    diagnostics: bool = field(default=True, metadata={
        "help": "at the end (and at every eval): per block, the linear branch's share of the normaliser and the "
                "error against chunk-local softmax on the held-out inputs"})
    diag_queries: int = field(default=256, metadata={"help": "query rows per call sampled for the share"})
    diag_samples: int = field(default=1, metadata={"help": "held-out trajectories (items) of the final diagnostics"})
    diag_positions: int = field(default=10, metadata={
        "help": "trajectory positions measured by the final diagnostics, evenly spaced (the teacher alone runs the "
                "others)"})
    resume: bool = True
    progress: bool = True
    stop_after: int | None = field(default=None, metadata={"help": "stop after this many steps of this invocation "
                                                                    "(checkpoint first), as if killed"})

    def __post_init__(self, preset, blocks, chunk_frames, overlap_frames, causal, feature_map, feature_map_kwargs,
                      learn_linear_scale, normaliser):
        self.rehyat = apply_overrides(ReHyAtConfig.from_dict(self.rehyat), preset, REHYAT_FLAG_NAMES,
                                      blocks=blocks, chunk_frames=chunk_frames, overlap_frames=overlap_frames,
                                      causal=causal, feature_map=feature_map, feature_map_kwargs=feature_map_kwargs,
                                      learn_linear_scale=learn_linear_scale, normaliser=normaliser)
        # Wan's 480p sampling recipe; the tiny teacher gets sizes it runs in seconds at (a smoke test, not a recipe)
        for name, value in (TINY_TRAJECTORY if self.teacher == "tiny" else WAN_TRAJECTORY).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        check_training_options(self)
        if self.source not in ("trajectory", "dataset"):
            raise ValueError(f"source must be 'trajectory' or 'dataset', got {self.source!r}")
        if self.source == "dataset" and not self.data:
            raise ValueError("source='dataset' needs --data DATASET")


# --------------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------------

class Stage1Inputs:
    """Deterministic teacher inputs as a function of the step (and rank)."""

    def __init__(self, cfg: Stage1Config, info: DistInfo, in_channels: int, text_dim: int, device: torch.device,
                 autocast=contextlib.nullcontext):
        """``autocast``: context factory around every teacher forward (the trainer's ``accelerator.autocast``)."""
        self.cfg, self.info, self.device, self.autocast = cfg, info, device, autocast
        if cfg.data:
            self.prompts = LatentDataset(cfg.data, cfg.max_sequence_length, require_latents=cfg.source == "dataset")
            if self.prompts.text_dim != text_dim:
                raise ValueError(f"{cfg.data}: text_dim {self.prompts.text_dim} != teacher text_dim {text_dim}")
        else:
            self.prompts = RandomPrompts(cfg.num_random_prompts, cfg.random_prompt_len, text_dim,
                                         cfg.max_sequence_length, seed=cfg.seed)
        neg = self.prompts.negative()
        self.negative = neg if neg is not None else torch.zeros(cfg.max_sequence_length, text_dim)
        self.flow = FlowMatching(shift=cfg.flow_shift)
        self.in_channels = in_channels
        self.t_steps, self.t_sigmas = self.flow.inference_schedule(cfg.num_inference_steps)
        self._cache: dict[tuple[int, int], torch.Tensor] = {}  # (group, position) -> this rank's latents

    @property
    def cfg_on(self) -> bool:
        return self.cfg.source == "trajectory" and self.cfg.guidance_scale > 1.0

    def _slots(self) -> range:
        b = self.cfg.batch_size
        return range(self.info.rank * b, (self.info.rank + 1) * b)

    # -- trajectory ------------------------------------------------------------------------------------------------
    def _trajectory_start(self, group: int, key: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        lat, emb = [], []
        for j in self._slots():
            g = generator(c.seed, key, group, j)
            p = int(torch.randint(len(self.prompts), (1,), generator=g))
            lat.append(torch.randn(self.in_channels, c.latent_frames, c.latent_height, c.latent_width, generator=g))
            emb.append(self.prompts.item(p)["prompt_embeds"])
        return torch.stack(lat), torch.stack(emb)

    def _model_inputs(self, x: torch.Tensor, emb: torch.Tensor, pos: int):
        t = self.t_steps[pos].expand(x.shape[0])
        if self.cfg_on:
            neg = self.negative.unsqueeze(0).expand_as(emb)
            return torch.cat([x, x]), torch.cat([t, t]), torch.cat([emb, neg])
        return x, t, emb

    def _euler(self, x: torch.Tensor, out: torch.Tensor, pos: int) -> torch.Tensor:
        out = out.float()
        if self.cfg_on:
            cond, unc = out.chunk(2)
            out = unc + self.cfg.guidance_scale * (cond - unc)
        return x + (self.t_sigmas[pos + 1] - self.t_sigmas[pos]) * out

    def _run(self, model, hs, t, emb):
        dev = self.device
        with torch.no_grad(), self.autocast():
            dt = next(model.parameters()).dtype
            return model(hidden_states=hs.to(dev, dt), timestep=t.to(dev), encoder_hidden_states=emb.to(dev, dt),
                         return_dict=False)[0]

    def trajectory_state(self, model, settings: DistillSettings, group: int, pos: int, key: int = 1):
        """Latents (this rank) at ``pos`` of trajectory group ``group``, replaying the teacher if not cached."""
        x, emb = self._trajectory_start(group, key)
        if (group, pos) in self._cache:
            return self._cache.pop((group, pos)), emb
        old = settings.mode
        settings.mode = "teacher"
        try:
            for s in range(pos):
                out = self._run(model, *self._model_inputs(x.to(self.device), emb, s))
                x = self._euler(x.to(self.device), out, s)
        finally:
            settings.mode = old
        return x, emb

    # -- public ----------------------------------------------------------------------------------------------------
    def batch(self, step: int, model, settings: DistillSettings):
        """``(hidden_states, timestep, encoder_hidden_states, ctx)`` of micro-step ``step`` (0-based; optimiser step
        ``s``, accumulation index ``m``: ``step = s * accumulation + m``)."""
        c = self.cfg
        if c.source == "trajectory":
            group, pos = divmod(step, c.num_inference_steps)
            x, emb = self.trajectory_state(model, settings, group, pos)
            hs, t, e = self._model_inputs(x, emb, pos)
            return hs, t, e, ("trajectory", group, pos, x)
        lat, emb, ts = [], [], []
        for j in self._slots():
            g = generator(c.seed, 2, step, j)
            i = int(torch.randint(len(self.prompts), (1,), generator=g))
            item = self.prompts.item(i)
            x0 = item["latents"]
            noise = torch.randn(x0.shape, generator=g)
            t, sigma = self.flow.sample(1, g)
            lat.append(self.flow.noisy(x0.unsqueeze(0), noise.unsqueeze(0), sigma)[0])
            emb.append(item["prompt_embeds"])
            ts.append(t)
        shapes = {tuple(x.shape) for x in lat}
        if len(shapes) > 1:
            raise ValueError(f"dataset items of one batch differ in latent shape {sorted(shapes)}; use batch_size 1 "
                             f"or a dataset with one latent shape")
        return torch.stack(lat), torch.cat(ts), torch.stack(emb), ("dataset",)

    def after_step(self, ctx, out: torch.Tensor) -> None:
        """Cache the next trajectory state from the teacher output of this step."""
        if ctx[0] != "trajectory":
            return
        _, group, pos, x = ctx
        if pos + 1 < self.cfg.num_inference_steps:
            self._cache[(group, pos + 1)] = self._euler(x.to(out.device), out, pos)

    def eval_batches(self, model, settings: DistillSettings, samples: int | None = None,
                     positions: int | None = None):
        """Held-out inputs (seeds disjoint from training): whole trajectories, or fixed noised dataset items.

        Yields ``(hidden_states, timestep, encoder_hidden_states, measured)`` and receives the model output back;
        ``samples`` overrides ``eval_samples``; ``positions``: only that many trajectory positions, evenly spaced,
        are ``measured`` (the others only advance the trajectory: the teacher alone runs there)."""
        c = self.cfg
        n = c.num_inference_steps
        keep = set(range(n)) if positions is None or positions >= n else \
            {round(i * (n - 1) / max(1, positions - 1)) for i in range(positions)}
        for k in range(c.eval_samples if samples is None else samples):
            if c.source == "trajectory":
                x, emb = self._trajectory_start(k, key=3)
                x = x.to(self.device)
                for pos in range(n):
                    hs, t, e = self._model_inputs(x, emb, pos)
                    out = yield hs, t, e, pos in keep
                    x = self._euler(x, out, pos)
            else:
                g = generator(c.seed, 4, k)
                i = int(torch.randint(len(self.prompts), (1,), generator=g))
                item = self.prompts.item(i)
                x0 = item["latents"].unsqueeze(0)
                t, sigma = self.flow.sample(1, g)
                yield (self.flow.noisy(x0, torch.randn(x0.shape, generator=g), sigma), t, item["prompt_embeds"][None],
                       True)


# --------------------------------------------------------------------------------------------------------------------
# Model setup
# --------------------------------------------------------------------------------------------------------------------

def build_stage1_model(cfg: Stage1Config, device: torch.device):
    """Teacher (frozen) + ReHyAt φ on the chosen blocks + teacher forcing.  Returns (model, procs, settings, base)."""
    from rehyat.wan.convert import convert_wan_to_rehyat

    model, base = load_teacher(cfg.teacher, parse_dtype(cfg.dtype), subfolder=cfg.teacher_subfolder)
    model.requires_grad_(False)
    model = convert_wan_to_rehyat(model, config=cfg.rehyat, seed=cfg.seed)
    settings = DistillSettings(student_kind=cfg.student_kind, loss=cfg.loss, output_weight=cfg.output_loss_weight,
                               xent_weight=cfg.xent_weight, xent_queries=cfg.xent_queries,
                               linear_scale=cfg.rehyat.linear_scale)
    procs = enable_distillation(model, settings)
    for p in procs.values():
        p.float()  # φ trains in fp32 whatever the teacher dtype
        p.requires_grad_(True)
    model.to(device)
    model.eval()
    return model, procs, settings, base


# --------------------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------------------

def _eval_pass(model, settings: DistillSettings, inputs: Stage1Inputs, diagnose: bool, samples: int | None = None,
               positions: int | None = None) -> dict[int, dict]:
    """One pass over the held-out inputs in ``eval`` mode (``teacher`` mode at unmeasured trajectory positions); the
    per-block statistics (teacher forcing throughout)."""
    old = settings.mode, settings.stats, settings.diagnose, settings.generator
    settings.stats, settings.diagnose = {}, diagnose
    settings.generator = generator(inputs.cfg.seed, 7)
    gen = inputs.eval_batches(model, settings, samples, positions)
    try:
        out = None
        while True:
            hs, t, e, measured = gen.send(out) if out is not None else next(gen)
            settings.mode = "eval" if measured else "teacher"
            out = inputs._run(model, hs, t, e).float()
    except StopIteration:
        pass
    finally:
        stats = settings.stats
        settings.mode, settings.stats, settings.diagnose, settings.generator = old
    return stats


def evaluate_stage1(model, procs, settings: DistillSettings, inputs: Stage1Inputs) -> dict[int, float]:
    """Relative L2 error ``||y_student - y_teacher|| / ||y_teacher||`` per block, pooled over the eval inputs."""
    return {i: (s["sq_err"] / max(s["sq_ref"], 1e-30)) ** 0.5 for i, s in _eval_pass(model, settings, inputs,
                                                                                     False).items()}


def stage1_diagnostics(model, settings: DistillSettings, inputs: Stage1Inputs, samples: int | None = None,
                       positions: int | None = None) -> dict[int, dict]:
    """Per block, on the held-out inputs: ``rel_l2`` (student vs teacher), ``rel_l2_chunk_local`` (chunk-local
    softmax on the same windows vs teacher), ``vs_chunk_local`` (their ratio: < 1 = the linear branch helps) and
    ``linear_share`` (mean over sampled query rows that have a linear set of the linear set's share of the joint
    normaliser, from :func:`~rehyat.distill.teacher_forcing.student_log_weights`; ``None`` for kinds without
    one).  ``samples`` / ``positions``: as :meth:`Stage1Inputs.eval_batches` (default: the eval inputs)."""
    out = {}
    for i, s in sorted(_eval_pass(model, settings, inputs, True, samples, positions).items()):
        ref = max(s["sq_ref"], 1e-30)
        rel, rel_cl = (s["sq_err"] / ref) ** 0.5, (s["sq_err_cl"] / ref) ** 0.5
        share = s["share_sum"] / s["share_rows"] if s.get("share_rows") else None
        out[i] = {"rel_l2": rel, "rel_l2_chunk_local": rel_cl, "vs_chunk_local": rel / max(rel_cl, 1e-30),
                  "linear_share": share}
    return out


def diagnostic_warnings(diag: dict[int, dict]) -> list[str]:
    return [f"block {i}: the linear branch carries {d['linear_share']:.1e} of the normaliser (< "
            f"{LINEAR_SHARE_WARN:g}): this block computes chunk-local softmax (error {d['rel_l2']:.4f} vs chunk-local "
            f"{d['rel_l2_chunk_local']:.4f}); see docs/distill.md (learned linear scale, normaliser)"
            for i, d in diag.items() if d["linear_share"] is not None and d["linear_share"] < LINEAR_SHARE_WARN]


def diagnostics_table(diag: dict[int, dict]) -> str:
    f = lambda x: "—" if x is None else f"{x:.3g}"  # noqa: E731
    rows = ["block  linear share  rel. error  chunk-local error  ratio"]
    rows += [f"{i:>5}  {f(d['linear_share']):>12}  {d['rel_l2']:>10.4f}  {d['rel_l2_chunk_local']:>17.4f}  "
             f"{d['vs_chunk_local']:>5.3f}" for i, d in diag.items()]
    return "\n".join(rows)


@torch.no_grad()
def init_linear_scale(model, procs, settings: DistillSettings, inputs: "Stage1Inputs", acc=None) -> None:
    """Data-driven init of the experimental per-head ``linear_log_scale``: on the step-0 batch, the mean gap between
    the teacher's log out-of-window mass and the untrained linear branch's log mass (mean over processes)."""
    old, settings.mode = settings.mode, "init_scale"
    settings.reset()
    settings.generator = generator(inputs.cfg.seed, 6, inputs.info.rank)
    try:
        hs, t, emb, _ = inputs.batch(0, model, settings)
        inputs._run(model, hs, t, emb)
    finally:
        settings.mode = old
    for i, p in procs.items():
        st = settings.stats.get(i, {})
        gap = (st["gap"] / st["n"]).float() if "gap" in st else torch.zeros(p.num_heads)
        gap = gap.to(p.linear_log_scale.device)
        if acc is not None:
            reduce_mean_(acc, [gap])
        p.linear_log_scale.copy_(gap)
    settings.reset()


def train_stage1(cfg: Stage1Config, *, fail_at_step: int | None = None, model_hook=None) -> dict:
    """Run (or resume) stage 1.  Returns the summary dict (also written to ``OUT/summary.json``).

    ``fail_at_step``: test hook, raise :class:`SimulatedKill` in the middle of that (0-based) step, after the teacher
    forward and the backward but before the optimiser step.  ``model_hook(model)``: called once after model setup.
    ``--dry-run`` returns the memory plan instead.
    """
    if cfg.dry_run:
        from .memory_plan import plan_for_config

        return plan_for_config(cfg, "stage1")
    with accelerator_session(cfg, Path(cfg.out), prepares_model=False) as acc:
        return _train(cfg, acc, fail_at_step, model_hook)


def _train(cfg: Stage1Config, acc, fail_at_step, model_hook) -> dict:
    from accelerate.utils import DistributedType, set_seed

    if acc.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        raise ValueError(f"stage 1 trains only the feature maps of a frozen teacher and runs without {acc.distributed_type}"
                         f" (launch it with DDP / plain processes); sharding is for stage 2")
    out = Path(cfg.out)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    acc.wait_for_everyone()
    set_seed(cfg.seed)
    dev, info = acc.device, DistInfo.of(acc)
    model, procs, settings, base = build_stage1_model(cfg, dev)
    settings.backward_fn = acc.backward  # divides by the accumulation steps; the fp16 loss scaler when asked
    settings.diag_queries = cfg.diag_queries
    if model_hook is not None:
        model_hook(model)
    blocks = sorted(procs)
    groups = []
    for i in blocks:
        phi = [p for n, p in procs[i].named_parameters() if n != "linear_log_scale"]
        groups.append({"params": phi, "block": i})
        if hasattr(procs[i], "linear_log_scale"):
            groups.append({"params": [procs[i].linear_log_scale], "block": i, "lr": cfg.lr * cfg.linear_scale_lr_mult})
    from rehyat.attention import get_attention_kind

    if not get_attention_kind(cfg.student_kind).needs_features or not any(p.requires_grad for g in groups
                                                                           for p in g["params"]):
        raise ValueError(f"student kind {cfg.student_kind!r} with feature map {cfg.rehyat.feature_map!r} has nothing to "
                         f"train (evaluate it with evaluate_stage1 instead)")
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = make_lr_scheduler(opt, cfg.lr_schedule, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
    # The model is not prepared: its backward runs inside each block's forward, which DDP's reducer does not
    # support; the φ gradients are averaged over processes with accelerate's reduce below (the same arithmetic).
    opt, sched = acc.prepare(opt, sched)
    inputs = Stage1Inputs(cfg, info, model.config.in_channels, model.config.text_dim, dev, autocast=acc.autocast)
    ckpt = RunCheckpoints(acc, out, cfg.keep_checkpoints)
    acc.register_for_checkpointing(TrainableTensors(model))
    named = trainable_parameters(model)
    ema = EMAState(named, cfg.ema_decay, cfg.ema_update_after_step, cfg.ema_warmup) if cfg.ema else None
    if ema is not None:
        acc.register_for_checkpointing(ema)
    chash = config_hash(cfg, _RESUME_FREE)

    resumed = ckpt.resume(chash) if cfg.resume else None
    start = resumed or 0
    metrics = MetricsWriter(out, acc.is_main_process, resume_step=resumed, accelerator=acc)
    acc.init_trackers("stage1", config=flat_hparams(cfg))
    accum = acc.gradient_accumulation_steps
    if acc.is_main_process:
        atomic_write_json(out / CONFIG_NAME, {"stage": "stage1", "config": dataclasses.asdict(cfg),
                                              "config_hash": chash, "teacher_base": base, "blocks": blocks,
                                              "world_size": acc.num_processes, "mixed_precision": acc.mixed_precision,
                                              "global_batch": acc.num_processes * cfg.batch_size * accum,
                                              "versions": versions()})

    all_params = [p for g in groups for p in g["params"]]
    bar = progress(cfg.steps, start, "stage1", cfg.progress and acc.is_main_process)
    t0, step, last_loss, diag = time.time(), start, None, None
    if cfg.rehyat.linear_scale and resumed is None:
        init_linear_scale(model, procs, settings, inputs, acc)

    def evaluate(at: int) -> None:
        nonlocal diag
        if cfg.diagnostics:
            diag = stage1_diagnostics(model, settings, inputs)
            for i, d in diag.items():
                metrics.write(stage="stage1", kind="eval", step=at, block=i, **d)
        else:
            for i, e in evaluate_stage1(model, procs, settings, inputs).items():
                metrics.write(stage="stage1", kind="eval", step=at, block=i, rel_l2=e)

    if cfg.eval_every and resumed is None:
        evaluate(0)
    try:
        while step < cfg.steps:
            settings.reset()
            settings.mode = "distill"
            for micro in range(accum):
                u = step * accum + micro
                with acc.accumulate():
                    settings.generator = generator(cfg.seed, 5, u, info.rank)
                    hs, t, emb, ctx = inputs.batch(u, model, settings)
                    outp = inputs._run(model, hs, t, emb)  # every block's backward runs inside this forward
                    inputs.after_step(ctx, outp)
            if fail_at_step is not None and step == fail_at_step:
                raise SimulatedKill(f"simulated kill in step {step}")
            for p in all_params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            reduce_mean_(acc, [p.grad for p in all_params])
            acc.unscale_gradients()  # no-op without the fp16 scaler; then clip per block
            norms = {}
            if cfg.grad_clip > 0:
                for i in blocks:
                    ps = [p for g in groups if g["block"] == i for p in g["params"]]
                    norms[i] = float(torch.nn.utils.clip_grad_norm_(ps, cfg.grad_clip))
            lr = sched.get_last_lr()[0]
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if ema is not None:
                ema.step()
            step += 1
            stats = torch.tensor([[settings.stats[i][k] for k in ("loss", "sq_err", "sq_ref")] for i in blocks],
                                 dtype=torch.float64, device=dev)
            reduce_mean_(acc, [stats])
            stats = stats.cpu()
            per_block = {i: float(stats[j, 0]) / accum for j, i in enumerate(blocks)}
            last_loss = sum(per_block.values()) / len(per_block)
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.time() - t0
                for j, i in enumerate(blocks):
                    metrics.write(stage="stage1", kind="train", step=step, block=i, loss=per_block[i],
                                  rel_l2=float((stats[j, 1] / stats[j, 2].clamp_min(1e-30)).sqrt()),
                                  grad_norm=norms.get(i), lr=lr, elapsed=now)
                metrics.write(stage="stage1", kind="train", step=step, block=None, loss=last_loss, lr=lr, elapsed=now)
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4g}")
            if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                evaluate(step)
            stop = cfg.stop_after is not None and step - start >= cfg.stop_after
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop:
                ckpt.save(step, chash)
            if stop:
                break
    finally:
        bar.close()
        metrics.close()
    summary = {"stage": "stage1", "step": step, "finished": step >= cfg.steps, "last_loss": last_loss,
               "resumed_from": resumed, "blocks": blocks, "student_kind": cfg.student_kind,
               "elapsed_s": time.time() - t0, "world_size": acc.num_processes, "mixed_precision": acc.mixed_precision,
               "global_batch": acc.num_processes * cfg.batch_size * accum,
               "tensorboard": str(out / "logs" / "stage1") if "tensorboard" in cfg.report_to else None}
    if step >= cfg.steps:
        if cfg.diagnostics:
            if diag is None or not cfg.eval_every:  # (with --eval-every the last eval ran at this step)
                diag = stage1_diagnostics(model, settings, inputs, cfg.diag_samples, cfg.diag_positions)
            summary["diagnostics"] = {str(i): d for i, d in diag.items()}
            summary["warnings"] = diagnostic_warnings(diag)
        if acc.is_main_process:
            from rehyat.wan.checkpoint import save_rehyat
            from .teacher_forcing import disable_distillation

            disable_distillation(model)
            save_rehyat(model, out / EXPORT_DIR, base_model=base, base_subfolder=cfg.teacher_subfolder)
            summary["export"] = str(out / EXPORT_DIR)
            if ema is not None:
                with ema.applied():
                    save_rehyat(model, out / EMA_EXPORT_DIR, base_model=base, base_subfolder=cfg.teacher_subfolder)
                summary["ema_export"] = str(out / EMA_EXPORT_DIR)
            enable_distillation(model, settings)
            if cfg.student_kind != "hybrid":
                summary["export_note"] = (f"φ trained for the {cfg.student_kind!r} baseline; the exported ReHyAt "
                                          f"checkpoint runs them inside the hybrid op")
        acc.wait_for_everyone()
    if acc.is_main_process:
        curves = plot_curves(out, "stage1")
        summary["curves"] = None if curves is None else str(curves)
        atomic_write_json(out / SUMMARY_NAME, summary)
        _log_summary(summary, diag)
    summary["model"] = model
    return summary


def _log_summary(summary: dict, diag: dict | None) -> None:
    log.info("stage1 %s at step %d: last loss %s; export %s", "finished" if summary["finished"] else "stopped",
             summary["step"], summary["last_loss"], summary.get("export"))
    if diag:
        log.info("held-out diagnostics per converted block:\n%s", diagnostics_table(diag))
    for w in summary.get("warnings", []):
        log.warning(w)
