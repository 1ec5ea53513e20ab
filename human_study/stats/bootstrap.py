"""Prompt-clustered bootstrap: votes on one prompt are dependent, so whole prompts are resampled.

:func:`cluster_bootstrap_ci` uses ``scipy.stats.bootstrap`` on the cluster *indices*: each resample draws prompts with
replacement, sums their per-prompt counts and evaluates the statistic on the sums.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.stats import bootstrap


def cluster_counts(clusters: np.ndarray, categories: np.ndarray, n_categories: int) -> np.ndarray:
    """``[n_clusters, n_categories]`` count table from per-vote cluster labels and category codes."""
    _, inverse = np.unique(clusters, return_inverse=True)
    table = np.zeros((inverse.max() + 1 if len(inverse) else 0, n_categories))
    np.add.at(table, (inverse, categories), 1)
    return table


def cluster_bootstrap_ci(
    table: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
) -> tuple[float, float]:
    """CI of ``statistic(summed counts)`` over cluster resamples.

    ``table`` is ``[n_clusters, n_categories]``; ``statistic`` maps ``[..., n_categories]`` sums to ``[...]``.
    Returns (NaN, NaN) with fewer than two clusters.
    """
    if table.shape[0] < 2:
        return float("nan"), float("nan")

    def stat(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.moveaxis(np.asarray(idx, dtype=int), axis, -1)
        return statistic(table[idx].sum(axis=-2))

    res = bootstrap((np.arange(table.shape[0]),), stat, n_resamples=n_resamples, vectorized=True,
                    confidence_level=confidence, method=method, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def net_preference(sums: np.ndarray) -> np.ndarray:
    """(wins_a - wins_b) / n from ``[..., 3]`` (win, tie, loss) sums."""
    n = sums.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums[..., 0] - sums[..., 2]) / n
