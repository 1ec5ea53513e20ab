"""``--dry-run``: the per-GPU memory plan of a training step, computed on the meta device.

The converted model is built on ``meta`` (no weights are read or allocated: a real folder only contributes its
``config.json``; ``wan2.1-1.3b`` / ``wan2.1-14b`` name the architectures of diffusers' converter).  One training step
of the stage is then *run* on meta tensors under torch's ``MemTracker`` (``torch.distributed._tools``), which accounts
every tensor storage by kind (parameters, gradients, optimiser state, activations, temporaries) and records the peak:

* ``fwd/bwd`` — the forward (with or without gradient checkpointing of the Wan blocks), the flow-matching loss (stage
  2) or the teacher-forced distillation (stage 1: teacher under ``no_grad``, each block's student backward inside its
  forward) and the backward;
* ``optimizer`` — one AdamW step on the gradients (its state allocated, plus the step's temporaries: PyTorch's
  ``foreach`` implementation on CUDA, the per-parameter loop on CPU).

Meta has no fused attention kernel (SDPA would take the math path and materialise the N x N scores), so inside the
plan dense SDPA and the hybrid op's softmax run through the CPU flash kernel's meta implementation: it saves what the
CUDA flash / memory-efficient kernels save (output and log-sum-exp).

Per GPU (``W`` GPUs): ``single`` = max(fwd/bwd peak + optimiser state, optimiser-step peak); ``ddp`` additionally
keeps every gradient alive (DDP's buckets); ``fsdp`` divides parameters, gradients and optimiser state by ``W`` and
adds the unsharded units FSDP2 gathers (two Wan blocks' parameters — the current one and the prefetched next — one
block's unsharded gradients, and the root module's own parameters), activations unchanged (batch per GPU).
Mixed precision (bf16 / fp16) is simulated by running the forward with a low-precision copy of the weights (what
autocast's weight cache holds) — an approximation that counts the fp32 ops autocast keeps (norms, softmax statistics)
in low precision; the fp32 check (``benchmarks/memory_plan.py``) measures peaks on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import weakref
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

GIB = 2**30
# diffusers' scripts/convert_wan_to_diffusers.py (Wan-T2V-1.3B, Wan-T2V-14B); rope_max_seq_len is the class default
_WAN21 = dict(patch_size=(1, 2, 2), attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096,
              freq_dim=256, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
ARCHITECTURES = {
    "wan2.1-1.3b": _WAN21 | dict(num_attention_heads=12, ffn_dim=8960, num_layers=30),
    "wan2.1-14b": _WAN21 | dict(num_attention_heads=40, ffn_dim=13824, num_layers=40),
}
# the ReHyAt conversion a named architecture gets in a stage-2 plan (stage 1 plans use the stage's own flags)
NAMED_PRESET = "paper-main"
PARALLEL = ("single", "ddp", "fsdp")


# --------------------------------------------------------------------------------------------------------------------
# Model description without weights
# --------------------------------------------------------------------------------------------------------------------

def architecture(spec: str, subfolder: str | None = None) -> dict:
    """The ``WanTransformer3DModel`` config of a name, ``tiny``, a diffusers folder or a ReHyAt checkpoint."""
    key = spec.lower()
    if key in ARCHITECTURES:
        return dict(ARCHITECTURES[key])
    if spec == "tiny":
        from rehyat.tiny import TINY_TRANSFORMER_CONFIG

        return dict(TINY_TRANSFORMER_CONFIG)
    p = Path(spec).expanduser()
    from rehyat.wan.checkpoint import CONFIG_NAME as REHYAT_CONFIG

    if (p / REHYAT_CONFIG).is_file():
        return _arch_keys(json.loads((p / REHYAT_CONFIG).read_text())["base_transformer_config"])
    for cand in ([p / subfolder] if subfolder else []) + [p / "transformer", p]:
        if (cand / "config.json").is_file():
            return _arch_keys(json.loads((cand / "config.json").read_text()))
    raise FileNotFoundError(f"{spec}: neither an architecture name ({', '.join(ARCHITECTURES)}, tiny) nor a folder "
                            f"with a transformer config.json")


def _arch_keys(cfg: dict) -> dict:
    import inspect

    from diffusers import WanTransformer3DModel

    allowed = set(inspect.signature(WanTransformer3DModel.__init__).parameters) - {"self"}
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k in allowed}


def checkpoint_rehyat_config(spec: str):
    """The :class:`~rehyat.config.ReHyAtConfig` of a stage-2 model spec (a named architecture: ``paper-main``)."""
    from rehyat.config import ReHyAtConfig, get_preset

    if spec.lower() in ARCHITECTURES:
        return get_preset(NAMED_PRESET)
    from .models import resolve_student

    ckpt = resolve_student(spec)
    from rehyat.wan.checkpoint import CONFIG_NAME as REHYAT_CONFIG

    meta = json.loads((ckpt / (REHYAT_CONFIG if (ckpt / REHYAT_CONFIG).is_file() else "config.json")).read_text())
    return ReHyAtConfig.from_dict(meta["rehyat"])


def meta_model(arch: dict, rehyat, dtype: torch.dtype = torch.float32):
    """The converted transformer with every tensor on the meta device."""
    from diffusers import WanTransformer3DModel

    from rehyat.wan.convert import convert_wan_to_rehyat

    from diffusers.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()  # "modules that should be kept in float32": the plan's weights are never used
    try:
        with torch.device("meta"):
            model = WanTransformer3DModel(**arch).to(dtype)
            return convert_wan_to_rehyat(model, config=rehyat, seed=0)
    finally:
        dlog.set_verbosity(level)


# --------------------------------------------------------------------------------------------------------------------
# Running a step on meta tensors
# --------------------------------------------------------------------------------------------------------------------

_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def _sdpa_meta_fused(orig):
    def sdpa(*args, **kwargs):
        a = dict(zip(_SDPA_ARGS, args)) | kwargs
        q = a["query"]
        if q.device.type == "meta" and a.get("attn_mask") is None and not a.get("enable_gqa"):
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q, a["key"], a["value"], a.get("dropout_p", 0.0), a.get("is_causal", False), scale=a.get("scale"))[0]
        return orig(*args, **kwargs)

    return sdpa


@contextlib.contextmanager
def fused_attention_on_meta():
    """See the module docstring: SDPA and the hybrid op's softmax use the CPU flash kernel's meta implementation;
    ``torch.autocast("meta", ...)`` (which torch refuses: no autocast dtype for meta) is a no-op — nothing autocasts
    on meta anyway.  Module attributes are swapped, not modes: gradient checkpointing recomputes in the autograd
    engine's thread, where a mode is not active; diffusers and rehyat look the functions up at call time."""
    import rehyat.attention.softmax_lse as sl

    orig_select, orig_sdpa, orig_autocast = sl.select_backend, F.scaled_dot_product_attention, torch.autocast

    def select(q, prefer=None):
        return sl.SOFTMAX_BACKENDS["cpu_flash"] if q.device.type == "meta" else orig_select(q, prefer)

    def autocast(device_type, *args, **kwargs):
        return contextlib.nullcontext() if device_type == "meta" else orig_autocast(device_type, *args, **kwargs)

    sl.select_backend, F.scaled_dot_product_attention, torch.autocast = select, _sdpa_meta_fused(orig_sdpa), autocast
    try:
        yield
    finally:
        sl.select_backend, F.scaled_dot_product_attention, torch.autocast = orig_select, orig_sdpa, orig_autocast


def _peak_tracker():
    """torch's ``MemTracker`` keeping only the global peak: its per-module peaks cost O(modules) per op, which makes
    a 40-block model's step minutes instead of seconds."""
    from torch.distributed._tools import mem_tracker as m

    class PeakTracker(m.MemTracker):
        def _track_module_params_and_buffers(self, module, install_grad_hooks: bool = True):
            # MemTracker hooks every parameter, which raises for frozen ones (stage 1's teacher, phi / LoRA sets)
            out = super()._track_module_params_and_buffers(module, install_grad_hooks=False)
            if install_grad_hooks:
                def track(g):
                    self._update_and_maybe_create_winfos(g, m._MemRefType.GRAD)

                for p in module.parameters():
                    if p.requires_grad and self._param_to_grad_hook_handles.get(p, None) is None:
                        self._param_to_grad_hook_handles[p] = (
                            p.register_hook(track), p.register_post_accumulate_grad_hook(lambda q: track(q.grad)))
            return out

        def _update_peak_stats(self, peak_state) -> None:
            for dev, snap in self._curr_mem_snap.items():
                if self._peak_mem.get(dev, 0) < snap[m._TOTAL_KEY]:
                    self._peak_mem[dev] = snap[m._TOTAL_KEY]
                    self._peak_mem_snap[dev] = dict(snap)

    return PeakTracker()


def _tracked(fn, *external) -> dict[str, int]:
    """Bytes by kind at the peak of ``fn()`` on meta tensors (``MemTracker``'s categories + ``total``)."""
    mt = _peak_tracker()
    mt.track_external(*external)
    with mt:
        fn()
    snap = mt.get_tracker_snapshot("peak")
    dev = next((d for d in snap if torch.device(d).type == "meta"), None)
    out = {getattr(k, "name", str(k)).lower(): int(v) for k, v in (snap[dev] if dev is not None else {}).items()}
    out["total"] = out.pop("total", sum(out.values()))
    return out


class _LivePeak(TorchDispatchMode):
    """Peak bytes of the storages ops create while active (storages marked external — weights, inputs — are not
    counted, nor are views of them); freed when the last reference dies.  Stage 1's plan uses it: its backward runs
    inside the forward, which ``MemTracker``'s module-hierarchy tracking does not allow."""

    def __init__(self, external=()):
        super().__init__()
        self.live = WeakIdKeyDictionary()
        self.current = self.peak = 0
        for t in external:
            self.live[t.untyped_storage()] = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                if st not in self.live:
                    n = st.nbytes()
                    self.live[st] = n
                    self.current += n
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(st, self._free, n)
        return out

    def _free(self, n: int) -> None:
        self.current -= n


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclasses.dataclass
class StepSpec:
    """What one training step computes (all that memory depends on)."""

    stage: str  # stage1 | stage2
    arch: dict
    rehyat: object  # ReHyAtConfig
    latent: tuple[int, int, int, int]  # C, F, H, W of one sample
    batch: int  # samples per GPU in one forward (stage 1: CFG doubles it)
    text_len: int
    trainable: str = "all"  # stage 2: all | phi | lora | lora+phi
    lora_rank: int = 16
    lora_targets: str = "to_q,to_k,to_v,to_out.0"
    weight_dtype: torch.dtype = torch.float32
    compute_dtype: torch.dtype | None = None  # bf16 / fp16 under mixed precision
    checkpointing: bool = False
    device: str = "cuda"  # the target: CUDA uses foreach AdamW, CPU the per-parameter loop


def _stage_model(spec: StepSpec, dtype: torch.dtype):
    """The converted meta model with the stage's trainable set (stage 2: adapter, checkpointing)."""
    model = meta_model(spec.arch, spec.rehyat, dtype)
    model.requires_grad_(False)
    if spec.stage == "stage2":
        from .stage2 import set_trainable

        if spec.trainable.startswith("lora"):
            from peft import LoraConfig

            with torch.device("meta"):
                model.add_adapter(LoraConfig(r=spec.lora_rank, lora_alpha=spec.lora_rank,
                                             target_modules=[t for t in spec.lora_targets.split(",") if t]))
        set_trainable(model, spec.trainable)
        if spec.checkpointing:
            model.enable_gradient_checkpointing()
        model.train()
    else:
        from .teacher_forcing import DistillSettings, enable_distillation

        settings = DistillSettings(linear_scale=spec.rehyat.linear_scale, record_stats=False)
        for p in enable_distillation(model, settings).values():
            p.float()  # φ trains in fp32 whatever the teacher dtype
            p.requires_grad_(True)
        model.eval()
    return model


def build_meta_step(spec: StepSpec):
    """``(model, optimizer, fwd_bwd callable, forward model)`` on the meta device, as the stage trains.  Under mixed
    precision (stage 2) the forward runs on a low-precision copy of the weights: autocast's cached weight casts."""
    model = _stage_model(spec, spec.weight_dtype)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                            foreach=spec.device == "cuda")
    low = spec.compute_dtype is not None and spec.stage == "stage2"
    fwd_model = _stage_model(spec, spec.compute_dtype) if low else model
    dt = spec.compute_dtype if low else spec.weight_dtype
    c, f, h, w = spec.latent
    x = torch.empty(spec.batch, c, f, h, w, device="meta", dtype=dt)
    t = torch.empty(spec.batch, device="meta")
    emb = torch.empty(spec.batch, spec.text_len, spec.arch["text_dim"], device="meta", dtype=dt)

    def fwd_bwd():
        with fused_attention_on_meta():
            if spec.stage == "stage2":
                out = fwd_model(hidden_states=x, timestep=t, encoder_hidden_states=emb, return_dict=False)[0]
                F.mse_loss(out.float(), x.float()).backward()
            else:
                with torch.no_grad():  # teacher forward; each converted block's student backward runs inside it
                    fwd_model(hidden_states=x, timestep=t, encoder_hidden_states=emb, return_dict=False)

    return model, opt, fwd_bwd, fwd_model


def simulate(spec: StepSpec) -> dict:
    """Tracked peaks of the two phases of one step, and the static sizes (bytes)."""
    model, opt, fwd_bwd, fwd_model = build_meta_step(spec)
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    if spec.stage == "stage1":
        live = _LivePeak([*params, *model.buffers()])
        with live:
            fwd_bwd()
        grads = _nbytes(p.grad for p in trainable if p.grad is not None)
        # φ gradients are alive at the end of the forward (every block's backward ran inside it)
        fb = {"param": _nbytes(params), "buffer": _nbytes(model.buffers()), "grad": grads,
              "act": live.peak - grads, "total": _nbytes(params) + _nbytes(model.buffers()) + live.peak}
    else:
        fb = _tracked(fwd_bwd, *([model] if fwd_model is model else [model, fwd_model]))
    if fwd_model is not model:
        # the copy's low-precision gradients stand for the master gradients autocast's casts produce
        ratio = params[0].element_size() / next(fwd_model.parameters()).element_size()
        extra = int(fb.get("grad", 0) * (ratio - 1))
        fb["grad"] = fb.get("grad", 0) + extra
        fb["total"] += extra
        for p in fwd_model.parameters():
            p.grad = None
    for p in trainable:
        p.grad = torch.empty_like(p)
    step = _tracked(opt.step, model, opt)
    blocks = list(model.blocks)
    block_numel = max(sum(p.numel() for p in b.parameters()) for b in blocks)
    root = _nbytes(params) - sum(_nbytes(b.parameters()) for b in blocks)
    return {"fwd_bwd": fb, "optimizer_step": step, "parameters": _nbytes(params) + _nbytes(model.buffers()),
            "trainable_parameters": sum(p.numel() for p in trainable),
            "total_parameters": sum(p.numel() for p in params), "gradients": _nbytes(trainable),
            "optimizer_state": 2 * _nbytes(trainable), "block_numel": block_numel, "root_parameters": root,
            "tokens": spec.latent[1] * (spec.latent[2] // spec.arch["patch_size"][1]) *
            (spec.latent[3] // spec.arch["patch_size"][2])}


def per_gpu(sim: dict, parallelism: str, gpus: int, compute_bytes: int) -> dict:
    """The per-GPU plan (bytes) of one simulation for a parallelism (see the module docstring)."""
    fb, st = sim["fwd_bwd"], sim["optimizer_step"]
    opt = sim["optimizer_state"]
    dyn = fb["total"] - fb.get("param", 0) - fb.get("buffer", 0) - fb.get("grad", 0)
    if parallelism == "fsdp":
        w = max(1, gpus)
        gather = (2 * sim["block_numel"] * compute_bytes + sim["block_numel"] * 4
                  + sim["root_parameters"] * (1 - 1 / w))
        params, grads, optim = sim["parameters"] / w, sim["gradients"] / w, opt / w
        fwd_bwd = params + fb.get("grad", 0) / w + optim + dyn + gather
        step_peak = st["total"] / w
        other = gather
    else:
        params, grads, optim, other = sim["parameters"], sim["gradients"], opt, 0
        g = sim["gradients"] if parallelism == "ddp" else fb.get("grad", 0)
        fwd_bwd = params + g + optim + dyn
        step_peak = st["total"]
    peak = max(fwd_bwd, step_peak)
    return {"parameters": params, "gradients": grads, "optimizer_state": optim, "activations": dyn,
            "fsdp_unsharded": other, "peak_fwd_bwd": fwd_bwd, "peak_optimizer_step": step_peak, "peak": peak}


# --------------------------------------------------------------------------------------------------------------------
# From a stage config
# --------------------------------------------------------------------------------------------------------------------

def _spec_from_config(cfg, stage: str, checkpointing: bool, device: str) -> StepSpec:
    from .engine import resolve_mixed_precision
    from .models import parse_dtype

    mp = resolve_mixed_precision(cfg.mixed_precision, device)
    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mp)
    if stage == "stage1":
        arch = architecture(cfg.teacher, cfg.teacher_subfolder)
        latent = (arch["in_channels"], cfg.latent_frames, cfg.latent_height, cfg.latent_width)
        cfg_branches = 2 if cfg.source == "trajectory" and cfg.guidance_scale > 1.0 else 1
        # no autocast simulation: the frozen teacher runs in --dtype (its activations at that dtype: an upper bound)
        return StepSpec("stage1", arch, cfg.rehyat, latent, cfg.batch_size * cfg_branches, cfg.max_sequence_length,
                        weight_dtype=parse_dtype(cfg.dtype), device=device)
    arch = architecture(cfg.model if cfg.model != "tiny" else "tiny")
    shape = None
    if cfg.data and None in (cfg.latent_frames, cfg.latent_height, cfg.latent_width):
        from .data import LatentDataset

        shape = LatentDataset(cfg.data, cfg.max_sequence_length).latent_shape(0)
    f = cfg.latent_frames or (shape[1] if shape else 21)
    h = cfg.latent_height or (shape[2] if shape else 60)
    w = cfg.latent_width or (shape[3] if shape else 104)
    return StepSpec("stage2", arch, checkpoint_rehyat_config(cfg.model), (arch["in_channels"], f, h, w),
                    cfg.batch_size, cfg.max_sequence_length, trainable=cfg.trainable, lora_rank=cfg.lora_rank,
                    lora_targets=cfg.lora_targets, weight_dtype=parse_dtype(cfg.dtype), compute_dtype=compute,
                    checkpointing=checkpointing, device=device)


def _parallelism(cfg, stage: str, gpus: int) -> str:
    from .engine import fsdp_requested

    if stage == "stage2" and fsdp_requested(cfg.parallelism):
        return "fsdp"
    return "ddp" if gpus > 1 else "single"


def plan_for_config(cfg, stage: str, device: str | None = None) -> dict:
    """The ``--dry-run`` result of a stage config: printed as a table, returned as a dict (bytes)."""
    import os

    from .engine import resolve_device

    device = device or ("cuda" if cfg.device == "auto" else resolve_device(cfg.device))
    gpus = cfg.plan_gpus or int(os.environ.get("WORLD_SIZE", "1"))
    par = _parallelism(cfg, stage, gpus)
    variants = {}
    for ckpt in ((False, True) if stage == "stage2" else (False,)):
        spec = _spec_from_config(cfg, stage, ckpt, device)
        sim = simulate(spec)
        cb = torch.tensor([], dtype=spec.compute_dtype or spec.weight_dtype).element_size()
        variants["checkpointing" if ckpt else "no_checkpointing"] = per_gpu(sim, par, gpus, cb) | {
            "simulation": {k: sim[k] for k in ("fwd_bwd", "optimizer_step")}}
    from .stage2 import gradient_checkpointing_on

    chosen = "no_checkpointing"
    if stage == "stage2" and gradient_checkpointing_on(cfg, device):
        chosen = "checkpointing"
    plan = {"stage": stage, "model": cfg.teacher if stage == "stage1" else cfg.model, "architecture": spec.arch,
            "rehyat": spec.rehyat.to_dict(), "latent": list(spec.latent), "tokens": sim["tokens"],
            "batch_per_gpu": spec.batch, "text_len": spec.text_len, "gpus": gpus, "parallelism": par,
            "device": device, "weight_dtype": str(spec.weight_dtype).replace("torch.", ""),
            "compute_dtype": None if spec.compute_dtype is None else str(spec.compute_dtype).replace("torch.", ""),
            "total_parameters": sim["total_parameters"], "trainable_parameters": sim["trainable_parameters"],
            "chosen": chosen, "gpu_gib": cfg.plan_gpu_gib, "plans": variants,
            "fits": variants[chosen]["peak"] <= cfg.plan_gpu_gib * GIB,
            "note": "computed on the meta device (no weights read); see rehyat/distill/memory_plan.py for what is "
                    "counted" + ("; mixed precision approximated" if spec.compute_dtype is not None else "")}
    print(format_plan(plan))
    return plan


def format_plan(plan: dict) -> str:
    g = lambda b: f"{b / GIB:8.2f}"  # noqa: E731
    head = (f"{plan['stage']} memory plan per GPU: {plan['model']} ({plan['total_parameters'] / 1e9:.2f}B parameters, "
            f"{plan['trainable_parameters'] / 1e9:.3f}B trainable), latent {plan['latent']} = {plan['tokens']} "
            f"tokens, batch {plan['batch_per_gpu']} per GPU, {plan['parallelism']} on {plan['gpus']} GPU(s), "
            f"{plan['device']}, weights {plan['weight_dtype']}"
            + (f", compute {plan['compute_dtype']}" if plan["compute_dtype"] else ""))
    rows = [head, f"{'GiB':<24}" + "".join(f"{k:>20}" for k in plan["plans"])]
    for key, label in (("parameters", "parameters"), ("gradients", "gradients"), ("optimizer_state",
                       "optimizer state"), ("activations", "activations (peak)"), ("fsdp_unsharded",
                       "FSDP unsharded units"), ("peak_fwd_bwd", "peak forward/backward"),
                       ("peak_optimizer_step", "peak optimizer step"), ("peak", "PEAK")):
        rows.append(f"{label:<24}" + "".join(f"{g(v[key]):>20}" for v in plan["plans"].values()))
    c = plan["plans"][plan["chosen"]]["peak"] / GIB
    rows.append(f"chosen ({plan['chosen']}): {c:.2f} GiB per GPU — {'fits' if plan['fits'] else 'does NOT fit'} "
                f"in {plan['gpu_gib']:g} GiB")
    rows.append(plan["note"])
    return "\n".join(rows)


def bytes_to_gib(b: float) -> float:
    return b / GIB if math.isfinite(b) else b
