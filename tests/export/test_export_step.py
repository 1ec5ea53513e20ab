"""The fixed-shape chunk step (masked window, standard ops) against the eager recurrent step."""

import pytest
import torch

from rehyat.attention import hybrid_attention_step
from rehyat.export.step import FixedState, fixed_hybrid_step, window_valid

H, D, F, FT = 2, 4, 3, 3  # heads, head dim, features, tokens per frame


def _inputs(frames, seed=0, logit_scale=1.0, batch=2):
    g = torch.Generator().manual_seed(seed)
    n = frames * FT
    q = torch.randn(batch, n, H, D, generator=g, dtype=torch.float64) * logit_scale
    k, v = (torch.randn(batch, n, H, D, generator=g, dtype=torch.float64) for _ in range(2))
    fq, fk = (torch.rand(batch, n, H, F, generator=g, dtype=torch.float64) for _ in range(2))
    return q, k, v, fq, fk


def _pad(t, tokens):
    missing = tokens - t.shape[1]
    return torch.cat([t, t.new_zeros(t.shape[0], missing, *t.shape[2:])], 1) if missing else t


def _chains(tc, to, normaliser, frames=7, **kw):
    """Eager and fixed steps over the chunks of ``frames`` frames: [(eager out, eager state, fixed out, fixed
    state, chunk frames)]."""
    q, k, v, fq, fk = _inputs(frames, **kw)
    eager, fixed = None, FixedState.zeros(q.shape[0], H, D, F, to * FT, torch.float64)
    rows = []
    for f0 in range(0, frames, tc):
        n = min(tc, frames - f0)
        sl = slice(f0 * FT, (f0 + n) * FT)
        out_e, eager = hybrid_attention_step(q[:, sl], k[:, sl], v[:, sl], fq[:, sl], fk[:, sl], eager,
                                             frame_tokens=FT, overlap_frames=to, normaliser=normaliser)
        args = [_pad(t[:, sl], tc * FT) for t in (q, k, v, fq, fk)]
        out_f, fixed = fixed_hybrid_step(*args, fixed, window_valid(min(to, f0), tc, to, n, torch.float64),
                                         frame_tokens=FT, normaliser=normaliser)
        rows.append((out_e, eager, out_f[:, :n * FT], fixed, n))
    return rows


@pytest.mark.parametrize("tc,to", [(1, 0), (2, 1), (3, 1), (1, 2), (2, 3)])  # T_o > T_c: the tail fills over chunks
@pytest.mark.parametrize("normaliser", ["kernel", "paper"])
def test_fixed_step_chain_equals_eager_step(tc, to, normaliser):
    rows = _chains(tc, to, normaliser, logit_scale=4.0)  # large logits: the paper stabiliser matters
    for out_e, eager, out_f, fixed, n in rows:
        torch.testing.assert_close(out_f, out_e, atol=1e-10, rtol=1e-10)
        if n == tc:  # every full chunk leaves the eager state, right-aligned into the fixed slots
            ref = FixedState.from_hybrid(eager, to * FT)
            for a, b in zip(fixed.tensors(), ref.tensors()):
                torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_normalisers_differ_on_the_fixed_path():
    """The paper normaliser is not silently the kernel one (same inputs, different outputs)."""
    kernel = _chains(2, 1, "kernel", logit_scale=4.0)
    paper = _chains(2, 1, "paper", logit_scale=4.0)
    assert (kernel[1][2] - paper[1][2]).abs().max() > 1e-3


def test_empty_slots_never_enter_the_window():
    """Garbage in empty tail slots (first chunk) and in a ragged chunk's padding changes neither the output nor S, z."""
    q, k, v, fq, fk = _inputs(3)
    tc, to = 2, 2
    state = FixedState.zeros(2, H, D, F, to * FT, torch.float64)
    valid = window_valid(0, tc, to, 1, torch.float64)  # a one-frame video: nothing but the chunk's first slot
    chunk = [_pad(t[:, :FT], tc * FT) for t in (q, k, v, fq, fk)]
    clean, s_clean = fixed_hybrid_step(*chunk, state, valid, frame_tokens=FT, normaliser="paper")
    noisy_state = FixedState(state.s, state.z, *(torch.full_like(t, 1e3) for t in state.tensors()[2:]))
    noisy_chunk = [torch.cat([t[:, :FT], torch.full_like(t[:, FT:], 1e3)], 1) for t in chunk]
    noisy, s_noisy = fixed_hybrid_step(*noisy_chunk, noisy_state, valid, frame_tokens=FT, normaliser="paper")
    torch.testing.assert_close(noisy[:, :FT], clean[:, :FT], atol=0, rtol=0)
    assert torch.isfinite(noisy).all()
    torch.testing.assert_close(s_noisy.s, s_clean.s, atol=0, rtol=0)
    torch.testing.assert_close(s_noisy.z, s_clean.z, atol=0, rtol=0)
    # and the one-frame chunk alone is plain softmax attention over its own keys (no linear set yet)
    ref = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q[:, :FT], k[:, :FT]) * D ** -0.5, -1)
    torch.testing.assert_close(clean[:, :FT], torch.einsum("bhqk,bkhd->bqhd", ref, v[:, :FT]))


def test_window_valid_slots():
    assert window_valid(0, 3, 1).tolist() == [0, 1, 1, 1]
    assert window_valid(1, 3, 1, 2).tolist() == [1, 1, 1, 0]
    assert window_valid(1, 1, 2).tolist() == [0, 1, 1]  # the tail is right-aligned
    assert window_valid(0, 2, 0).tolist() == [1, 1]
    with pytest.raises(ValueError, match="tail frames"):
        window_valid(2, 3, 1)
    with pytest.raises(ValueError, match="chunk frames"):
        window_valid(0, 3, 1, 4)


def test_mask_length_must_match_the_window():
    q, k, v, fq, fk = _inputs(2)
    state = FixedState.zeros(2, H, D, F, FT, torch.float64)
    with pytest.raises(ValueError, match="window_valid has 2 slots"):
        fixed_hybrid_step(q, k, v, fq, fk, state, torch.ones(2), frame_tokens=FT)
