"""``python -m human_study COMMAND``: create a study from folders, validate it, serve it, export votes, compute stats.

Commands (a registry, :data:`COMMANDS`):

- ``create --name N --model NAME=FOLDER ... [--prompts FILE] [--quota Q] [--repeats R] --out study.yaml``
- ``validate --study FILE`` – missing videos, model names in rater-facing texts or inside video files, quota
- ``serve --study FILE [--port P]`` – ``streamlit run human_study/app.py -- --study FILE``
- ``export --study FILE --out votes.csv`` – every vote with its item, models and displayed side
- ``stats --study FILE --out DIR [--votes votes.csv]`` – the report tables (``docs/interfaces.md``)
- ``counts --wins W --ties T --losses L`` – the win/tie/loss statistics of bare counts (e.g. a published split)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

import pandas as pd

from .blinding import study_text_leaks, video_file_leaks
from .config import DEFAULT_CRITERIA, file_problems, folder_videos, load_study, save_study
from .stats.bradley_terry import TIE_MODELS
from .stats.proportions import CI_METHODS, win_tie_loss
from .stats.tables import AnalysisConfig, analyse
from .store import load_votes


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
    p.add_argument("--out", required=True, help="study file to write (.yaml or .json)")


def _run_create(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    models = []
    for spec in args.model:
        name, sep, folder = spec.partition("=")
        if not sep:
            raise SystemExit(f"--model expects NAME=FOLDER, got {spec!r}")
        folder_path = Path(folder).resolve()
        if not folder_videos(folder_path):
            raise SystemExit(f"no videos in {folder_path}")
        models.append({"name": name, "folder": os.path.relpath(folder_path, out.parent)})
    data = {"name": args.name, "seed": args.seed, "models": models,
            "criteria": [c for c in args.criteria.split(",") if c], "quota": args.quota, "repeats": args.repeats,
            "exclusion": {"min_gold_accuracy": 0.75}, "storage": {"url": f"sqlite:///{args.name}.votes.sqlite"}}
    if args.prompts:
        data["prompts"] = os.path.relpath(Path(args.prompts).resolve(), out.parent)
    save_study(data, out)
    study = load_study(out)  # validates what was written
    print(f"wrote {out}: {len(study.models)} models, {len(study.prompts)} prompts, {len(study.criteria)} criteria")
    return 0


def _add_study(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", required=True, help="study file (.yaml/.toml/.json)")
    p.add_argument("--db", help="SQLAlchemy URL overriding the study's storage URL")


def _run_validate(args: argparse.Namespace) -> int:
    study = load_study(args.study)
    problems = file_problems(study) + study_text_leaks(study)
    for m in study.models:
        for pid in (p.id for p in study.prompts):
            path = m.videos.get(pid)
            if path is not None and path.is_file():
                problems += [f"{path} contains the model name {n!r} (blinding)"
                             for n in video_file_leaks(path, study.model_names)]
    n_core = len(study.prompts) * len(study.models) * (len(study.models) - 1) // 2
    if study.quota > n_core:
        problems.append(f"quota {study.quota} exceeds the {n_core} prompt x pair items (raters get {n_core})")
    for line in problems:
        print(f"problem: {line}")
    print(f"{study.name}: {len(study.models)} models, {len(study.prompts)} prompts, {n_core} core items, "
          f"{len(study.gold)} gold items; {len(problems)} problem(s)")
    return 1 if problems else 0


def _add_serve(p: argparse.ArgumentParser) -> None:
    _add_study(p)
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default="127.0.0.1")


def _run_serve(args: argparse.Namespace) -> int:
    app = Path(__file__).with_name("app.py")
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(args.port),
           "--server.address", args.address, "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "minimal", "--", "--study", str(Path(args.study).resolve())]
    if args.db:
        os.environ["HUMAN_STUDY_DB_URL"] = args.db
    os.execv(sys.executable, cmd)
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


def _run_stats(args: argparse.Namespace) -> int:
    study = load_study(args.study)
    votes = pd.read_csv(args.votes, keep_default_na=False, na_values=[""]) if args.votes \
        else load_votes(study, args.db)
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
    "validate": (_add_study, _run_validate, "check videos, blinding of video files and quota"),
    "serve": (_add_serve, _run_serve, "run the Streamlit app"),
    "export": (_add_export, _run_export, "export votes as CSV"),
    "stats": (_add_stats, _run_stats, "compute the report tables"),
    "counts": (_add_counts, _run_counts, "statistics of bare win/tie/loss counts"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m human_study", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add, _run, help_text) in COMMANDS.items():
        add(sub.add_parser(name, help=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command][1](args)
