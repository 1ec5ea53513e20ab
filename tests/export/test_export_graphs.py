"""The exportable chunk steps, in PyTorch: equal to the model's recurrent forward, the model untouched."""

import pytest
import torch
from diffusers import WanTransformer3DModel

from rehyat.export.graphs import BlockChunkStep, ChunkRope, TransformerChunkStep
from rehyat.export.step import window_valid
from rehyat.tiny import TINY_TRANSFORMER_CONFIG
from rehyat.wan import ReHyAtWanTransformer3DModel
from rehyat.wan.recurrent import chunk_rotary_emb, recurrent_forward

from export_helpers import LATENT, SMALL_PHI, converted


def chained(step, x, ts, text):
    """Run ``step`` over the chunks of the latent ``x`` (ragged last chunk padded) and concatenate the outputs."""
    geo = step.geometry
    tc, to = geo.chunk_frames, geo.overlap_frames
    states = [t for _ in range(step.layers) for t in geo.zero_state().tensors()[:len(geo.state_fields())]]
    outs = []
    for f0 in range(0, x.shape[2], tc):
        n = min(tc, x.shape[2] - f0)
        lat = torch.zeros(*x.shape[:2], tc, *x.shape[3:])
        lat[:, :, :n] = x[:, :, f0:f0 + n]
        y, *states = step(lat, ts.float(), text, torch.tensor([f0]), window_valid(min(to, f0), tc, to, n), *states)
        outs.append(y[:, :, :n])
    return torch.cat(outs, 2)


@pytest.mark.parametrize("tc,to,fields", [(2, 1, {}), (1, 2, {"normaliser": "paper", "linear_scale": True}),
                                          (3, 0, {}), (2, 1, {"normaliser": "paper"})])
def test_transformer_step_equals_recurrent_forward(tc, to, fields):
    m = converted(tc, to, **fields)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 5, *LATENT, generator=g)  # 5 frames: ragged last chunk for T_c = 2, 3
    text = torch.randn(1, 7, 32, generator=g)
    ts = torch.tensor([637])
    with torch.no_grad():
        ref = recurrent_forward(m, x, ts, text, return_dict=False)[0]
        got = chained(TransformerChunkStep(m, height=LATENT[0], width=LATENT[1], text_tokens=7), x, ts, text)
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-5)


def test_chunk_rope_equals_chunk_rotary_emb():
    m = converted(3, 1)
    rope = ChunkRope(m.rope, 3, 2, 3)
    for f0 in (0, 3, 9):
        cos, sin = rope(torch.tensor([f0]))
        ref = chunk_rotary_emb(m.rope, f0, 3, 2, 3)
        assert torch.equal(cos, ref[0]) and torch.equal(sin, ref[1])


def test_steps_share_weights_and_leave_the_model_alone():
    m = converted()
    keys = list(m.state_dict())
    procs = m.rehyat_processors()
    step = TransformerChunkStep(m, height=LATENT[0], width=LATENT[1], text_tokens=7)
    block_step = BlockChunkStep(m.blocks[1], height=2, width=3, text_tokens=7)
    assert list(m.state_dict()) == keys and m.rehyat_processors() == procs
    model_params = {p.data_ptr() for p in m.parameters()}
    assert {p.data_ptr() for p in step.parameters()} <= model_params  # no copies
    assert {p.data_ptr() for p in block_step.parameters()} <= model_params
    assert block_step.processor.rehyat is procs[1]


def test_only_fully_converted_causal_models_have_a_step():
    with torch.random.fork_rng(devices=[]):
        dense = WanTransformer3DModel(**TINY_TRANSFORMER_CONFIG).eval()
    bidir = ReHyAtWanTransformer3DModel.from_wan(dense, "paper-main", blocks="all", feature_map_kwargs=SMALL_PHI)
    with pytest.raises(ValueError, match="causal"):
        TransformerChunkStep(bidir, height=4, width=6, text_tokens=7)
    with pytest.raises(ValueError, match="only causal hybrid blocks"):
        BlockChunkStep(bidir.blocks[0], height=2, width=3, text_tokens=7)
    with torch.random.fork_rng(devices=[]):
        dense = WanTransformer3DModel(**TINY_TRANSFORMER_CONFIG).eval()
    partial = ReHyAtWanTransformer3DModel.from_wan(dense, "long-video", blocks=[0], feature_map_kwargs=SMALL_PHI)
    with pytest.raises(ValueError, match=r"blocks \[1\] keep dense"):
        TransformerChunkStep(partial, height=4, width=6, text_tokens=7)
    with pytest.raises(ValueError, match="not a converted ReHyAt processor"):
        BlockChunkStep(partial.blocks[1], height=2, width=3, text_tokens=7)
    with pytest.raises(ValueError, match="multiple of the patch"):
        TransformerChunkStep(converted(), height=5, width=6, text_tokens=7)
