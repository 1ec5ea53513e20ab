"""What is measured at each level, and its analytic cost.

* ``op``: the attention core alone, ``q, k, v: [1, N, H, D]`` (+ features ``[1, N, H, F]`` for the hybrid kinds; the
  ``linear`` kind uses SANA-style ReLU(q), ReLU(k)), called through :func:`rehyat.attention.get_attention_kind`.
  ``hybrid_recurrent`` is streamed chunk by chunk with :func:`rehyat.attention.hybrid_attention_step` into a
  caller-owned output buffer (the sampling use case).  Analytic: :func:`rehyat.cost.attention_flops`.
* ``block``: one diffusers ``WanTransformerBlock`` at the preset's width (Wan2.1-1.3B: 1536 = 12 x 128, FFN 8960,
  512 text tokens), its self-attention processor swapped per kind on the *same* weights: diffusers' own
  ``WanAttnProcessor`` (softmax) and the project's one processor, :class:`rehyat.wan.processor.ReHyAtWanAttnProcessor`,
  parameterised by the point's :class:`~rehyat.config.ReHyAtConfig` (hybrid with its polynomial feature maps, linear
  with ReLU features, chunk_local; recurrent: chunk by chunk with per-chunk RoPE and states,
  :func:`rehyat.wan.recurrent.chunk_rotary_emb`).  Analytic: :func:`rehyat.cost.wan_block_flops`.
* ``model``: a ``WanTransformer3DModel`` (random weights) converted with the point's config by
  :meth:`rehyat.wan.ReHyAtWanTransformer3DModel.from_wan` (recurrent = every block, causal, ``"recurrent"`` mode); one
  forward = one denoising step of one CFG branch.  Analytic: :func:`rehyat.cost.wan_model_flops`.

The recurrent forms project the text keys/values of every cross-attention once per chunk (diffusers' ``WanAttention``
recomputes them on every call); :func:`recurrent_text_kv_flops` adds exactly those products to the analytic count.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from rehyat.config import ReHyAtConfig
from rehyat.cost import (BYTES, FeatureMapSpec, VideoShape, WanConfig, attention_flops, attention_memory,
                         wan_block_flops, wan_model_flops)

from .presets import Preset

Tensor = torch.Tensor
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


# ------------------------------------------------------------------------------------------------ helpers
def sdpa_backend_name(q: Tensor) -> str:
    """The fused SDPA backend PyTorch picks for ``q: [B, H, N, D]`` (q = k = v) on its device/dtype."""
    try:
        from torch.nn.attention import SDPBackend

        choice = torch._fused_sdp_choice(q, q, q)
        return SDPBackend(choice).name if not isinstance(choice, SDPBackend) else choice.name
    except Exception:  # noqa: BLE001 - private helper; the name is informational
        return "unknown"


def lse_backend_name(q: Tensor) -> str:
    from rehyat.attention.softmax_lse import select_backend

    return select_backend(q).name


def recurrent_text_kv_flops(cfg: WanConfig, video: VideoShape, chunk_frames: int, blocks: int, batch: int = 1) -> int:
    """Extra FLOPs of the chunk-wise forms: each further chunk re-projects the text K and V in every block."""
    frames = video.latent_frames // cfg.patch_size[0]
    chunks = -(-frames // chunk_frames)
    return blocks * (chunks - 1) * 2 * (2 * batch * cfg.text_tokens * cfg.inner_dim * cfg.inner_dim)


def wan_config(preset: Preset) -> WanConfig:
    return WanConfig.from_diffusers(preset.wan, text_tokens=preset.text_tokens)


def op_backend(kind: ReHyAtConfig, device: str, dtype: torch.dtype, head_dim: int) -> str:
    """The kernels a kind runs on ``device``/``dtype`` (deterministic, so analytic-only points carry it too)."""
    q = torch.zeros(1, 1, 16, head_dim, device=device, dtype=dtype)
    if kind.kind == "softmax":
        return f"torch SDPA ({sdpa_backend_name(q)})"
    if kind.kind == "linear":
        return "span-sum matmul linear branch (ReLU features)"
    lse = f"softmax_with_lse ({lse_backend_name(q)})"
    if kind.kind == "chunk_local":
        return lse
    rowmax = " + exact row-max pass (paper normaliser)" if kind.normaliser == "paper" else ""
    return f"{lse}{rowmax} + span-sum matmul linear branch"


def cast_like_from_pretrained(module: nn.Module, dtype: torch.dtype, keep=None) -> nn.Module:
    """``module.to(dtype)`` but, as ``from_pretrained(torch_dtype=...)`` does, the class's ``_keep_in_fp32_modules``
    (Wan: rope, time_embedder, scale_shift_table, norm1/2/3) stay in float32."""
    module.to(dtype=dtype)
    keep = set(keep if keep is not None else (getattr(module, "_keep_in_fp32_modules", None) or []))
    if dtype != torch.float32 and keep:
        for name, mod in module.named_modules():
            if keep & set(name.split(".")):
                mod.float()
        for name, p in module.named_parameters():
            if keep & set(name.split(".")):
                p.data = p.data.float()
    return module


@dataclass
class Analytic:
    flops: int
    breakdown: dict
    memory_bytes: int | None  # analytic activation memory (op level only; None elsewhere)
    feature_dim: int | None


class Workload:
    """Base: ``analytic(kind, video)``; ``setup(video, kinds) -> {kind: fn}`` allocates the inputs; ``teardown()``."""

    level = ""

    def __init__(self, preset: Preset, device: str):
        self.preset, self.device = preset, device
        self.dtype = DTYPES[preset.dtype]
        self.el = BYTES[preset.dtype]
        self._inputs: dict = {}

    def teardown(self) -> None:
        self._inputs = {}
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def _randn(self, *shape, positive=False) -> Tensor:
        t = torch.rand(*shape, device=self.device, dtype=self.dtype) if positive else \
            torch.randn(*shape, device=self.device, dtype=self.dtype)
        return t

    def converted_blocks(self, kind: ReHyAtConfig):
        return None


# ------------------------------------------------------------------------------------------------ op
class OpWorkload(Workload):
    level = "op"

    def __init__(self, preset: Preset, device: str):
        super().__init__(preset, device)
        self.h, self.d = preset.op_heads, preset.op_head_dim

    def feature_dim(self, kind: ReHyAtConfig) -> int | None:
        if kind.kind in ("hybrid", "hybrid_recurrent"):
            return self.preset.op_feature_dim
        return self.d if kind.kind == "linear" else None  # linear: ReLU(q), ReLU(k)

    def analytic(self, kind: ReHyAtConfig, video: VideoShape) -> Analytic:
        kw = dict(batch=1, heads=self.h, head_dim=self.d, frames=video.latent_frames, frame_tokens=video.frame_tokens,
                  feature_dim=self.feature_dim(kind) or 1)
        cost = attention_flops(kind, **kw)
        return Analytic(cost.flops, dict(cost.breakdown), attention_memory(kind, dtype=self.preset.dtype, **kw),
                        self.feature_dim(kind))

    def estimate_bytes(self, kind: ReHyAtConfig, video: VideoShape) -> int:
        return self.analytic(kind, video).memory_bytes

    def backend(self, kind: ReHyAtConfig) -> str:
        return op_backend(kind, self.device, self.dtype, self.d)

    def setup(self, video: VideoShape, kinds) -> dict:
        from rehyat.attention import hybrid_attention_step

        n, ft = video.tokens, video.frame_tokens
        q, k, v = (self._randn(1, n, self.h, self.d) for _ in range(3))
        feats = {}
        for kc in kinds:
            f = self.feature_dim(kc)
            if kc.kind in ("hybrid", "hybrid_recurrent") and f not in feats:
                # non-negative features of the magnitude a trained map gives (phi(q).phi(k) ~ O(1))
                feats[f] = (self._randn(1, n, self.h, f, positive=True) / f ** 0.5,
                            self._randn(1, n, self.h, f, positive=True) / f ** 0.5)
        self._inputs = dict(q=q, k=k, v=v, feats=feats)
        fns = {}
        for kc in kinds:
            kind = kc.attention_kind
            fq, fk = feats.get(self.feature_dim(kc), (None, None)) if kind.needs_features else (None, None)
            if kc.kind == "hybrid_recurrent":
                out = torch.zeros_like(v)  # caller-owned output buffer (zeros: resident before the baseline)
                self._inputs[("out", kc)] = out

                def stream(fq=fq, fk=fk, out=out, tc=kc.chunk_frames, to=kc.overlap_frames):
                    state = None
                    for f0 in range(0, video.latent_frames, tc):
                        sl = slice(f0 * ft, min(f0 + tc, video.latent_frames) * ft)
                        out[:, sl], state = hybrid_attention_step(q[:, sl], k[:, sl], v[:, sl], fq[:, sl], fk[:, sl],
                                                                  state, frame_tokens=ft, overlap_frames=to)
                    return None

                fns[kc] = stream
            else:  # linear without fq/fk: its parameter-free ReLU features
                fns[kc] = lambda kind=kind, kc=kc, fq=fq, fk=fk: kind.run(kc, q, k, v, fq, fk, frame_tokens=ft)
        return fns


# ------------------------------------------------------------------------------------------------ block
class BlockWorkload(Workload):
    level = "block"

    def __init__(self, preset: Preset, device: str):
        super().__init__(preset, device)
        self.cfg = wan_config(preset)
        self._block = None
        self._procs: dict = {}

    def converted_blocks(self, kind: ReHyAtConfig):
        return 0 if kind.kind == "softmax" else 1

    def _build(self):
        if self._block is None:
            from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed, WanTransformerBlock

            w = self.preset.wan
            with torch.device(self.device):
                torch.manual_seed(0)
                self._block = WanTransformerBlock(self.cfg.inner_dim, w["ffn_dim"], w["num_attention_heads"],
                                                  w.get("qk_norm", "rms_norm_across_heads"),
                                                  w.get("cross_attn_norm", True), w.get("eps", 1e-6))
                self._rope = WanRotaryPosEmbed(w["attention_head_dim"], tuple(w["patch_size"]),
                                               w.get("rope_max_seq_len", 1024))
            from diffusers import WanTransformer3DModel

            cast_like_from_pretrained(self._block, self.dtype, WanTransformer3DModel._keep_in_fp32_modules)
            self._block.eval().requires_grad_(False)
            self._default_proc = self._block.attn1.processor
        return self._block

    def processor(self, kc: ReHyAtConfig):
        if kc not in self._procs:
            from rehyat.wan.processor import ReHyAtWanAttnProcessor

            block = self._build()
            if kc.kind == "softmax":
                proc = self._default_proc
            else:
                torch.manual_seed(0)
                proc = ReHyAtWanAttnProcessor(block.attn1.heads, self.cfg.attention_head_dim, self.spec(kc)).to(
                    device=self.device, dtype=self.dtype).requires_grad_(False)
            self._procs[kc] = proc
        return self._procs[kc]

    def feature_map(self, kc: ReHyAtConfig) -> FeatureMapSpec | None:
        phi = getattr(self.processor(kc), "phi_q", None) if kc.kind != "softmax" else None
        return None if phi is None else FeatureMapSpec.of(phi)

    def feature_dim(self, kc: ReHyAtConfig) -> int | None:
        return self.spec(kc).feature_dim(self.cfg.attention_head_dim) if kc.kind != "softmax" else None

    def spec(self, kc: ReHyAtConfig) -> ReHyAtConfig | None:
        return None if kc.kind == "softmax" else bind_feature_map(kc, self.preset)

    def analytic(self, kc: ReHyAtConfig, video: VideoShape) -> Analytic:
        cost = wan_block_flops(self.cfg, video, self.spec(kc), feature_map=self.feature_map(kc))
        if kc.kind == "hybrid_recurrent":
            cost.add("recurrent_text_kv_per_chunk", recurrent_text_kv_flops(self.cfg, video, kc.chunk_frames, 1))
        return Analytic(cost.flops, dict(cost.breakdown), None, self.feature_dim(kc))

    def estimate_bytes(self, kc: ReHyAtConfig, video: VideoShape) -> int:
        n = video.tokens if kc.kind != "hybrid_recurrent" else min(video.tokens, (kc.chunk_frames + 1) * video.frame_tokens)
        act = n * (8 * self.cfg.inner_dim + 2 * self.cfg.ffn_dim) * max(self.el, 4)
        core = attention_memory(self.spec(kc) or ReHyAtConfig(kind="softmax"), batch=1, heads=self.cfg.num_attention_heads,
                                head_dim=self.cfg.attention_head_dim, frames=video.latent_frames,
                                frame_tokens=video.frame_tokens, dtype=self.preset.dtype)
        return act + core

    def backend(self, kc: ReHyAtConfig) -> str:
        q = torch.zeros(1, 1, 16, self.cfg.attention_head_dim, device=self.device, dtype=self.dtype)
        if kc.kind == "softmax":
            return f"diffusers WanAttnProcessor -> torch SDPA ({sdpa_backend_name(q)})"
        return "ReHyAtWanAttnProcessor: " + op_backend(kc, self.device, self.dtype, self.cfg.attention_head_dim)

    def setup(self, video: VideoShape, kinds) -> dict:
        from rehyat.wan.processor import FrameRotary
        from rehyat.wan.recurrent import chunk_rotary_emb

        block = self._build()
        c, ft, t = self.cfg.inner_dim, video.frame_tokens, video.latent_frames
        pt, ph, pw = self.cfg.patch_size
        hh, ww = video.height // 8 // ph, video.width // 8 // pw
        x = self._randn(1, video.tokens, c)
        text = self._randn(1, self.cfg.text_tokens, c)
        temb = self._randn(1, 6, c) * 0.1
        rotary = FrameRotary(*self._rope(torch.empty(1, 1, t * pt, hh * ph, ww * pw, device=self.device)), t, ft)
        self._inputs = dict(x=x, text=text, temb=temb, rotary=rotary)
        fns = {}
        for kc in kinds:
            proc = self.processor(kc)
            if kc.kind == "hybrid_recurrent":
                out = torch.zeros_like(x)  # caller-owned, resident before the baseline
                self._inputs[("out", kc)] = out

                def stream(proc=proc, out=out, tc=kc.chunk_frames):
                    block.attn1.set_processor(proc)
                    states = {}  # this sweep's recurrent state, handed to the layer with each chunk's RoPE
                    for f0 in range(0, t, tc):
                        nf = min(tc, t - f0)
                        sl = slice(f0 * ft, (f0 + nf) * ft)
                        rot = chunk_rotary_emb(self._rope, f0, nf, hh, ww, states)
                        out[:, sl] = block(x[:, sl], text, temb, rot)
                    return None

                fns[kc] = stream
            else:
                def call(proc=proc):
                    block.attn1.set_processor(proc)
                    return block(x, text, temb, rotary)

                fns[kc] = call
        return fns


# ------------------------------------------------------------------------------------------------ model
class ModelWorkload(Workload):
    level = "model"

    def __init__(self, preset: Preset, device: str):
        super().__init__(preset, device)
        self.cfg = wan_config(preset)
        self._base = None
        self._models: dict = {}

    def blocks_of(self, kc: ReHyAtConfig) -> list[int]:
        from rehyat.wan.convert import resolve_blocks

        if kc.kind == "softmax":
            return []
        if kc.kind == "hybrid_recurrent":
            return list(range(self.cfg.num_layers))  # the recurrent forward needs every block converted
        return resolve_blocks(kc.blocks, self.cfg.num_layers)

    def converted_blocks(self, kc: ReHyAtConfig):
        return len(self.blocks_of(kc))

    def feature_dim(self, kc: ReHyAtConfig) -> int | None:
        return BlockWorkload.feature_dim(self, kc)

    def spec(self, kc: ReHyAtConfig) -> ReHyAtConfig | None:
        """The config the model is converted with (hybrid_recurrent: the hybrid kind, causal, in recurrent mode)."""
        if kc.kind == "softmax":
            return None
        cfg = bind_feature_map(kc, self.preset).replace(blocks=self.blocks_of(kc))
        return cfg.replace(kind="hybrid", causal=True) if kc.kind == "hybrid_recurrent" else cfg

    def _feature_map_spec(self, kc: ReHyAtConfig) -> FeatureMapSpec | None:
        """phi's matrix shapes as the converter builds them (on the meta device: no model needed)."""
        spec = self.spec(kc)
        if spec is None or not spec.attention_kind.needs_features:
            return None
        from rehyat.feature_maps import build_feature_map

        with torch.device("meta"):
            return FeatureMapSpec.of(build_feature_map(spec.feature_map, self.cfg.num_attention_heads,
                                                       self.cfg.attention_head_dim, **spec.feature_map_kwargs))

    def analytic(self, kc: ReHyAtConfig, video: VideoShape) -> Analytic:
        blocks = self.blocks_of(kc)
        spec = self.spec(kc)
        cost = wan_model_flops(self.cfg, video, {i: spec for i in blocks}, feature_map=self._feature_map_spec(kc))
        if kc.kind == "hybrid_recurrent":
            cost.add("recurrent_text_kv_per_chunk",
                     recurrent_text_kv_flops(self.cfg, video, kc.chunk_frames, self.cfg.num_layers))
        return Analytic(cost.flops, dict(cost.breakdown), None, self.feature_dim(kc))

    def param_count(self) -> int:
        c, f, L = self.cfg.inner_dim, self.cfg.ffn_dim, self.cfg.num_layers
        return L * (8 * c * c + 2 * c * f) + self.cfg.text_dim * c + c * c + 7 * c * c

    def estimate_bytes(self, kc: ReHyAtConfig, video: VideoShape) -> int:
        block = BlockWorkload.estimate_bytes(self, kc, video)
        copies = 1 if kc.kind == "softmax" else 2  # the converted copy lives next to the base model
        return block + copies * self.param_count() * self.el

    def backend(self, kc: ReHyAtConfig) -> str:
        return BlockWorkload.backend(self, kc)

    def _build_base(self):
        if self._base is None:
            from diffusers import WanTransformer3DModel

            with torch.device(self.device):
                torch.manual_seed(0)
                self._base = WanTransformer3DModel(**self.preset.wan)
            cast_like_from_pretrained(self._base, self.dtype).eval().requires_grad_(False)
        return self._base

    def model(self, kc: ReHyAtConfig):
        if kc not in self._models:
            from rehyat.wan import ReHyAtWanTransformer3DModel

            base = self._build_base()
            if kc.kind == "softmax":
                m = base
            else:
                m = ReHyAtWanTransformer3DModel.from_wan(copy.deepcopy(base), self.spec(kc), seed=0)
                m.requires_grad_(False)
                if kc.kind == "hybrid_recurrent":
                    m.set_rehyat_mode("recurrent")
            self._models[kc] = m
        return self._models[kc]

    def setup(self, video: VideoShape, kinds) -> dict:
        pt, ph, pw = self.cfg.patch_size
        lat = self._randn(1, self.cfg.in_channels, video.latent_frames, video.height // 8, video.width // 8)
        text = self._randn(1, self.cfg.text_tokens, self.cfg.text_dim)
        ts = torch.tensor([500], device=self.device)
        self._inputs = dict(lat=lat, text=text, ts=ts)
        fns = {}
        for kc in kinds:
            m = self.model(kc)
            fns[kc] = lambda m=m: m(lat, ts, text, return_dict=False)[0]
        return fns

    def release(self) -> None:
        self._models, self._base = {}, None
        self.teardown()


def bind_feature_map(kc: ReHyAtConfig, preset: Preset) -> ReHyAtConfig:
    """A sweep point's config with the preset's feature map (the learned-phi kinds; ``linear`` keeps ReLU)."""
    if kc.attention_kind.needs_features and kc.kind != "linear":
        return kc.replace(feature_map=preset.feature_map, feature_map_kwargs=dict(preset.feature_map_kwargs))
    return kc


WORKLOADS = {"op": OpWorkload, "block": BlockWorkload, "model": ModelWorkload}
