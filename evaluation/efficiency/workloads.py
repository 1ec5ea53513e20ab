"""What is measured at each level, and its analytic cost.

* ``op``: the attention core alone, ``q, k, v: [1, N, H, D]`` (+ features ``[1, N, H, F]`` for the hybrid kinds; the
  ``linear`` kind uses SANA-style ReLU(q), ReLU(k)), called through :func:`rehyat.attention.get_attention_kind`.
  ``hybrid_recurrent`` is streamed chunk by chunk with :func:`rehyat.attention.hybrid_attention_step` into a
  caller-owned output buffer (the sampling use case).  Analytic: :func:`rehyat.cost.attention_flops`.
* ``block``: one diffusers ``WanTransformerBlock`` at the preset's width (Wan2.1-1.3B: 1536 = 12 x 128, FFN 8960,
  512 text tokens), its self-attention processor swapped per kind on the *same* weights: diffusers' own
  ``WanAttnProcessor`` (softmax), :class:`rehyat.wan.processor.ReHyAtWanAttnProcessor` (hybrid, with its polynomial
  feature maps; recurrent: chunk by chunk with per-chunk RoPE, :func:`rehyat.wan.recurrent.chunk_rotary_emb`), and
  :class:`KindAttnProcessor` (linear, chunk_local: the kind called on Wan's post-RoPE q/k/v).  Analytic:
  :func:`rehyat.cost.wan_block_flops`.
* ``model``: a ``WanTransformer3DModel`` (random weights) with ``converted`` blocks converted by
  :func:`rehyat.wan.convert.convert_wan_to_rehyat` (hybrid; recurrent = every block, causal, ``"recurrent"`` mode) or
  given a :class:`KindAttnProcessor` (linear, chunk_local); one forward = one denoising step of one CFG branch.
  Analytic: :func:`rehyat.cost.wan_model_flops`.

The recurrent forms project the text keys/values of every cross-attention once per chunk (diffusers' ``WanAttention``
recomputes them on every call); :func:`recurrent_text_kv_flops` adds exactly those products to the analytic count.
"""
from __future__ import annotations

import copy
import types
from dataclasses import dataclass

import torch
import torch.nn as nn

from rehyat.cost import (BYTES, AttentionSpec, FeatureMapSpec, VideoShape, WanConfig, attention_flops,
                         attention_memory, wan_block_flops, wan_model_flops)

from .presets import KindConfig, Preset

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


def feature_map_spec(module: nn.Module) -> FeatureMapSpec:
    """The per-head matrix shapes of a feature map (its ``PerHeadLinear`` layers, in order)."""
    from rehyat.feature_maps import PerHeadLinear

    return FeatureMapSpec(tuple((m.weight.shape[1], m.weight.shape[2]) for m in module.modules()
                                if isinstance(m, PerHeadLinear)))


def recurrent_text_kv_flops(cfg: WanConfig, video: VideoShape, chunk_frames: int, blocks: int, batch: int = 1) -> int:
    """Extra FLOPs of the chunk-wise forms: each further chunk re-projects the text K and V in every block."""
    frames = video.latent_frames // cfg.patch_size[0]
    chunks = -(-frames // chunk_frames)
    return blocks * (chunks - 1) * 2 * (2 * batch * cfg.text_tokens * cfg.inner_dim * cfg.inner_dim)


def wan_config(preset: Preset) -> WanConfig:
    return WanConfig.from_diffusers(preset.wan, text_tokens=preset.text_tokens)


class KindAttnProcessor(nn.Module):
    """Wan self-attention (projections, QK RMSNorm, RoPE, output projection) around any registered attention kind
    (parameter-free ones: ``linear`` with ReLU features, ``chunk_local``, ``softmax``)."""

    def __init__(self, kind: KindConfig):
        super().__init__()
        from rehyat.attention import get_attention_kind

        self.cfg, self.kind = kind, get_attention_kind(kind.kind)
        self.latent_frames: int | None = None
        self.frame_tokens: int | None = None

    def set_geometry(self, latent_frames: int, frame_tokens: int) -> None:
        self.latent_frames, self.frame_tokens = int(latent_frames), int(frame_tokens)

    def forward(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None, **kw):
        from rehyat.wan.processor import wan_self_attention_qkv

        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("KindAttnProcessor is a self-attention processor without mask")
        q, k, v = wan_self_attention_qkv(attn, hidden_states, rotary_emb)
        c = self.cfg
        out = self.kind(q, k, v, None, None, frame_tokens=self.frame_tokens, chunk_frames=c.chunk_frames or 1,
                        overlap_frames=c.overlap_frames or 0, causal=c.causal)
        out = attn.to_out[0](out.flatten(2, 3).type_as(q))
        return attn.to_out[1](out)


def op_backend(kind: KindConfig, device: str, dtype: torch.dtype, head_dim: int) -> str:
    """The kernels a kind runs on ``device``/``dtype`` (deterministic, so analytic-only points carry it too)."""
    q = torch.zeros(1, 1, 16, head_dim, device=device, dtype=dtype)
    if kind.kind == "softmax":
        return f"torch SDPA ({sdpa_backend_name(q)})"
    if kind.kind == "linear":
        return "span-sum matmul linear branch (ReLU features)"
    lse = f"softmax_with_lse ({lse_backend_name(q)})"
    return lse if kind.kind == "chunk_local" else f"{lse} + span-sum matmul linear branch"


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

    def converted_blocks(self, kind: KindConfig):
        return None


# ------------------------------------------------------------------------------------------------ op
class OpWorkload(Workload):
    level = "op"

    def __init__(self, preset: Preset, device: str):
        super().__init__(preset, device)
        self.h, self.d = preset.op_heads, preset.op_head_dim

    def feature_dim(self, kind: KindConfig) -> int | None:
        if kind.kind in ("hybrid", "hybrid_recurrent"):
            return self.preset.op_feature_dim
        return self.d if kind.kind == "linear" else None  # linear: ReLU(q), ReLU(k)

    def analytic(self, kind: KindConfig, video: VideoShape) -> Analytic:
        spec = kind.spec(self.feature_dim(kind) or 1)
        kw = dict(batch=1, heads=self.h, head_dim=self.d, frames=video.latent_frames, frame_tokens=video.frame_tokens)
        cost = attention_flops(spec, **kw)
        return Analytic(cost.flops, dict(cost.breakdown), attention_memory(spec, dtype=self.preset.dtype, **kw),
                        self.feature_dim(kind))

    def estimate_bytes(self, kind: KindConfig, video: VideoShape) -> int:
        return self.analytic(kind, video).memory_bytes

    def backend(self, kind: KindConfig) -> str:
        return op_backend(kind, self.device, self.dtype, self.d)

    def setup(self, video: VideoShape, kinds) -> dict:
        from rehyat.attention import get_attention_kind, hybrid_attention_step

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
            kind = get_attention_kind(kc.kind)
            kw = dict(frame_tokens=ft, chunk_frames=kc.chunk_frames or 1, overlap_frames=kc.overlap_frames or 0,
                      causal=kc.causal)
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
            elif kind.needs_features and fq is not None:
                fns[kc] = lambda kind=kind, fq=fq, fk=fk, kw=kw: kind(q, k, v, fq, fk, **kw)
            else:
                fns[kc] = lambda kind=kind, kw=kw: kind(q, k, v, None, None, **kw)
        return fns


# ------------------------------------------------------------------------------------------------ block
class BlockWorkload(Workload):
    level = "block"

    def __init__(self, preset: Preset, device: str):
        super().__init__(preset, device)
        self.cfg = wan_config(preset)
        self._block = None
        self._procs: dict = {}

    def converted_blocks(self, kind: KindConfig):
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

    def processor(self, kc: KindConfig):
        if kc not in self._procs:
            from rehyat.wan.processor import ReHyAtWanAttnProcessor

            block = self._build()
            if kc.kind == "softmax":
                proc = self._default_proc
            elif kc.kind in ("hybrid", "hybrid_recurrent"):
                torch.manual_seed(0)
                proc = ReHyAtWanAttnProcessor(
                    block.attn1.heads, self.cfg.attention_head_dim, chunk_frames=kc.chunk_frames,
                    overlap_frames=kc.overlap_frames, causal=kc.causal, feature_map=self.preset.feature_map,
                    feature_map_kwargs=self.preset.feature_map_kwargs,
                ).to(device=self.device, dtype=self.dtype).requires_grad_(False)
            else:
                proc = KindAttnProcessor(kc)
            self._procs[kc] = proc
        return self._procs[kc]

    def feature_map(self, kc: KindConfig) -> FeatureMapSpec | None:
        if kc.kind in ("hybrid", "hybrid_recurrent"):
            return feature_map_spec(self.processor(kc).phi_q)
        return None

    def feature_dim(self, kc: KindConfig) -> int | None:
        if kc.kind in ("hybrid", "hybrid_recurrent"):
            return self.processor(kc).phi_q.feature_dim
        return self.cfg.attention_head_dim if kc.kind == "linear" else None

    def spec(self, kc: KindConfig) -> AttentionSpec | None:
        return None if kc.kind == "softmax" else kc.spec(self.feature_dim(kc) or 1)

    def analytic(self, kc: KindConfig, video: VideoShape) -> Analytic:
        cost = wan_block_flops(self.cfg, video, self.spec(kc), feature_map=self.feature_map(kc))
        if kc.kind == "hybrid_recurrent":
            cost.add("recurrent_text_kv_per_chunk", recurrent_text_kv_flops(self.cfg, video, kc.chunk_frames, 1))
        return Analytic(cost.flops, dict(cost.breakdown), None, self.feature_dim(kc))

    def estimate_bytes(self, kc: KindConfig, video: VideoShape) -> int:
        n = video.tokens if kc.kind != "hybrid_recurrent" else min(video.tokens, (kc.chunk_frames + 1) * video.frame_tokens)
        act = n * (8 * self.cfg.inner_dim + 2 * self.cfg.ffn_dim) * max(self.el, 4)
        core = attention_memory(self.spec(kc) or AttentionSpec("softmax"), batch=1, heads=self.cfg.num_attention_heads,
                                head_dim=self.cfg.attention_head_dim, frames=video.latent_frames,
                                frame_tokens=video.frame_tokens, dtype=self.preset.dtype)
        return act + core

    def backend(self, kc: KindConfig) -> str:
        q = torch.zeros(1, 1, 16, self.cfg.attention_head_dim, device=self.device, dtype=self.dtype)
        if kc.kind == "softmax":
            return f"diffusers WanAttnProcessor -> torch SDPA ({sdpa_backend_name(q)})"
        if kc.kind in ("hybrid", "hybrid_recurrent"):
            return f"ReHyAtWanAttnProcessor: softmax_with_lse ({lse_backend_name(q)}) + span-sum matmul linear branch"
        return "KindAttnProcessor: " + op_backend(kc, self.device, self.dtype, self.cfg.attention_head_dim)

    def setup(self, video: VideoShape, kinds) -> dict:
        from rehyat.wan.recurrent import chunk_rotary_emb, recurrent_session

        block = self._build()
        c, ft, t = self.cfg.inner_dim, video.frame_tokens, video.latent_frames
        pt, ph, pw = self.cfg.patch_size
        hh, ww = video.height // 8 // ph, video.width // 8 // pw
        x = self._randn(1, video.tokens, c)
        text = self._randn(1, self.cfg.text_tokens, c)
        temb = self._randn(1, 6, c) * 0.1
        rotary = self._rope(torch.empty(1, 1, t * pt, hh * ph, ww * pw, device=self.device))
        self._inputs = dict(x=x, text=text, temb=temb, rotary=rotary)
        fns = {}
        for kc in kinds:
            proc = self.processor(kc)
            if kc.kind == "hybrid_recurrent":
                out = torch.zeros_like(x)  # caller-owned, resident before the baseline
                self._inputs[("out", kc)] = out
                holder = types.SimpleNamespace(blocks=[block])

                def stream(proc=proc, out=out, tc=kc.chunk_frames):
                    block.attn1.set_processor(proc)
                    with recurrent_session(holder):
                        for f0 in range(0, t, tc):
                            nf = min(tc, t - f0)
                            sl = slice(f0 * ft, (f0 + nf) * ft)
                            proc.set_geometry(nf, ft)
                            rot = chunk_rotary_emb(self._rope, f0, nf, hh, ww)
                            out[:, sl] = block(x[:, sl], text, temb, rot)
                    return None

                fns[kc] = stream
            else:
                if hasattr(proc, "set_geometry"):
                    proc.set_geometry(t, ft)

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

    def blocks_of(self, kc: KindConfig) -> list[int]:
        from rehyat.wan.convert import resolve_blocks

        if kc.kind == "softmax":
            return []
        if kc.kind == "hybrid_recurrent":
            return list(range(self.cfg.num_layers))  # the recurrent forward needs every block converted
        return resolve_blocks(kc.converted if kc.converted is not None else "all", self.cfg.num_layers)

    def converted_blocks(self, kc: KindConfig):
        return len(self.blocks_of(kc))

    def _feature_probe(self):
        """A feature map as the converter builds it, to read its shapes without building the model."""
        if not hasattr(self, "_phi"):
            from rehyat.feature_maps import build_feature_map

            self._phi = build_feature_map(self.preset.feature_map, self.cfg.num_attention_heads,
                                          self.cfg.attention_head_dim, **self.preset.feature_map_kwargs)
        return self._phi

    def feature_dim(self, kc: KindConfig) -> int | None:
        if kc.kind in ("hybrid", "hybrid_recurrent"):
            return self._feature_probe().feature_dim
        return self.cfg.attention_head_dim if kc.kind == "linear" else None

    def spec(self, kc: KindConfig) -> AttentionSpec | None:
        return None if kc.kind == "softmax" else kc.spec(self.feature_dim(kc) or 1)

    def analytic(self, kc: KindConfig, video: VideoShape) -> Analytic:
        blocks = self.blocks_of(kc)
        spec = self.spec(kc)
        fm = feature_map_spec(self._feature_probe()) if kc.kind in ("hybrid", "hybrid_recurrent") else None
        cost = wan_model_flops(self.cfg, video, {i: spec for i in blocks}, feature_map=fm)
        if kc.kind == "hybrid_recurrent":
            cost.add("recurrent_text_kv_per_chunk",
                     recurrent_text_kv_flops(self.cfg, video, kc.chunk_frames, self.cfg.num_layers))
        return Analytic(cost.flops, dict(cost.breakdown), None, self.feature_dim(kc))

    def param_count(self) -> int:
        c, f, L = self.cfg.inner_dim, self.cfg.ffn_dim, self.cfg.num_layers
        return L * (8 * c * c + 2 * c * f) + self.cfg.text_dim * c + c * c + 7 * c * c

    def estimate_bytes(self, kc: KindConfig, video: VideoShape) -> int:
        block = BlockWorkload.estimate_bytes(self, kc, video)
        copies = 1 if kc.kind == "softmax" else 2  # the converted copy lives next to the base model
        return block + copies * self.param_count() * self.el

    def backend(self, kc: KindConfig) -> str:
        return BlockWorkload.backend(self, kc)

    def _build_base(self):
        if self._base is None:
            from diffusers import WanTransformer3DModel

            with torch.device(self.device):
                torch.manual_seed(0)
                self._base = WanTransformer3DModel(**self.preset.wan)
            cast_like_from_pretrained(self._base, self.dtype).eval().requires_grad_(False)
        return self._base

    def model(self, kc: KindConfig):
        if kc not in self._models:
            from rehyat.wan.convert import convert_wan_to_rehyat, set_rehyat_mode

            base = self._build_base()
            if kc.kind == "softmax":
                m = base
            else:
                m = copy.deepcopy(base)
                blocks = self.blocks_of(kc)
                if kc.kind in ("hybrid", "hybrid_recurrent"):
                    convert_wan_to_rehyat(m, blocks, chunk_frames=kc.chunk_frames, overlap_frames=kc.overlap_frames,
                                          causal=kc.causal, feature_map=self.preset.feature_map,
                                          feature_map_kwargs=self.preset.feature_map_kwargs, seed=0)
                    m.requires_grad_(False)
                    if kc.kind == "hybrid_recurrent":
                        set_rehyat_mode(m, "recurrent")
                else:
                    for i in blocks:
                        m.blocks[i].attn1.set_processor(KindAttnProcessor(kc))
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
            if kc.kind in ("linear", "chunk_local"):
                for i in self.blocks_of(kc):
                    m.blocks[i].attn1.processor.set_geometry(video.latent_frames // pt, video.frame_tokens)
            fns[kc] = lambda m=m: m(lat, ts, text, return_dict=False)[0]
        return fns

    def release(self) -> None:
        self._models, self._base = {}, None
        self.teardown()


WORKLOADS = {"op": OpWorkload, "block": BlockWorkload, "model": ModelWorkload}
