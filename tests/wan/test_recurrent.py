import pytest
import torch

from rehyat.attention import HybridState
from rehyat.wan.convert import convert_wan_to_rehyat, rehyat_mode, set_rehyat_mode
from rehyat.wan.memory import measure_peak
from rehyat.wan.recurrent import chunk_rotary_emb, recurrent_forward

from wan_helpers import SMALL_PHI, make_inputs, make_transformer

# float32 tiny models: the two forms differ only by summation order (observed max |diff| ~5e-7 on outputs of O(1)).
ATOL, RTOL = 2e-5, 1e-5


def _converted(tc, to, num_layers=2, causal=True, **kw):
    m = make_transformer(num_layers=num_layers, rope_max_seq_len=64, **kw)
    return convert_wan_to_rehyat(m, "all", chunk_frames=tc, overlap_frames=to, causal=causal,
                                 feature_map_kwargs=SMALL_PHI, seed=0)


def test_chunk_rotary_emb_equals_slice_of_full_table():
    m = make_transformer(rope_max_seq_len=64)
    x = torch.zeros(1, 4, 9, 6, 10)
    cos, sin = m.rope(x)
    ft = 3 * 5
    for f0, n in [(0, 2), (2, 3), (7, 2), (8, 1)]:
        c, s = chunk_rotary_emb(m.rope, f0, n, 3, 5)
        assert torch.equal(c, cos[:, f0 * ft:(f0 + n) * ft]) and torch.equal(s, sin[:, f0 * ft:(f0 + n) * ft])
    with pytest.raises(ValueError, match="rotary table"):
        chunk_rotary_emb(m.rope, 60, 5, 3, 5)


@pytest.mark.parametrize("tc", [1, 2, 3])
@pytest.mark.parametrize("to", [0, 1])
@pytest.mark.parametrize("frames", [6, 7])  # 7: ragged last chunk for T_c = 2, 3
def test_recurrent_equals_parallel(tc, to, frames):
    m = _converted(tc, to)
    inputs = make_inputs(frames=frames, size=8)
    with torch.no_grad():
        par = m(**inputs).sample
        with rehyat_mode(m, "recurrent"):
            rec = m(**inputs).sample
        direct = recurrent_forward(m, **inputs, return_dict=False)[0]
    assert rec.shape == par.shape == inputs["hidden_states"].shape
    torch.testing.assert_close(rec, par, atol=ATOL, rtol=RTOL)
    assert torch.equal(rec, direct)
    # the sweep leaves no state behind
    assert not any(isinstance(v, HybridState) for b in m.blocks for v in vars(b.attn1.processor).values())


def test_recurrent_batch_and_non_square():
    m = _converted(2, 1, num_layers=3)
    g = torch.Generator().manual_seed(0)
    inputs = dict(hidden_states=torch.randn(2, 4, 5, 6, 10, generator=g), timestep=torch.tensor([900, 10]),
                  encoder_hidden_states=torch.randn(2, 7, 16, generator=g))
    with torch.no_grad():
        par = m(**inputs).sample
        set_rehyat_mode(m, "recurrent")
        rec = m(**inputs).sample
    torch.testing.assert_close(rec, par, atol=ATOL, rtol=RTOL)


def test_recurrent_requires_full_causal_conversion():
    m = convert_wan_to_rehyat(make_transformer(num_layers=3), [0, 2], causal=True, feature_map_kwargs=SMALL_PHI)
    with pytest.raises(ValueError, match=r"blocks \[1\] keep dense"):
        set_rehyat_mode(m, "recurrent")
    with pytest.raises(ValueError, match="needs every block"):
        recurrent_forward(m, **make_inputs())
    m = convert_wan_to_rehyat(make_transformer(), "all", causal=False, feature_map_kwargs=SMALL_PHI)
    with pytest.raises(ValueError, match="causal"):
        set_rehyat_mode(m, "recurrent")
    with pytest.raises(ValueError):
        set_rehyat_mode(m, "sideways")


def _working_peak(m, frames):
    """Peak bytes of tensors allocated by one forward, minus the returned output (which has the input's size)."""
    inputs = make_inputs(frames=frames, size=16)
    with torch.no_grad():
        out, peak = measure_peak(lambda: m(**inputs).sample, method="tensors")
    return peak - out.numel() * out.element_size()


def test_recurrent_peak_memory_is_flat_and_parallel_grows():
    """Deterministic live-tensor accounting (rehyat.wan.memory.LiveTensorTracker) at 1x, 2x, 4x, 8x frames."""
    m = _converted(2, 1)
    base = 4
    set_rehyat_mode(m, "recurrent")
    rec = [_working_peak(m, base * k) for k in (1, 2, 4, 8)]
    assert max(rec) <= 1.10 * min(rec), rec
    set_rehyat_mode(m, "parallel")
    par = [_working_peak(m, base * k) for k in (1, 8)]
    assert par[1] > 4 * par[0], par  # the measurement does see growth where there is growth
    assert par[1] > 2 * max(rec)
