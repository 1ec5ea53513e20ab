"""``python -m evaluation.run`` — VBench, VBench-2.0, teacher fidelity (and any registered suite) into a resumable
results store.  See docs/evaluation.md.

Examples::

    python -m evaluation.run                                   # built-in default job (tiny models, offline)
    python -m evaluation.run --list                            # suites, dimensions, checkpoints present or not
    python -m evaluation.run --suite vbench --videos DIR --dimensions temporal_flickering --out runs/x
    python -m evaluation.run --suite vbench --model SPEC --out runs/wan   # generate the official set, then score
    torchrun --nproc_per_node 8 -m evaluation.run --suite vbench --model SPEC --out runs/wan   # sharded generation
    python -m evaluation.run --suite fidelity --reference TEACHER --model CANDIDATE --out runs/fid
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from evaluation.weights import set_offline_env

set_offline_env()  # before anything imports huggingface_hub / transformers / diffusers

from evaluation.context import RunContext, package_versions  # noqa: E402
from evaluation.registry import DISCOVERY_ERRORS, DimensionOutcome, UsageError, discover, get_suite  # noqa: E402
from evaluation.store import ResultsStore, load_records, machine_info, utc_now  # noqa: E402
from evaluation.weights import HashCache, artifact_path, preflight  # noqa: E402

OK_STATUSES = ("ok", "non_standard")


def build_parser() -> argparse.ArgumentParser:
    suites = discover()
    p = argparse.ArgumentParser(prog="python -m evaluation.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", nargs="+", default=["default"],
                   help=f"suite(s) to run: {', '.join(sorted(suites))} (default: the built-in default job)")
    p.add_argument("--list", action="store_true", help="list suites and dimensions with their checkpoints and exit")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--videos", default=None, help="folder of videos to score")
    src.add_argument("--model", default=None,
                     help="generator spec: 'module:factory', a registered name (e.g. rehyat-tiny) or a model path")
    p.add_argument("--label", default=None, help="model label in the records (default: generator label/folder name)")
    p.add_argument("--dimensions", nargs="+", default=None, help="dimensions to run (default: all of the suite)")
    p.add_argument("--out", default=None, help="run directory (default runs/<suite>); rerun with it to resume")
    p.add_argument("--run-id", default=None, help="run name (default: the run directory's name)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--mode", choices=["auto", "standard", "custom"], default="auto",
                   help="VBench modes: official prompt suite/naming (standard) or any videos (custom); auto detects")
    p.add_argument("--seed", type=int, default=0, help="base seed; video i of a prompt uses seed+i")
    p.add_argument("--num-frames", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--fps", type=int, default=None)
    p.add_argument("--limit-prompts", type=int, default=None,
                   help="generate only the first N prompts of each dimension (smoke runs; scores become non-standard)")
    p.add_argument("--video-dir", default=None, help="where --model writes the generated set")
    p.add_argument("--no-verify-hashes", action="store_true", help="do not sha256 checkpoints (faster preflight)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    for s in suites.values():
        s.add_arguments(p)
    return p


def resolve_device(spec: str) -> str:
    if spec == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return spec


# --------------------------------------------------------------------------------------------- --list
def list_suites(console) -> None:
    from rich.table import Table

    for name, suite in sorted(discover().items()):
        t = Table(title=f"{name}: {suite.description}", show_lines=False, expand=False)
        for col in ("dimension", "category", "runs here", "GPU", "custom input", "checkpoints (present?)"):
            t.add_column(col, overflow="fold")
        for dname, dim in suite.dimensions.items():
            pf = preflight(dim, verify_hashes=False)
            arts = "\n".join(f"{'yes' if (artifact_path(a).is_dir() if a.kind == 'dir' else artifact_path(a).is_file()) else 'NO '} "
                             f"${a.root}/{a.path}" for a in dim.artifacts) or "none"
            if dim.python_modules:
                from evaluation.weights import _module_available

                arts += "\npython: " + ", ".join(f"{m} ({'ok' if _module_available(m) else 'NOT installed'})"
                                                 for m in dim.python_modules)
            gpu = f"yes (~{dim.gpu_mem_gb:g} GB)" if dim.needs_gpu else "no"
            t.add_row(dname, dim.category or "", "yes" if pf.ok else pf.status, gpu,
                      "yes" if dim.custom_input else "no", arts)
        console.print(t)


# --------------------------------------------------------------------------------------------- summary
def print_summary(console, outcomes: list[DimensionOutcome], run_dir: Path) -> None:
    from rich.table import Table

    from evaluation.aggregate import aggregate_run

    t = Table(title=f"results ({run_dir})")
    for col in ("suite", "model", "dimension", "status", "score", "videos", "errors", "note"):
        t.add_column(col, overflow="fold")
    for o in outcomes:
        score = "-" if o.score is None else f"{o.score:.6g}"
        t.add_row(o.suite, o.model, o.dimension, o.status, score, str(o.n_videos), str(o.n_errors),
                  o.short_note(160))
    console.print(t)
    df = load_records(run_dir)
    for suite, per_model in aggregate_run(df).items():
        for model, res in per_model.items():
            console.print(f"[bold]{suite} / {model}[/bold]: " + "; ".join(res.describe()))
    skipped = [o for o in outcomes if o.status not in OK_STATUSES]
    if skipped:
        counts = {}
        for o in skipped:
            counts[o.status] = counts.get(o.status, 0) + 1
        console.print(f"[bold]{len(skipped)} dimension(s) without a score[/bold] "
                      f"({', '.join(f'{v} {k}' for k, v in counts.items())}); full messages with upstream URLs and "
                      "expected paths are in the records and in `--list`:", highlight=False)
        for o in skipped:
            console.print(f"  - {o.suite}/{o.dimension}: {o.status}: {o.short_note(400)}", highlight=False,
                          soft_wrap=True)
    nonstd = [o for o in outcomes if o.status == "non_standard"]
    if nonstd:
        console.print("non-standard scores (not leaderboard-comparable; excluded from Quality/Semantic/Total): "
                      + ", ".join(f"{o.suite}/{o.dimension}" for o in nonstd))


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 200)
    for mod, err in DISCOVERY_ERRORS.items():
        print(f"warning: suite module {mod} failed to import and is unavailable: {err}", file=sys.stderr)
    if args.list:
        list_suites(console)
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    suite_names = [s for item in args.suite for s in item.split(",") if s]
    try:
        suites = [get_suite(s) for s in suite_names]
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    # dimensions: split an explicit list among the suites that own them
    requested: dict[str, list[str] | None] = {s.name: None for s in suites}
    if args.dimensions:
        unknown = set(args.dimensions)
        for s in suites:
            mine = [d for d in args.dimensions if d in s.dimensions]
            requested[s.name] = mine
            unknown -= set(mine)
        if unknown:
            parser.error(f"unknown dimension(s) {sorted(unknown)} for suite(s) {suite_names}; see --list")
    out = Path(args.out or Path("runs") / "-".join(suite_names))
    store = ResultsStore(out, run_id=args.run_id)
    device = resolve_device(args.device)
    ctx = RunContext(store=store, args=args, out_dir=out, device=device, quiet=args.quiet,
                     hash_cache=None if args.no_verify_hashes else HashCache(out / "checkpoint_hashes.json"))
    store.write_run_info({
        "run_id": store.run_id, "command": " ".join(shlex.quote(a) for a in [sys.executable, "-m", "evaluation.run",
                                                                              *(sys.argv[1:] if argv is None else argv)]),
        "start_time": utc_now(), "versions": package_versions(), "machine": machine_info(), "device": device,
        "suites": suite_names, "config": {k: v for k, v in vars(args).items()},
        "offline_env": {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")},
    })
    outcomes: list[DimensionOutcome] = []
    failed_explicit: list[str] = []
    for s in suites:
        dims_req = requested[s.name]
        if dims_req == []:
            continue
        dims, explicit = s.resolve_dimensions(dims_req)
        ctx.explicit_dimensions = explicit
        try:
            res = s.run(ctx, dims)
        except UsageError as exc:
            parser.error(str(exc))
        outcomes.extend(res)
        explicit_set = set(dims) if explicit else set(getattr(s, "explicit_in_default", ()))
        failed_explicit += [f"{o.suite}/{o.dimension}" for o in res
                            if o.dimension in explicit_set and o.status not in OK_STATUSES]
    print_summary(console, outcomes, out)
    console.print(f"records: {out / 'records.jsonl'}  (pandas: evaluation.store.load_records('{out}'))")
    if failed_explicit:
        console.print(f"[red]explicitly requested dimension(s) without a score: {failed_explicit}[/red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
