"""Appendix (folded in the HTML): every VBench / VBench-2.0 dimension without an ok score with its full stored
message, and every missing file with its expected path and upstream URL."""

from __future__ import annotations

import pandas as pd

from reports.blocks import Heading, Table, Text
from reports.registry import section
from reports.sections import _dimensions as dimx
from reports.sections.coverage import SUITES
from reports.sections.vbench import suite_status


def missing_files(st: pd.DataFrame) -> pd.DataFrame:
    """One row per missing file: the dimensions that need it, the models, the expected path and the upstream URL."""
    rows = {}
    for r in st.to_dict("records"):
        for m in (r["details"] or {}).get("missing") or []:
            if not isinstance(m, dict):
                continue
            key = (m.get("root"), m.get("path"))
            row = rows.setdefault(key, dict(file=f"${m.get('root')}/{m.get('path')}",
                                            expected_path=str(m.get("expected_path", "")),
                                            upstream=str(m.get("url", "")), sha256=m.get("sha256") or "",
                                            dimensions=[], models=[]))
            row["dimensions"].append(r["dimension"])
            row["models"].append(r["label"])
    out = [{**v, "dimensions": ", ".join(dict.fromkeys(v["dimensions"])),
            "models": ", ".join(dict.fromkeys(v["models"]))} for v in rows.values()]
    return pd.DataFrame(out, columns=["file", "dimensions", "models", "expected_path", "upstream", "sha256"])


@section("appendix", "Appendix: full messages, paths and URLs", order=95, collapsed=True)
def build(ctx):
    blocks = []
    for suite, name, official in SUITES:
        st = suite_status(ctx, suite, official)
        if st is None:
            continue
        blocks.append(Heading(name))
        probs = dimx.problems_table(st)
        if len(probs):
            blocks.append(Table(f"{suite}_not_ok", f"{name}: dimensions without an ok score, with the reason", probs))
        else:
            blocks.append(Text(f"Every {name} dimension has an ok score for every model."))
        files = missing_files(st)
        if len(files):
            blocks.append(Table(f"{suite}_missing_files", f"{name}: missing files (copy each to its expected path; "
                                                         "nothing is downloaded)", files))
    if not blocks:
        blocks.append(Text("No VBench or VBench-2.0 records, so nothing to list here."))
    return blocks
