"""A whole tiny video through onnxruntime: the same frames as PyTorch's stream and recurrent modes."""

import numpy as np
import pytest
import torch

import rehyat.generate as G
from rehyat.export.__main__ import main
from rehyat.export.driver import ExportedTransformerStep, exported_sample
from rehyat.wan.convert import rehyat_mode

from export_helpers import VIDEO_RECIPE as RECIPE


def test_onnx_video_equals_stream_and_recurrent_modes(tiny_export, tiny_pipe):
    onnx = exported_sample(tiny_export, "a cat", 3, pipe=tiny_pipe, **RECIPE)
    torch_kw = dict(RECIPE, height=32, width=32, max_sequence_length=32)
    stream = G.generate_sample(tiny_pipe, "a cat", 3, stream=True, **torch_kw)
    with rehyat_mode(tiny_pipe.transformer, "recurrent"):
        recurrent = G.generate_sample(tiny_pipe, "a cat", 3, **torch_kw)
    assert onnx.frames.shape == stream.frames.shape == (17, 32, 32, 3)
    for ref in (stream, recurrent):
        torch.testing.assert_close(onnx.latents, ref.latents, atol=1e-4, rtol=1e-4)
        assert np.abs(onnx.frames.astype(int) - ref.frames.astype(int)).max() <= 1
    other = exported_sample(tiny_export, "a dog", 3, pipe=tiny_pipe, **RECIPE)
    assert not torch.equal(other.latents, onnx.latents)


def test_step_refuses_chunks_it_was_not_built_for(tiny_export):
    step = ExportedTransformerStep(tiny_export)
    x, text = torch.zeros(1, 16, 3, 4, 4), torch.zeros(1, 32, 32)
    with pytest.raises(ValueError, match="1..T_c=2"):
        step(x, 500, text, 0, step.zero_states())
    with pytest.raises(ValueError, match="multiples of T_c=2"):
        step(x[:, :, :2], 500, text, 1, step.zero_states())


def test_generate_cli(tiny_export, tiny_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REHYAT_CACHE", str(tiny_root))
    out = tmp_path / "cat.mp4"
    assert main(["generate", "--export", str(tiny_export), "--prompt", "a cat", "--num-frames", "9",
                 "--out", str(out)]) == 0
    assert G.probe_mp4(out) == (9, 32, 32)
    assert "chunk 2/2" in capsys.readouterr().out
    assert main(["generate", "--export", str(tmp_path / "nothing"), "--prompt", "x", "--out", str(out)]) == 2
    assert "rehyat_export.json not found" in capsys.readouterr().err
    assert main(["generate", "--export", str(tiny_export), "--prompt", "x", "--out", str(tmp_path / "x.gif")]) == 2
    assert "--out must name an .mp4" in capsys.readouterr().err
