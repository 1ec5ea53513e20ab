"""The paper's normaliser in every form against the (independent) oracle; the oracle's sets stated by hand; precision
under autocast and in fp16; its cost counted."""

import itertools
import warnings

import pytest
import torch

from rehyat.attention import (get_attention_kind, hybrid_attention, hybrid_attention_recurrent,
                              hybrid_attention_reference, hybrid_attention_step)
from rehyat.attention.reference import frame_sets
from rehyat.attention.rowmax import row_max_logits
from rehyat.config import ReHyAtConfig
from rehyat.cost import attention_flops, count_flops

B, H, D, FEAT, FT, FRAMES = 2, 2, 8, 6, 3, 7
FWD_TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 3e-2}
BWD_TOL = {torch.float64: 1e-8, torch.float32: 2e-4}
GRID = list(itertools.product([1, 2, 3, 5, 8], [0, 1, 2], [False, True]))
IDS = [f"Tc{tc}-To{to}-{'causal' if c else 'bidir'}" for tc, to, c in GRID]


def inputs(dtype, logit_scale=1.0, seed=0, frames=FRAMES):
    g = torch.Generator().manual_seed(seed)
    n = frames * FT
    q = (torch.randn(B, n, H, D, generator=g) * logit_scale).to(dtype)
    k, v = (torch.randn(B, n, H, D, generator=g).to(dtype) for _ in range(2))
    fq, fk = (torch.rand(B, n, H, FEAT, generator=g).to(dtype) for _ in range(2))
    return q, k, v, fq, fk


def oracle(*t, **kw):
    return hybrid_attention_reference(*(x.double() for x in t), normaliser="paper", **kw)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=["fp64", "fp32", "bf16"])
@pytest.mark.parametrize("tc,to,causal", GRID, ids=IDS)
def test_paper_forward_matches_oracle(tc, to, causal, dtype):
    t = inputs(dtype)
    kw = dict(frame_tokens=FT, chunk_frames=tc, overlap_frames=to, causal=causal)
    y = hybrid_attention(*t, normaliser="paper", **kw)
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), oracle(*t, **kw), atol=FWD_TOL[dtype], rtol=FWD_TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("tc,to,causal", GRID, ids=IDS)
def test_paper_backward_matches_oracle(tc, to, causal, dtype):
    kw = dict(frame_tokens=FT, chunk_frames=tc, overlap_frames=to, causal=causal)
    x = [t.requires_grad_() for t in inputs(dtype)]
    ref = [t.detach().double().requires_grad_() for t in x]
    go = torch.randn(x[0].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    hybrid_attention(*x, normaliser="paper", **kw).backward(go.to(dtype))
    hybrid_attention_reference(*ref, normaliser="paper", **kw).backward(go)
    for name, a, b in zip(["q", "k", "v", "fq", "fk"], x, ref):
        want = torch.zeros_like(b) if b.grad is None else b.grad
        torch.testing.assert_close(a.grad.double(), want, atol=BWD_TOL[dtype], rtol=BWD_TOL[dtype],
                                   msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("tc,to", list(itertools.product([1, 2, 3, 5, 8], [0, 1, 2])), ids=str)
def test_paper_recurrent_equals_parallel_causal(tc, to):
    t = inputs(torch.float64)
    kw = dict(frame_tokens=FT, chunk_frames=tc, overlap_frames=to)
    torch.testing.assert_close(hybrid_attention_recurrent(*t, normaliser="paper", **kw),
                               hybrid_attention(*t, causal=True, normaliser="paper", **kw), atol=1e-12, rtol=1e-12)


def test_paper_recurrent_backward_matches_oracle():
    kw = dict(frame_tokens=FT, chunk_frames=2, overlap_frames=1)
    x = [t.requires_grad_() for t in inputs(torch.float64)]
    ref = [t.detach().clone().requires_grad_() for t in x]
    hybrid_attention_recurrent(*x, normaliser="paper", **kw).sum().backward()
    hybrid_attention_reference(*ref, causal=True, normaliser="paper", **kw).sum().backward()
    for a, b in zip(x, ref):
        torch.testing.assert_close(a.grad, torch.zeros_like(b) if b.grad is None else b.grad, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("normaliser", ["kernel", "paper"])
def test_extreme_logits_and_empty_linear_sets(normaliser):
    t = inputs(torch.float64, logit_scale=40.0)  # |s| up to ~100: exp overflows without a stabiliser
    for tc, to, causal in [(2, 1, False), (3, 2, True), (8, 0, False)]:
        kw = dict(frame_tokens=FT, chunk_frames=tc, overlap_frames=to, causal=causal)
        y = hybrid_attention(*t, normaliser=normaliser, **kw)
        assert torch.isfinite(y).all()
        torch.testing.assert_close(y, hybrid_attention_reference(*t, normaliser=normaliser, **kw),
                                   atol=1e-9, rtol=1e-9)
    # T_c >= T: empty linear sets, both normalisers are plain softmax over the whole window
    kw = dict(frame_tokens=FT, chunk_frames=8, overlap_frames=0)
    torch.testing.assert_close(hybrid_attention(*t, normaliser="paper", **kw),
                               hybrid_attention(*t, normaliser="kernel", **kw), atol=1e-12, rtol=1e-12)


def test_the_two_normalisers_differ_where_the_paper_says():
    """paper = kernel with the linear terms scaled by exp(c_t): the same when c_t = 0, different otherwise."""
    q, k, v, fq, fk = inputs(torch.float64)
    kw = dict(frame_tokens=FT, chunk_frames=2, overlap_frames=1, causal=False)
    a = hybrid_attention(q, k, v, fq, fk, normaliser="paper", **kw)
    b = hybrid_attention(q, k, v, fq, fk, normaliser="kernel", **kw)
    assert (a - b).abs().max() > 1e-3
    # kernel with fq scaled per query by exp(c_t) reproduces paper: the stabiliser only rescales the linear branch
    soft, _ = (m.repeat_interleave(FT, 0).repeat_interleave(FT, 1) for m in frame_sets(FRAMES, 2, 1, False))
    s = torch.einsum("bnhd,bmhd->bhnm", q, k) * D ** -0.5
    c = torch.where(soft, s, torch.full_like(s, float("-inf"))).amax(-1).transpose(1, 2)  # [B, N, H]
    torch.testing.assert_close(hybrid_attention(q, k, v, fq * c.exp().unsqueeze(-1), fk, normaliser="kernel", **kw),
                               a, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("to", [0, 1, 2, 3])
def test_oracle_sets_stated_by_hand(to):
    """The oracle's sets for 7 frames, T_c = 3, written out by hand (paper §1.2-1.5)."""
    soft, lin = frame_sets(7, 3, to, causal=False)
    _, lin_c = frame_sets(7, 3, to, causal=True)
    # windows per chunk: chunk 0 = frames 0-2, chunk 1 = frames 3-5, chunk 2 (ragged) = frame 6
    windows = {0: range(0, 3), 1: range(max(3 - to, 0), 6), 2: range(max(6 - to, 0), 7)}
    for f in range(7):
        win = windows[f // 3]
        assert [j for j in range(7) if soft[f, j]] == list(win), (f, to)
        assert [j for j in range(7) if lin[f, j]] == [j for j in range(7) if j not in win]
        assert [j for j in range(7) if lin_c[f, j]] == list(range(0, win.start))
    if to == 2:  # the case a geometry mistake once slipped through: frame 4's window is frames 1..5
        assert soft[4].tolist() == [False, True, True, True, True, True, False]


def test_row_max_is_exact_and_has_the_max_gradient():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 50, 8, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, 70, 8, generator=g, dtype=torch.float64, requires_grad=True)
    m = row_max_logits(q, k, 0.3)
    s = (q @ k.transpose(-1, -2)) * 0.3
    torch.testing.assert_close(m, s.amax(-1), atol=1e-12, rtol=0)
    gq, gk = torch.autograd.grad(m.sum(), (q, k))
    rq, rk = torch.autograd.grad(s.amax(-1).sum(), (q, k))
    torch.testing.assert_close(gq, rq)
    torch.testing.assert_close(gk, rk)


@pytest.mark.parametrize("normaliser", ["kernel", "paper"])
@pytest.mark.parametrize("grad", [False, True], ids=["inference", "autograd"])
def test_bf16_autocast_keeps_linear_statistics_in_fp32(normaliser, grad):
    """Under CPU bf16 autocast with fp32 inputs: no crash in either autograd mode, and the hybrid op is as accurate
    as fp32 against the fp64 oracle (before: 2.2e-2, with bf16 linear statistics)."""
    t = [x.requires_grad_(grad) for x in inputs(torch.float32, logit_scale=2.0)]
    kw = dict(frame_tokens=FT, chunk_frames=2, overlap_frames=1, causal=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fused backend's self-check must not fail (and be dropped) under autocast
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = hybrid_attention(*t, normaliser=normaliser, **kw)
    ref = hybrid_attention_reference(*(x.detach().double() for x in t), normaliser=normaliser, **kw)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), ref, atol=2e-5, rtol=2e-5)
    if grad:
        y.sum().backward()
        assert all(torch.isfinite(x.grad).all() for x in t)


@pytest.mark.parametrize("normaliser", ["kernel", "paper"])
def test_recurrent_state_accumulates_in_fp32_under_autocast(normaliser):
    q, k, v, fq, fk = inputs(torch.float32)
    state, outs = None, []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for f0 in range(0, FRAMES, 2):
            sl = slice(f0 * FT, min(f0 + 2, FRAMES) * FT)
            out, state = hybrid_attention_step(q[:, sl], k[:, sl], v[:, sl], fq[:, sl], fk[:, sl], state,
                                               frame_tokens=FT, overlap_frames=1, normaliser=normaliser)
            outs.append(out)
            assert state.s.dtype == state.z.dtype == torch.float32
    ref = hybrid_attention_reference(*(x.double() for x in (q, k, v, fq, fk)), frame_tokens=FT, chunk_frames=2,
                                     overlap_frames=1, causal=True, normaliser=normaliser)
    torch.testing.assert_close(torch.cat(outs, 1).double(), ref, atol=2e-5, rtol=2e-5)


def test_fp16_stays_finite_at_large_logits_and_large_scale():
    """fp16 inputs, |s| ~ 60, and a linear scale exp(gamma) = e^30 on phi_k (computed in fp32 by the processor)."""
    from rehyat.wan.processor import ReHyAtWanAttnProcessor

    proc = ReHyAtWanAttnProcessor(H, D, ReHyAtConfig(linear_scale=True, feature_map_kwargs={"hidden_dim": 8,
                                                                                             "feature_dim": 8}))
    with torch.no_grad():
        proc.linear_log_scale.fill_(30.0)
    q, k, v, _, _ = inputs(torch.float16, logit_scale=25.0)
    fq, fk = proc.features(q, k)
    assert fk.dtype == torch.float32 and torch.isfinite(fk).all()
    for normaliser in ("kernel", "paper"):
        y = hybrid_attention(q, k, v, fq, fk, frame_tokens=FT, chunk_frames=2, overlap_frames=1,
                             normaliser=normaliser)
        assert y.dtype == torch.float16 and torch.isfinite(y).all()


def test_cost_model_counts_the_row_maximum():
    t = inputs(torch.float32)
    for causal, kind in [(False, "hybrid"), (True, "hybrid_recurrent")]:
        cfg = ReHyAtConfig(kind=kind, chunk_frames=2, overlap_frames=1, causal=causal, normaliser="paper")
        fn = get_attention_kind(kind)
        counted = count_flops(lambda: fn.run(cfg, *t, frame_tokens=FT))
        with torch.no_grad():
            counted_nograd = count_flops(lambda: fn.run(cfg, *t, frame_tokens=FT))
        analytic = attention_flops(cfg, batch=B, heads=H, head_dim=D, frames=FRAMES, frame_tokens=FT,
                                   feature_dim=FEAT)
        assert counted == counted_nograd == analytic.flops, (kind, counted, analytic.breakdown)
        kernel = attention_flops(cfg.replace(normaliser="kernel"), batch=B, heads=H, head_dim=D, frames=FRAMES,
                                 frame_tokens=FT, feature_dim=FEAT)
        assert analytic.flops - kernel.flops == analytic.breakdown["softmax_rowmax"] > 0
    assert ReHyAtConfig(normaliser="paper").label == "hybrid_tc3_to1_paper"


def test_configs_stored_before_the_field_load_as_kernel():
    old = ReHyAtConfig().to_dict()
    old.pop("normaliser")
    assert ReHyAtConfig.from_dict(old).normaliser == "kernel"
    with pytest.raises(ValueError, match="normaliser"):
        ReHyAtConfig(normaliser="softmax")


@pytest.mark.parametrize("normaliser", ["kernel", "paper"])
def test_distillation_weights_match_the_op(normaliser):
    """The attention weights stage 1's cross-entropy and diagnostics use are the ones the op applies to v."""
    from types import SimpleNamespace

    from rehyat.distill.teacher_forcing import student_log_weights

    q, k, v, fq, fk = inputs(torch.float64, logit_scale=3.0)
    idx = torch.arange(q.shape[1])
    for kind in ("hybrid", "linear", "chunk_local"):
        for causal in (False, True):
            layout = SimpleNamespace(frame_tokens=FT, chunk_frames=2, overlap_frames=1, causal=causal,
                                     normaliser=normaliser)
            _, logw = student_log_weights(q, k, fq, fk, kind, layout, idx)
            y = torch.matmul(logw.exp(), v.transpose(1, 2)).transpose(1, 2)
            cfg = ReHyAtConfig(kind=kind, chunk_frames=2, overlap_frames=1, causal=causal, normaliser=normaliser)
            ref = get_attention_kind(kind).run(cfg, q, k, v, fq, fk, frame_tokens=FT)
            torch.testing.assert_close(y, ref, atol=1e-9, rtol=1e-9, msg=f"{kind} causal={causal}")
