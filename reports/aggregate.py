"""Adapter to ``evaluation.aggregate`` (VBench Quality/Semantic/Total, VBench-2.0 categories/Total).

The report never computes these itself: it imports ``evaluation.aggregate`` lazily and, when that is unavailable or
fails, the section shows per-dimension scores only with an explicit "aggregate unavailable" note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

FUNCTIONS = {"vbench": "vbench_total", "vbench2": "vbench2_total"}


@dataclass
class Aggregates:
    available: bool
    reason: str = ""
    scores: Dict[str, Dict[str, Optional[float]]] = field(default_factory=dict)   # label -> name -> value|None
    missing: Dict[str, Dict[str, List[str]]] = field(default_factory=dict)        # label -> name -> dims


def aggregate(suite: str, real_scores: Dict[str, Dict[str, Optional[float]]]) -> Aggregates:
    """``real_scores``: label -> {dimension: score, or None when the stored aggregate is not ``ok``}."""
    name = FUNCTIONS[suite]
    try:
        import importlib

        mod = importlib.import_module("evaluation.aggregate")
    except Exception as exc:  # noqa: BLE001 - any import failure means "unavailable", said in the report
        return Aggregates(False, f"evaluation.aggregate could not be imported ({type(exc).__name__}: {exc})")
    fn = getattr(mod, name, None)
    if fn is None:
        return Aggregates(False, f"evaluation.aggregate has no {name}()")
    out = Aggregates(True)
    try:
        for label, scores in real_scores.items():
            res = fn(scores)
            out.scores[label] = {k: (None if v is None else float(v)) for k, v in dict(res.scores).items()}
            out.missing[label] = {k: list(v) for k, v in dict(getattr(res, "missing", {}) or {}).items()}
    except Exception as exc:  # noqa: BLE001
        return Aggregates(False, f"evaluation.aggregate.{name}() failed ({type(exc).__name__}: {exc})")
    return out
