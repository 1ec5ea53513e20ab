"""Dimension lists used to lay out tables and to flag absent dimensions (display only; no scoring happens here).

One source of truth: the lists come from :mod:`evaluation.aggregate`, which scores with them (VBench v1: 7 Quality +
9 Semantic dimensions; VBench-2.0: 18 dimensions in 5 categories).
"""

from evaluation.aggregate import QUALITY_LIST, SEMANTIC_LIST, V2_CATEGORIES, V2_DIMENSIONS

VBENCH_QUALITY = list(QUALITY_LIST)
VBENCH_SEMANTIC = list(SEMANTIC_LIST)
VBENCH_DIMENSIONS = VBENCH_QUALITY + VBENCH_SEMANTIC
VBENCH2_CATEGORIES = {k: list(v) for k, v in V2_CATEGORIES.items()}
VBENCH2_DIMENSIONS = list(V2_DIMENSIONS)
