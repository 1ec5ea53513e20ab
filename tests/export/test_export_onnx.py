"""ONNX graphs of the chunk step: static shapes, standard ops, sidecar, onnxruntime == the eager recurrent step."""

import json

import onnx
import torch
from diffusers.models.transformers.transformer_wan import WanTransformerBlock

from rehyat.config import ReHyAtConfig
from rehyat.export.__main__ import main
from rehyat.export.exporter import SIDECAR, export_graph, export_transformer, graph_static_shapes, read_sidecar
from rehyat.export.graphs import BlockChunkStep
from rehyat.export.verify import check_block, check_transformer
from rehyat.wan.processor import ReHyAtWanAttnProcessor

from export_helpers import converted

TOL = 1e-4  # max |onnxruntime - eager| relative to the output scale (fp32)


def test_sidecar_describes_static_graphs_of_standard_ops(tiny_export):
    side = read_sidecar(tiny_export)
    assert set(side["graphs"]) == {"transformer", "block.0", "block.1"}
    geo, state = side["geometry"], side["state"]
    assert (geo["chunk_frames"], geo["overlap_frames"], geo["frame_tokens"], geo["layers"]) == (2, 1, 4, 2)
    assert state["fields"] == ["s", "z", "tail_k", "tail_v", "tail_fk"]
    assert state["fields_doc"]["tail_fk"]["shape"] == [1, 4, 2, 16]  # [B, T_o * frame tokens, H, F]
    for name, graph in side["graphs"].items():
        path = tiny_export / graph["files"][0]
        assert all((tiny_export / f).is_file() for f in graph["files"])
        stored = graph_static_shapes(path)
        specs = graph["inputs"] + graph["outputs"]
        assert set(stored) == {s["name"] for s in specs}
        for s in specs:
            assert stored[s["name"]] == tuple(s["shape"]) and all(isinstance(d, int) for d in stored[s["name"]])
        ins = {s["name"] for s in graph["inputs"]}
        for layer in ([0, 1] if name == "transformer" else [0]):
            assert {f"state.{layer}.{f}" for f in state["fields"]} <= ins
        model = onnx.load(str(path), load_external_data=False)
        assert {n.domain for n in model.graph.node} <= {""}, "only default-domain ONNX ops"
        assert not model.functions and {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    t = side["graphs"]["transformer"]
    assert [s["name"] for s in t["inputs"][:5]] == ["latents", "timestep", "encoder_hidden_states", "first_frame",
                                                   "window_valid"]
    assert json.loads((tiny_export / SIDECAR).read_text())["model"]["spec"] == "tiny"


def test_onnxruntime_equals_eager_tiny(tiny_export, tiny_pipe):
    t = tiny_pipe.transformer
    agree = check_transformer(tiny_export, t)
    assert agree.chunks == 3 and agree.rel <= TOL, agree.describe()
    for i, block in enumerate(t.blocks):
        step = BlockChunkStep(block, height=2, width=2, text_tokens=32)
        agree = check_block(tiny_export / f"block_{i}.onnx", step, block)
        assert agree.rel <= TOL, agree.describe()


def test_paper_normaliser_long_overlap_and_no_overlap(tmp_path):
    for tc, to, fields in ((1, 2, {"normaliser": "paper", "linear_scale": True}), (2, 0, {})):
        m = converted(tc, to, **fields)
        out = tmp_path / f"tc{tc}to{to}"
        export_transformer(m, out, latent_height=4, latent_width=6, text_tokens=7)
        agree = check_transformer(out, m, frames=5)
        assert agree.rel <= TOL, agree.describe()
        names = {s["name"] for s in read_sidecar(out)["graphs"]["transformer"]["inputs"]}
        assert ("state.0.tail_k" in names) == (to > 0)


def test_wan_1_3b_width_block(tmp_path):
    """One block at Wan2.1-1.3B width (1536 = 12 x 128, FFN 8960, polynomial phi 256/256), long-video chunking, on a
    small frame (2 x 3 tokens) so the test stays short; the benchmark runs it at 240x416."""
    torch.manual_seed(0)
    block = WanTransformerBlock(1536, 8960, 12, "rms_norm_across_heads", True, 1e-6).eval()
    block.attn1.set_processor(ReHyAtWanAttnProcessor(12, 128, ReHyAtConfig.from_preset("long-video")))
    step = BlockChunkStep(block, height=2, width=3, text_tokens=8)
    export_graph(step, tmp_path / "block.onnx")
    agree = check_block(tmp_path / "block.onnx", step, block)
    assert agree.chunks == 3 and agree.rel <= TOL, agree.describe()


def test_cli_refuses_what_it_cannot_export(tmp_path, tiny_root, monkeypatch, capsys):
    monkeypatch.setenv("REHYAT_CACHE", str(tiny_root))
    assert main(["onnx", "--model", "tiny-softmax", "--height", "32", "--width", "32", "--out", str(tmp_path)]) == 2
    assert "dense (softmax)" in capsys.readouterr().err
    assert main(["onnx", "--model", "tiny", "--height", "30", "--width", "32", "--out", str(tmp_path)]) == 2
    assert "multiples of 16" in capsys.readouterr().err
    assert main(["onnx", "--model", "tiny", "--height", "32", "--width", "32", "--out", str(tmp_path),
                 "--graphs", "everything"]) == 2
    assert "graphs must be some of" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
