"""``python -m human_study COMMAND``: create a study from folders, validate it, serve it, export votes, compute stats.

Commands (a registry, :data:`COMMANDS`):

- ``create --name N --model NAME=FOLDER ... [--prompts FILE] [--quota Q] [--repeats R] [--raters K] --out study.yaml``
- ``validate --study FILE`` – missing or unreadable videos, model names in rater-facing texts or video metadata
- ``links --study FILE (--count K | --ids A,B)`` – per-rater signed links (and the crowd-platform link)
- ``serve --study FILE [--port P] [--force]`` – validate, then ``streamlit run human_study/app.py -- --study FILE``
- ``export --study FILE --out votes.csv`` – every vote with its item, models and displayed side
- ``stats --study FILE --out DIR [--votes votes.csv]`` – the report tables (``docs/interfaces.md``)
- ``counts --wins W --ties T --losses L`` – the win/tie/loss statistics of bare counts (e.g. a published split)

A missing file, a malformed study file or an unreachable database is one ``error:`` line and exit code 2
(``--debug`` shows the traceback); ``validate`` exits 1 when it finds problems.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

import pandas as pd

import yaml
from sqlalchemy.exc import SQLAlchemyError

from .checks import StudyReport, check_study
from .config import DEFAULT_CRITERIA, ENROLMENTS, TOKEN_RE, Study, StudyError, folder_videos, load_study, save_study
from .links import default_ids, open_enrolment_link, rater_link
from .stats.bradley_terry import TIE_MODELS
from .stats.proportions import CI_METHODS, win_tie_loss
from .stats.tables import AnalysisConfig, analyse
from .store import VOTE_COLUMNS, StoreError, VoteStore, load_votes

DEFAULT_BASE_URL = "http://localhost:8501"


class CliError(Exception):
    """A wrong input the user can fix: printed as one line, exit code 2."""


#: Errors shown as one line (no traceback unless --debug): wrong inputs, unreadable files, unreachable databases.
USER_ERRORS: tuple[type[BaseException], ...] = (CliError, StudyError, StoreError, OSError, SQLAlchemyError,
                                                yaml.YAMLError, pd.errors.ParserError, pd.errors.EmptyDataError)


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or exc}: {exc.filename}"
    if isinstance(exc, SQLAlchemyError):
        return f"database error: {str(getattr(exc, 'orig', None) or exc).strip().splitlines()[0]}"
    return str(exc)


def _add_create(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", required=True, help="study name (also the database's identity)")
    p.add_argument("--model", action="append", required=True, metavar="NAME=FOLDER",
                   help="a model and its folder of <prompt_id>.<ext> videos (repeat for each model)")
    p.add_argument("--prompts", help="prompts file (.txt one per line, .json list/map, .csv id,text); "
                                     "default: the file stems every model has")
    p.add_argument("--criteria", default=",".join(c.id for c in DEFAULT_CRITERIA))
    p.add_argument("--quota", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--enrolment", choices=ENROLMENTS, default="signed",
                   help="signed: per-rater signed links only (default); open: anyone with the study link enrols "
                        "(crowd platforms)")
    p.add_argument("--raters", type=int, default=0, metavar="K",
                   help="also write K signed rater links to <out>.links.csv (see the links command)")
    p.add_argument("--base-url", default=DEFAULT_BASE_URL, help="address raters open, for the links")
    p.add_argument("--completion-code", help="code shown on the done page (crowd platforms)")
    p.add_argument("--completion-url", help="URL the done page redirects to (e.g. the platform's completion URL)")
    p.add_argument("--out", required=True, help="study file to write (.yaml or .json)")


def _run_create(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    if not out.parent.is_dir():
        raise CliError(f"--out: folder not found: {out.parent}")
    models = []
    for spec in args.model:
        name, sep, folder = spec.partition("=")
        if not sep or not name:
            raise CliError(f"--model expects NAME=FOLDER, got {spec!r}")
        folder_path = Path(folder).resolve()
        if not folder_path.is_dir():
            raise CliError(f"--model {name}: folder not found: {folder_path}")
        if not folder_videos(folder_path):
            raise CliError(f"--model {name}: no videos in {folder_path}")
        models.append({"name": name, "folder": os.path.relpath(folder_path, out.parent)})
    data = {"name": args.name, "seed": args.seed, "models": models,
            "criteria": [c for c in args.criteria.split(",") if c], "quota": args.quota, "repeats": args.repeats,
            "exclusion": {"min_gold_accuracy": 0.75}, "storage": {"url": f"sqlite:///{args.name}.votes.sqlite"},
            "raters": {"enrolment": args.enrolment}}
    completion = {k: v for k, v in (("code", args.completion_code), ("url", args.completion_url)) if v}
    if completion:
        data["completion"] = completion
    if args.prompts:
        prompts = Path(args.prompts).resolve()
        if not prompts.is_file():
            raise CliError(f"--prompts: file not found: {prompts}")
        data["prompts"] = os.path.relpath(prompts, out.parent)
    save_study(data, out)
    try:
        study = load_study(out)  # validates what was written
    except StudyError:
        out.unlink()  # leave no half-valid study file behind
        raise
    print(f"wrote {out}: {len(study.models)} models, {len(study.prompts)} prompts, {len(study.criteria)} criteria")
    if args.raters:
        links = out.with_suffix(".links.csv")
        _write_links(study, default_ids(args.raters), args.base_url, str(links))
    return 0


def _add_study(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", required=True, help="study file (.yaml/.toml/.json)")
    p.add_argument("--db", help="SQLAlchemy URL overriding the study's storage URL")


def _print_report(study: Study, report: StudyReport) -> None:
    for line in report.problems:
        print(f"problem: {line}")
    for line in report.warnings:
        print(f"warning: {line}")
    n_core = len(study.prompts) * len(study.models) * (len(study.models) - 1) // 2
    print(f"{study.name}: {len(study.models)} models, {len(study.prompts)} prompts, {n_core} core items, "
          f"{len(study.gold)} gold items, {report.n_videos} videos checked; {len(report.problems)} problem(s), "
          f"{len(report.warnings)} warning(s)")


def _run_validate(args: argparse.Namespace) -> int:
    study = load_study(args.study)
    report = check_study(study)
    _print_report(study, report)
    return 0 if report.ok else 1


def _add_links(p: argparse.ArgumentParser) -> None:
    _add_study(p)
    p.add_argument("--count", type=int, help="make links for K new ids r001..rK (with --prefix)")
    p.add_argument("--prefix", default="r", help="id prefix for --count (default r)")
    p.add_argument("--ids", help="comma-separated rater ids (default: the study's raters.tokens)")
    p.add_argument("--base-url", default=DEFAULT_BASE_URL, help="address raters open")
    p.add_argument("--out", default="-", help="CSV file rater,url; '-' for stdout")


def _write_links(study: Study, ids: list[str], base_url: str, out: str, url: str | None = None) -> None:
    bad = [r for r in ids if not study.token_allowed(r)]
    if bad:
        allowed = "one of raters.tokens" if study.tokens is not None else f"match {TOKEN_RE.pattern}"
        raise CliError(f"rater ids must {allowed}: {', '.join(map(repr, bad[:5]))}")
    store = VoteStore.open(study, url)
    try:
        frame = pd.DataFrame({"rater": ids,
                              "url": [rater_link(base_url, store.link_secret, study.name, r) for r in ids]})
    finally:
        store.engine.dispose()
    if out == "-":
        frame.to_csv(sys.stdout, index=False)
    else:
        frame.to_csv(out, index=False)
        print(f"wrote {len(frame)} signed rater links to {out}", file=sys.stderr)


def _run_links(args: argparse.Namespace) -> int:
    study = load_study(args.study)
    if args.count is not None and args.ids:
        raise CliError("give --count or --ids, not both")
    if args.count is not None:
        if args.count < 1:
            raise CliError("--count must be >= 1")
        ids = default_ids(args.count, args.prefix)
    elif args.ids:
        ids = [r.strip() for r in args.ids.split(",") if r.strip()]
    elif study.tokens is not None:
        ids = list(study.tokens)
    else:
        ids = []
    if study.raters.enrolment == "open":
        print(f"open enrolment link (give this one to the crowd platform): {open_enrolment_link(args.base_url, study)}",
              file=sys.stderr)
    elif not ids:
        raise CliError("which raters? give --count K or --ids A,B (or list raters.tokens in the study file)")
    if ids:
        _write_links(study, ids, args.base_url, args.out, args.db)
    return 0


def _add_serve(p: argparse.ArgumentParser) -> None:
    _add_study(p)
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--force", action="store_true",
                   help="serve although validate finds problems (model names in metadata, missing videos)")


def serve_command(study_path: Path, port: int, address: str, debug: bool = False) -> list[str]:
    """The ``streamlit run`` command line: headless, no usage statistics, and error details off (a rater never
    sees a traceback or a server path; ``--debug`` shows them)."""
    app = Path(__file__).with_name("app.py")
    return [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port),
            "--server.address", address, "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "minimal", "--client.showErrorDetails", "full" if debug else "none",
            "--server.fileWatcherType", "none", "--", "--study", str(study_path)]


def _run_serve(args: argparse.Namespace) -> int:
    if args.db:
        os.environ["HUMAN_STUDY_DB_URL"] = args.db  # read by load_study here and in the app
    study = load_study(args.study)
    report = check_study(study)
    if not report.ok:
        _print_report(study, report)
        if not args.force:
            print("error: not serving a study with problems (fix them, or pass --force to serve anyway)",
                  file=sys.stderr)
            return 1
        print("warning: serving despite the problems above (--force)", file=sys.stderr)
    VoteStore.open(study).engine.dispose()  # the database is reachable (else one clear error here, not in the app)
    if getattr(args, "debug", False):
        os.environ["HUMAN_STUDY_DEBUG"] = "1"
    os.execv(sys.executable, serve_command(Path(args.study).resolve(), args.port, args.address,
                                           getattr(args, "debug", False)))
    return 0  # pragma: no cover


def _add_export(p: argparse.ArgumentParser) -> None:
    _add_study(p)
    p.add_argument("--out", default="-", help="CSV file, '-' for stdout")


def _run_export(args: argparse.Namespace) -> int:
    votes = load_votes(load_study(args.study), args.db)
    if args.out == "-":
        votes.to_csv(sys.stdout, index=False)
    else:
        votes.to_csv(args.out, index=False)
        print(f"wrote {len(votes)} votes to {args.out}", file=sys.stderr)
    return 0


def _add_stats(p: argparse.ArgumentParser) -> None:
    _add_study(p)
    p.add_argument("--out", required=True, help="output folder for the CSV tables and summary.json")
    p.add_argument("--votes", help="votes CSV (from `export`) instead of the database")
    p.add_argument("--ci-method", choices=sorted(CI_METHODS), default="goodman")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--n-boot", type=int, default=2000, help="prompt-bootstrap resamples for the net preference")
    p.add_argument("--bt-boot", type=int, default=500, help="prompt-bootstrap resamples for Bradley-Terry")
    p.add_argument("--tie-model", choices=sorted(TIE_MODELS), default="davidson")


def _read_votes_csv(path: str) -> pd.DataFrame:
    if not Path(path).is_file():
        raise CliError(f"--votes: file not found: {path}")
    votes = pd.read_csv(path, keep_default_na=False, na_values=[""])
    missing = [c for c in VOTE_COLUMNS if c not in votes.columns]
    if missing:
        raise CliError(f"--votes {path}: not an export of `python -m human_study export` (missing columns "
                       f"{', '.join(missing[:6])})")
    return votes


def _run_stats(args: argparse.Namespace) -> int:
    study = load_study(args.study)
    votes = _read_votes_csv(args.votes) if args.votes else load_votes(study, args.db)
    cfg = AnalysisConfig.from_study(study, ci_method=args.ci_method, alpha=args.alpha, n_boot=args.n_boot,
                                    bt_boot=args.bt_boot, tie_model=args.tie_model)
    out = analyse(votes, cfg).write(args.out)
    print(f"wrote tables for {len(votes)} votes to {out}")
    return 0


def _add_counts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wins", type=int, required=True, help="votes preferring model A")
    p.add_argument("--ties", type=int, required=True)
    p.add_argument("--losses", type=int, required=True, help="votes preferring model B")
    p.add_argument("--ci-method", choices=sorted(CI_METHODS), default="goodman")
    p.add_argument("--alpha", type=float, default=0.05)


def _run_counts(args: argparse.Namespace) -> int:
    row = win_tie_loss(args.wins, args.ties, args.losses, ci_method=args.ci_method, alpha=args.alpha)
    print(json.dumps(row, indent=2))
    return 0


#: Sub-commands: name -> (argument set-up, runner, help).
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {
    "create": (_add_create, _run_create, "write a study file from folders of videos"),
    "validate": (_add_study, _run_validate, "check videos, blinding of texts and video metadata, quota"),
    "links": (_add_links, _run_links, "signed per-rater links (and the crowd-platform link)"),
    "serve": (_add_serve, _run_serve, "validate, then run the Streamlit app"),
    "export": (_add_export, _run_export, "export votes as CSV"),
    "stats": (_add_stats, _run_stats, "compute the report tables"),
    "counts": (_add_counts, _run_counts, "statistics of bare win/tie/loss counts"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m human_study", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    debug = argparse.ArgumentParser(add_help=False)  # --debug also after the command; SUPPRESS keeps the first one
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add, _run, help_text) in COMMANDS.items():
        add(sub.add_parser(name, help=help_text, parents=[debug]))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user error is one ``error:`` line on stderr and exit code 2 (traceback with --debug)."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"error: {_message(exc)}", file=sys.stderr)
        return 2
