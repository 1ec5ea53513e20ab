"""The ``efficiency`` suite: FLOPs, latency and peak memory of attention kinds per op, per Wan block and per Wan model,
swept over video duration and resolution (``python -m evaluation.run --suite efficiency --preset ci|cpu|gpu``).

See docs/efficiency.md.  Importing this package registers the suite (``evaluation.registry.discover`` imports every
top-level ``evaluation/efficiency*`` module).
"""
from .suite import EfficiencySuite  # noqa: F401  (registers the suite)
