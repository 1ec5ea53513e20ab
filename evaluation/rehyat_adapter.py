"""Adapter from ``--model`` specs to ``rehyat.generate.WanVideoGenerator`` (the model side's generator).

Specs: ``tiny`` (built-in tiny random ReHyAt model), ``tiny-softmax`` (its softmax teacher), a ReHyAt checkpoint folder
or a diffusers Wan folder; append ``@recurrent`` to run a ReHyAt model in recurrent mode (e.g. ``tiny@recurrent``).
``WanVideoGenerator`` already satisfies :class:`evaluation.generation.VideoGenerator`; this module adds the
generation-size defaults (``defaults``) and a readable label.
"""
from __future__ import annotations

import os
from pathlib import Path

TINY_LABELS = {"tiny": "rehyat-tiny", "tiny-rehyat": "rehyat-tiny", "tiny-softmax": "tiny-softmax"}


def default_label(spec: str, mode: str = "parallel") -> str:
    base = TINY_LABELS.get(spec) or Path(spec).name or spec
    return base if mode == "parallel" else f"{base}-{mode}"


def load(spec: str, *, device: str = "cpu", label: str | None = None, **options):
    from rehyat.generate import WAN_FPS, WanVideoGenerator, model_defaults

    mode = "parallel"
    if "@" in spec and not os.path.exists(spec):
        spec, mode = spec.rsplit("@", 1)
    gen = WanVideoGenerator(spec, label=label or default_label(spec, mode), mode=mode, device=device, **options)
    d = model_defaults(spec)
    gen.defaults = {"num_frames": d["num_frames"], "height": d["height"], "width": d["width"],
                    "fps": gen.recipe.get("fps", WAN_FPS)}
    return gen
