"""Fixtures for tests/wan (tiny models only, CPU, offline)."""

from tiny_fixtures import _one_thread, tiny_root  # noqa: F401  (fixtures)
