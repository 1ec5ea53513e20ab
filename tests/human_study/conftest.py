"""Fixtures for the human-study tests (helpers live in ``hs_helpers``)."""

from pathlib import Path

import pytest
from hs_helpers import write_study


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    """A two-model, four-prompt study with one gold item and one repeat per rater."""
    return write_study(tmp_path)
