"""Softmax attention that also returns its log-sum-exp, differentiable in both outputs.

The hybrid op needs the softmax branch's normalised output ``o`` *and* its log-sum-exp ``lse`` to form the joint
normaliser with the linear branch. PyTorch's fused kernels return ``lse`` but treat it as non-differentiable, so this
module wraps them in an ``autograd.Function`` whose backward folds the gradient of ``lse`` into the fused backward:

``dL/ds_ij = p_ij (dO_i . v_j - D_i + g_i)`` with ``g = dL/dlse`` and ``D_i = dO_i . o_i``.  Calling the fused backward
with ``v' = [v, 1, 0..]``, ``o' = [o, 0, 0..]`` and ``dO' = [dO, g, 0..]`` (q and k zero-padded to the same width)
makes the kernel compute exactly that, while ``dv`` keeps its first ``D`` columns.  The padding keeps head sizes
equal (the fused kernels require it) and a multiple of 8.

Backends register themselves in ``SOFTMAX_BACKENDS``; ``softmax_with_lse`` picks the first one whose ``supports``
accepts the inputs and that passed a one-off self-check against the math backend on that device/dtype.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class SoftmaxBackend:
    """A fused softmax-attention kernel exposed as (forward -> (o, lse, ctx), backward)."""

    name: str
    supports: Callable[[Tensor], bool]
    forward: Callable[[Tensor, Tensor, Tensor, float], tuple[Tensor, Tensor, tuple]]
    backward: Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, float, tuple], tuple[Tensor, Tensor, Tensor]]


SOFTMAX_BACKENDS: dict[str, SoftmaxBackend] = {}
_SELF_CHECKED: dict[tuple[str, str, torch.dtype], bool] = {}


def register_softmax_backend(backend: SoftmaxBackend) -> SoftmaxBackend:
    if backend.name in SOFTMAX_BACKENDS and SOFTMAX_BACKENDS[backend.name] != backend:
        raise ValueError(f"softmax backend {backend.name!r} is already registered")
    SOFTMAX_BACKENDS[backend.name] = backend
    return backend


# ---------------------------------------------------------------------------------------------------------------
# math backend: explicit scores, exact in any dtype, O(Nq*Nk) memory. The reference for the self-checks.
# ---------------------------------------------------------------------------------------------------------------

def _math_forward(q: Tensor, k: Tensor, v: Tensor, scale: float):
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    s = torch.matmul(q.to(acc), k.to(acc).transpose(-1, -2)) * scale
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse.unsqueeze(-1))
    o = torch.matmul(p, v.to(acc)).to(v.dtype)
    return o, lse, ()


def _math_backward(go, glse, q, k, v, o, lse, scale, ctx):
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    qa, ka, va = q.to(acc), k.to(acc), v.to(acc)
    s = torch.matmul(qa, ka.transpose(-1, -2)) * scale
    p = torch.exp(s - lse.unsqueeze(-1).to(acc))
    goa = go.to(acc)
    dv = torch.matmul(p.transpose(-1, -2), goa)
    dp = torch.matmul(goa, va.transpose(-1, -2))
    d_row = (goa * o.to(acc)).sum(-1, keepdim=True)
    ds = p * (dp - d_row + glse.to(acc).unsqueeze(-1)) * scale
    dq = torch.matmul(ds, ka)
    dk = torch.matmul(ds.transpose(-1, -2), qa)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


register_softmax_backend(SoftmaxBackend("math", lambda q: True, _math_forward, _math_backward))


# ---------------------------------------------------------------------------------------------------------------
# fused backends
# ---------------------------------------------------------------------------------------------------------------

def _augment_for_backward(go, glse, q, k, v, o):
    """Pad to width D+pad so a fused backward also propagates dL/dlse (see module docstring)."""
    d = q.shape[-1]
    pad = 8 - (d % 8) if d % 8 else 8

    def zpad(t: Tensor, n: int) -> Tensor:
        return torch.cat([t, t.new_zeros(*t.shape[:-1], n)], dim=-1)

    ones = v.new_ones(*v.shape[:-1], 1)
    v_aug = torch.cat([v, ones, v.new_zeros(*v.shape[:-1], pad - 1)], dim=-1)
    go_aug = torch.cat([go, glse.to(go.dtype).unsqueeze(-1), go.new_zeros(*go.shape[:-1], pad - 1)], dim=-1)
    return zpad(q, pad), zpad(k, pad), v_aug, zpad(o, pad), go_aug, d


def _cpu_flash_forward(q, k, v, scale):
    o, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, scale=scale)
    return o, lse, ()


def _cpu_flash_backward(go, glse, q, k, v, o, lse, scale, ctx):
    qa, ka, va, oa, goa, d = _augment_for_backward(go.contiguous(), glse, q, k, v, o)
    dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        goa, qa, ka, va, oa, lse, 0.0, False, scale=scale
    )
    return dq[..., :d], dk[..., :d], dv[..., :d]


register_softmax_backend(
    SoftmaxBackend(
        "cpu_flash",
        lambda q: q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16),
        _cpu_flash_forward,
        _cpu_flash_backward,
    )
)


def _cuda_flash_forward(q, k, v, scale):
    out = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)
    o, lse = out[0], out[1]
    return o, lse, tuple(out[2:8])


def _cuda_flash_backward(go, glse, q, k, v, o, lse, scale, ctx):
    cum_q, cum_k, max_q, max_k, seed, offset = ctx
    qa, ka, va, oa, goa, d = _augment_for_backward(go.contiguous(), glse, q, k, v, o)
    dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_backward(
        goa, qa, ka, va, oa, lse, cum_q, cum_k, max_q, max_k, 0.0, False, seed, offset, scale=scale
    )
    return dq[..., :d], dk[..., :d], dv[..., :d]


register_softmax_backend(
    SoftmaxBackend(
        "cuda_flash",
        lambda q: q.device.type == "cuda" and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 248,
        _cuda_flash_forward,
        _cuda_flash_backward,
    )
)


def _cuda_efficient_forward(q, k, v, scale):
    o, lse, seed, offset = torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k, v, None, True, 0.0, False, scale=scale
    )
    return o, lse[..., : q.shape[-2]], (seed, offset)


def _cuda_efficient_backward(go, glse, q, k, v, o, lse, scale, ctx):
    seed, offset = ctx
    qa, ka, va, oa, goa, d = _augment_for_backward(go.contiguous(), glse, q, k, v, o)
    dq, dk, dv, _ = torch.ops.aten._scaled_dot_product_efficient_attention_backward(
        goa, qa, ka, va, None, oa, lse.contiguous(), seed, offset, 0.0, [True, True, True, False], False, scale=scale
    )
    return dq[..., :d], dk[..., :d], dv[..., :d]


register_softmax_backend(
    SoftmaxBackend(
        "cuda_efficient",
        lambda q: q.device.type == "cuda" and q.dtype in (torch.float32, torch.float16, torch.bfloat16),
        _cuda_efficient_forward,
        _cuda_efficient_backward,
    )
)

# Preference order: fused kernels first, math last.
BACKEND_ORDER = ["cpu_flash", "cuda_flash", "cuda_efficient", "math"]


def _self_check(backend: SoftmaxBackend, device: torch.device, dtype: torch.dtype) -> bool:
    """Compare a fused backend with the math backend once per (backend, device, dtype), forward and backward."""
    key = (backend.name, str(device), dtype)
    if key not in _SELF_CHECKED:
        # Run outside any active dispatch mode (e.g. FlopCounterMode) so the check never shows up in counts, and
        # outside autocast: under it the math reference's matmuls run in bf16 and a correct kernel would "fail".
        with _no_dispatch_modes(), torch.autocast(torch.device(device).type, enabled=False):
            _SELF_CHECKED[key] = _run_self_check(backend, device, dtype)
    return _SELF_CHECKED[key]


def _no_dispatch_modes():
    try:
        from torch.utils._python_dispatch import _disable_current_modes
    except ImportError:  # pragma: no cover - private API moved
        import contextlib

        return contextlib.nullcontext()
    return _disable_current_modes()


def _run_self_check(backend: SoftmaxBackend, device: torch.device, dtype: torch.dtype) -> bool:
    ok = False
    try:
        g = torch.Generator(device="cpu").manual_seed(0)
        shape = (1, 2, 40, 16)
        q, k, v = (torch.randn(*shape, generator=g).to(device=device, dtype=dtype) for _ in range(3))
        go = torch.randn(*shape, generator=g).to(device=device, dtype=dtype)
        glse = torch.randn(*shape[:-1], generator=g).to(device=device)
        scale = 0.25
        o1, l1, c1 = backend.forward(q, k, v, scale)
        o2, l2, _ = _math_forward(q, k, v, scale)
        grads1 = backend.backward(go, glse, q, k, v, o1, l1, scale, c1)
        grads2 = _math_backward(go, glse, q, k, v, o2, l2, scale, ())
        tol = 1e-6 if dtype == torch.float64 else (1e-3 if dtype == torch.float32 else 5e-2)
        ok = torch.allclose(o1.float(), o2.float(), atol=tol, rtol=tol) and torch.allclose(
            l1.float(), l2.float(), atol=tol, rtol=tol
        )
        ok = ok and all(torch.allclose(a.float(), b.float(), atol=tol * 4, rtol=tol * 4) for a, b in zip(grads1, grads2))
    except Exception as exc:  # noqa: BLE001 - any failure means "do not use this kernel here"
        warnings.warn(f"softmax backend {backend.name!r} unusable on {device}/{dtype}: {exc!r}; falling back", stacklevel=3)
        ok = False
    if not ok:
        warnings.warn(f"softmax backend {backend.name!r} failed its self-check on {device}/{dtype}", stacklevel=3)
    return ok


def select_backend(q: Tensor, prefer: str | None = None) -> SoftmaxBackend:
    if prefer is not None:
        return SOFTMAX_BACKENDS[prefer]
    for name in BACKEND_ORDER:
        backend = SOFTMAX_BACKENDS[name]
        if name == "math":
            return backend
        if backend.supports(q) and _self_check(backend, q.device, q.dtype):
            return backend
    return SOFTMAX_BACKENDS["math"]


class _SoftmaxWithLSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, backend_name):
        backend = SOFTMAX_BACKENDS[backend_name]
        o, lse, kctx = backend.forward(q, k, v, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.scale, ctx.backend_name, ctx.kctx = scale, backend_name, kctx
        return o, lse

    @staticmethod
    def backward(ctx, go, glse):
        q, k, v, o, lse = ctx.saved_tensors
        if go is None:
            go = torch.zeros_like(o)
        if glse is None:
            glse = torch.zeros_like(lse)
        backend = SOFTMAX_BACKENDS[ctx.backend_name]
        dq, dk, dv = backend.backward(go, glse, q, k, v, o, lse, ctx.scale, ctx.kctx)
        return dq, dk, dv, None, None


def softmax_with_lse(q: Tensor, k: Tensor, v: Tensor, scale: float, backend: str | None = None) -> tuple[Tensor, Tensor]:
    """Exact softmax attention with its log-sum-exp.

    q: [B, H, Nq, D], k: [B, H, Nk, D], v: [B, H, Nk, D]  ->  o: [B, H, Nq, D] (dtype of v), lse: [B, H, Nq] (fp32;
    fp64 for fp64 inputs). Differentiable in both outputs.
    """
    chosen = select_backend(q, backend)
    if not (q.requires_grad or k.requires_grad or v.requires_grad) or not torch.is_grad_enabled():
        o, lse, _ = chosen.forward(q, k, v, scale)
        return o, lse
    return _SoftmaxWithLSE.apply(q, k, v, scale, chosen.name)


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
