"""Bradley–Terry ratings with ties, for two or more models, with prompt-clustered bootstrap CIs.

Tie models are a registry (:data:`TIE_MODELS`), each a weighted negative log-likelihood with gradient over
``theta`` (log-strengths) and, where the model has one, a tie parameter:

- ``davidson`` (default; Davidson 1970): ``P(i>j) = pi_i / D``, ``P(tie) = nu sqrt(pi_i pi_j) / D``,
  ``D = pi_i + pi_j + nu sqrt(pi_i pi_j)``. For two models the MLE is ``theta_a - theta_b = log(W/L)`` and
  ``nu = T / sqrt(W L)``.
- ``ties_half`` (arena convention): a tie counts as half a win and half a loss in the logistic BT likelihood;
  for two models ``theta_a - theta_b = log((W + T/2) / (L + T/2))``.

The fit is SciPy BFGS (analytic gradient) on the pair-aggregated counts with a tiny ridge (``reg``) so the ratings exist under
separation and are mean-centred (the likelihood is shift-invariant, the ridge picks the centred solution).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logsumexp


@dataclass(frozen=True)
class TieModel:
    """``nll(params, i, j, counts[:, 3]) -> (value, grad)``; ``n_extra`` trailing non-rating parameters."""

    nll: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int], tuple[float, np.ndarray]]
    n_extra: int
    scale: str


def _davidson_nll(params, i, j, counts, n):  # noqa: ANN001 - numpy arrays
    theta, eta = params[:n], params[n]
    ti, tj = theta[i], theta[j]
    te = eta + (ti + tj) / 2
    log_d = logsumexp(np.stack([ti, tj, te]), axis=0)
    w, t, l = counts[:, 0], counts[:, 1], counts[:, 2]
    tot = w + t + l
    ll = w * (ti - log_d) + t * (te - log_d) + l * (tj - log_d)
    pi, pj, pt = np.exp(ti - log_d), np.exp(tj - log_d), np.exp(te - log_d)
    g_i = w + t / 2 - tot * (pi + pt / 2)
    g_j = l + t / 2 - tot * (pj + pt / 2)
    grad = np.zeros(n + 1)
    np.add.at(grad, i, -g_i)
    np.add.at(grad, j, -g_j)
    grad[n] = -(t - tot * pt).sum()
    return -ll.sum(), grad


def _ties_half_nll(params, i, j, counts, n):  # noqa: ANN001 - numpy arrays
    theta = params[:n]
    d = theta[i] - theta[j]
    w, t, l = counts[:, 0], counts[:, 1], counts[:, 2]
    y, tot = w + t / 2, w + t + l
    ll = y * -np.logaddexp(0, -d) + (tot - y) * -np.logaddexp(0, d)
    g = y - tot * expit(d)
    grad = np.zeros(n)
    np.add.at(grad, i, -g)
    np.add.at(grad, j, g)
    return -ll.sum(), grad


#: Tie models by name.
TIE_MODELS: dict[str, TieModel] = {
    "davidson": TieModel(_davidson_nll, 1, "log-strength, Davidson ties, mean-centred"),
    "ties_half": TieModel(_ties_half_nll, 0, "log-strength, tie = half win, mean-centred"),
}


@dataclass(frozen=True)
class BTFit:
    ratings: np.ndarray  # mean-centred log-strengths
    extra: np.ndarray  # e.g. [log nu] for davidson


def fit_bradley_terry(pairs: np.ndarray, counts: np.ndarray, n_models: int, tie_model: str = "davidson",
                      reg: float = 1e-6) -> BTFit:
    """Fit ratings from ``pairs[:, 2]`` (model indices i, j) and ``counts[:, 3]`` (i wins, ties, j wins)."""
    model = TIE_MODELS[tie_model]
    i, j = pairs[:, 0].astype(int), pairs[:, 1].astype(int)
    counts = np.asarray(counts, float)

    def f(params: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = model.nll(params, i, j, counts, n_models)
        theta = params[:n_models]
        grad = grad.copy()
        grad[:n_models] += 2 * reg * theta
        return value + reg * theta @ theta, grad

    # BFGS: few parameters (models + tie parameter); SciPy's L-BFGS-B is ~10x slower per fit at this size
    res = minimize(f, np.zeros(n_models + model.n_extra), jac=True, method="BFGS", options={"gtol": 1e-8})
    theta = res.x[:n_models]
    return BTFit(theta - theta.mean(), res.x[n_models:])


def bootstrap_bradley_terry(cluster_pair_counts: np.ndarray, pairs: np.ndarray, n_models: int, *,
                            tie_model: str = "davidson", n_resamples: int = 500, confidence: float = 0.95,
                            seed: int = 0) -> tuple[BTFit, np.ndarray, np.ndarray]:
    """Point fit and percentile CIs from resampling clusters (prompts) with replacement.

    ``cluster_pair_counts`` is ``[n_clusters, n_pairs, 3]``. Returns ``(fit, ci_low[n_models], ci_high[n_models])``;
    CIs are NaN with fewer than two clusters.
    """
    fit = fit_bradley_terry(pairs, cluster_pair_counts.sum(axis=0), n_models, tie_model)
    n_clusters = cluster_pair_counts.shape[0]
    if n_clusters < 2 or n_resamples < 1:
        nan = np.full(n_models, np.nan)
        return fit, nan, nan
    rng = np.random.default_rng(seed)
    reps = np.empty((n_resamples, n_models))
    for r in range(n_resamples):
        idx = rng.integers(0, n_clusters, n_clusters)
        reps[r] = fit_bradley_terry(pairs, cluster_pair_counts[idx].sum(axis=0), n_models, tie_model).ratings
    tail = (1 - confidence) / 2
    return fit, np.quantile(reps, tail, axis=0), np.quantile(reps, 1 - tail, axis=0)


def rank_upper_bound(ci_low: np.ndarray, ci_high: np.ndarray) -> np.ndarray:
    """1 + number of models whose CI lower bound exceeds this model's upper bound ("Rank (UB)")."""
    return np.array([1 + int(np.sum(ci_low > hi)) for hi in ci_high])
