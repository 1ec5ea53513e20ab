"""Fixtures shared by the test folders that run the built-in tiny model (imported by their conftest.py files)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only add contention on the shared CI cores
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """A private cache root holding the built-in tiny model (written once per session through save_pretrained)."""
    from rehyat.tiny import tiny_model_dir

    root = tmp_path_factory.mktemp("rehyat_cache")
    tiny_model_dir(0, root)
    return root
