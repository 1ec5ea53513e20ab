"""Fixtures for the human-study tests (helpers live in ``hs_helpers``; the PostgreSQL server in ``pg_server``)."""

import os
from pathlib import Path

import pytest
from hs_helpers import write_study
from pg_server import INSTALL_HINT, LocalPostgres, find_bindir


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    """A two-model, four-prompt study with one gold item and one repeat per rater."""
    return write_study(tmp_path)


@pytest.fixture(scope="session")
def postgres_server():
    """A local PostgreSQL server for the whole session (skipped only when its binaries or psycopg are missing;
    in CI that is a failure, since ``scripts/install.sh --test`` installs both)."""
    bindir = find_bindir()
    reason = None if bindir else f"PostgreSQL server binaries not found ({INSTALL_HINT})"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        reason = "psycopg is not installed (pip install -e '.[postgres]')"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must have it")
        pytest.skip(reason)
    server = LocalPostgres(bindir).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL of a fresh, empty PostgreSQL database."""
    return postgres_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path: Path) -> str:
    """An empty vote database on each backend: a SQLite file, and a database on the local PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'votes.sqlite'}"
    return request.getfixturevalue("postgres_url")
