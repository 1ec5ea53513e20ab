"""Human study: win/tie/loss (100 % stacked bars with CIs and n), forest plot of net preference, Bradley–Terry
ratings, agreement, position bias and rater exclusions — read from ``python -m human_study stats`` outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reports.blocks import Heading, KeyValues, Table, Text, figure_from_matplotlib
from reports.fmt import interval, is_missing, num, pct
from reports.registry import section
from reports.sections._common import color_cycle, flatten, new_figure, note, text, text_value, warn

WIN, TIE, LOSS = "#2e7d32", "#9e9e9e", "#c62828"


def _reasons(series) -> list:
    return ["" if text_value(v) == "—" else text_value(v) for v in series]


def _gold(ra) -> list:
    return [f"{text_value(a)}/{text_value(b)}" for a, b in zip(ra["gold_passed"], ra["gold_total"])]


def _count(k) -> str:
    try:
        return str(int(k))
    except (TypeError, ValueError):
        return "—"


def _row_label(r) -> str:
    return f"{r['model_a']} vs {r['model_b']} — {r['criterion']}"


def _share(k, p, lo, hi) -> str:
    """``count (share [CI])``; just the count when the share is undefined (n = 0)."""
    if is_missing(p):
        return _count(k)
    return f"{_count(k)} ({pct(p)} {interval(lo, hi, pct)})"


def _net(v, lo, hi) -> str:
    if is_missing(v):
        return "—"
    return f"{num(v, 3)} {interval(lo, hi, lambda x: num(x, 3))}"


def _wtl_display(w: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "criterion": w["criterion"], "model A": w["model_a"], "model B": w["model_b"],
        "n": [_count(n) for n in w["n"]],
        "A wins": [_share(*x) for x in zip(w["wins_a"], w["p_a"], w["ci_low_a"], w["ci_high_a"])],
        "ties": [_share(*x) for x in zip(w["ties"], w["p_tie"], w["ci_low_tie"], w["ci_high_tie"])],
        "B wins": [_share(*x) for x in zip(w["wins_b"], w["p_b"], w["ci_low_b"], w["ci_high_b"])],
        "CI method": text(w["ci_method"]),
        "sign test p (Holm)": [f"{num(p, 4)} ({num(h, 4)})" for p, h in zip(w["sign_test_p"], w["sign_test_p_holm"])],
        "net preference A [bootstrap CI]": [_net(*x) for x in zip(w["net_pref"], w["net_pref_boot_low"],
                                                                  w["net_pref_boot_high"])],
    })


def _stacked_bars(w: pd.DataFrame):
    labels = [_row_label(r) for r in w.to_dict("records")]
    fig, ax = new_figure(9.5, 0.55 * len(w) + 1.6)
    y = np.arange(len(w))
    left = np.zeros(len(w))
    for col, name, colr in (("p_a", "A wins", WIN), ("p_tie", "tie", TIE), ("p_b", "B wins", LOSS)):
        vals = 100 * w[col].to_numpy(float)
        bars = ax.barh(y, vals, left=left, color=colr, label=name, height=0.6)
        ax.bar_label(bars, labels=[f"{v:.0f}%" if v >= 6 else "" for v in vals], label_type="center",
                     color="white", fontsize=8)
        left += vals
    # 95 % CIs of the win share (at the A-win edge) and of the loss share (at the B-win edge)
    pa = 100 * w["p_a"].to_numpy(float)
    ax.errorbar(pa, y, xerr=[pa - 100 * w["ci_low_a"].to_numpy(float), 100 * w["ci_high_a"].to_numpy(float) - pa],
                fmt="none", ecolor="black", capsize=3, lw=1)
    pb_edge = 100 - 100 * w["p_b"].to_numpy(float)
    ax.errorbar(pb_edge, y, xerr=[100 * w["ci_high_b"].to_numpy(float) - 100 * w["p_b"].to_numpy(float),
                                  100 * w["p_b"].to_numpy(float) - 100 * w["ci_low_b"].to_numpy(float)],
                fmt="none", ecolor="black", capsize=3, lw=1)
    for yi, n in zip(y, w["n"]):
        ax.text(101.5, yi, f"n={_count(n)}", va="center", fontsize=8)
    ax.axvline(50, ls="--", color="black", lw=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of votes (error bars: 95% CI of A-win and B-win shares)")
    ax.legend(ncol=3, loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=8, frameon=False)
    return fig


def _forest(w: pd.DataFrame):
    labels = [_row_label(r) for r in w.to_dict("records")]
    fig, ax = new_figure(8, 0.45 * len(w) + 1.4)
    y = np.arange(len(w))
    v = w["net_pref"].to_numpy(float)
    lo, hi = w["net_pref_boot_low"].to_numpy(float), w["net_pref_boot_high"].to_numpy(float)
    ax.errorbar(v, y, xerr=[v - lo, hi - v], fmt="s", color="black", ecolor="#555", capsize=3)
    ax.axvline(0, ls="--", color="grey")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("net preference for A (A wins − B wins, share of votes) with bootstrap 95% CI")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _bt_plot(bt: pd.DataFrame):
    crits = list(dict.fromkeys(bt["criterion"]))
    models = list(dict.fromkeys(bt["model"]))
    fig, ax = new_figure(8, 0.4 * len(models) * len(crits) + 1.4)
    colors = color_cycle()
    step = 0.8 / max(len(crits), 1)
    for j, c in enumerate(crits):
        g = bt[bt["criterion"] == c].set_index("model")
        ys = [i + j * step for i, m in enumerate(models) if m in g.index]
        ms = [m for m in models if m in g.index]
        r = g.loc[ms, "rating"].to_numpy(float)
        lo, hi = g.loc[ms, "ci_low"].to_numpy(float), g.loc[ms, "ci_high"].to_numpy(float)
        ax.errorbar(r, ys, xerr=[r - lo, hi - r], fmt="o", color=colors[j % len(colors)], capsize=3, label=c)
    ax.set_yticks(np.arange(len(models)) + step * (len(crits) - 1) / 2)
    ax.set_yticklabels(models, fontsize=8)
    ax.invert_yaxis()
    scales = ", ".join(dict.fromkeys(text(bt["scale"])))
    ax.set_xlabel(f"Bradley–Terry rating ({scales}) with 95% CI")
    ax.legend(fontsize=8, title="criterion")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _study_blocks(study, idx: int) -> list:
    slug = f"study{idx}"
    blocks = [Heading(f"Study: {study.name}")]
    for p in study.problems:
        blocks.append(warn(f"{study.path}: {p}"))
    s = study.summary or {}
    if s:
        keys = ["study", "n_votes", "n_raters", "n_excluded", "models", "criteria", "generated_at"]
        items = [(k, ", ".join(map(str, s[k])) if isinstance(s[k], list) else str(s[k])) for k in keys if k in s]
        items += [(k, v) for k, v in flatten({k: v for k, v in s.items() if k not in keys})]
        blocks.append(KeyValues("Study summary (summary.json)", items))
    t = study.tables
    w = t.get("win_tie_loss")
    if w is not None and len(w):
        blocks.append(Table(f"{slug}_win_tie_loss", "Win / tie / loss per comparison and criterion "
                                                    "(A = model_a), with CIs", _wtl_display(w), w))
        blocks.append(figure_from_matplotlib(_stacked_bars(w), f"{slug}_win_tie_loss",
                                             "100% stacked win/tie/loss bars with 95% CIs and n"))
        blocks.append(figure_from_matplotlib(_forest(w), f"{slug}_forest",
                                             "Forest plot: net preference for A with bootstrap CIs"))
    else:
        blocks.append(note("No win/tie/loss table (win_tie_loss.csv missing or empty)."))
    bt = t.get("bradley_terry")
    if bt is not None and len(bt):
        disp = pd.DataFrame({"criterion": bt["criterion"], "model": bt["model"],
                             "rating": [num(x, 3) for x in bt["rating"]],
                             "95% CI": [interval(lo, hi, lambda x: num(x, 3)) for lo, hi in
                                        zip(bt["ci_low"], bt["ci_high"])],
                             "scale": text(bt["scale"])})
        blocks.append(Table(f"{slug}_bradley_terry", "Bradley–Terry ratings", disp, bt))
        blocks.append(figure_from_matplotlib(_bt_plot(bt), f"{slug}_bradley_terry", "Bradley–Terry ratings"))
    else:
        blocks.append(note("No Bradley–Terry table (bradley_terry.csv missing or empty)."))
    ag = t.get("agreement")
    if ag is not None and len(ag):
        disp = pd.DataFrame({"criterion": ag["criterion"], "statistic": ag["statistic"],
                             "value": [num(x, 3) for x in ag["value"]],
                             "items": text(ag["n_items"]), "raters": text(ag["n_raters"])})
        blocks.append(Table(f"{slug}_agreement", "Inter-rater agreement", disp, ag))
    else:
        blocks.append(note("No agreement table (agreement.csv missing or empty)."))
    pb = t.get("position_bias")
    if pb is not None and len(pb):
        disp = pd.DataFrame({"criterion": pb["criterion"], "n": text(pb["n"]),
                             "left chosen": text(pb["left_chosen"]),
                             "right chosen": text(pb["right_chosen"]),
                             "p value": [num(x, 4) for x in pb["p_value"]]})
        blocks.append(Table(f"{slug}_position_bias", "Position (left/right) bias", disp, pb))
    else:
        blocks.append(note("No position-bias table (position_bias.csv missing or empty)."))
    ra = t.get("raters")
    if ra is not None and len(ra):
        excl = ra[ra["excluded"].map(lambda v: text_value(v).strip().lower()).isin(["true", "1", "yes"])]
        blocks.append(Text(f"{len(excl)} of {len(ra)} rater(s) excluded."))
        if len(excl):
            blocks.append(Table(f"{slug}_excluded_raters", "Excluded raters and why",
                                pd.DataFrame({"rater": text(excl["rater"]),
                                              "votes": text(excl["n_votes"]),
                                              "gold passed": _gold(excl),
                                              "reason": _reasons(excl["reason"])}), excl))
        disp = pd.DataFrame({"rater": text(ra["rater"]), "votes": text(ra["n_votes"]),
                             "gold passed": _gold(ra),
                             "excluded": text(ra["excluded"]), "reason": _reasons(ra["reason"])})
        blocks.append(Table(f"{slug}_raters", "All raters", disp, ra))
    else:
        blocks.append(note("No rater table (raters.csv missing or empty)."))
    return blocks


@section("human_study", "Human study", order=50)
def build(ctx):
    if not ctx.studies:
        return [note("No human-study statistics given (pass --study-stats DIR, the output directory of "
                     "`python -m human_study stats`).")]
    blocks = []
    for i, study in enumerate(ctx.studies, 1):
        blocks += _study_blocks(study, i)
    return blocks
