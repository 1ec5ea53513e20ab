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
import traceback
from pathlib import Path

from evaluation.weights import set_offline_env

set_offline_env()  # before anything imports huggingface_hub / transformers / diffusers

from evaluation.context import RunContext, package_versions  # noqa: E402
from evaluation.registry import DISCOVERY_ERRORS, DimensionOutcome, UsageError, discover, get_suite  # noqa: E402
from evaluation.store import RECORDS_FILE, RUN_FILE, load_records, machine_info, utc_now  # noqa: E402
from evaluation.weights import HashCache  # noqa: E402

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
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (default: one message)")
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
    from evaluation.listing import list_suites as show

    show(console)


# --------------------------------------------------------------------------------------------- summary
def print_summary(console, outcomes: list[DimensionOutcome], run_dir: Path) -> None:
    from rich.table import Table

    from evaluation.aggregate import aggregate_run

    t = Table(title=f"results ({run_dir})")
    for col in ("suite", "model", "dimension", "status", "score", "videos", "errors", "note"):
        t.add_column(col, overflow="fold")
    from rich.markup import escape

    for o in outcomes:
        score = "-" if o.score is None else f"{o.score:.6g}"
        t.add_row(o.suite, o.model, o.dimension, o.status, score, str(o.n_videos), str(o.n_errors),
                  escape(o.short_note(160)))  # messages quote paths and library errors ("[/...]" is not markup)
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
            console.print(f"  - {o.suite}/{o.dimension}: {o.status}: {escape(o.short_note(400))}", highlight=False,
                          soft_wrap=True)
    nonstd = [o for o in outcomes if o.status == "non_standard"]
    if nonstd:
        console.print("non-standard scores (not leaderboard-comparable; excluded from Quality/Semantic/Total): "
                      + ", ".join(f"{o.suite}/{o.dimension}" for o in nonstd))


# --------------------------------------------------------------------------------------------- main
def run(argv: list[str] | None, state: dict) -> int:
    """Parse, check the inputs, run the suites, print the summary; errors are raised to :func:`main`."""
    from rich.console import Console

    parser = build_parser()
    args = parser.parse_args(argv)
    state["debug"] = args.debug
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
        raise UsageError(str(exc.args[0])) from None
    # dimensions: split an explicit list among the suites that own them
    requested: dict[str, list[str] | None] = {s.name: None for s in suites}
    if args.dimensions:
        unknown = set(args.dimensions)
        for s in suites:
            mine = [d for d in args.dimensions if d in s.dimensions]
            requested[s.name] = mine
            unknown -= set(mine)
        if unknown:
            raise UsageError(f"unknown dimension(s) {sorted(unknown)} for suite(s) {suite_names}; see --list")
    check_inputs(args, suites, requested, resolve_device(args.device))  # before anything is written
    out = Path(args.out or Path("runs") / "-".join(suite_names))
    state.update(out=out, existed=out.exists(), run_json=_read_bytes(out / RUN_FILE),
                 records_size=_size(out / RECORDS_FILE))
    from evaluation import distributed

    store = distributed.open_store(out, run_id=args.run_id)  # under torchrun: rank r > 0 writes a shard (merged)
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
        res = s.run(ctx, dims)  # a UsageError / missing path goes to main(): one message, exit 2, run undone
        outcomes.extend(res)
        explicit_set = set(dims) if explicit else set(getattr(s, "explicit_in_default", ()))
        failed_explicit += [f"{o.suite}/{o.dimension}" for o in res
                            if o.dimension in explicit_set and o.status not in OK_STATUSES]
    if distributed.current().rank != 0:
        return 0  # rank 0 merged this rank's records and reports
    print_summary(console, outcomes, out)
    console.print(f"records: {out / 'records.jsonl'}  (pandas: evaluation.store.load_records('{out}'))")
    if failed_explicit:
        console.print(f"[red]explicitly requested dimension(s) without a score: {failed_explicit}[/red]")
        return 1
    if not any(o.status in OK_STATUSES for o in outcomes):
        console.print(f"[red]no dimension got a score (exit status {EXIT_NOTHING_SCORED}); the reasons are listed "
                      "above[/red]")
        return EXIT_NOTHING_SCORED
    return 0


# --------------------------------------------------------------------------------------------- errors
EXIT_FAILED, EXIT_USAGE, EXIT_NOTHING_SCORED = 1, 2, 3
PROG = "python -m evaluation.run"


def main(argv: list[str] | None = None) -> int:
    """The CLI. Exit status: 0 done; 1 a dimension named in --dimensions got no score, or the run failed (one
    message; --debug shows the traceback; records written so far are kept and a rerun resumes); 2 bad arguments or a
    missing input path (model folder, --videos, --vbench2-results): one message, and the run directory is left as it
    was; 3 no dimension got a score."""
    state: dict = {}
    try:
        return run(argv, state)
    except (UsageError, FileNotFoundError, NotADirectoryError) as exc:
        if state.get("debug"):
            traceback.print_exc()
        undone = _undo_run_dir(state)
        text = exc.strerror + f": {exc.filename}" if isinstance(exc, OSError) and exc.filename else str(exc)
        print(f"{PROG}: error: {text}", file=sys.stderr)
        print(("nothing was written; " if undone else "") + f"`{PROG} --help` lists the options"
              + ("" if state.get("debug") or isinstance(exc, UsageError) else "; --debug shows the traceback"),
              file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback with --debug
        if state.get("debug"):
            raise
        print(f"{PROG}: error: {type(exc).__name__}: {exc}\nthe records written so far are kept (rerun the same "
              "command to resume); --debug shows the traceback", file=sys.stderr)
        return EXIT_FAILED


def _read_bytes(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def _undo_run_dir(state: dict) -> bool:
    """Leave the run directory as it was before a run that failed on its arguments (no record was written): a new
    directory goes away (only the files this run creates, then empty folders), an existing one gets its run.json
    back. False when records were written (they stay; a rerun resumes)."""
    out = state.get("out")
    if out is None:
        return True
    if _size(out / RECORDS_FILE) != state["records_size"]:
        return False
    if state["existed"]:
        if state["run_json"] is None:
            (out / RUN_FILE).unlink(missing_ok=True)
        else:
            (out / RUN_FILE).write_bytes(state["run_json"])
        return True
    for name in (RUN_FILE, RECORDS_FILE, "checkpoint_hashes.json"):
        (out / name).unlink(missing_ok=True)
    for root, _, _ in sorted(os.walk(out), key=lambda t: -len(t[0])):  # deepest first; only empty folders go
        try:
            os.rmdir(root)
        except OSError:
            pass
    return True


def check_inputs(args, suites, requested: dict, device: str) -> None:
    """Input paths exist, and a suite that needs videos got one of its ways to get them (``Suite.input_options``);
    if not, the message names every way and the suite's checkpoint preflight (which files are missing, where)."""
    if args.videos and not Path(args.videos).is_dir():
        raise UsageError(f"--videos {args.videos}: no such directory")
    results = getattr(args, "vbench2_results", None)
    if results and not Path(results).is_file():
        raise UsageError(f"--vbench2-results {results}: no such file (an upstream *_eval_results.json)")
    for s in suites:
        options = getattr(s, "input_options", ())
        if options and requested.get(s.name) != [] and not any(getattr(args, dest, None) for dest, _, _ in options):
            dims, _ = s.resolve_dimensions(requested.get(s.name))
            raise UsageError(missing_input_message(s, options, dims, device))


def missing_input_message(suite, options, dims: list[str], device: str) -> str:
    from evaluation.registry import ROOTS
    from evaluation.weights import preflight, root_dir

    lines = [f"--suite {suite.name} needs videos to score; give one of:"]
    lines += [f"  {flag:<24} {what}" for _, flag, what in options]
    ready, roots = [], set()
    lines.append(f"Checkpoint preflight of its {len(dims)} dimension(s) (nothing is ever downloaded; copy each file "
                 "to its path):")
    for name in dims:
        dim = suite.dimensions[name]
        pf = preflight(dim, verify_hashes=False)
        gpu = (f"[GPU ~{dim.gpu_mem_gb:g} GB] " if dim.needs_gpu and not str(device).startswith("cuda") else "")
        if pf.ok:
            ready.append(name + (" (needs a GPU)" if gpu else ""))
            continue
        roots |= {m["root"] for m in pf.missing}
        what = (f"missing {len(pf.missing)}: " + ", ".join(f"${m['root']}/{m['path']}" for m in pf.missing)
                if pf.missing else (pf.message or pf.status or "not ready"))
        line = f"  {name:<29} {gpu}{what}"
        lines.append(line if len(line) <= 200 else line[:199] + "…")
    lines.append(f"  ready here: {', '.join(ready) if ready else 'none'}"
                 + ("; [GPU ...]: upstream hard-codes CUDA, run with --device cuda" if any(
                     suite.dimensions[d].needs_gpu for d in dims) and not str(device).startswith("cuda") else ""))
    if roots:
        lines.append("Roots: " + ", ".join(f"${r} = {root_dir(r)}" for r in sorted(roots) if r in ROOTS)
                     + f". Upstream URLs of every file: {PROG} --list")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
