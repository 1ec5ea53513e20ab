"""All statistics of a study as the report tables (``docs/interfaces.md``, "Human-study outputs").

Which votes feed which table:

- raters are scored on gold items and swapped repeats; raters failing the pre-registered exclusion rule are
  dropped from every other table (``raters.csv`` lists them with the reason);
- win/tie/loss and Bradley–Terry use *core* items only (gold items have a planted answer; repeats would count one
  rater's judgement twice);
- position bias uses core and repeat votes (repeats flip the sides, which is what the test is about);
- agreement uses core votes (inter-rater) and repeats (intra-rater).

Holm's correction (statsmodels ``multipletests``) runs over all sign tests of the table (every criterion x pair).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from statsmodels.stats.multitest import multipletests

from ..config import Exclusion, Study
from .agreement import agreement_table
from .bootstrap import cluster_bootstrap_ci, net_preference
from .bradley_terry import TIE_MODELS, bootstrap_bradley_terry, rank_upper_bound
from .proportions import win_tie_loss, wilson_interval
from .quality import apply_exclusion, rater_quality

WTL_COLUMNS = [
    "criterion", "model_a", "model_b", "n", "wins_a", "ties", "wins_b", "p_a", "p_tie", "p_b", "ci_low_a",
    "ci_high_a", "ci_low_tie", "ci_high_tie", "ci_low_b", "ci_high_b", "ci_method", "sign_test_p",
    "sign_test_p_holm", "net_pref", "net_pref_boot_low", "net_pref_boot_high", "decisive", "decisive_share_a",
    "decisive_ci_low", "decisive_ci_high", "win_rate_half_ties", "n_prompts",
]
BT_COLUMNS = ["criterion", "model", "rating", "ci_low", "ci_high", "scale", "rank_ub", "tie_nu", "n_votes"]
POSITION_COLUMNS = ["criterion", "n", "left_chosen", "right_chosen", "p_value", "share_left", "ci_low", "ci_high"]
RATER_COLUMNS = ["rater", "n_votes", "gold_total", "gold_passed", "excluded", "reason", "gold_accuracy",
                 "repeat_total", "repeat_consistent", "repeat_consistency", "median_dwell_s"]
CHOICE_INDEX = {"A": 0, "tie": 1, "B": 2}


@dataclass(frozen=True)
class AnalysisConfig:
    """What to compute and how (defaults: Goodman CIs, 95 %, Davidson ties, 2000 / 500 bootstrap resamples)."""

    study: str
    models: list[str]
    criteria: list[str]
    exclusion: Exclusion = field(default_factory=Exclusion)
    ci_method: str = "goodman"
    alpha: float = 0.05
    n_boot: int = 2000
    bt_boot: int = 500
    tie_model: str = "davidson"
    seed: int = 0

    @classmethod
    def from_study(cls, study: Study, **overrides) -> "AnalysisConfig":
        return cls(study=study.name, models=study.model_names, criteria=study.criterion_ids,
                   exclusion=study.exclusion, seed=study.seed, **overrides)


@dataclass
class StudyResults:
    win_tie_loss: pd.DataFrame
    bradley_terry: pd.DataFrame
    agreement: pd.DataFrame
    position_bias: pd.DataFrame
    raters: pd.DataFrame
    summary: dict

    def write(self, out_dir: str | Path) -> Path:
        """Write the CSV tables and ``summary.json`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("win_tie_loss", "bradley_terry", "agreement", "position_bias", "raters"):
            getattr(self, name).to_csv(out / f"{name}.csv", index=False)
        (out / "summary.json").write_text(json.dumps(self.summary, indent=2, default=str) + "\n")
        return out


def canonicalise(votes: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """Orient every vote so ``model_a`` comes first in the study's model order (flipping the choice if needed)."""
    order = {m: i for i, m in enumerate(models)}
    v = votes.copy()
    swap = np.array([order.get(a, -1) > order.get(b, -1) for a, b in zip(v["model_a"], v["model_b"])], dtype=bool)
    if swap.any():
        v.loc[swap, ["model_a", "model_b"]] = v.loc[swap, ["model_b", "model_a"]].to_numpy()
        v.loc[swap, "choice"] = v.loc[swap, "choice"].map({"A": "B", "B": "A", "tie": "tie"})
        v.loc[swap, "shown_left"] = v.loc[swap, "shown_left"].map({"A": "B", "B": "A"})
    return v


def _wtl_table(core: pd.DataFrame, cfg: AnalysisConfig) -> pd.DataFrame:
    rows = []
    for crit in cfg.criteria:
        for ia, a in enumerate(cfg.models):
            for b in cfg.models[ia + 1:]:
                sel = core[(core["criterion"] == crit) & (core["model_a"] == a) & (core["model_b"] == b)]
                codes = sel["choice"].map(CHOICE_INDEX).to_numpy(dtype=int)
                counts = np.bincount(codes, minlength=3)
                row = {"criterion": crit, "model_a": a, "model_b": b,
                       **win_tie_loss(*counts, ci_method=cfg.ci_method, alpha=cfg.alpha)}
                table = _prompt_table(sel["prompt"].to_numpy(), codes)
                row["n_prompts"] = table.shape[0]
                row["net_pref_boot_low"], row["net_pref_boot_high"] = cluster_bootstrap_ci(
                    table, net_preference, n_resamples=cfg.n_boot, confidence=1 - cfg.alpha, seed=cfg.seed)
                rows.append(row)
    df = pd.DataFrame(rows, columns=[c for c in WTL_COLUMNS if c != "sign_test_p_holm"])
    df["sign_test_p_holm"] = np.nan
    ok = df["sign_test_p"].notna().to_numpy()
    if ok.any():
        df.loc[ok, "sign_test_p_holm"] = multipletests(df.loc[ok, "sign_test_p"], alpha=cfg.alpha,
                                                       method="holm")[1]
    return df[WTL_COLUMNS]


def _prompt_table(prompts: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``[n_prompts, 3]`` (A, tie, B) counts."""
    if len(prompts) == 0:
        return np.zeros((0, 3))
    _, inv = np.unique(prompts, return_inverse=True)
    table = np.zeros((inv.max() + 1, 3))
    np.add.at(table, (inv, codes), 1)
    return table


def _bt_table(core: pd.DataFrame, cfg: AnalysisConfig) -> pd.DataFrame:
    rows = []
    index = {m: i for i, m in enumerate(cfg.models)}
    pairs = np.array([(i, j) for i in range(len(cfg.models)) for j in range(i + 1, len(cfg.models))])
    pair_index = {tuple(p): k for k, p in enumerate(pairs)}
    for crit in cfg.criteria:
        sel = core[core["criterion"] == crit]
        if sel.empty:
            continue
        prompts, inv = np.unique(sel["prompt"].to_numpy(), return_inverse=True)
        table = np.zeros((len(prompts), len(pairs), 3))
        k = [pair_index[(index[a], index[b])] for a, b in zip(sel["model_a"], sel["model_b"])]
        np.add.at(table, (inv, k, sel["choice"].map(CHOICE_INDEX).to_numpy(dtype=int)), 1)
        fit, low, high = bootstrap_bradley_terry(table, pairs, len(cfg.models), tie_model=cfg.tie_model,
                                                 n_resamples=cfg.bt_boot, confidence=1 - cfg.alpha, seed=cfg.seed)
        ranks = rank_upper_bound(low, high)
        nu = float(np.exp(fit.extra[0])) if len(fit.extra) else np.nan
        for m, i in index.items():
            n_votes = int(((sel["model_a"] == m) | (sel["model_b"] == m)).sum())
            rows.append({"criterion": crit, "model": m, "rating": fit.ratings[i], "ci_low": low[i],
                         "ci_high": high[i], "scale": TIE_MODELS[cfg.tie_model].scale, "rank_ub": ranks[i],
                         "tie_nu": nu, "n_votes": n_votes})
    return pd.DataFrame(rows, columns=BT_COLUMNS)


def position_bias_table(votes: pd.DataFrame, criteria: list[str], alpha: float = 0.05) -> pd.DataFrame:
    """Per criterion: decisive votes, how many chose the left video, exact binomial test against 1/2."""
    rows = []
    for crit in criteria:
        sel = votes[(votes["criterion"] == crit) & (votes["choice"] != "tie")]
        left = int((sel["choice"] == sel["shown_left"]).sum())
        n = len(sel)
        low, high = wilson_interval(left, n, alpha)
        rows.append({"criterion": crit, "n": n, "left_chosen": left, "right_chosen": n - left,
                     "p_value": float(binomtest(left, n, 0.5).pvalue) if n else np.nan,
                     "share_left": left / n if n else np.nan, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=POSITION_COLUMNS)


def analyse(votes: pd.DataFrame, cfg: AnalysisConfig) -> StudyResults:
    """Compute every table from a votes frame (:data:`human_study.store.VOTE_COLUMNS`)."""
    raters = apply_exclusion(rater_quality(votes), cfg.exclusion)
    kept = votes[~votes["rater"].isin(raters.loc[raters["excluded"], "rater"])]
    compared = canonicalise(kept[kept["kind"].isin(["core", "repeat"])], cfg.models)
    core = compared[compared["kind"] == "core"]
    repeats = compared[compared["kind"] == "repeat"]
    summary = {
        "study": cfg.study,
        "n_votes": int(len(votes)),
        "n_raters": int(votes["rater"].nunique()),
        "n_excluded": int(raters["excluded"].sum()),
        "models": list(cfg.models),
        "criteria": list(cfg.criteria),
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_votes_analysed": int(len(core)),
        "n_items_analysed": int(core["item"].nunique()),
        "n_prompts_analysed": int(core["prompt"].nunique()),
        "ci_method": cfg.ci_method,
        "confidence": 1 - cfg.alpha,
        "bootstrap": {"unit": "prompt", "net_pref_resamples": cfg.n_boot, "bt_resamples": cfg.bt_boot,
                      "seed": cfg.seed, "method": "percentile"},
        "bradley_terry_tie_model": cfg.tie_model,
        "multiple_testing": "holm over all criterion x pair sign tests",
        "exclusion_rule": {k: v for k, v in vars(cfg.exclusion).items()},
    }
    return StudyResults(
        win_tie_loss=_wtl_table(core, cfg),
        bradley_terry=_bt_table(core, cfg),
        agreement=agreement_table(core, repeats, cfg.criteria),
        position_bias=position_bias_table(compared, cfg.criteria, cfg.alpha),
        raters=raters[RATER_COLUMNS],
        summary=summary,
    )
