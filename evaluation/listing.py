"""``python -m evaluation.run --list``: every suite's dimensions, whether they can run here and why not, whether they
have been exercised offline (on random-initialised networks, in tests/evaluation/upstream_arch/) or never ran here,
and every checkpoint with its resolved path, upstream URL and how to fetch it (what the run summary points to)."""
from __future__ import annotations

from evaluation.registry import Artifact, Suite, discover
from evaluation.weights import artifact_path, environment_problems, fetch_hint, preflight


def _present(art: Artifact) -> bool:
    p = artifact_path(art)
    return p.is_dir() if art.kind == "dir" else p.is_file()


def exercised_note(dim) -> str:
    if dim.exercised:
        return "yes: " + dim.exercised
    if dim.not_exercised:
        return "no: " + dim.not_exercised
    return "built in (no upstream network)" if dim.offline_capable else ""


def suite_tables(suite: Suite):
    """(dimension table, checkpoint table) of one suite as rich Tables."""
    from rich.table import Table

    upstream = any(d.exercised or d.not_exercised for d in suite.dimensions.values())
    t = Table(title=f"{suite.name}: {suite.description}", show_lines=upstream, expand=False)
    cols = ["dimension", "category", "runs here", "GPU", "custom input"]
    if upstream:
        cols.append("exercised offline (random-init networks) / never run here, and why")
    for col in cols:
        t.add_column(col, overflow="fold")
    used: dict[tuple, list[str]] = {}
    for dname, dim in suite.dimensions.items():
        pf = preflight(dim, verify_hashes=False)
        if pf.ok:
            here = "yes"
        elif pf.status == "missing_weights":
            here = f"missing_weights ({len(pf.missing)} file(s), below)"
        else:
            here = f"{pf.status}: " + "; ".join(environment_problems(dim.python_modules, dim.python_requirements)
                                                 or [pf.message or ""])
        gpu = f"yes (~{dim.gpu_mem_gb:g} GB)" if dim.needs_gpu else "no"
        row = [dname, dim.category or "", here, gpu, "yes" if dim.custom_input else "no"]
        if upstream:
            row.append(exercised_note(dim))
        t.add_row(*row)
        for art in dim.artifacts:
            used.setdefault((art.root, art.path, art.url, art.sha256, art.kind, art.description), []).append(dname)
    if not used:
        return t, None
    c = Table(title=f"{suite.name}: checkpoints (never downloaded here; copy each file to its path)", show_lines=True)
    c.add_column("present? file\n  -> resolved path", no_wrap=True)
    c.add_column("upstream source (sha256) / fetch command elsewhere", overflow="fold")
    c.add_column("what / used by", overflow="fold")
    for (root, path, url, sha, kind, desc), dims in used.items():
        art = Artifact(path, url, desc, root=root, sha256=sha, kind=kind)
        where = artifact_path(art)
        hint = fetch_hint(art, where)
        src = url + (f"\nsha256 {sha}" if sha else "") + ("" if hint.startswith("download ") else f"\n{hint}")
        c.add_row(f"{'yes' if _present(art) else 'NO '} ${root}/{path}\n  -> {where}", src,
                  (f"{desc}; " if desc else "") + "used by " + ", ".join(dims))
    return t, c


def list_suites(console) -> None:
    for _name, suite in sorted(discover().items()):
        table, checkpoints = suite_tables(suite)
        console.print(table)
        if checkpoints is not None:
            console.print(checkpoints)
    console.print("Scores computed from random-initialised networks (the offline exercise above) are pipeline checks, "
                  "never quality numbers.", highlight=False)
