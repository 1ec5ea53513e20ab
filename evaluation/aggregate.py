"""VBench Quality/Semantic/Total and VBench-2.0 category/Total — all-or-nothing, never filling a missing score with 0.

Constants: VBench ``scripts/constant.py`` / ``cal_final_score.py`` and VBench-2.0 ``scripts/constant.py`` of the
upstream repository (github.com/Vchitect/VBench), as written out in docs/evaluation.md ("Quality / Semantic / Total",
"Category means and Total").  Only scores whose status is ``ok`` count as real; a ``non_standard``
score (e.g. temporal_flickering without the RAFT static filter, custom-input mode) is reported but keeps the aggregate
incomplete.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

# --------------------------------------------------------------------------------------------- VBench (v1)
NORMALIZE_DIC = {
    "subject_consistency": {"Min": 0.1462, "Max": 1.0},
    "background_consistency": {"Min": 0.2615, "Max": 1.0},
    "temporal_flickering": {"Min": 0.6293, "Max": 1.0},
    "motion_smoothness": {"Min": 0.706, "Max": 0.9975},
    "dynamic_degree": {"Min": 0.0, "Max": 1.0},
    "aesthetic_quality": {"Min": 0.0, "Max": 1.0},
    "imaging_quality": {"Min": 0.0, "Max": 1.0},
    "object_class": {"Min": 0.0, "Max": 1.0},
    "multiple_objects": {"Min": 0.0, "Max": 1.0},
    "human_action": {"Min": 0.0, "Max": 1.0},
    "color": {"Min": 0.0, "Max": 1.0},
    "spatial_relationship": {"Min": 0.0, "Max": 1.0},
    "scene": {"Min": 0.0, "Max": 0.8222},
    "appearance_style": {"Min": 0.0009, "Max": 0.2855},
    "temporal_style": {"Min": 0.0, "Max": 0.364},
    "overall_consistency": {"Min": 0.0, "Max": 0.364},
}
DIM_WEIGHT = {d: 1.0 for d in NORMALIZE_DIC}
DIM_WEIGHT["dynamic_degree"] = 0.5
QUALITY_LIST = ["subject_consistency", "background_consistency", "temporal_flickering", "motion_smoothness",
                "aesthetic_quality", "imaging_quality", "dynamic_degree"]
SEMANTIC_LIST = ["object_class", "multiple_objects", "human_action", "color", "spatial_relationship", "scene",
                 "appearance_style", "temporal_style", "overall_consistency"]
QUALITY_WEIGHT = 4.0
SEMANTIC_WEIGHT = 1.0

# --------------------------------------------------------------------------------------------- VBench-2.0
V2_CATEGORIES = {
    "Human Fidelity": ["Human_Anatomy", "Human_Identity", "Human_Clothes"],
    "Creativity": ["Diversity", "Composition"],
    "Controllability": ["Dynamic_Spatial_Relationship", "Dynamic_Attribute", "Motion_Order_Understanding",
                        "Human_Interaction", "Complex_Landscape", "Complex_Plot", "Camera_Motion"],
    "Commonsense": ["Motion_Rationality", "Instance_Preservation"],
    "Physics": ["Mechanics", "Thermotics", "Material", "Multi-View_Consistency"],
}
V2_DIMENSIONS = [d for dims in V2_CATEGORIES.values() for d in dims]


@dataclass
class AggregateResult:
    scores: dict[str, float | None]  # e.g. {"quality": .., "semantic": .., "total": ..}; None where incomplete
    missing: dict[str, list[str]] = field(default_factory=dict)  # aggregate name -> constituent dims without a real score
    normalized: dict[str, float] = field(default_factory=dict)  # v1: weighted normalised score per dimension

    @property
    def complete(self) -> bool:
        return all(v is not None for v in self.scores.values())

    def describe(self) -> list[str]:
        lines = []
        for name, val in self.scores.items():
            if val is None:
                miss = self.missing.get(name, [])
                shown = ", ".join(miss[:4]) + (f", … ({len(miss)} in all)" if len(miss) > 4 else "")
                lines.append(f"{name}: incomplete - missing {shown}")
            else:
                lines.append(f"{name}: {val:.6f}")
        return lines


def _real(scores: Mapping[str, float | None], dims: list[str]) -> list[str]:
    return [d for d in dims if scores.get(d) is None]


def normalized_v1(dimension: str, score: float) -> float:
    c = NORMALIZE_DIC[dimension]
    return (score - c["Min"]) / (c["Max"] - c["Min"]) * DIM_WEIGHT[dimension]


def vbench_total(scores: Mapping[str, float | None]) -> AggregateResult:
    """``scores``: dimension -> aggregate score (fraction, as vbench returns it) or None when not real."""
    norm = {d: normalized_v1(d, float(s)) for d, s in scores.items() if d in NORMALIZE_DIC and s is not None}
    miss_q = _real(scores, QUALITY_LIST)
    miss_s = _real(scores, SEMANTIC_LIST)
    quality = None if miss_q else sum(norm[d] for d in QUALITY_LIST) / sum(DIM_WEIGHT[d] for d in QUALITY_LIST)
    semantic = None if miss_s else sum(norm[d] for d in SEMANTIC_LIST) / sum(DIM_WEIGHT[d] for d in SEMANTIC_LIST)
    total = None
    if quality is not None and semantic is not None:
        total = (QUALITY_WEIGHT * quality + SEMANTIC_WEIGHT * semantic) / (QUALITY_WEIGHT + SEMANTIC_WEIGHT)
    return AggregateResult({"quality": quality, "semantic": semantic, "total": total},
                           {"quality": miss_q, "semantic": miss_s, "total": miss_q + miss_s}, norm)


def vbench2_total(scores: Mapping[str, float | None]) -> AggregateResult:
    out: dict[str, float | None] = {}
    missing: dict[str, list[str]] = {}
    for cat, dims in V2_CATEGORIES.items():
        miss = _real(scores, dims)
        missing[cat] = miss
        out[cat] = None if miss else sum(float(scores[d]) for d in dims) / len(dims)
    all_missing = [d for cat in V2_CATEGORIES for d in missing[cat]]
    out["Total"] = None if all_missing else sum(out[c] for c in V2_CATEGORIES) / len(V2_CATEGORIES)
    missing["Total"] = all_missing
    return AggregateResult(out, missing)


def real_scores_from_records(df, suite: str, model: str | None = None) -> dict[str, dict[str, float | None]]:
    """Per model: dimension -> aggregate score (``video`` null, status ``ok``) or None, from a ``load_records`` view."""
    sub = df[(df["suite"] == suite) & (df["video"].isna())]
    if model is not None:
        sub = sub[sub["model"] == model]
    out: dict[str, dict[str, float | None]] = {}
    for _, row in sub.iterrows():
        out.setdefault(row["model"], {})[row["dimension"]] = float(row["score"]) if row["status"] == "ok" else None
    return out


def aggregate_run(df) -> dict[str, dict[str, AggregateResult]]:
    """{suite: {model: AggregateResult}} for the vbench and vbench2 suites present in a records view."""
    res: dict[str, dict[str, AggregateResult]] = {}
    for suite, fn in (("vbench", vbench_total), ("vbench2", vbench2_total)):
        for model, scores in real_scores_from_records(df, suite).items():
            res.setdefault(suite, {})[model] = fn(scores)
    return res
