"""Analytic cost model: FLOPs and activation memory of attention kinds, a Wan block and a whole Wan model.

FLOPs follow ``torch.utils.flop_counter.FlopCounterMode``'s convention, so analytic and counted numbers can be compared
one to one: only matrix products count (``2*M*N*K`` each; SDPA = QK^T + PV), elementwise work (softmax exp, norms, RoPE,
cumsum, the joint normaliser) counts 0.  The formulas mirror the matrix products our implementations issue:

* ``softmax``      SDPA over all N keys: ``4 B H N^2 D``.
* ``hybrid``       per chunk SDPA over its window ``4 B H n_c n_w D``; linear branch ``2 B H N F D`` (per-span
                   ``fk v^T``) + ``2 B H N F D`` (read-out ``fq S``) + ``2 B H N F`` (denominator ``fq z``).
* ``hybrid_recurrent`` as hybrid, but the state update only covers flushed tokens: ``2 B H (N - n_tail) F D``.
* ``linear``       ``4 B H N F D + 2 B H N F``.
* ``chunk_local``  the hybrid's SDPA part only.
* ``normaliser="paper"`` (hybrid kinds): + ``2 B H n_c n_w D`` per chunk, the ``q k^T`` pass that gives the exact
                   row maximum of the window logits (:mod:`rehyat.attention.rowmax`).

Activation memory (bytes) is the peak of the tensors our implementation keeps alive in inference (no autograd), an
estimate documented per kind in :func:`attention_memory`; it excludes weights.

``register_missing_flop_formulas()`` teaches FlopCounterMode the CPU fused-attention op and ``mv`` (it counts 0 otherwise).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .attention.geometry import ChunkGeometry
from .config import ReHyAtConfig

VAE_TEMPORAL, VAE_SPATIAL = 4, 8
BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "bfloat16": 2, "bf16": 2, "float64": 8, "fp64": 8}


@dataclass(frozen=True)
class VideoShape:
    """A pixel-space video and its Wan latent/token grid (VAE 4x time, 8x space; patch (1, 2, 2))."""

    frames: int
    height: int
    width: int
    patch: tuple[int, int, int] = (1, 2, 2)

    @property
    def latent_frames(self) -> int:
        return (self.frames - 1) // VAE_TEMPORAL + 1

    @property
    def frame_tokens(self) -> int:
        return (self.height // VAE_SPATIAL // self.patch[1]) * (self.width // VAE_SPATIAL // self.patch[2])

    @property
    def tokens(self) -> int:
        return self.latent_frames // self.patch[0] * self.frame_tokens


def AttentionSpec(kind: str = "softmax", chunk_frames: int = 3, overlap_frames: int = 1, causal: bool = False,
                  feature_dim: int = 256) -> ReHyAtConfig:
    """Thin alias kept for older callers: the :class:`~rehyat.config.ReHyAtConfig` of ``kind`` whose feature map has
    width ``feature_dim`` (a one-part polynomial map; the cost depends on F only)."""
    return ReHyAtConfig(kind=kind, chunk_frames=chunk_frames, overlap_frames=overlap_frames, causal=causal,
                        feature_map="polynomial",
                        feature_map_kwargs={"hidden_dim": feature_dim, "feature_dim": feature_dim, "degree": 1})


def _feature_dim(spec: ReHyAtConfig, head_dim: int, feature_dim: int | None) -> int:
    if feature_dim is not None:
        return feature_dim
    return spec.feature_dim(head_dim) or 1


@dataclass
class Cost:
    flops: int = 0
    memory_bytes: int = 0
    breakdown: dict = field(default_factory=dict)

    def add(self, name: str, flops: int) -> "Cost":
        self.flops += flops
        self.breakdown[name] = self.breakdown.get(name, 0) + flops
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def _sdpa(b: int, h: int, nq: int, nk: int, d: int) -> int:
    return 4 * b * h * nq * nk * d


def _windows(frames: int, frame_tokens: int, spec: ReHyAtConfig) -> list[tuple[int, int]]:
    geom = ChunkGeometry(frames, frame_tokens, spec.chunk_frames, spec.overlap_frames)
    return [((c.end - c.start) * frame_tokens, (c.window_end - c.window_start) * frame_tokens) for c in geom.chunks()]


def attention_flops(spec: ReHyAtConfig, *, batch: int, heads: int, head_dim: int, frames: int, frame_tokens: int,
                    feature_dim: int | None = None) -> Cost:
    """FLOPs of the attention core (no projections, no feature maps).  ``frames`` are latent frames.

    ``spec``: the layer's :class:`ReHyAtConfig` (kind, T_c, T_o, direction, feature map); ``feature_dim`` overrides
    the width F its feature map gives at ``head_dim`` (e.g. features supplied from outside)."""
    b, h, d, f = batch, heads, head_dim, _feature_dim(spec, head_dim, feature_dim)
    n = frames * frame_tokens
    cost = Cost()
    if spec.kind == "softmax":
        return cost.add("softmax", _sdpa(b, h, n, n, d))
    if spec.kind == "linear":
        return cost.add("linear", 4 * b * h * n * f * d + 2 * b * h * n * f)
    windows = _windows(frames, frame_tokens, spec)
    cost.add("softmax", sum(_sdpa(b, h, nc, nw, d) for nc, nw in windows))
    if spec.kind == "chunk_local":
        return cost
    if spec.normaliser == "paper":  # the stabiliser: one more q k^T pass per window for the exact row maximum
        cost.add("softmax_rowmax", sum(2 * b * h * nc * nw * d for nc, nw in windows))
    if spec.kind == "hybrid":
        return cost.add("linear", 4 * b * h * n * f * d + 2 * b * h * n * f)
    if spec.kind == "hybrid_recurrent":
        tail = min(spec.overlap_frames, frames) * frame_tokens
        return cost.add("linear", 2 * b * h * n * f * d + 2 * b * h * n * f + 2 * b * h * (n - tail) * f * d)
    raise KeyError(f"no cost formula for attention kind {spec.kind!r}")


def attention_memory(spec: ReHyAtConfig, *, batch: int, heads: int, head_dim: int, frames: int, frame_tokens: int,
                     dtype: str = "float32", feature_dim: int | None = None) -> int:
    """Peak activation bytes of the attention core in inference (inputs q, k, v, features and output included).

    softmax (fused): q, k, v, o.  hybrid: q, k, v, fq, fk, o + the linear branch's fp32 states: one ``(S, z)`` per frame
    span between window edges (:meth:`ChunkGeometry.linear_cuts`) plus their prefix (and, bidirectionally, suffix)
    running sums.  hybrid_recurrent: one chunk's q, k, v, fq, fk, o + its window's k, v, fk + the state (S, z,
    T_o-frame tail) -- independent of the number of frames.  linear: like hybrid, with the window in the linear set.
    chunk_local: q, k, v, o.  Per-chunk temporaries (softmax output of one batched call, read-out) are left out.
    """
    el, acc = BYTES[dtype], 4 if BYTES[dtype] < 8 else 8
    b, h, d, f = batch, heads, head_dim, _feature_dim(spec, head_dim, feature_dim)
    n = frames * frame_tokens
    qkvo = 4 * b * n * h * d * el
    feats = 2 * b * n * h * f * el
    if spec.kind in ("softmax", "chunk_local"):
        return qkvo
    if spec.kind in ("hybrid", "linear"):
        geom = ChunkGeometry(frames, frame_tokens, spec.chunk_frames, spec.overlap_frames if spec.kind == "hybrid" else 0)
        spans = len(geom.linear_cuts(spec.causal, include_window=spec.kind == "linear")) - 1
        state = b * h * (f * d + f) * acc
        return qkvo + feats + state * spans * (2 if spec.causal else 3)
    if spec.kind == "hybrid_recurrent":
        nc = min(spec.chunk_frames, frames) * frame_tokens
        tail = min(spec.overlap_frames, frames) * frame_tokens
        chunk = 4 * b * nc * h * d * el + 2 * b * nc * h * f * el
        window = b * (nc + tail) * h * (2 * d + f) * el
        state = b * h * (f * d + f) * acc + b * tail * h * (2 * d + f) * el
        return chunk + window + state
    raise KeyError(f"no memory formula for attention kind {spec.kind!r}")


# ------------------------------------------------------------------------------------------------------------------
# Wan blocks and models
# ------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WanConfig:
    """The WanTransformer3DModel config fields the cost depends on (defaults: Wan2.1-T2V-1.3B)."""

    num_attention_heads: int = 12
    attention_head_dim: int = 128
    num_layers: int = 30
    ffn_dim: int = 8960
    text_dim: int = 4096
    freq_dim: int = 256
    in_channels: int = 16
    out_channels: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_tokens: int = 512  # the pipeline pads prompts to max_sequence_length=512

    @classmethod
    def from_diffusers(cls, config, text_tokens: int = 512) -> "WanConfig":
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        return cls(get("num_attention_heads"), get("attention_head_dim"), get("num_layers"), get("ffn_dim"),
                   get("text_dim"), get("freq_dim"), get("in_channels"), get("out_channels"),
                   tuple(get("patch_size")), text_tokens)

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


@dataclass(frozen=True)
class FeatureMapSpec:
    """Matrix shapes of one feature map per head: a chain of per-head linear layers ``[D, h1], [h1, h2], ...``."""

    layers: tuple[tuple[int, int], ...] = ((128, 256), (256, 256))

    @classmethod
    def polynomial(cls, head_dim: int, hidden_dim: int = 256, feature_dim: int = 256) -> "FeatureMapSpec":
        return cls(((head_dim, hidden_dim), (hidden_dim, feature_dim)))

    @classmethod
    def hedgehog(cls, head_dim: int, feature_dim: int) -> "FeatureMapSpec":
        return cls(((head_dim, feature_dim // 2),))

    @classmethod
    def parameter_free(cls) -> "FeatureMapSpec":
        return cls(())

    @classmethod
    def of(cls, module) -> "FeatureMapSpec":
        """The per-head matrix shapes of a built feature map (its ``PerHeadLinear`` layers, in order)."""
        from .feature_maps import PerHeadLinear

        return cls(tuple((m.weight.shape[1], m.weight.shape[2]) for m in module.modules()
                         if isinstance(m, PerHeadLinear)))

    def flops(self, batch: int, tokens: int, heads: int) -> int:
        return sum(2 * batch * tokens * heads * i * o for i, o in self.layers)


def _linear(b: int, n: int, i: int, o: int) -> int:
    return 2 * b * n * i * o


def wan_block_flops(cfg: WanConfig, video: VideoShape, spec: ReHyAtConfig | None = None, *, batch: int = 1,
                    feature_map: FeatureMapSpec | None = None, feature_dim: int | None = None) -> Cost:
    """FLOPs of one WanTransformerBlock: self-attention (QKVO projections, optional phi_q/phi_k, attention core),
    cross-attention over ``cfg.text_tokens`` text tokens, and the FFN.  ``spec=None`` means the softmax teacher."""
    spec = spec or ReHyAtConfig(kind="softmax")
    c, h, d = cfg.inner_dim, cfg.num_attention_heads, cfg.attention_head_dim
    frames = video.latent_frames // cfg.patch_size[0]
    n, ft, lt = video.tokens, video.frame_tokens, cfg.text_tokens
    cost = Cost()
    cost.add("self_attn_proj", 4 * _linear(batch, n, c, c))
    if spec.kind != "softmax" and feature_map is not None:
        cost.add("feature_maps", 2 * feature_map.flops(batch, n, h))
    core = attention_flops(spec, batch=batch, heads=h, head_dim=d, frames=frames, frame_tokens=ft,
                           feature_dim=feature_dim)
    for k, v in core.breakdown.items():
        cost.add(f"self_attn_{k}", v)
    cost.add("cross_attn_proj", 2 * _linear(batch, n, c, c) + 2 * _linear(batch, lt, c, c))
    cost.add("cross_attn_core", _sdpa(batch, h, n, lt, d))
    cost.add("ffn", _linear(batch, n, c, cfg.ffn_dim) + _linear(batch, n, cfg.ffn_dim, c))
    return cost


def wan_model_flops(cfg: WanConfig, video: VideoShape, converted: ReHyAtConfig | dict[int, ReHyAtConfig] | None = None,
                    *, batch: int = 1, feature_map: FeatureMapSpec | None = None,
                    feature_dim: int | None = None) -> Cost:
    """FLOPs of one WanTransformer3DModel forward (one denoising step, one CFG branch).

    ``converted``: a model's :class:`ReHyAtConfig` (its ``blocks`` say which blocks it converts) or a mapping block
    index -> config; other blocks are softmax.  Includes patch embedding, the
    condition embedder (timestep MLP + 6x modulation projection, text MLP) and the output projection.
    """
    if isinstance(converted, ReHyAtConfig):
        converted = {i: converted for i in converted.block_indices(cfg.num_layers)}
    converted = converted or {}
    c, n = cfg.inner_dim, video.tokens
    pt, ph, pw = cfg.patch_size
    cost = Cost()
    cost.add("patch_embedding", 2 * batch * n * c * cfg.in_channels * pt * ph * pw)
    cost.add("time_embedding", _linear(batch, 1, cfg.freq_dim, c) + _linear(batch, 1, c, c) + _linear(batch, 1, c, 6 * c))
    cost.add("text_embedding", _linear(batch, cfg.text_tokens, cfg.text_dim, c) + _linear(batch, cfg.text_tokens, c, c))
    for i in range(cfg.num_layers):
        block = wan_block_flops(cfg, video, converted.get(i), batch=batch, feature_map=feature_map,
                                feature_dim=feature_dim)
        for k, v in block.breakdown.items():
            cost.add(f"blocks.{k}", v)
    cost.add("proj_out", _linear(batch, n, c, cfg.out_channels * pt * ph * pw))
    return cost


def register_missing_flop_formulas() -> None:
    """Teach FlopCounterMode the ops our kernels issue that it counts as 0 (idempotent).

    * ``aten._scaled_dot_product_flash_attention_for_cpu``: PyTorch's CPU fused attention, counted like every other
      SDPA kernel (QK^T + PV).
    * ``aten.mv``: a gemv, ``2 M N`` FLOPs, the same count a matmul with a one-column right side gets (a feature map
      or denominator written with ``mv`` would otherwise count as free).
    """
    import torch
    from torch.utils.flop_counter import flop_registry, register_flop_formula, sdpa_flop_count

    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if flash not in flop_registry:
        @register_flop_formula(flash)
        def _cpu_flash_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
            return sdpa_flop_count(query, key, value)

    if torch.ops.aten.mv not in flop_registry:
        @register_flop_formula(torch.ops.aten.mv)
        def _mv_flops(mat_shape, vec_shape, *args, out_shape=None, **kwargs) -> int:
            return 2 * mat_shape[0] * mat_shape[1]


def count_flops(fn, *args, **kwargs) -> int:
    """FLOPs of ``fn(*args, **kwargs)`` as FlopCounterMode counts them (CPU fused attention included)."""
    from torch.utils.flop_counter import FlopCounterMode

    register_missing_flop_formulas()
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()
