"""The hybrid op against its dense oracle: forward and backward, every form, ragged chunks, three dtypes."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from rehyat.attention import (
    ATTENTION_KINDS, HybridState, chunk_local_attention, get_attention_kind, hybrid_attention,
    hybrid_attention_recurrent, hybrid_attention_reference, hybrid_attention_step, hybrid_masks, linear_attention,
    masked_joint_attention, softmax_with_lse,
)
from rehyat.attention.geometry import ChunkGeometry

B, H, D, FEAT = 2, 2, 8, 6
FRAME_TOKENS = 3
FRAMES = 7  # ragged last chunk for T_c in {2, 3, 5}; T_c = 8 covers T_c >= T

# Tolerances against the fp64 oracle evaluated on the same (rounded) inputs.
FWD_TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 3e-2}
BWD_TOL = {torch.float64: 1e-8, torch.float32: 2e-4}


def make_inputs(dtype, frames=FRAMES, frame_tokens=FRAME_TOKENS, feat=FEAT, logit_scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = frames * frame_tokens
    q = (torch.randn(B, n, H, D, generator=g) * logit_scale).to(dtype)
    k = torch.randn(B, n, H, D, generator=g).to(dtype)
    v = torch.randn(B, n, H, D, generator=g).to(dtype)
    fq = torch.rand(B, n, H, feat, generator=g).to(dtype)
    fk = torch.rand(B, n, H, feat, generator=g).to(dtype)
    return q, k, v, fq, fk


def oracle(q, k, v, fq, fk, **kw):
    return hybrid_attention_reference(*(t.double() for t in (q, k, v, fq, fk)), **kw)


GRID = list(itertools.product([1, 2, 3, 5, 8], [0, 1, 2], [False, True]))
GRID_IDS = [f"Tc{tc}-To{to}-{'causal' if c else 'bidir'}" for tc, to, c in GRID]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=["fp64", "fp32", "bf16"])
@pytest.mark.parametrize("tc,to,causal", GRID, ids=GRID_IDS)
def test_forward_matches_oracle(tc, to, causal, dtype):
    q, k, v, fq, fk = make_inputs(dtype)
    kw = dict(frame_tokens=FRAME_TOKENS, chunk_frames=tc, overlap_frames=to, causal=causal)
    y = hybrid_attention(q, k, v, fq, fk, **kw)
    assert y.dtype == dtype and y.shape == q.shape
    torch.testing.assert_close(y.double(), oracle(q, k, v, fq, fk, **kw), atol=FWD_TOL[dtype], rtol=FWD_TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("tc,to,causal", GRID, ids=GRID_IDS)
def test_backward_matches_oracle(tc, to, causal, dtype):
    kw = dict(frame_tokens=FRAME_TOKENS, chunk_frames=tc, overlap_frames=to, causal=causal)
    inputs = [t.requires_grad_() for t in make_inputs(dtype)]
    ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
    grad_out = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    hybrid_attention(*inputs, **kw).backward(grad_out.to(dtype))
    hybrid_attention_reference(*ref_inputs, **kw).backward(grad_out)
    for name, a, b in zip(["q", "k", "v", "fq", "fk"], inputs, ref_inputs):
        ref_grad = torch.zeros_like(b) if b.grad is None else b.grad  # oracle skips an empty linear set
        torch.testing.assert_close(a.grad.double(), ref_grad, atol=BWD_TOL[dtype], rtol=BWD_TOL[dtype], msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("tc,to", list(itertools.product([1, 2, 3, 5, 8], [0, 1, 2])),
                         ids=lambda x: str(x))
def test_recurrent_equals_parallel_causal(tc, to):
    q, k, v, fq, fk = make_inputs(torch.float64)
    kw = dict(frame_tokens=FRAME_TOKENS, chunk_frames=tc, overlap_frames=to)
    torch.testing.assert_close(hybrid_attention_recurrent(q, k, v, fq, fk, **kw),
                               hybrid_attention(q, k, v, fq, fk, causal=True, **kw), atol=1e-12, rtol=1e-12)


def test_recurrent_backward_matches_oracle():
    kw = dict(frame_tokens=FRAME_TOKENS, chunk_frames=2, overlap_frames=1)
    inputs = [t.requires_grad_() for t in make_inputs(torch.float64)]
    ref = [t.detach().clone().requires_grad_() for t in inputs]
    hybrid_attention_recurrent(*inputs, **kw).sum().backward()
    hybrid_attention_reference(*ref, causal=True, **kw).sum().backward()
    for a, b in zip(inputs, ref):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("to", [0, 1, 2, 5])
def test_state_size_constant_over_chunks(to):
    tc, frames = 2, 128  # 64 chunks
    q, k, v, fq, fk = make_inputs(torch.float32, frames=frames, frame_tokens=2)
    geom = ChunkGeometry.from_tokens(q.shape[1], 2, tc, to)
    state, sizes = None, []
    for ch in geom.chunks():
        sl = geom.tokens(ch.start, ch.end)
        _, state = hybrid_attention_step(q[:, sl], k[:, sl], v[:, sl], fq[:, sl], fk[:, sl], state,
                                         frame_tokens=2, overlap_frames=to)
        sizes.append(state.nbytes())
        assert state.tail_k.shape[1] == min(to, ch.end) * 2
    assert len(sizes) == 64
    settled = sizes[-(-to // tc):]  # once T_o frames have been seen, the state is full
    assert len(set(settled)) == 1, sizes
    assert state.frames_seen == frames


def test_state_counts_every_frame_once():
    """z after the last chunk = sum of fk over exactly the frames that left the final window."""
    q, k, v, fq, fk = make_inputs(torch.float64, frames=9)
    geom = ChunkGeometry.from_tokens(q.shape[1], FRAME_TOKENS, 2, 3)
    state = None
    for ch in geom.chunks():
        sl = geom.tokens(ch.start, ch.end)
        _, state = hybrid_attention_step(q[:, sl], k[:, sl], v[:, sl], fq[:, sl], fk[:, sl], state,
                                         frame_tokens=FRAME_TOKENS, overlap_frames=3)
    flushed = (9 - 3) * FRAME_TOKENS
    torch.testing.assert_close(state.z, fk[:, :flushed].sum(1))
    torch.testing.assert_close(state.tail_k, k[:, flushed:])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_bidirectional_with_chunk_covering_video_equals_softmax(dtype):
    q, k, v, fq, fk = make_inputs(dtype)
    y = hybrid_attention(q, k, v, fq, fk, frame_tokens=FRAME_TOKENS, chunk_frames=FRAMES, overlap_frames=1)
    ref = get_attention_kind("softmax")(q, k, v, frame_tokens=FRAME_TOKENS)
    tol = 1e-13 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(y, ref, atol=tol, rtol=tol)
    # the linear branch is empty, so the result is the softmax branch bit for bit
    assert torch.equal(y, chunk_local_attention(q, k, v, frame_tokens=FRAME_TOKENS, chunk_frames=FRAMES))


def test_perfect_feature_map_gives_softmax():
    """If fq.fk equals exp(q.k*scale), hybrid == softmax for any chunking (no stabiliser changes the result)."""
    # Tokens with one-hot-ish keys make an exact finite feature map: fq_i = exp(scale q_i)(per coordinate), fk_j = e_j.
    n, d = FRAMES * FRAME_TOKENS, D
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, n, 1, d, generator=g, dtype=torch.float64) * 3
    idx = torch.randint(0, d, (n,), generator=g)
    k = F.one_hot(idx, d).double().view(1, n, 1, d) * 2.0
    v = torch.randn(1, n, 1, d, generator=g, dtype=torch.float64)
    scale = 0.7
    fq = torch.exp(scale * 2.0 * q)  # fq . fk_j = exp(scale * q . k_j) since k_j = 2 e_idx
    fk = F.one_hot(idx, d).double().view(1, n, 1, d)
    ref = get_attention_kind("softmax")(q, k, v, frame_tokens=FRAME_TOKENS, scale=scale)
    for tc, to, causal in [(1, 0, False), (2, 1, False), (3, 2, False)]:
        y = hybrid_attention(q, k, v, fq, fk, frame_tokens=FRAME_TOKENS, chunk_frames=tc, overlap_frames=to,
                             causal=causal, scale=scale)
        torch.testing.assert_close(y, ref, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_extreme_logits_and_degenerate_features_stay_finite(causal, dtype):
    kw = dict(frame_tokens=FRAME_TOKENS, chunk_frames=2, overlap_frames=1, causal=causal)
    for scale in (1e4 / D ** 0.5, -1e4 / D ** 0.5):  # logits of magnitude ~1e4, both signs
        q, k, v, fq, fk = make_inputs(dtype)
        q = q / q.norm(dim=-1, keepdim=True)
        k = k / k.norm(dim=-1, keepdim=True) * D ** 0.5
        y = hybrid_attention(q, k, v, fq, fk, scale=scale, **kw)
        assert torch.isfinite(y).all()
        torch.testing.assert_close(y.double(), oracle(q, k, v, fq, fk, scale=scale, **kw), atol=FWD_TOL[dtype] * 10,
                                   rtol=FWD_TOL[dtype] * 10)
    q, k, v, fq, fk = [t.requires_grad_() for t in make_inputs(torch.float32)]
    zero_fq, zero_fk = fq * 0, fk * 0
    y = hybrid_attention(q, k, v, zero_fq, zero_fk, **kw)
    y.sum().backward()
    assert torch.isfinite(y).all() and all(torch.isfinite(t.grad).all() for t in (q, k, v, fq, fk))
    torch.testing.assert_close(y, chunk_local_attention(q, k, v, **kw))


def test_empty_linear_set_has_finite_gradients():
    q, k, v, fq, fk = [t.requires_grad_() for t in make_inputs(torch.float32)]
    # causal chunk 0 has an empty linear set; so does T_c >= T
    y = hybrid_attention(q, k, v, fq, fk, frame_tokens=FRAME_TOKENS, chunk_frames=8, overlap_frames=0, causal=True)
    y.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v, fq, fk))
    assert fq.grad.abs().sum() == 0  # no linear set, so the features do not matter


def test_length_not_multiple_of_frame_tokens_is_a_clear_error():
    q, k, v, fq, fk = make_inputs(torch.float32)
    with pytest.raises(ValueError, match="not a multiple of frame_tokens"):
        hybrid_attention(q[:, :-1], k[:, :-1], v[:, :-1], fq[:, :-1], fk[:, :-1], frame_tokens=FRAME_TOKENS,
                         chunk_frames=2)
    with pytest.raises(ValueError, match="chunk_frames"):
        hybrid_attention(q, k, v, fq, fk, frame_tokens=FRAME_TOKENS, chunk_frames=0)
    with pytest.raises(ValueError, match="overlap_frames"):
        hybrid_attention(q, k, v, fq, fk, frame_tokens=FRAME_TOKENS, chunk_frames=2, overlap_frames=-1)


def test_masks_follow_the_spec():
    geom = ChunkGeometry(num_frames=7, frame_tokens=1, chunk_frames=3, overlap_frames=1)
    soft, lin = hybrid_masks(geom, causal=True)
    # chunk 1 = frames 3..5, window 2..5, linear = frames 0..1
    assert soft[4].tolist() == [False, False, True, True, True, True, False]
    assert lin[4].tolist() == [True, True, False, False, False, False, False]
    # ragged last chunk: frame 6, window 5..6
    assert soft[6].tolist() == [False] * 5 + [True, True]
    _, lin_bi = hybrid_masks(geom, causal=False)
    assert lin_bi[4].tolist() == [True, True, False, False, False, False, True]


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_linear_kind_matches_masked_oracle(causal):
    q, k, v, _, _ = make_inputs(torch.float64)
    tc = 2
    y = linear_attention(q, k, v, frame_tokens=FRAME_TOKENS, chunk_frames=tc, causal=causal)
    geom = ChunkGeometry.from_tokens(q.shape[1], FRAME_TOKENS, tc, 0)
    n = q.shape[1]
    if causal:
        lin = torch.zeros(n, n, dtype=torch.bool)
        for ch in geom.chunks():
            lin[geom.tokens(ch.start, ch.end), : ch.end * FRAME_TOKENS] = True
    else:
        lin = torch.ones(n, n, dtype=torch.bool)
    fq, fk = torch.relu(q), torch.relu(k)
    # rows whose linear denominator is 0 are defined as 0 output; the oracle would give NaN there, so drop them
    ref = masked_joint_attention(q, k, v, fq, fk, torch.zeros(n, n, dtype=torch.bool), lin, 1.0)
    ok = torch.isfinite(ref)
    torch.testing.assert_close(y[ok], ref[ok], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_linear_kind_backward_matches_masked_oracle(causal):
    """Given features (all positive, so no zero denominators): forward through the autograd path, and gradients."""
    tc = 2
    inputs = [t.requires_grad_() for t in make_inputs(torch.float64)]
    ref_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    geom = ChunkGeometry.from_tokens(inputs[0].shape[1], FRAME_TOKENS, tc, 0)
    n = inputs[0].shape[1]
    lin = torch.ones(n, n, dtype=torch.bool)
    if causal:
        lin.zero_()
        for ch in geom.chunks():
            lin[geom.tokens(ch.start, ch.end), : ch.end * FRAME_TOKENS] = True
    y = linear_attention(*inputs, frame_tokens=FRAME_TOKENS, chunk_frames=tc, causal=causal)
    ref = masked_joint_attention(*ref_inputs, torch.zeros(n, n, dtype=torch.bool), lin, 1.0)
    grad_out = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y.backward(grad_out)
    ref.backward(grad_out)
    torch.testing.assert_close(y.detach(), ref.detach(), atol=1e-12, rtol=1e-12)
    for name, a, b in zip(["q", "k", "v", "fq", "fk"], inputs, ref_inputs):
        ref_grad = torch.zeros_like(b) if b.grad is None else b.grad  # q, k do not enter: features are given
        got = torch.zeros_like(a) if a.grad is None else a.grad
        torch.testing.assert_close(got, ref_grad, atol=1e-10, rtol=1e-10, msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("name", sorted(ATTENTION_KINDS))
def test_every_kind_shares_the_calling_convention(name):
    kind = get_attention_kind(name)
    q, k, v, fq, fk = make_inputs(torch.float32)
    kw = dict(frame_tokens=FRAME_TOKENS, chunk_frames=2, overlap_frames=1)
    y = kind(q, k, v, fq if kind.needs_features else None, fk if kind.needs_features else None, **kw)
    assert y.shape == q.shape and torch.isfinite(y).all()


def test_unknown_kind_lists_registered():
    with pytest.raises(KeyError, match="registered"):
        get_attention_kind("nope")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=["fp64", "fp32", "bf16"])
def test_softmax_with_lse_fused_equals_math_both_outputs(dtype):
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 3, 10, 16, generator=g).to(dtype).requires_grad_() for _ in range(3))
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    o1, l1 = softmax_with_lse(q, k, v, 0.3, backend="cpu_flash")
    o2, l2 = softmax_with_lse(q2, k2, v2, 0.3, backend="math")
    tol = 1e-12 if dtype == torch.float64 else (1e-5 if dtype == torch.float32 else 3e-2)
    torch.testing.assert_close(o1.float(), o2.float(), atol=tol, rtol=tol)
    torch.testing.assert_close(l1.float(), l2.float(), atol=tol, rtol=tol)
    w = torch.randn(l1.shape, generator=g)
    ((o1.float() ** 2).sum() + (l1.float() * w).sum()).backward()
    ((o2.float() ** 2).sum() + (l2.float() * w).sum()).backward()
    for a, b in zip((q, k, v), (q2, k2, v2)):
        torch.testing.assert_close(a.grad.float(), b.grad.float(), atol=tol * 20, rtol=tol * 20)


def test_state_tail_does_not_keep_the_window_alive():
    q, k, v, fq, fk = make_inputs(torch.float32, frames=4)
    _, state = hybrid_attention_step(q, k, v, fq, fk, None, frame_tokens=FRAME_TOKENS, overlap_frames=1)
    for t in (state.tail_k, state.tail_v, state.tail_fk):
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size()


@pytest.mark.parametrize("tc,to", [(1, 0), (2, 1), (3, 1), (2, 3), (3, 0)], ids=lambda x: str(x))
@pytest.mark.parametrize("frames", [1, 7, 12])
def test_softmax_batches_are_equally_spaced_runs_of_chunks(tc, to, frames):
    geom = ChunkGeometry(num_frames=frames, frame_tokens=1, chunk_frames=tc, overlap_frames=to)
    for cap in (1, 2, 100):
        groups = geom.batches(cap)
        assert [ch for g in groups for ch in g] == geom.chunks()
        for g in groups:
            assert 1 <= len(g) <= cap
            assert len({(c.end - c.start, c.window_end - c.window_start) for c in g}) == 1
            # the batched call takes the windows as unfold(step = T_c frames) views, which needs equal spacing
            assert all(b.window_start - a.window_start == tc == b.start - a.start for a, b in zip(g, g[1:]))


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_batched_softmax_calls_equal_one_call_per_chunk(causal, monkeypatch):
    import rehyat.attention.chunked as chunked

    kw = dict(frame_tokens=FRAME_TOKENS, chunk_frames=2, overlap_frames=1, causal=causal)
    results = []
    for rows in (1, 10**9):  # one chunk per call / every equal-length chunk in one call
        monkeypatch.setattr(chunked, "ROWS_PER_SOFTMAX_CALL", rows)
        inputs = [t.requires_grad_() for t in make_inputs(torch.float64, frames=11)]
        y = hybrid_attention(*inputs, **kw)
        y.backward(torch.ones_like(y))
        results.append([y.detach(), *(t.grad for t in inputs), chunk_local_attention(*inputs[:3], **kw).detach()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_linear_cuts_cover_every_linear_set():
    geom = ChunkGeometry(num_frames=10, frame_tokens=1, chunk_frames=3, overlap_frames=1)
    for causal, include in itertools.product([False, True], [False, True]):
        cuts = geom.linear_cuts(causal, include)
        assert cuts[0] == 0 and cuts[-1] == 10 and cuts == sorted(set(cuts))
        for ch in geom.chunks():
            lo, hi = geom.linear_bounds(ch, causal, include)
            assert lo in cuts and hi in cuts and lo <= hi
