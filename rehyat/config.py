"""One configuration object for ReHyAt attention: :class:`ReHyAtConfig`, and the named presets users ask for.

The same object travels, unchanged, from a CLI flag to the op: the converted model holds it (``model.rehyat_config``
and, serialised, the ``rehyat`` entry of its diffusers ``config.json``), every converted block's processor holds it,
the recurrent forward reads it, the distillation configs nest it, the efficiency presets sweep it and the cost model
prices it.  It imports neither diffusers nor torch.

Presets (:data:`PRESETS`, ``--preset NAME`` in every CLI that converts, distils or generates; explicit flags win):

| name | blocks | T_c | T_o | direction | what for |
|---|---|---|---|---|---|
| ``paper-main``    | 15 of 30 | 3 | 1 | bidirectional | the paper's main model (its VBench table) |
| ``paper-vbench2`` | 15 of 30 | 5 | 0 | bidirectional | the paper's VBench-2.0 model |
| ``long-video``    | all      | 3 | 1 | causal        | constant-memory recurrent / streamed generation |

"15 of 30" is the int ``15``: 15 blocks spread evenly over the model's depth (:func:`resolve_blocks`), since the paper
does not say which blocks it converts.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Mapping

BlocksSpec = Any  # "all" | int (n blocks spread over depth) | list of block indices


def resolve_blocks(blocks: BlocksSpec, num_layers: int) -> list[int]:
    """Block indices to convert.

    ``"all"`` / ``None``: every block.  An ``int`` n: n blocks spread evenly over depth, ``[i * L // n for i in
    range(n)]`` (15 of 30 -> 0, 2, ..., 28); the paper does not say which blocks it converts, so pass an explicit list
    to reproduce a specific choice.  A sequence: exactly those indices (negative indices count from the end).
    """
    if blocks is None or (isinstance(blocks, str) and blocks == "all"):
        return list(range(num_layers))
    if isinstance(blocks, str):
        raise ValueError(f"blocks must be 'all', an int or a sequence of indices, got {blocks!r}")
    if isinstance(blocks, bool):
        raise ValueError(f"blocks must be 'all', an int or a sequence of indices, got {blocks!r}")
    if isinstance(blocks, int):
        if not 0 <= blocks <= num_layers:
            raise ValueError(f"cannot convert {blocks} of {num_layers} blocks (the model has {num_layers}; pass a "
                             f"smaller count or explicit indices, e.g. --blocks 0,2)")
        return [i * num_layers // blocks for i in range(blocks)] if blocks else []
    out = []
    for b in blocks:
        b = int(b)
        if not -num_layers <= b < num_layers:
            raise IndexError(f"block index {b} out of range for {num_layers} blocks")
        out.append(b % num_layers)
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate block indices in {list(blocks)}")
    return sorted(out)


def parse_blocks(text: str | int | Iterable[int] | None) -> BlocksSpec:
    """CLI/config spelling of ``blocks``: ``'all'``, ``'15'`` (15 spread over depth) or ``'0,2,4'`` / ``'5,'``."""
    if text is None or isinstance(text, int) or not isinstance(text, str):
        return list(text) if isinstance(text, tuple) else text
    text = text.strip()
    if text == "all":
        return "all"
    if "," in text:
        return [int(x) for x in text.split(",") if x.strip()]
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"blocks must be 'all', a count like '15' or indices like '0,2,4', got {text!r}") from None


def _freeze_blocks(blocks: BlocksSpec) -> BlocksSpec:
    if blocks is None:
        return "all"
    if isinstance(blocks, (list, tuple)):
        return [int(b) for b in blocks]  # a list, as stored in JSON (hashing goes through to_dict)
    return blocks


NORMALISERS = ("kernel", "paper")
# What a stored config that predates a field meant (may differ from today's default for new configs).
STORED_BEFORE_FIELD = {"normaliser": "kernel"}


@dataclass(frozen=True)
class ReHyAtConfig:
    """What a converted Wan self-attention computes, and where.

    Attributes:
        blocks: which blocks are converted: ``"all"``, an int n (n blocks spread over depth) or a list of indices.
            A model stores the resolved list.
        kind: a name registered in :data:`rehyat.attention.ATTENTION_KINDS` (``hybrid`` = ReHyAt; the baselines
            ``linear``, ``chunk_local``, ``softmax``, and the chunk-wise ``hybrid_recurrent``).
        chunk_frames: T_c, latent frames per query chunk.
        overlap_frames: T_o, previous latent frames added to each chunk's softmax window.
        causal: linear set = frames before the window only (``True``) or every frame outside it (``False``).
        feature_map: a name registered in :data:`rehyat.feature_maps.FEATURE_MAPS` (used by kinds that take
            features).  feature_map_kwargs: its constructor kwargs (same for phi_q and phi_k).
        linear_scale: a learnable per-head log-scale ``linear_log_scale`` multiplying phi_k by ``exp(gamma_h)``
            (a mixing parameter; docs/distill.md).
        softmax_backend: the op's fused softmax+LSE backend (``None`` = its default selection).
        normaliser: how the linear branch enters the joint normaliser (docs/attention.md).  ``"kernel"``: fq.fk stands
            in for exp(s) itself, ``y = (sum_S e^s v + sum_L fq.fk v) / (sum_S e^s + sum_L fq.fk)`` (the stabiliser
            cancels).  ``"paper"``: the paper's literal formula, the stabiliser c_t (the query's max logit over its
            softmax window) inside the exponential only, ``y = (sum_S e^(s-c) v + sum_L fq.fk v) / (sum_S e^(s-c) +
            sum_L fq.fk)``: the linear branch competes with e^(s-c) <= 1.  Configs stored before the field existed
            load as ``"kernel"``.

    Frozen and hashable (efficiency sweeps key results by it).  ``replace(**fields)`` gives a modified copy.
    """

    blocks: BlocksSpec = "all"
    kind: str = "hybrid"
    chunk_frames: int = 3
    overlap_frames: int = 1
    causal: bool = False
    feature_map: str = "polynomial"
    feature_map_kwargs: Mapping[str, Any] = field(default_factory=dict)
    linear_scale: bool = False
    softmax_backend: str | None = None
    normaliser: str = "kernel"

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "blocks", _freeze_blocks(self.blocks))
        kw = self.feature_map_kwargs
        if isinstance(kw, str):
            kw = json.loads(kw or "{}")
        set_(self, "feature_map_kwargs", dict(kw or {}))
        set_(self, "chunk_frames", int(self.chunk_frames))
        set_(self, "overlap_frames", int(self.overlap_frames))
        set_(self, "causal", bool(self.causal))
        set_(self, "linear_scale", bool(self.linear_scale))
        if self.normaliser not in NORMALISERS:
            raise ValueError(f"normaliser must be one of {NORMALISERS}, got {self.normaliser!r}")
        if self.chunk_frames < 1 or self.overlap_frames < 0:
            raise ValueError(f"need chunk_frames >= 1 and overlap_frames >= 0, got {self.chunk_frames}, "
                             f"{self.overlap_frames}")

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    # ---------------------------------------------------------------- construction
    def replace(self, **changes) -> "ReHyAtConfig":
        """A copy with ``changes`` applied (unknown names raise); ``None`` values keep the current field."""
        known = {f.name for f in fields(self)}
        bad = sorted(set(changes) - known)
        if bad:
            raise TypeError(f"unknown ReHyAtConfig field(s) {bad}; fields: {sorted(known)}")
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["blocks"] = list(d["blocks"]) if isinstance(d["blocks"], list) else d["blocks"]
        d["feature_map_kwargs"] = dict(d["feature_map_kwargs"])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | "ReHyAtConfig" | None) -> "ReHyAtConfig":
        """From a stored dict (keys written before a field existed get its default; unknown keys are ignored so
        newer files still load)."""
        if isinstance(d, ReHyAtConfig):
            return d
        d = dict(STORED_BEFORE_FIELD) | dict(d or {})
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    @classmethod
    def from_preset(cls, name: str | None = None, **overrides) -> "ReHyAtConfig":
        """A named preset (``None``: the defaults) with explicit fields overriding it."""
        base = cls() if name is None else get_preset(name)
        return base.replace(**overrides)

    def with_preset(self, name: str | None) -> "ReHyAtConfig":
        """This config with the architecture of preset ``name`` (blocks, kind, T_c, T_o, direction); feature map,
        linear scale and backend stay as they are (they are choices of the run, not of the preset)."""
        if not name:
            return self
        p = get_preset(name)
        return dataclasses.replace(self, **{f: getattr(p, f) for f in PRESET_FIELDS})

    # ---------------------------------------------------------------- derived
    def resolved(self, num_layers: int) -> "ReHyAtConfig":
        """This config with ``blocks`` resolved to explicit indices for a model of ``num_layers`` blocks."""
        return dataclasses.replace(self, blocks=resolve_blocks(self.blocks, num_layers))

    def block_indices(self, num_layers: int) -> list[int]:
        return resolve_blocks(self.blocks, num_layers)

    @property
    def attention_kind(self):
        """The registered :class:`rehyat.attention.AttentionKind` (imports torch)."""
        from rehyat.attention import get_attention_kind

        return get_attention_kind(self.kind)

    @property
    def label(self) -> str:
        """Stable short name, e.g. ``hybrid_tc3_to1``, ``hybrid_tc3_to1_causal``, ``linear`` (docs/interfaces.md)."""
        return self.attention_kind.label(self)

    def feature_dim(self, head_dim: int) -> int | None:
        """F, the width of phi(x) for this config's feature map at ``head_dim`` (``None`` for kinds without
        features)."""
        if not self.attention_kind.needs_features:
            return None
        from rehyat.feature_maps import feature_map_output_dim

        return feature_map_output_dim(self.feature_map, head_dim, **self.feature_map_kwargs)


# ---------------------------------------------------------------------------------------------------------- presets
PRESETS: dict[str, ReHyAtConfig] = {}
PRESET_FIELDS = ("blocks", "kind", "chunk_frames", "overlap_frames", "causal")
PRESET_HELP: dict[str, str] = {}


def register_preset(name: str, config: ReHyAtConfig, help: str = "") -> ReHyAtConfig:
    if name in PRESETS:
        raise ValueError(f"ReHyAt preset {name!r} is already registered")
    PRESETS[name] = config
    PRESET_HELP[name] = help
    return config


def get_preset(name: str) -> ReHyAtConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown ReHyAt preset {name!r}; presets: {sorted(PRESETS)}") from None


register_preset("paper-main", ReHyAtConfig(blocks=15, chunk_frames=3, overlap_frames=1, causal=False),
                "the paper's main model: 15 of 30 blocks, T_c=3, T_o=1, bidirectional")
register_preset("paper-vbench2", ReHyAtConfig(blocks=15, chunk_frames=5, overlap_frames=0, causal=False),
                "the paper's VBench-2.0 model: 15 of 30 blocks, T_c=5, T_o=0, bidirectional")
register_preset("long-video", ReHyAtConfig(blocks="all", chunk_frames=3, overlap_frames=1, causal=True),
                "long videos in constant memory: all blocks, causal, T_c=3, T_o=1 (recurrent / stream modes)")


# ---------------------------------------------------------------------------------------------------------- CLI
CLI_FIELDS = ("blocks", "chunk_frames", "overlap_frames", "causal", "feature_map", "feature_map_kwargs",
              "linear_scale", "normaliser")
_FLAG_HELP = {
    "blocks": "'all', n (n blocks spread over depth) or indices '0,2,4' (one index: '5,')",
    "chunk_frames": "T_c, latent frames per chunk",
    "overlap_frames": "T_o, overlap frames in each chunk's softmax window",
    "causal": "causal linear set (needed for recurrent / stream generation)",
    "feature_map": "phi: a registered feature map (polynomial, hedgehog, relu, elu1)",
    "feature_map_kwargs": "JSON kwargs of the feature map, e.g. '{\"hidden_dim\": 64}'",
    "linear_scale": "a learnable per-head log-scale of the linear branch (docs/distill.md)",
    "normaliser": "joint normaliser: 'kernel' (fq.fk stands in for exp(s)) or 'paper' (stabiliser in the exponential "
                  "only); docs/attention.md",
}


def add_config_arguments(parser, *, names: dict[str, str] | None = None, title: str = "ReHyAt attention") -> None:
    """``--preset NAME`` plus one flag per ReHyAtConfig field in :data:`CLI_FIELDS` (default ``None`` = keep the
    preset's / config's value).  ``names`` renames flags (field -> dest), e.g. ``{"linear_scale":
    "learn_linear_scale"}``."""
    import argparse

    names = names or {}
    g = parser.add_argument_group(title)
    g.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()) + " (explicit flags override it)")
    types = {"chunk_frames": int, "overlap_frames": int}
    for name in CLI_FIELDS:
        dest = names.get(name, name)
        flag = "--" + dest.replace("_", "-")
        if name in ("causal", "linear_scale"):
            g.add_argument(flag, dest=dest, default=None, action=argparse.BooleanOptionalAction, help=_FLAG_HELP[name])
        else:
            g.add_argument(flag, dest=dest, default=None, type=types.get(name, str), help=_FLAG_HELP[name],
                           choices=NORMALISERS if name == "normaliser" else None)


def apply_overrides(config: ReHyAtConfig, preset: str | None = None, names: dict[str, str] | None = None,
                    **values) -> ReHyAtConfig:
    """``config``, then ``preset``'s architecture, then every non-``None`` value of ``values`` (keyed by field name,
    or by the renamed flag dest of ``names``; ``blocks`` in its CLI spelling is parsed)."""
    back = {v: k for k, v in (names or {}).items()}
    over = {}
    for key, v in values.items():
        name = back.get(key, key)
        if v is None or name not in CLI_FIELDS:
            continue
        over[name] = parse_blocks(v) if name == "blocks" else v
    return config.with_preset(preset).replace(**over)


def config_from_arguments(args, base: ReHyAtConfig | None = None, names: dict[str, str] | None = None
                          ) -> ReHyAtConfig:
    """The config a CLI asked for: ``base`` (or the defaults), then ``--preset``, then explicit flags."""
    dests = set(CLI_FIELDS) | set((names or {}).values())
    values = {k: v for k, v in vars(args).items() if k in dests}
    return apply_overrides(base or ReHyAtConfig(), getattr(args, "preset", None), names, **values)
