"""Items and per-rater plans: balanced over prompts and model pairs, left/right counterbalanced, seeded.

*Items* are what a rater judges: ``core`` items (one prompt, one model pair; every prompt x pair once), ``gold``
items (a pair with a known answer) and ``repeat`` items (a core item shown again to the same rater with the sides
swapped, for intra-rater consistency). Item ids are opaque (HMAC of the study secret), so they can appear in widget
keys without revealing which models are compared.

Balance: the core items are laid out in a cyclic *balanced sequence* (consecutive items cycle through the model
pairs and shift through the prompts); rater number ``i`` (in registration order) takes the ``quota`` items starting
at ``i * quota``. So coverage over raters differs by at most one per item, and every rater sees the pairs as evenly
as the quota allows.

Counterbalancing: within a rater's plan, for each model pair, half of the items show model A on the left (the odd
one out alternates with the rater index), in an order seeded by ``(study, seed, rater, pair)``. The sides are thus a
deterministic function of (study, seed, rater, item) and are stored with every vote.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

import numpy as np

from .blinding import opaque_id
from .config import Study

KINDS = ("core", "gold", "repeat")


@dataclass(frozen=True)
class Item:
    """One comparison. ``model_a``/``model_b`` are canonical (study order); gold items use ``gold:a``/``gold:b``."""

    id: str
    kind: str
    prompt_id: str
    model_a: str
    model_b: str
    gold_id: str | None = None
    answer: str | None = None
    criteria: tuple[str, ...] = ()
    duplicate_of: str | None = None
    seq: int = -1


@dataclass(frozen=True)
class PlanEntry:
    """The ``position``-th item shown to a rater, and whether model A is on the left."""

    position: int
    item_id: str
    left_is_a: bool


def seeded_rng(*parts: object) -> np.random.Generator:
    """A generator seeded by a stable hash of ``parts`` (independent of ``PYTHONHASHSEED``)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def model_pairs(study: Study) -> list[tuple[str, str]]:
    """Every unordered model pair, canonically ordered as in the study file."""
    return list(itertools.combinations(study.model_names, 2))


def core_items(study: Study, secret: str) -> list[Item]:
    """All prompt x pair items in the balanced sequence order (``seq``)."""
    pairs = model_pairs(study)
    prompts = [p.id for p in study.prompts]
    perm = seeded_rng(study.name, study.seed, "prompts").permutation(len(prompts))
    items = []
    for k in range(len(prompts) * len(pairs)):
        j, p = divmod(k, len(pairs))
        prompt = prompts[perm[(j + p) % len(prompts)]]
        a, b = pairs[p]
        items.append(Item(opaque_id(secret, "core", prompt, a, b), "core", prompt, a, b, seq=k))
    return items


def gold_items(study: Study, secret: str) -> list[Item]:
    """One item per gold entry of the study."""
    return [
        Item(opaque_id(secret, "gold", g.id), "gold", g.id, "gold:a", "gold:b", gold_id=g.id, answer=g.answer,
             criteria=g.criteria)
        for g in study.gold
    ]


def repeat_item(original: Item, secret: str) -> Item:
    """The swapped-side repeat of a core item."""
    return Item(opaque_id(secret, "repeat", original.id), "repeat", original.prompt_id, original.model_a,
                original.model_b, duplicate_of=original.id)


def _balanced_sides(n: int, rng: np.random.Generator, first_left: bool) -> list[bool]:
    sides = [(t % 2 == 0) == first_left for t in range(n)]
    return [sides[t] for t in rng.permutation(n)]


def rater_plan(study: Study, secret: str, rater: str, rater_index: int) -> tuple[list[PlanEntry], list[Item]]:
    """The ordered plan of rater number ``rater_index`` and the repeat items it needs.

    The plan holds ``min(quota, #core items)`` core items, every gold item and ``repeats`` swapped repeats.
    """
    core = core_items(study, secret)
    quota = min(study.quota, len(core))
    start = rater_index * quota
    mine = [core[(start + t) % len(core)] for t in range(quota)]
    rng = seeded_rng(study.name, study.seed, rater)

    left_is_a: dict[str, bool] = {}
    for pair in model_pairs(study):
        group = [it for it in mine if (it.model_a, it.model_b) == pair]
        sides = _balanced_sides(len(group), seeded_rng(study.name, study.seed, rater, *pair), rater_index % 2 == 0)
        left_is_a.update({it.id: s for it, s in zip(group, sides)})

    order = [mine[t] for t in rng.permutation(len(mine))]
    n_repeats = min(study.repeats, len(order))  # the quota may have been capped below `repeats`
    repeats = [repeat_item(order[t], secret) for t in sorted(rng.choice(len(order), n_repeats, replace=False))]
    for rep in repeats:
        original = next(i for i, it in enumerate(order) if it.id == rep.duplicate_of)
        low = min(original + 3, len(order))
        order.insert(int(rng.integers(low, len(order) + 1)), rep)
        left_is_a[rep.id] = not left_is_a[rep.duplicate_of]

    golds = gold_items(study, secret)
    gold_sides = _balanced_sides(len(golds), seeded_rng(study.name, study.seed, rater, "gold"), rater_index % 2 == 0)
    for g, side, slot in zip(golds, gold_sides, _spread(len(golds), len(order), rng)):
        order.insert(slot, g)
        left_is_a[g.id] = side

    plan = [PlanEntry(pos, it.id, left_is_a[it.id]) for pos, it in enumerate(order)]
    return plan, repeats


def _spread(n_gold: int, n_other: int, rng: np.random.Generator) -> list[int]:
    """Insertion slots that spread ``n_gold`` items evenly (with jitter) over a list of ``n_other`` (ascending)."""
    if n_gold == 0:
        return []
    edges = np.linspace(0, n_other, n_gold + 1)
    slots = [int(rng.integers(int(lo), max(int(lo), int(hi)) + 1)) for lo, hi in zip(edges[:-1], edges[1:])]
    return [s + k for k, s in enumerate(sorted(slots))]  # each insertion shifts later slots by one
