"""What every ``python -m rehyat.*`` command does with errors: one clear line and exit status 2 for what a user can
fix (a missing folder or checkpoint, a bad option or config value), the full traceback only with ``--debug``."""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Callable

USER_ERRORS = (FileNotFoundError, NotADirectoryError, ValueError, KeyError)
EXIT_USER_ERROR = 2


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def run_cli(fn: Callable[[], int], *, debug: bool, prog: str) -> int:
    """``fn()``; a user error prints ``prog: error: ...`` (and, with ``debug``, its traceback) and returns 2."""
    try:
        return fn()
    except USER_ERRORS as e:
        if debug:
            traceback.print_exc()
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"{prog}: error: {msg}", file=sys.stderr)
        if not debug:
            print(f"{prog}: (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_USER_ERROR
