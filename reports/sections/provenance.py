"""Provenance: per-run information from ``run.json`` (command, package versions, machine, dates, suite/model
configs), per-record provenance (seeds, config and checkpoint hashes, …), protocol deviations, and any problems met
while reading the stores."""

from __future__ import annotations

import pandas as pd

from reports.blocks import Heading, KeyValues, Table, Text
from reports.registry import section
from reports.sections._common import flatten, note

MAX_DISTINCT = 8


def _build_env() -> list:
    import platform
    import sys
    from importlib import metadata

    items = [("python", sys.version.split()[0]), ("platform", platform.platform())]
    for pkg in ("pandas", "numpy", "matplotlib"):
        try:
            items.append((pkg, metadata.version(pkg)))
        except metadata.PackageNotFoundError:
            items.append((pkg, "not installed"))
    return items


def _is_deviation_key(key: str) -> bool:
    return "deviation" in key.lower()


def _deviations(ctx) -> pd.DataFrame:
    rows = []
    for run in ctx.runs:
        for k, v in flatten(run.run_json or {}):
            if _is_deviation_key(k) and v not in ("", "[]", "{}"):
                rows.append(dict(source=f"run.json ({run.run_id})", suite="", model="", dimension="", deviation=f"{k}: {v}"))
    recs = ctx.records
    if len(recs):
        seen = set()
        for r in recs.to_dict("records"):
            for k, v in flatten(r["provenance"]):
                if _is_deviation_key(k) and v not in ("", "[]", "{}"):
                    key = (r["run_id"], r["suite"], r["label"], k, v)
                    if key not in seen:
                        seen.add(key)
                        rows.append(dict(source=f"record provenance ({r['run_id']})", suite=r["suite"],
                                         model=r["label"], dimension="", deviation=f"{k}: {v}"))
        ns = recs[recs["status"] == "non_standard"]
        for (run_id, suite, label, dim, msg), g in ns.groupby(["run_id", "suite", "label", "dimension",
                                                               ns["message"].fillna("")], sort=False):
            rows.append(dict(source=f"non_standard status ({run_id}, {len(g)} record(s))", suite=suite, model=label,
                             dimension=dim, deviation=msg or "(no message)"))
    for st in ctx.studies:
        for k, v in flatten(st.summary or {}):
            if _is_deviation_key(k) and v not in ("", "[]", "{}"):
                rows.append(dict(source=f"summary.json ({st.name})", suite="human study", model="", dimension="",
                                 deviation=f"{k}: {v}"))
    return pd.DataFrame(rows, columns=["source", "suite", "model", "dimension", "deviation"])


def _distinct(values: dict) -> str:
    distinct = list(values)
    shown = "; ".join(v if v != "" else "(empty)" for v in distinct[:MAX_DISTINCT])
    if len(distinct) > MAX_DISTINCT:
        shown += f"; … (+{len(distinct) - MAX_DISTINCT} more)"
    return shown


def _record_provenance(ctx) -> pd.DataFrame:
    """Per run and provenance key: one row when every record of the run agrees, otherwise one row per suite/model."""
    recs = ctx.records
    cols = ["run", "scope", "key", "values", "records"]
    if recs.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for run_id, rg in recs.groupby("run_id", sort=False):
        per_scope: dict = {}
        keys: dict = {}
        for suite, label, p in zip(rg["suite"], rg["label"], rg["provenance"]):
            for k, v in flatten(p):
                keys.setdefault(k, {})
                keys[k][v] = keys[k].get(v, 0) + 1
                sc = per_scope.setdefault((k, f"{suite} / {label}"), {})
                sc[v] = sc.get(v, 0) + 1
        for k, values in keys.items():
            if len(values) == 1:
                rows.append(dict(run=run_id, scope="all records", key=k, values=_distinct(values),
                                 records=str(sum(values.values()))))
                continue
            for (kk, scope), sv in per_scope.items():
                if kk == k:
                    rows.append(dict(run=run_id, scope=scope, key=k, values=_distinct(sv),
                                     records=str(sum(sv.values()))))
    return pd.DataFrame(rows, columns=cols)


def _dates(ctx) -> pd.DataFrame:
    rows = []
    for run in ctx.runs:
        rj = run.run_json or {}
        sub = ctx.records[ctx.records["run_id"] == run.run_id] if len(ctx.records) else ctx.records
        times = pd.to_datetime(sub["time"], utc=True, errors="coerce").dropna() if len(sub) else pd.Series([])
        rows.append(dict(source=f"run {run.run_id}", start_time=str(rj.get("start_time", "—")),
                         first_record=str(times.min()) if len(times) else "—",
                         last_record=str(times.max()) if len(times) else "—",
                         resumes=str(len(rj.get("resumes", []) or [])), generated_at="—"))
    for st in ctx.studies:
        rows.append(dict(source=f"study {st.name}", start_time="—", first_record="—", last_record="—", resumes="—",
                         generated_at=str((st.summary or {}).get("generated_at", "—"))))
    return pd.DataFrame(rows, columns=["source", "start_time", "first_record", "last_record", "resumes",
                                       "generated_at"])


@section("provenance", "Provenance", order=90)
def build(ctx):
    blocks = [Text(f"Report generated {ctx.generated_at}. Everything below is copied from the stores.")]
    if not ctx.runs and not ctx.studies:
        return blocks + [note("No stores were given, so there is no provenance to show.")]
    blocks.append(Table("provenance_dates", "Dates", _dates(ctx)))
    dev = _deviations(ctx)
    if len(dev):
        blocks.append(Table("provenance_deviations", "Protocol deviations (from run.json, record provenance, "
                                                     "non-standard statuses and study summaries)", dev))
    else:
        blocks.append(Text("No protocol deviations are recorded in the stores (no 'deviation' entries, no "
                           "non-standard statuses)."))
    problems = [(f"run {r.run_id}", str(r.path), p) for r in ctx.runs for p in r.problems]
    problems += [(f"study {s.name}", str(s.path), p) for s in ctx.studies for p in s.problems]
    if problems:
        blocks.append(Table("provenance_store_notes", "Store reading notes (missing files, skipped lines, superseded "
                                                      "records)",
                            pd.DataFrame(problems, columns=["store", "path", "problem"])))
    blocks.append(KeyValues("Report build environment (this command, not the runs)", _build_env()))
    for run in ctx.runs:
        blocks.append(Heading(f"Run {run.run_id}"))
        if run.run_json:
            blocks.append(KeyValues(f"run.json of {run.run_id} ({run.path})", flatten(run.run_json)))
        else:
            blocks.append(note(f"No run.json for {run.run_id}: {'; '.join(run.problems) or 'not found'}."))
    rp = _record_provenance(ctx)
    if len(rp):
        blocks.append(Heading("Record provenance"))
        blocks.append(Table("provenance_records", "Record provenance per run: distinct values per key (seeds, config and "
                                                  "checkpoint hashes, versions, machine, …), split by suite / model "
                                                  "where records disagree", rp, collapsed=len(rp) > 12))
    elif ctx.runs:
        blocks.append(note("No records, so no per-record provenance."))
    return blocks
