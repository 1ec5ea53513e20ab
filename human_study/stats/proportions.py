"""Win / tie / loss for one model pair and criterion: shares with confidence intervals and the exact sign test.

Confidence-interval methods are a registry (:data:`CI_METHODS`): ``goodman`` (simultaneous multinomial intervals for
the three shares, statsmodels ``multinomial_proportions_confint``; the default) and ``wilson`` (one Wilson interval
per share, statsmodels ``proportion_confint``; not simultaneous). The sign test is SciPy's exact ``binomtest`` on the
decisive votes (ties dropped), the decisive share ``W/(W+L)`` gets a Wilson interval.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.stats import binomtest
from statsmodels.stats.proportion import multinomial_proportions_confint, proportion_confint


def _goodman(counts: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    ci = multinomial_proportions_confint(counts, alpha=alpha, method="goodman")
    return ci[:, 0], ci[:, 1]


def _wilson(counts: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    low, high = proportion_confint(counts, counts.sum(), alpha=alpha, method="wilson")
    return np.asarray(low, float), np.asarray(high, float)


#: Interval methods for the (win, tie, loss) shares: ``counts[3], alpha -> (low[3], high[3])``.
CI_METHODS: dict[str, Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]]] = {
    "goodman": _goodman,
    "wilson": _wilson,
}


def sign_test(wins_a: int, wins_b: int) -> float:
    """Two-sided exact sign test on the decisive votes (``binomtest(wins_a, wins_a + wins_b, 0.5)``); NaN if none."""
    n = wins_a + wins_b
    return float(binomtest(wins_a, n, 0.5).pvalue) if n else float("nan")


def wilson_interval(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials (NaN, NaN when ``n == 0``)."""
    if n == 0:
        return float("nan"), float("nan")
    low, high = proportion_confint(k, n, alpha=alpha, method="wilson")
    return float(low), float(high)


def win_tie_loss(wins_a: int, ties: int, wins_b: int, ci_method: str = "goodman", alpha: float = 0.05) -> dict:
    """Counts, shares, per-share CIs, decisive share (Wilson), ties-as-half win rate, net preference, sign test.

    >>> row = win_tie_loss(30, 20, 15)
    >>> round(row["sign_test_p"], 4)
    0.0357
    """
    counts = np.array([wins_a, ties, wins_b], dtype=float)
    n = int(counts.sum())
    row = {"n": n, "wins_a": int(wins_a), "ties": int(ties), "wins_b": int(wins_b), "ci_method": ci_method}
    if n:
        p = counts / n
        low, high = CI_METHODS[ci_method](counts, alpha)
    else:
        p = low = high = np.full(3, np.nan)
    for i, name in enumerate(("a", "tie", "b")):
        row[f"p_{name}"] = float(p[i])
        row[f"ci_low_{name}"] = float(low[i])
        row[f"ci_high_{name}"] = float(high[i])
    decisive = int(wins_a + wins_b)
    row["decisive"] = decisive
    row["decisive_share_a"] = wins_a / decisive if decisive else float("nan")
    row["decisive_ci_low"], row["decisive_ci_high"] = wilson_interval(int(wins_a), decisive, alpha)
    row["win_rate_half_ties"] = (wins_a + ties / 2) / n if n else float("nan")
    row["net_pref"] = float(p[0] - p[2]) if n else float("nan")
    row["sign_test_p"] = sign_test(int(wins_a), int(wins_b))
    return row
