"""Which numbers in a report come from models with random or untrained weights, read from the stores' provenance.

A record's model counts as untrained when :func:`evaluation.store.weights_origin` says so for any record of the same
(run, model) -- its own provenance (``weights``, or the generator config's model spec, e.g. ``tiny``), a record whose
``model_config_hash`` it shares (per-video VBench records carry only the hash), or the run's command line
(``run.json`` ``config.model`` / ``config.reference``). Fidelity references are resolved the same way from
``reference_config``. Such a model gets the report's banner and :data:`MARK` on every number computed from it.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import pandas as pd

from evaluation.store import spec_weights, weights_origin

MARK = "‡"
MARK_NOTE = f"{MARK} pipeline check with random weights, not a quality score"
UNTRAINED = ("random", "untrained")
GENERATED_SUITES = ("vbench", "vbench2", "fidelity")


def is_untrained(origin: Optional[str]) -> bool:
    return isinstance(origin, str) and origin.split(":")[0].strip().lower() in UNTRAINED


def _reference(details) -> Optional[str]:
    ref = details.get("reference") if isinstance(details, dict) else None
    return None if ref is None else str(ref)


def weights_map(runs, records: pd.DataFrame) -> Dict[Tuple[str, str], str]:
    """(run_id, model label as stored) -> weights origin, for every model whose origin the stores state."""
    out: Dict[Tuple[str, str], str] = {}
    by_hash: Dict[str, str] = {}

    def put(key, origin):
        if origin and key not in out:
            out[key] = origin

    if records.empty:
        return out
    rows = list(zip(records["run_id"], records["suite"], records["model"], records["details"],
                    records["provenance"]))
    for run_id, suite, model, details, prov in rows:
        origin = weights_origin(prov)
        put((run_id, model), origin)
        if origin and isinstance(prov, dict) and prov.get("model_config_hash"):
            by_hash.setdefault(str(prov["model_config_hash"]), origin)
        ref_origin = weights_origin(prov, "reference_config")
        ref = _reference(details)
        if ref is not None:
            put((run_id, ref), ref_origin)
        if ref_origin and isinstance(prov, dict) and prov.get("reference_config_hash"):
            by_hash.setdefault(str(prov["reference_config_hash"]), ref_origin)
    for run_id, suite, model, details, prov in rows:  # records that carry only the generator's config hash
        h = prov.get("model_config_hash") if isinstance(prov, dict) else None
        if h is not None and str(h) in by_hash:
            put((run_id, model), by_hash[str(h)])
    for run in runs:  # the run's own command line: --model tiny / --reference tiny-softmax
        cfg = (run.run_json or {}).get("config") or {}
        cand, ref = spec_weights(cfg.get("model")), spec_weights(cfg.get("reference"))
        sub = records[records["run_id"] == run.run_id]
        for suite, model, details in zip(sub["suite"], sub["model"], sub["details"]):
            if cand and suite in GENERATED_SUITES:
                put((run.run_id, model), cand)
            if ref and suite == "fidelity" and _reference(details) is not None:
                put((run.run_id, _reference(details)), ref)
    return out


def annotate(records: pd.DataFrame, runs) -> Dict[Tuple[str, str], str]:
    """Add ``weights`` (origin or None), ``untrained`` and ``reference_untrained`` (fidelity) columns in place."""
    wm = weights_map(runs, records)
    if records.empty:
        for c in ("weights", "untrained", "reference_untrained"):
            records[c] = pd.Series(dtype=object if c == "weights" else bool)
        return wm
    records["weights"] = [wm.get((r, m)) for r, m in zip(records["run_id"], records["model"])]
    records["untrained"] = [is_untrained(w) for w in records["weights"]]
    records["reference_untrained"] = [is_untrained(wm.get((r, _reference(d)))) if _reference(d) else False
                                      for r, d in zip(records["run_id"], records["details"])]
    return wm


def untrained_labels(df: pd.DataFrame) -> set:
    """Display labels (``label`` column) of ``df`` whose model has random/untrained weights."""
    if df.empty or "untrained" not in df.columns:
        return set()
    return set(df.loc[df["untrained"].astype(bool), "label"])


def mark(text: str, untrained: bool) -> str:
    """``text`` with :data:`MARK` appended when it was computed from an untrained model (never for '—')."""
    return f"{text} {MARK}" if untrained and text not in ("", "—") else text


def banner(ctx) -> list:
    """The report's first lines: which models are untrained (and what the mark means), and which efficiency runs are
    structure checks at toy shapes. Empty when nothing needs saying."""
    lines = []
    recs = ctx.records
    if len(recs) and "untrained" in recs.columns:
        quality = recs[recs["suite"].isin(GENERATED_SUITES)]
        names = {}
        for run_id, label, w, untr in zip(quality["run_id"], quality["label"], quality["weights"],
                                          quality["untrained"]):
            if untr:
                names.setdefault(label, (run_id, w))
        refs = quality[quality["reference_untrained"].astype(bool)]
        for run_id, d in zip(refs["run_id"], refs["details"]):
            names.setdefault(_reference(d), (run_id, "random"))
        if names:
            who = ", ".join(f"{lab} ({w} weights, run {r})" for lab, (r, w) in names.items())
            lines.append("Pipeline check with random weights — not quality scores.")
            lines.append(f"{who}. Every number computed from them is marked {MARK}: it shows that the pipeline "
                         "runs end to end and says nothing about video quality or ReHyAt versus softmax.")
    eff = recs[recs["suite"] == "efficiency"] if len(recs) else recs
    seen = set()
    for run_id, prov in zip(eff.get("run_id", []), eff.get("provenance", [])):
        preset = prov.get("preset") if isinstance(prov, dict) else None
        desc = ((prov.get("preset_config") or {}).get("description") or "") if isinstance(prov, dict) else ""
        if preset and (run_id, preset) not in seen and ("structure check" in desc or preset == "ci"):
            seen.add((run_id, preset))
            if not lines:
                lines.append("Structure check — not benchmark numbers.")
            lines.append(f"Efficiency run {run_id}, preset '{preset}' ({desc}): FLOPs are exact, but timings and "
                         "memory of such small calls are dominated by overheads and do not predict the paper's "
                         "480x832, 81–321-frame regime.")
    return lines
