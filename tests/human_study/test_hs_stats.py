"""Statistics against hand-computed values and independent library results."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.optimize import check_grad
from scipy.stats import binom, binomtest, chi2, norm
from statsmodels.stats.descriptivestats import sign_test as sm_sign_test

from human_study.config import Exclusion
from human_study.stats.agreement import AGREEMENT_STATISTICS, agreement_table
from human_study.stats.bootstrap import cluster_bootstrap_ci, net_preference
from human_study.stats.bradley_terry import TIE_MODELS, fit_bradley_terry, rank_upper_bound
from human_study.stats.proportions import win_tie_loss
from human_study.stats.quality import apply_exclusion, rater_quality
from human_study.stats.tables import AnalysisConfig, analyse, position_bias_table

Z = norm.ppf(0.975)


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    centre = (k + Z**2 / 2) / (n + Z**2)
    half = Z / (n + Z**2) * math.sqrt(k * (n - k) / n + Z**2 / 4)
    return centre - half, centre + half


def goodman_by_hand(counts: list[int], alpha: float = 0.05) -> list[tuple[float, float]]:
    """Goodman (1965) simultaneous intervals: chi2 quantile at 1 - alpha/k with one degree of freedom."""
    n, k = sum(counts), len(counts)
    a = chi2.ppf(1 - alpha / k, 1)
    out = []
    for c in counts:
        root = math.sqrt(a * (a + 4 * c * (n - c) / n))
        out.append(((a + 2 * c - root) / (2 * (n + a)), (a + 2 * c + root) / (2 * (n + a))))
    return out


# ------------------------------------------------------------------------------------------------ win / tie / loss


def test_shares_and_goodman_intervals_match_hand_formula():
    row = win_tie_loss(30, 20, 15)
    assert (row["n"], row["p_a"], row["p_tie"], row["p_b"]) == (65, 30 / 65, 20 / 65, 15 / 65)
    for (low, high), name in zip(goodman_by_hand([30, 20, 15]), ("a", "tie", "b")):
        assert row[f"ci_low_{name}"] == pytest.approx(low, abs=1e-12)
        assert row[f"ci_high_{name}"] == pytest.approx(high, abs=1e-12)
    assert row["ci_method"] == "goodman"
    assert row["net_pref"] == pytest.approx(15 / 65)
    assert row["win_rate_half_ties"] == pytest.approx(40 / 65)


def test_wilson_method_and_decisive_share_match_hand_formula_and_scipy():
    row = win_tie_loss(30, 20, 15, ci_method="wilson")
    for k, name in ((30, "a"), (20, "tie"), (15, "b")):
        low, high = wilson_by_hand(k, 65)
        assert row[f"ci_low_{name}"] == pytest.approx(low, abs=1e-12)
        assert row[f"ci_high_{name}"] == pytest.approx(high, abs=1e-12)
    low, high = wilson_by_hand(30, 45)
    assert (row["decisive_ci_low"], row["decisive_ci_high"]) == (pytest.approx(low), pytest.approx(high))
    sci = binomtest(30, 45).proportion_ci(method="wilson")
    assert (row["decisive_ci_low"], row["decisive_ci_high"]) == (pytest.approx(sci.low), pytest.approx(sci.high))


def test_sign_test_equals_hand_value_and_statsmodels_sign_test():
    # 9 wins vs 1 loss: p = 2 * (C(10,9) + C(10,10)) / 2^10 = 22 / 1024, ties ignored
    assert win_tie_loss(9, 50, 1)["sign_test_p"] == pytest.approx(22 / 1024, abs=1e-15)
    row = win_tie_loss(30, 20, 15)
    _, p = sm_sign_test(np.array([1] * 30 + [0] * 20 + [-1] * 15), mu0=0)
    assert row["sign_test_p"] == pytest.approx(p)
    assert row["sign_test_p"] == pytest.approx(0.0357, abs=5e-5)
    assert math.isnan(win_tie_loss(0, 5, 0)["sign_test_p"])


def test_paper_500_pair_worked_example():
    """27.6 % / 43.4 % / 29.0 % of 500 pairs = 138 / 217 / 145 (the paper's 43.5 % is a rounding of 217.5)."""
    row = win_tie_loss(138, 217, 145)
    assert (row["p_a"], row["p_tie"], row["p_b"]) == (0.276, 0.434, 0.29)
    assert row["sign_test_p"] == pytest.approx(binomtest(138, 283).pvalue)
    assert row["sign_test_p"] == pytest.approx(0.7214, abs=1e-4)
    assert row["decisive_share_a"] == pytest.approx(138 / 283)
    assert (round(row["decisive_ci_low"], 3), round(row["decisive_ci_high"], 3)) == (0.430, 0.546)
    assert (round(row["ci_low_a"], 3), round(row["ci_high_a"], 3)) == (0.231, 0.326)
    assert (round(row["ci_low_tie"], 3), round(row["ci_high_tie"], 3)) == (0.382, 0.488)
    assert (round(row["ci_low_b"], 3), round(row["ci_high_b"], 3)) == (0.244, 0.341)
    # the reference's reading 138 / 218 / 145 (n = 501) leaves the sign test unchanged: ties do not enter it
    assert win_tie_loss(138, 218, 145)["sign_test_p"] == row["sign_test_p"]


# ------------------------------------------------------------------------------------------------------ bootstrap


def test_prompt_bootstrap_matches_exact_cluster_distribution():
    """10 prompts, 5 all-win and 5 all-loss: resampled net preference = (2X - 10) / 10 with X ~ Bin(10, 1/2).

    Its 2.5 % / 97.5 % quantiles are -0.6 / 0.6 (P(X <= 1) = 0.011 < 0.025 < P(X <= 2) = 0.055); an
    independent-votes interval would be far narrower.
    """
    table = np.array([[10, 0, 0]] * 5 + [[0, 0, 10]] * 5, dtype=float)
    assert binom.cdf(1, 10, 0.5) < 0.025 < binom.cdf(2, 10, 0.5)
    low, high = cluster_bootstrap_ci(table, net_preference, n_resamples=4000, seed=1)
    assert (low, high) == (pytest.approx(-0.6), pytest.approx(0.6))
    # identical prompts: no between-prompt variation, a degenerate interval at the estimate
    same = np.array([[3, 1, 1]] * 6, dtype=float)
    assert cluster_bootstrap_ci(same, net_preference, n_resamples=200) == (pytest.approx(0.4), pytest.approx(0.4))
    assert all(math.isnan(x) for x in cluster_bootstrap_ci(same[:1], net_preference))


# --------------------------------------------------------------------------------------------------- Bradley–Terry


def test_davidson_two_models_closed_form():
    fit = fit_bradley_terry(np.array([[0, 1]]), np.array([[30, 20, 15]]), 2, "davidson")
    assert fit.ratings[0] - fit.ratings[1] == pytest.approx(math.log(30 / 15), abs=1e-4)
    assert fit.ratings.sum() == pytest.approx(0, abs=1e-9)
    assert math.exp(fit.extra[0]) == pytest.approx(20 / math.sqrt(30 * 15), abs=1e-4)


def test_ties_half_two_models_closed_form():
    fit = fit_bradley_terry(np.array([[0, 1]]), np.array([[30, 20, 15]]), 2, "ties_half")
    assert fit.ratings[0] - fit.ratings[1] == pytest.approx(math.log(40 / 25), abs=1e-4)


def test_ties_half_equals_statsmodels_binomial_glm():
    pairs = np.array([[0, 1], [0, 2], [1, 2], [0, 3], [2, 3]])
    counts = np.array([[20, 10, 10], [25, 5, 10], [12, 14, 14], [30, 4, 6], [18, 8, 14]], dtype=float)
    fit = fit_bradley_terry(pairs, counts, 4, "ties_half")
    design = np.zeros((len(pairs), 3))  # model 0 is the reference (coefficient fixed at 0)
    for r, (i, j) in enumerate(pairs):
        if i:
            design[r, i - 1] = 1
        design[r, j - 1] = -1
    n = counts.sum(axis=1)
    y = (counts[:, 0] + counts[:, 1] / 2) / n
    glm = sm.GLM(y, design, family=sm.families.Binomial(), var_weights=n).fit()
    ours = fit.ratings[1:] - fit.ratings[0]
    np.testing.assert_allclose(ours, glm.params, atol=1e-4)


def test_davidson_gradient_and_score_equations_three_models():
    pairs = np.array([[0, 1], [0, 2], [1, 2]])
    counts = np.array([[20, 10, 10], [25, 5, 10], [12, 14, 14]], dtype=float)
    i, j = pairs[:, 0], pairs[:, 1]
    nll = TIE_MODELS["davidson"].nll
    x0 = np.array([0.3, -0.2, 0.1, -0.5])
    assert check_grad(lambda p: nll(p, i, j, counts, 3)[0], lambda p: nll(p, i, j, counts, 3)[1], x0) < 1e-5
    fit = fit_bradley_terry(pairs, counts, 3, "davidson", reg=0.0)
    theta, nu = fit.ratings, math.exp(fit.extra[0])
    pi = np.exp(theta)
    d = pi[i] + pi[j] + nu * np.sqrt(pi[i] * pi[j])
    p_win, p_tie = pi[i] / d, nu * np.sqrt(pi[i] * pi[j]) / d
    n = counts.sum(axis=1)
    # MLE score equations: expected ties = observed ties; expected (wins + ties/2) per model = observed
    assert (n * p_tie).sum() == pytest.approx(counts[:, 1].sum(), rel=1e-5)
    for m in range(3):
        observed = expected = 0.0
        for r, (a, b) in enumerate(pairs):
            if m == a:
                observed += counts[r, 0] + counts[r, 1] / 2
                expected += n[r] * (p_win[r] + p_tie[r] / 2)
            elif m == b:
                observed += counts[r, 2] + counts[r, 1] / 2
                expected += n[r] * (1 - p_win[r] - p_tie[r] / 2)
        assert expected == pytest.approx(observed, rel=1e-5)


def test_rank_upper_bound():
    low, high = np.array([1.0, 0.0, -2.0]), np.array([2.0, 1.5, -1.5])
    assert list(rank_upper_bound(low, high)) == [1, 1, 3]


# ------------------------------------------------------------------------------------------------------ agreement

# rater 1: A, A, B, tie; rater 2: A, B, B, tie (units u1..u4)
AGREE_VOTES = pd.DataFrame({
    "rater": ["r1"] * 4 + ["r2"] * 4,
    "item": ["u1", "u2", "u3", "u4"] * 2,
    "choice": ["A", "A", "B", "tie", "A", "B", "B", "tie"],
})
NO_REPEATS = pd.DataFrame(columns=["rater", "item", "choice", "duplicate_of"])


def test_krippendorff_alpha_nominal_by_hand():
    """Coincidences: o_AA = 2, o_AB = o_BA = 1, o_BB = 2, o_tt = 2; n_A = n_B = 3, n_t = 2, n = 8.

    alpha = 1 - (n - 1) * sum_{c!=k} o_ck / sum_{c!=k} n_c n_k = 1 - 7 * 2 / 42 = 2/3.
    """
    value, n_items, n_raters = AGREEMENT_STATISTICS["krippendorff_alpha_nominal"](AGREE_VOTES, NO_REPEATS)
    assert value == pytest.approx(2 / 3)
    assert (n_items, n_raters) == (4, 2)


def test_fleiss_kappa_and_percent_agreement_by_hand():
    """P_i = 1, 0, 1, 1 -> P_bar = 3/4; p = (3/8, 3/8, 2/8) -> P_e = 22/64; kappa = (3/4 - 22/64)/(1 - 22/64) = 13/21."""
    kappa, n_items, _ = AGREEMENT_STATISTICS["fleiss_kappa"](AGREE_VOTES, NO_REPEATS)
    assert kappa == pytest.approx(13 / 21)
    assert n_items == 4
    assert AGREEMENT_STATISTICS["percent_agreement"](AGREE_VOTES, NO_REPEATS)[0] == pytest.approx(0.75)


def test_ordinal_alpha_penalises_distant_disagreement_more():
    near = AGREE_VOTES.copy()
    far = AGREE_VOTES.copy()
    near.loc[5, "choice"] = "tie"  # u2: A vs tie (adjacent)
    far.loc[5, "choice"] = "B"     # u2: A vs B (opposite ends)
    stat = AGREEMENT_STATISTICS["krippendorff_alpha_ordinal"]
    assert stat(near, NO_REPEATS)[0] > stat(far, NO_REPEATS)[0]


def test_agreement_undefined_without_overlap_is_nan():
    single = AGREE_VOTES[AGREE_VOTES["rater"] == "r1"].assign(criterion="overall")
    table = agreement_table(single, NO_REPEATS.assign(criterion=[]), ["overall"])
    assert table.set_index("statistic")["value"].isna().all()


# ------------------------------------------------------------------------------------------ quality and exclusion


def _votes(rows: list[dict]) -> pd.DataFrame:
    base = {"kind": "core", "prompt": "p0", "model_a": "m1", "model_b": "m2", "criterion": "overall",
            "shown_left": "A", "dwell_ms": 5000, "gold_answer": None, "gold_criteria": "", "duplicate_of": None}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_gold_accuracy_threshold_and_excluded_raters_leave_every_table():
    rows = []
    for rater, gold_choices in (("good", "AAAB"), ("bad", "AABB")):  # 3/4 and 2/4 correct (answer a)
        for g, choice in enumerate(gold_choices):
            rows.append({"rater": rater, "item": f"g{g}", "kind": "gold", "choice": choice, "gold_answer": "a",
                         "model_a": "gold:a", "model_b": "gold:b", "prompt": f"g{g}"})
        for p in range(3):
            rows.append({"rater": rater, "item": f"i{p}", "prompt": f"p{p}", "choice": "A" if rater == "good" else "B"})
    votes = _votes(rows)
    quality = apply_exclusion(rater_quality(votes), Exclusion(min_gold_accuracy=0.75)).set_index("rater")
    assert (quality.loc["good", "gold_total"], quality.loc["good", "gold_passed"]) == (4, 3)
    assert not quality.loc["good", "excluded"]
    assert quality.loc["bad", "excluded"] and "gold accuracy 0.5 < 0.75" in quality.loc["bad", "reason"]
    cfg = AnalysisConfig(study="s", models=["m1", "m2"], criteria=["overall"], n_boot=100, bt_boot=20)
    res = analyse(votes, cfg)
    wtl = res.win_tie_loss.iloc[0]
    assert (wtl["wins_a"], wtl["ties"], wtl["wins_b"]) == (3, 0, 0)  # only the kept rater's core votes
    assert res.summary["n_excluded"] == 1 and res.summary["n_votes_analysed"] == 3
    assert res.raters.set_index("rater").loc["bad", "excluded"]


def test_gold_scoring_respects_listed_criteria():
    votes = _votes([
        {"rater": "r", "item": "g", "kind": "gold", "criterion": "overall", "choice": "A", "gold_answer": "a",
         "gold_criteria": "overall"},
        {"rater": "r", "item": "g", "kind": "gold", "criterion": "motion", "choice": "B", "gold_answer": "a",
         "gold_criteria": "overall"},
    ])
    q = rater_quality(votes).iloc[0]
    assert (q["gold_total"], q["gold_passed"]) == (1, 1)


def test_repeat_consistency_and_dwell_rules():
    votes = _votes([
        {"rater": "r", "item": "i1", "choice": "A", "dwell_ms": 1000},
        {"rater": "r", "item": "i2", "choice": "tie", "dwell_ms": 1000},
        {"rater": "r", "item": "x1", "kind": "repeat", "duplicate_of": "i1", "choice": "A", "dwell_ms": 1000},
        {"rater": "r", "item": "x2", "kind": "repeat", "duplicate_of": "i2", "choice": "B", "dwell_ms": 1000},
    ])
    q = apply_exclusion(rater_quality(votes), Exclusion(min_gold_accuracy=0.75, min_repeat_consistency=0.6,
                                                        min_median_dwell_s=2.0)).iloc[0]
    assert (q["repeat_total"], q["repeat_consistent"]) == (2, 1)
    assert q["excluded"] and "repeat consistency" in q["reason"] and "dwell" in q["reason"]
    assert "gold" not in q["reason"]  # no gold votes: the gold check cannot exclude


# ------------------------------------------------------------------------------------------- tables end to end


def test_position_bias_counts_displayed_side():
    # 8 decisive votes: 7 for the left video; 2 ties ignored
    rows = [{"rater": "r", "item": f"i{k}", "choice": "A", "shown_left": "A"} for k in range(4)]
    rows += [{"rater": "r", "item": f"j{k}", "choice": "B", "shown_left": "B"} for k in range(3)]
    rows += [{"rater": "r", "item": "k", "choice": "A", "shown_left": "B"}]
    rows += [{"rater": "r", "item": f"t{k}", "choice": "tie", "shown_left": "A"} for k in range(2)]
    row = position_bias_table(_votes(rows), ["overall"]).iloc[0]
    assert (row["n"], row["left_chosen"], row["right_chosen"]) == (8, 7, 1)
    assert row["p_value"] == pytest.approx(2 * (8 + 1) / 256)


def test_holm_over_criteria_matches_hand_adjustment():
    rows = []
    for crit, (w, l) in {"c1": (12, 1), "c2": (9, 3), "c3": (8, 6)}.items():
        for k in range(w):
            rows.append({"rater": f"r{k}", "item": f"{crit}w{k}", "prompt": f"p{k}", "criterion": crit, "choice": "A"})
        for k in range(l):
            rows.append({"rater": f"q{k}", "item": f"{crit}l{k}", "prompt": f"p{k}", "criterion": crit, "choice": "B"})
    cfg = AnalysisConfig(study="s", models=["m1", "m2"], criteria=["c1", "c2", "c3"], n_boot=100, bt_boot=20)
    wtl = analyse(_votes(rows), cfg).win_tie_loss.set_index("criterion")
    p = {c: binomtest(*wl, p=0.5).pvalue for c, wl in {"c1": (12, 13), "c2": (9, 12), "c3": (8, 14)}.items()}
    ordered = sorted(p, key=p.get)
    adjusted, running = {}, 0.0
    for rank, c in enumerate(ordered):
        running = max(running, min(1.0, (len(p) - rank) * p[c]))
        adjusted[c] = running
    for c in p:
        assert wtl.loc[c, "sign_test_p"] == pytest.approx(p[c])
        assert wtl.loc[c, "sign_test_p_holm"] == pytest.approx(adjusted[c])


def test_analyse_orients_pairs_by_study_order():
    votes = _votes([{"rater": "r", "item": "i", "model_a": "m2", "model_b": "m1", "choice": "A", "shown_left": "A"}])
    cfg = AnalysisConfig(study="s", models=["m1", "m2"], criteria=["overall"], n_boot=50, bt_boot=10)
    row = analyse(votes, cfg).win_tie_loss.iloc[0]
    assert (row["model_a"], row["model_b"], row["wins_a"], row["wins_b"]) == ("m1", "m2", 0, 1)
