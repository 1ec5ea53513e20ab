"""Sweep definitions and the three presets of the efficiency suite (``--preset ci|cpu|gpu``).

A preset fixes the dtype, the device, the shapes of each level and the time budgets; the options of the suite
(``--efficiency-levels``, ``--efficiency-frames``, ...) narrow or override it.  Video shapes are *pixel* shapes
(``frames`` of ``height x width``), mapped to Wan's latent/token grid by :class:`rehyat.cost.VideoShape` (VAE 4x time,
8x space; patch 1x2x2): 81 frames of 480x832 = 21 latent frames x 1560 tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from rehyat.attention import get_attention_kind
from rehyat.config import ReHyAtConfig

LEVELS = ("op", "block", "model")

# Wan2.1-T2V-1.3B transformer config (diffusers ``WanTransformer3DModel``), the width of the block and model levels.
WAN_1P3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
# A tiny config of the same architecture for the ci preset (runs in milliseconds).
WAN_TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16,
                text_dim=16, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)


def KindConfig(kind: str, chunk_frames: int | None = None, overlap_frames: int | None = None,
               converted: int | None = None, normaliser: str = "kernel") -> ReHyAtConfig:
    """The :class:`~rehyat.config.ReHyAtConfig` one sweep point measures (a thin constructor under its older name).

    Chunked kinds take ``T_c, T_o`` (default 3, 1); others are normalised to ``T_c=1, T_o=0`` so that one kind is
    one point.  ``causal`` follows the kind: only ``hybrid_recurrent`` (causal-only) is causal, every other kind is
    measured bidirectionally.  ``converted`` (model level): how many blocks use this kind (``None`` = all; spread
    over depth as :func:`rehyat.config.resolve_blocks` does) — the config's ``blocks``.  The ``linear`` baseline
    uses SANA's parameter-free ReLU features; the feature map of the others is set per preset by the workloads.
    ``normaliser`` (hybrid kinds): ``"paper"`` adds the exact row-max pass of the paper's stabiliser.
    """
    k = get_attention_kind(kind)
    chunked = k.uses_chunks
    return ReHyAtConfig(blocks="all" if converted is None else converted, kind=kind,
                        chunk_frames=(3 if chunk_frames is None else chunk_frames) if chunked else 1,
                        overlap_frames=(1 if overlap_frames is None else overlap_frames) if chunked else 0,
                        causal=k.causal_only, feature_map="relu" if kind == "linear" else "polynomial",
                        normaliser=normaliser if k.uses_normaliser else "kernel")


def converted_of(kc: ReHyAtConfig) -> int | list[int] | None:
    """``KindConfig``'s ``converted``: the config's blocks, ``None`` for all."""
    return None if kc.blocks == "all" else kc.blocks


def with_converted(kc: ReHyAtConfig, n: int | None) -> ReHyAtConfig:
    return kc.replace(blocks="all" if n is None else n)


def parse_kind(text: str) -> KindConfig:
    """``softmax``, ``linear``, ``hybrid:3:1``, ``hybrid_recurrent:3:1``, ``chunk_local:3:1`` (T_c:T_o), and the
    paper's normaliser as a fourth field: ``hybrid:3:1:paper``."""
    from rehyat.attention import ATTENTION_KINDS

    name, *rest = text.split(":")
    if name not in ATTENTION_KINDS:
        raise ValueError(f"unknown attention kind {name!r}; registered: {sorted(ATTENTION_KINDS)}")
    cfg = KindConfig(name)
    normaliser = "kernel"
    if cfg.attention_kind.uses_normaliser and len(rest) == 3:
        normaliser = rest.pop()
        if normaliser not in ("kernel", "paper"):
            raise ValueError(f"{text!r}: the normaliser is 'kernel' or 'paper', got {normaliser!r}")
    if cfg.attention_kind.uses_chunks:
        if len(rest) not in (0, 2):
            raise ValueError(f"{text!r}: give T_c:T_o (e.g. {name}:3:1)")
        tc, to = (int(rest[0]), int(rest[1])) if len(rest) == 2 else (3, 1)
        if tc < 1 or to < 0:
            raise ValueError(f"{text!r}: need T_c >= 1 and T_o >= 0")
        cfg = KindConfig(name, tc, to, normaliser=normaliser)
    elif rest:
        raise ValueError(f"{text!r}: kind {name!r} takes no T_c:T_o")
    return cfg


def chunk_grid(tcs, tos, kinds=("hybrid",)) -> tuple[KindConfig, ...]:
    """A T_c x T_o grid of each chunked kind; with ``chunk_local`` beside ``hybrid``, every hybrid point has its softmax
    part (the fused kernel on the same windows, no linear branch) measured in the same run."""
    return tuple(KindConfig(kind, tc, to) for kind in kinds for tc in tcs for to in tos)


def _unique(*groups: tuple[KindConfig, ...]) -> tuple[KindConfig, ...]:
    return tuple(dict.fromkeys(k for g in groups for k in g))


MAIN = dict(chunk_frames=3, overlap_frames=1)  # the paper's main setting T_c = 3, T_o = 1
BASE_KINDS = (KindConfig("softmax"), KindConfig("linear"), KindConfig("hybrid_recurrent", **MAIN),
              KindConfig("chunk_local", **MAIN))
# The paper's normaliser at the main setting, beside the kernel one: what its exact row-max pass costs.
PAPER_NORMALISER = (KindConfig("hybrid", **MAIN, normaliser="paper"),)


@dataclass(frozen=True)
class LevelSweep:
    """The points of one level: every (resolution, frames) pair for every kind."""

    level: str
    resolutions: tuple[tuple[int, int], ...]
    frames: tuple[int, ...]
    kinds: tuple[KindConfig, ...]
    point_budget_s: float  # a (kind, point) is measured only if its predicted cost (all its runs) fits
    repeats: int = 3  # timed repeats (after the untimed instrumented warm-up run)
    min_repeats: int = 2  # a point that fits its budget only with fewer repeats gets this many
    max_repeats: int = 20  # more repeats while the point's timed runs take less than min_time_s
    min_time_s: float = 0.5
    count_flops: bool = True


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    device: str  # "cpu" or "cuda"
    dtype: str
    levels: tuple[LevelSweep, ...]
    total_budget_s: float  # measurement stops (points become analytic-only) once this is spent
    op_heads: int = 12
    op_head_dim: int = 128
    op_feature_dim: int = 256  # F of the hybrid kinds' features at the op level (the paper's polynomial map: 256)
    wan: dict = field(default_factory=lambda: dict(WAN_1P3B))
    text_tokens: int = 512  # Wan's pipeline pads prompts to 512 tokens
    feature_map: str = "polynomial"
    feature_map_kwargs: dict = field(default_factory=dict)
    threads: int | None = None  # None: torch's default

    def level(self, name: str) -> LevelSweep | None:
        return next((lv for lv in self.levels if lv.level == name), None)


FRAMES = (17, 41, 81, 161, 321)  # latent 5, 11, 21, 41, 81 (81 / 11 = 7.4x, 81 / 5 = 16x)
RES_SMALL, RES_480P = (240, 416), (480, 832)

PRESETS: dict[str, Preset] = {}


def _register(p: Preset) -> Preset:
    PRESETS[p.name] = p
    return p


_register(Preset(
    name="ci",
    description="structure check in seconds: every kind and level at tiny shapes (tiny Wan config), all measured",
    device="cpu", dtype="float32", total_budget_s=60.0,
    op_heads=2, op_head_dim=16, op_feature_dim=8,
    wan=dict(WAN_TINY), text_tokens=8, feature_map_kwargs=dict(hidden_dim=16, feature_dim=16), threads=1,
    levels=(
        LevelSweep("op", ((32, 48), (48, 64)), (17, 33),
                   _unique(BASE_KINDS, chunk_grid((1, 3), (0, 1), kinds=("hybrid", "chunk_local")), PAPER_NORMALISER),
                   point_budget_s=5.0, repeats=2, max_repeats=3, min_time_s=0.0),
        LevelSweep("block", ((32, 48),), (17, 33), BASE_KINDS + (KindConfig("hybrid", **MAIN),) + PAPER_NORMALISER,
                   point_budget_s=5.0, repeats=2, max_repeats=3, min_time_s=0.0),
        LevelSweep("model", ((32, 48),), (17, 33),
                   (KindConfig("softmax"), KindConfig("hybrid", **MAIN, converted=1), KindConfig("hybrid", **MAIN),
                    KindConfig("hybrid_recurrent", **MAIN), KindConfig("linear"), KindConfig("chunk_local", **MAIN)),
                   point_budget_s=5.0, repeats=2, max_repeats=3, min_time_s=0.0),
    ),
))

CPU_OP_KINDS = _unique(BASE_KINDS, chunk_grid((1, 3), (0, 1), kinds=("hybrid", "chunk_local")), PAPER_NORMALISER)

_register(Preset(
    name="cpu",
    description="CPU, fp32, < 15 min on 2 cores: the op at two of Wan-1.3B's 12 heads (head dim 128, F 256; every kind "
                "is linear in the number of heads) with a T_c x T_o grid of hybrid and chunk_local for 240x416 at "
                "17-321 frames and for 480x832 at 17-81 frames; one 1.3B-width block at 240x416; the 30-block 1.3B "
                "model analytic where it does not fit the budget",
    device="cpu", dtype="float32", total_budget_s=690.0, op_heads=2,
    levels=(
        LevelSweep("op", (RES_SMALL,), FRAMES, CPU_OP_KINDS, point_budget_s=90.0, repeats=3, max_repeats=10,
                   min_time_s=1.0),
        LevelSweep("block", (RES_SMALL,), (17, 41), BASE_KINDS + (KindConfig("hybrid", **MAIN),),
                   point_budget_s=40.0, repeats=2, max_repeats=5, min_time_s=1.0),
        LevelSweep("op", (RES_480P,), (17, 41, 81), CPU_OP_KINDS, point_budget_s=90.0, repeats=3, max_repeats=10,
                   min_time_s=1.0),
        LevelSweep("model", (RES_SMALL, RES_480P), FRAMES,
                   (KindConfig("softmax"), KindConfig("hybrid", **MAIN, converted=15), KindConfig("hybrid", **MAIN),
                    KindConfig("hybrid_recurrent", **MAIN), KindConfig("linear"), KindConfig("chunk_local", **MAIN)),
                   point_budget_s=60.0, repeats=2, max_repeats=3, min_time_s=1.0),
    ),
))

_register(Preset(
    name="gpu",
    description="one H100/H200, bf16, < 8 min: op at full Wan-1.3B width (12 heads), block and the 30-block 1.3B "
                "model at 240x416 and 480x832, 17-321 frames (the model analytic where it does not fit the budget)",
    device="cuda", dtype="bfloat16", total_budget_s=330.0,
    levels=(
        LevelSweep("op", (RES_SMALL, RES_480P), FRAMES, BASE_KINDS + chunk_grid((1, 3, 6), (0, 1, 2)) + PAPER_NORMALISER,
                   point_budget_s=8.0, repeats=5, max_repeats=30, min_time_s=0.3),
        LevelSweep("block", (RES_SMALL, RES_480P), FRAMES, BASE_KINDS + (KindConfig("hybrid", **MAIN),),
                   point_budget_s=8.0, repeats=5, max_repeats=20, min_time_s=0.3),
        LevelSweep("model", (RES_SMALL, RES_480P), (17, 41, 81, 161, 321),
                   (KindConfig("softmax"), KindConfig("hybrid", **MAIN, converted=15), KindConfig("hybrid", **MAIN),
                    KindConfig("hybrid_recurrent", **MAIN), KindConfig("linear"), KindConfig("chunk_local", **MAIN)),
                   point_budget_s=25.0, repeats=3, max_repeats=5, min_time_s=0.3, count_flops=False),
    ),
))


def override(preset: Preset, *, levels=None, frames=None, resolutions=None, kinds=None, total_budget_s=None,
             point_budget_s=None, repeats=None, dtype=None, device=None, threads=None, count_flops=None) -> Preset:
    """The preset with command-line overrides applied (``None`` keeps the preset's value).  When frames or resolutions
    are overridden, sweeps of the same level are merged (their kinds united), so no point runs twice."""
    levels_in = list(preset.levels)
    if frames is not None or resolutions is not None:
        merged: dict = {}
        for lv in levels_in:
            if lv.level in merged:
                first = merged[lv.level]
                merged[lv.level] = replace(first, kinds=tuple(dict.fromkeys(first.kinds + lv.kinds)),
                                           resolutions=tuple(dict.fromkeys(first.resolutions + lv.resolutions)),
                                           frames=tuple(sorted(set(first.frames + lv.frames))))
            else:
                merged[lv.level] = lv
        levels_in = list(merged.values())
    lvs = []
    for lv in levels_in:
        if levels is not None and lv.level not in levels:
            continue
        kw = {}
        if frames is not None:
            kw["frames"] = tuple(frames)
        if resolutions is not None:
            kw["resolutions"] = tuple(resolutions)
        if kinds is not None:
            conv = {k.kind: converted_of(k) for k in lv.kinds}
            kw["kinds"] = tuple(with_converted(k, conv.get(k.kind)) if lv.level == "model" else k for k in kinds)
        if point_budget_s is not None:
            kw["point_budget_s"] = point_budget_s
        if repeats is not None:
            kw["repeats"] = repeats
            kw["max_repeats"] = max(repeats, lv.max_repeats)
        if count_flops is not None:
            kw["count_flops"] = count_flops
        lvs.append(replace(lv, **kw))
    kw = {}
    for k, v in dict(total_budget_s=total_budget_s, dtype=dtype, device=device, threads=threads).items():
        if v is not None:
            kw[k] = v
    return replace(preset, levels=tuple(lvs), **kw)
