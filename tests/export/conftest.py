"""Fixtures for tests/export (tiny models, CPU, offline; onnx / onnxruntime from the 'export' extra)."""

import pytest
from tiny_fixtures import _one_thread, tiny_root  # noqa: F401  (fixtures)


@pytest.fixture(scope="session")
def tiny_pipe(tiny_root):
    from rehyat.tiny import build_tiny_pipeline

    return build_tiny_pipeline(0, root=tiny_root)


@pytest.fixture(scope="session")
def tiny_export(tiny_pipe, tmp_path_factory):
    """The tiny model's whole-transformer and per-block graphs for 32x32 frames (text length 32)."""
    from rehyat.export.exporter import export_pipeline

    out = tmp_path_factory.mktemp("tiny_export")
    export_pipeline(tiny_pipe, out, height=32, width=32, text_tokens=32, graphs=("transformer", "blocks"),
                    spec="tiny")
    return out
