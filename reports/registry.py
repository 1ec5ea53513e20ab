"""Registry of report sections.

A section is a function ``build(ctx: ReportContext) -> list[Block]`` registered with :func:`section`. Modules in
``reports/sections/`` are imported automatically (see :func:`load_sections`), so adding a section means adding one
file there. A section with no data returns a :class:`reports.blocks.Text` of kind ``note`` that says why.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable, Dict, List

SectionBuilder = Callable[["object"], list]


@dataclass(frozen=True)
class SectionSpec:
    key: str
    title: str
    order: int
    build: SectionBuilder
    collapsed: bool = False  # HTML: folded (<details>), e.g. the appendix of full messages


_REGISTRY: Dict[str, SectionSpec] = {}


def section(key: str, title: str, order: int, collapsed: bool = False
            ) -> Callable[[SectionBuilder], SectionBuilder]:
    """Decorator registering a section builder under ``key`` (unique), shown by ascending ``order``; a ``collapsed``
    section is folded in the HTML (``<details>``)."""

    def deco(fn: SectionBuilder) -> SectionBuilder:
        if key in _REGISTRY and _REGISTRY[key].build is not fn:
            prev = _REGISTRY[key].build
            if (prev.__module__, prev.__qualname__) != (fn.__module__, fn.__qualname__):
                raise ValueError(f"report section {key!r} registered twice")
        _REGISTRY[key] = SectionSpec(key=key, title=title, order=order, build=fn, collapsed=collapsed)
        return fn

    return deco


def load_sections() -> List[SectionSpec]:
    """Import every module in ``reports.sections`` and return the registered sections in display order."""
    import reports.sections as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    return sorted(_REGISTRY.values(), key=lambda s: (s.order, s.key))
