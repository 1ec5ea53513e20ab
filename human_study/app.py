"""Streamlit entry point: ``streamlit run human_study/app.py -- --study FILE``.

The study file may also be given by the environment variable ``HUMAN_STUDY_FILE`` (used by the tests). Serve it
with ``python -m human_study serve`` (it validates the study first and turns Streamlit's error details off).
Raters open their signed link ``http://HOST:PORT/?rater=ID&sig=SIG`` (``python -m human_study links``), or, with
open enrolment, the crowd-platform link; the admin page is ``http://HOST:PORT/?admin=1``.
"""

import argparse
import os
import sys
from pathlib import Path

try:
    from human_study import ui
except ModuleNotFoundError:  # run as a script from a checkout: Streamlit puts only this folder on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from human_study import ui


def study_path(argv: list[str]) -> str | None:
    """``--study FILE`` from the script arguments, else ``$HUMAN_STUDY_FILE``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--study")
    args, _ = parser.parse_known_args(argv)
    return args.study or os.environ.get("HUMAN_STUDY_FILE")


if __name__ == "__main__":  # Streamlit (and AppTest) run this file as __main__; an import does nothing
    ui.main(study_path(sys.argv[1:]))
