"""ExecuTorch programs (.pte) of the chunk step: static shapes, one sidecar layout, ExecuTorch's runtime == the eager
recurrent step, and a whole tiny video through it == PyTorch's stream mode.  Needs the 'executorch' extra
(scripts/install.sh --test installs it); without it these tests skip, except the ones about its absence."""

import sys

import numpy as np
import pytest
import torch

import rehyat.generate as G
from rehyat.export.__main__ import main
from rehyat.export.driver import ExportedTransformerStep, exported_sample
from rehyat.export.exporter import export_transformer, read_sidecar
from rehyat.export.formats import EXECUTORCH, FORMATS, ExportFormat, format_for_path, register_format
from rehyat.export.graphs import BlockChunkStep
from rehyat.export.verify import check_block, check_transformer

from export_helpers import VIDEO_RECIPE, converted

TOL = 1e-4  # max |ExecuTorch - eager| relative to the output scale (fp32)
try:
    import executorch.runtime  # noqa: F401

    HAVE_EXECUTORCH = True
except ImportError:
    HAVE_EXECUTORCH = False
needs_executorch = pytest.mark.skipif(not HAVE_EXECUTORCH, reason="ExecuTorch is not installed (the 'executorch' "
                                      "extra; scripts/install.sh --test installs it)")


@pytest.fixture(scope="module")
def tiny_pte(tiny_pipe, tmp_path_factory):
    """The tiny model's whole-transformer and per-block programs for 32x32 frames, XNNPACK-delegated."""
    from rehyat.export.exporter import export_pipeline

    out = tmp_path_factory.mktemp("tiny_pte")
    export_pipeline(tiny_pipe, out, height=32, width=32, text_tokens=32, graphs=("transformer", "blocks"),
                    format="executorch", spec="tiny", backend="xnnpack")
    return out


@needs_executorch
def test_pte_static_shapes_and_sidecar(tiny_pte, tiny_export):
    side, onnx_side = read_sidecar(tiny_pte), read_sidecar(tiny_export)
    assert (side["graph_format"], side["runtime"], side["backend"]) == ("executorch", "executorch", "xnnpack")
    assert onnx_side["graph_format"] == "onnx" and onnx_side["runtime"] == "onnxruntime"
    assert set(side["graphs"]) == {"transformer", "block.0", "block.1"}
    # one sidecar layout: the same geometry, state layout and signatures as the ONNX export, other files
    for key in ("format", "version", "geometry", "state", "rehyat", "pixels", "model"):
        assert side[key] == onnx_side[key], key
    for name, graph in side["graphs"].items():
        assert graph["files"] == [("transformer" if name == "transformer" else f"block_{name[6:]}") + ".pte"]
        assert graph["inputs"] == onnx_side["graphs"][name]["inputs"]
        assert graph["outputs"] == onnx_side["graphs"][name]["outputs"]
        names_in, names_out = [s["name"] for s in graph["inputs"]], [s["name"] for s in graph["outputs"]]
        stored = EXECUTORCH.stored_shapes(tiny_pte / graph["files"][0], names_in, names_out)
        for s in graph["inputs"] + graph["outputs"]:
            assert stored[s["name"]] == tuple(s["shape"]) and all(isinstance(d, int) for d in stored[s["name"]])


@needs_executorch
def test_pte_equals_eager_tiny(tiny_pte, tiny_pipe):
    t = tiny_pipe.transformer
    agree = check_transformer(tiny_pte, t)
    assert agree.runtime == "executorch" and agree.chunks == 3 and agree.rel <= TOL, agree.describe()
    for i, block in enumerate(t.blocks):
        step = BlockChunkStep(block, height=2, width=2, text_tokens=32)
        agree = check_block(tiny_pte / f"block_{i}.pte", step, block)
        assert agree.rel <= TOL, agree.describe()


@needs_executorch
def test_portable_kernels_paper_normaliser(tmp_path):
    """No delegate (ExecuTorch's portable kernels), T_o > T_c, paper normaliser with a learned scale."""
    m = converted(1, 2, normaliser="paper", linear_scale=True)
    export_transformer(m, tmp_path, latent_height=4, latent_width=6, text_tokens=7, format="executorch",
                       backend="portable")
    assert read_sidecar(tmp_path)["backend"] == "portable"
    agree = check_transformer(tmp_path, m, frames=4)
    assert agree.chunks == 4 and agree.rel <= TOL, agree.describe()


@needs_executorch
def test_pte_video_equals_stream_mode(tiny_pte, tiny_pipe):
    pte = exported_sample(tiny_pte, "a cat", 3, pipe=tiny_pipe, **VIDEO_RECIPE)
    stream = G.generate_sample(tiny_pipe, "a cat", 3, stream=True, height=32, width=32, max_sequence_length=32,
                               **VIDEO_RECIPE)
    assert pte.frames.shape == stream.frames.shape == (17, 32, 32, 3)
    torch.testing.assert_close(pte.latents, stream.latents, atol=1e-4, rtol=1e-4)
    assert np.abs(pte.frames.astype(int) - stream.frames.astype(int)).max() <= 1


@needs_executorch
def test_executorch_cli(tiny_pte, tiny_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REHYAT_CACHE", str(tiny_root))
    assert main(["executorch", "--model", "tiny", "--height", "30", "--width", "32", "--out", str(tmp_path)]) == 2
    assert "multiples of 16" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["executorch", "--model", "tiny", "--height", "32", "--width", "32", "--out", str(tmp_path),
              "--backend", "coreml"])
    assert e.value.code == 2 and "invalid choice: 'coreml'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    out = tmp_path / "cat.mp4"
    assert main(["generate", "--export", str(tiny_pte), "--prompt", "a cat", "--num-frames", "5", "--steps", "1",
                 "--out", str(out)]) == 0
    assert G.probe_mp4(out) == (5, 32, 32)
    assert "transformer in executorch" in capsys.readouterr().out
    step = ExportedTransformerStep(tiny_pte)
    with pytest.raises(ValueError, match="1..T_c=2"):
        step(torch.zeros(1, 16, 3, 4, 4), 500, torch.zeros(1, 32, 32), 0, step.zero_states())


def test_missing_executorch_is_a_user_error(tmp_path, tiny_root, monkeypatch, capsys):
    """Without the extra: exit 2 and the install line, nothing written (runs whether ExecuTorch is installed or not)."""
    monkeypatch.setenv("REHYAT_CACHE", str(tiny_root))
    monkeypatch.setitem(sys.modules, "executorch.exir", None)  # import fails as if not installed
    assert main(["executorch", "--model", "tiny", "--height", "32", "--width", "32", "--out", str(tmp_path)]) == 2
    assert "pip install 'rehyat[executorch]'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_format_registry_refuses_duplicates_and_unknown_files():
    assert list(FORMATS) == ["onnx", "executorch"]
    assert format_for_path("x/block_0.pte") is EXECUTORCH
    with pytest.raises(ValueError, match="already registered"):
        register_format(EXECUTORCH)
    with pytest.raises(ValueError, match="suffix '.pte' already belongs"):
        register_format(ExportFormat(**{**EXECUTORCH.__dict__, "name": "other"}))
    with pytest.raises(ValueError, match="no export format writes .tflite"):
        format_for_path("model.tflite")
