"""Rater quality (gold accuracy, swapped-repeat consistency, dwell) and the pre-registered exclusion rule.

Exclusion checks are a registry (:data:`EXCLUSION_RULES`) keyed by the field names of
:class:`human_study.config.Exclusion`; a check whose threshold is ``None`` is off, and a check without data
(e.g. no gold votes) never excludes.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Callable

import numpy as np
import pandas as pd

from ..config import Exclusion

#: Gold answer in the study file -> canonical choice.
GOLD_CHOICE = {"a": "A", "b": "B", "tie": "tie"}


def gold_outcomes(votes: pd.DataFrame) -> pd.DataFrame:
    """Gold votes that are scored (criterion listed by the gold item, or any when it lists none) with ``passed``."""
    gold = votes[votes["kind"] == "gold"].copy()
    if gold.empty:
        return gold.assign(passed=pd.Series(dtype=bool))
    listed = gold["gold_criteria"].fillna("").astype(str)
    applies = [not lst or crit in lst.split(",") for lst, crit in zip(listed, gold["criterion"])]
    gold = gold[applies]
    return gold.assign(passed=gold["choice"] == gold["gold_answer"].map(GOLD_CHOICE))


def rater_quality(votes: pd.DataFrame) -> pd.DataFrame:
    """Per rater: votes, gold scored/passed, repeats compared/consistent, median dwell (s)."""
    gold = gold_outcomes(votes)
    reps = votes[votes["kind"] == "repeat"].merge(
        votes[votes["kind"] == "core"][["rater", "item", "criterion", "choice"]],
        left_on=["rater", "duplicate_of", "criterion"], right_on=["rater", "item", "criterion"],
        suffixes=("", "_original"))
    rows = []
    for rater, group in votes.groupby("rater", sort=True):
        g = gold[gold["rater"] == rater]
        r = reps[reps["rater"] == rater]
        dwell = pd.to_numeric(group["dwell_ms"], errors="coerce").dropna()
        rows.append({
            "rater": rater,
            "n_votes": len(group),
            "gold_total": len(g),
            "gold_passed": int(g["passed"].sum()),
            "gold_accuracy": g["passed"].mean() if len(g) else np.nan,
            "repeat_total": len(r),
            "repeat_consistent": int((r["choice"] == r["choice_original"]).sum()),
            "repeat_consistency": (r["choice"] == r["choice_original"]).mean() if len(r) else np.nan,
            "median_dwell_s": dwell.median() / 1000 if len(dwell) else np.nan,
        })
    return pd.DataFrame(rows, columns=["rater", "n_votes", "gold_total", "gold_passed", "gold_accuracy",
                                       "repeat_total", "repeat_consistent", "repeat_consistency",
                                       "median_dwell_s"])


def _below(column: str, label: str) -> Callable[[pd.Series, float], str | None]:
    def rule(row: pd.Series, threshold: float) -> str | None:
        value = row[column]
        if pd.notna(value) and value < threshold:
            return f"{label} {value:.3g} < {threshold:g}"
        return None
    return rule


#: Exclusion checks by :class:`Exclusion` field: ``(rater row, threshold) -> reason or None``.
EXCLUSION_RULES: dict[str, Callable[[pd.Series, float], str | None]] = {
    "min_gold_accuracy": _below("gold_accuracy", "gold accuracy"),
    "min_repeat_consistency": _below("repeat_consistency", "repeat consistency"),
    "min_median_dwell_s": _below("median_dwell_s", "median dwell (s)"),
}


def apply_exclusion(quality: pd.DataFrame, exclusion: Exclusion) -> pd.DataFrame:
    """``quality`` plus ``excluded`` (bool) and ``reason`` ("; "-joined failed checks, empty when kept)."""
    thresholds = {k: v for k, v in asdict(exclusion).items() if v is not None}
    unknown = set(thresholds) - set(EXCLUSION_RULES)
    if unknown:
        raise ValueError(f"unknown exclusion checks {sorted(unknown)}")
    reasons = []
    for _, row in quality.iterrows():
        failed = [r for name, thr in thresholds.items() if (r := EXCLUSION_RULES[name](row, thr))]
        reasons.append("; ".join(failed))
    out = quality.copy()
    out["excluded"] = [bool(r) for r in reasons]
    out["reason"] = reasons
    return out
