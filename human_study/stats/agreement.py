"""Inter- and intra-rater agreement per criterion.

Statistics are a registry (:data:`AGREEMENT_STATISTICS`), each ``f(core_votes, repeat_votes) -> (value, n_items,
n_raters)`` on one criterion's votes (canonical choices ``A``/``tie``/``B``):

- ``krippendorff_alpha_nominal`` / ``krippendorff_alpha_ordinal`` – ``krippendorff.alpha`` on the raters x items
  matrix (NaN where unrated; ordinal order B < tie < A);
- ``fleiss_kappa`` – statsmodels ``fleiss_kappa`` on the items rated by the most common number (>= 2) of raters
  (Fleiss needs equal raters per item);
- ``percent_agreement`` – share of agreeing rater pairs over all pairs within items;
- ``repeat_consistency`` – share of swapped-side repeats answered like the original (intra-rater).
"""

from __future__ import annotations

from typing import Callable

import krippendorff
import numpy as np
import pandas as pd
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

#: Canonical choice -> ordinal code (B < tie < A).
CODES = {"B": 0, "tie": 1, "A": 2}

Result = tuple[float, int, int]


def reliability_matrix(votes: pd.DataFrame) -> tuple[np.ndarray, list[str], list[str]]:
    """Raters x items matrix of choice codes (NaN = not rated)."""
    table = votes.assign(code=votes["choice"].map(CODES)).pivot_table(
        index="rater", columns="item", values="code", aggfunc="first")
    return table.to_numpy(dtype=float), list(table.index), list(table.columns)


def _pairable(votes: pd.DataFrame) -> pd.DataFrame:
    """Votes on items that at least two raters judged."""
    counts = votes.groupby("item")["rater"].transform("nunique")
    return votes[counts >= 2]


def _krippendorff(level: str) -> Callable[[pd.DataFrame, pd.DataFrame], Result]:
    def stat(core: pd.DataFrame, _repeats: pd.DataFrame) -> Result:
        data = _pairable(core)
        if data.empty:
            return float("nan"), 0, 0
        matrix, rater_ids, item_ids = reliability_matrix(data)
        values = matrix[~np.isnan(matrix)]
        if len(np.unique(values)) < 2:  # alpha is undefined without variation
            return float("nan"), len(item_ids), len(rater_ids)
        value = krippendorff.alpha(reliability_data=matrix, level_of_measurement=level,
                                   value_domain=sorted(CODES.values()))
        return float(value), len(item_ids), len(rater_ids)
    return stat


def _fleiss(core: pd.DataFrame, _repeats: pd.DataFrame) -> Result:
    per_item = core.groupby("item")["rater"].nunique()
    per_item = per_item[per_item >= 2]
    if per_item.empty:
        return float("nan"), 0, 0
    k = int(per_item.mode().max())
    chosen = per_item[per_item == k].index
    if len(chosen) < 2:
        return float("nan"), len(chosen), k
    data = core[core["item"].isin(chosen)]
    matrix = data.assign(code=data["choice"].map(CODES)).pivot_table(
        index="item", columns="rater", values="code", aggfunc="first")
    rows = [r[~np.isnan(r)].astype(int) for r in matrix.to_numpy(dtype=float)]
    table, _ = aggregate_raters(np.vstack(rows), n_cat=len(CODES))
    return float(fleiss_kappa(table, method="fleiss")), len(chosen), int(data["rater"].nunique())


def _percent_agreement(core: pd.DataFrame, _repeats: pd.DataFrame) -> Result:
    data = _pairable(core)
    agree = total = 0
    for _, group in data.groupby("item"):
        counts = group["choice"].value_counts().to_numpy()
        m = counts.sum()
        agree += int((counts * (counts - 1)).sum() // 2)
        total += int(m * (m - 1) // 2)
    value = agree / total if total else float("nan")
    return value, int(data["item"].nunique()), int(data["rater"].nunique())


def _repeat_consistency(core: pd.DataFrame, repeats: pd.DataFrame) -> Result:
    if repeats.empty:
        return float("nan"), 0, 0
    merged = repeats.merge(core[["rater", "item", "choice"]], left_on=["rater", "duplicate_of"],
                           right_on=["rater", "item"], suffixes=("", "_original"))
    if merged.empty:
        return float("nan"), 0, 0
    return (float((merged["choice"] == merged["choice_original"]).mean()), len(merged),
            int(merged["rater"].nunique()))


#: Agreement statistics by name.
AGREEMENT_STATISTICS: dict[str, Callable[[pd.DataFrame, pd.DataFrame], Result]] = {
    "krippendorff_alpha_nominal": _krippendorff("nominal"),
    "krippendorff_alpha_ordinal": _krippendorff("ordinal"),
    "fleiss_kappa": _fleiss,
    "percent_agreement": _percent_agreement,
    "repeat_consistency": _repeat_consistency,
}


def agreement_table(core: pd.DataFrame, repeats: pd.DataFrame, criteria: list[str]) -> pd.DataFrame:
    """``criterion, statistic, value, n_items, n_raters`` for every criterion and statistic."""
    rows = []
    for crit in criteria:
        c = core[core["criterion"] == crit]
        r = repeats[repeats["criterion"] == crit]
        for name, fn in AGREEMENT_STATISTICS.items():
            value, n_items, n_raters = fn(c, r)
            rows.append({"criterion": crit, "statistic": name, "value": value, "n_items": n_items,
                         "n_raters": n_raters})
    return pd.DataFrame(rows, columns=["criterion", "statistic", "value", "n_items", "n_raters"])
