"""``python -m human_study ...`` (see :mod:`human_study.cli`)."""

import sys

from .cli import main

sys.exit(main())
