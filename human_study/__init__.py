"""Blinded, counterbalanced pairwise human-preference studies for generated video.

Subpackages and modules:

- :mod:`human_study.config` – the study file (YAML / TOML / JSON) and its validation.
- :mod:`human_study.assignment` – balanced items, per-rater plans, seeded left/right counterbalancing.
- :mod:`human_study.store` – concurrency-safe, idempotent vote storage (SQLite default, PostgreSQL for replicas).
- :mod:`human_study.links` – per-rater signed links and open enrolment for crowd platforms.
- :mod:`human_study.blinding` – opaque ids and leak checks (texts, video metadata); model names never reach the browser.
- :mod:`human_study.checks` – what ``validate`` reports and ``serve`` refuses to start with.
- :mod:`human_study.player` – the two-video player (muted, looped, started together, "Replay both").
- :mod:`human_study.stats` – win/tie/loss with CIs, sign tests, clustered bootstrap, Bradley–Terry, agreement.
- :mod:`human_study.app` – the Streamlit app (``streamlit run human_study/app.py -- --study FILE``).
- :mod:`human_study.cli` – ``python -m human_study create|validate|links|serve|export|stats|counts``.

This package imports nothing from ``rehyat``, ``evaluation`` or ``reports``.
"""

__version__ = "0.1.0"
