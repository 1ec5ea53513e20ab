"""Feature maps phi for the linear branch, registered by name.

Every map is an ``nn.Module`` mapping ``x: [B, N, H, D] -> phi(x): [B, N, H, F]`` with non-negative outputs, and holds
separate parameters per head (grouped 1x1 convolutions == per-head MLPs).  phi_q and phi_k are separate instances, so
nothing is tied between q and k or across heads.

Parameter counts at Wan2.1-1.3B shape (12 heads x 128), one map (a converted block holds two: phi_q and phi_k):

| name | per map | per block (q + k) |
|---|---|---|
| ``polynomial`` (hidden 256, F 256, P 2) | 1,185,792 | 2,371,584 (paper: ~2.4M) |
| ``hedgehog`` (F 256)                    | 198,144   | 396,288 |
| ``relu``, ``elu1``                      | 0         | 0 |

(``tests/test_feature_maps.py`` checks these numbers.)

Layout: the per-head matrices run as one batched GEMM over heads on a *head-major* view of ``[B, N, H, D]`` (a strided
view, no copy), and the result is returned as a ``[B, N, H, F]`` view of head-major storage — the layout the op's
per-head matmuls read in place — so no layout copy is made between Wan's ``[B, N, H, D]``, the maps and the kernels.
On CPU without autograd the polynomial map runs in per-head row tiles that stay in cache: GEMM with its bias,
activation in place, GEMM straight into the output, non-negativity and powers in place (``benchmarks/feature_maps.py``
at N = 32,760, 12 heads, 128 -> 256 -> 256: see BENCHMARKS.md, issue 21; the einsum form ran at 0.40 of the rate of
its two bare ``bmm`` calls).  Autograd and other devices use the batched form (one GEMM per layer over all heads).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from rehyat.tracing import is_tracing

Tensor = torch.Tensor

FEATURE_MAPS: dict[str, type["FeatureMap"]] = {}


def register_feature_map(name: str) -> Callable[[type], type]:
    def deco(cls):
        if name in FEATURE_MAPS and FEATURE_MAPS[name] is not cls:
            raise ValueError(f"feature map {name!r} is already registered (by {FEATURE_MAPS[name].__qualname__})")
        cls.registry_name = name
        FEATURE_MAPS[name] = cls
        return cls

    return deco


def build_feature_map(name: str, num_heads: int, head_dim: int, **kwargs) -> "FeatureMap":
    try:
        cls = FEATURE_MAPS[name]
    except KeyError:
        raise KeyError(f"unknown feature map {name!r}; registered: {sorted(FEATURE_MAPS)}") from None
    return cls(num_heads=num_heads, head_dim=head_dim, **kwargs)


def feature_map_output_dim(name: str, head_dim: int, **kwargs) -> int:
    """F of ``build_feature_map(name, H, head_dim, **kwargs)`` without allocating it (built on the meta device)."""
    with torch.device("meta"):
        return build_feature_map(name, 1, head_dim, **kwargs).feature_dim


class FeatureMap(nn.Module):
    """Base class: subclasses set ``feature_dim`` and implement ``forward(x: [B, N, H, D]) -> [B, N, H, F]``."""

    registry_name: str = ""
    feature_dim: int

    def __init__(self, num_heads: int, head_dim: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim

    def config(self) -> dict:
        """Constructor kwargs, stored in checkpoints next to the weights."""
        return {"num_heads": self.num_heads, "head_dim": self.head_dim}


def head_major(x: Tensor) -> Tensor:
    """``[B, N, H, D]`` -> ``[H, B*N, D]``: a view when B and N are mergeable (always for what this module returns)."""
    return x.reshape(-1, x.shape[-2], x.shape[-1]).transpose(0, 1)


def from_head_major(y: Tensor, like: Tensor) -> Tensor:
    """``[H, B*N, F]`` -> ``[B, N, H, F]`` view (head-major storage) shaped like ``like`` ``[B, N, H, *]``."""
    return y.transpose(0, 1).unflatten(0, like.shape[:2])


class PerHeadLinear(nn.Module):
    """Grouped 1x1 convolution: an independent affine map per head.  [B, N, H, Din] -> [B, N, H, Dout].

    One ``baddbmm`` over heads on head-major views (no layout copy, bias added inside the GEMM); the result is a view
    of head-major storage.  ``alpha`` scales the input (``(alpha x) W + b``, folded into the GEMM).
    """

    def __init__(self, num_heads: int, in_dim: int, out_dim: int, bias: bool = True, init: str = "default"):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_heads, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(num_heads, out_dim)) if bias else None
        if init == "identity":
            if in_dim != out_dim:
                raise ValueError("identity init needs in_dim == out_dim")
            with torch.no_grad():
                self.weight.copy_(torch.eye(in_dim).expand(num_heads, in_dim, in_dim))
        else:
            bound = 1.0 / math.sqrt(in_dim)
            nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: Tensor, alpha: float = 1.0) -> Tensor:
        return from_head_major(self.head_major_forward(head_major(x), alpha), x)

    def head_major_forward(self, xt: Tensor, alpha: float = 1.0, out: Tensor | None = None) -> Tensor:
        """xt: [H, M, Din] -> [H, M, Dout] (into ``out`` when given: inference only)."""
        w = self.weight.to(xt.dtype)
        kw = {} if out is None else {"out": out}
        if self.bias is None:
            y = torch.bmm(xt, w, **kw)
            return y.mul_(alpha) if alpha != 1.0 else y
        return torch.baddbmm(self.bias.to(xt.dtype).unsqueeze(1), xt, w, alpha=alpha, **kw)


_NONNEG: dict[str, Callable[[Tensor], Tensor]] = {"softplus": F.softplus, "relu": F.relu, "exp": torch.exp}


def softplus_inplace_(x: Tensor, scratch: Tensor) -> Tensor:
    """``softplus(x)`` in place as ``max(x, -log(sigmoid(-min(x, 80))))``; ``scratch``: a tensor of x's shape.

    Why not ``F.softplus`` / ``torch.log1p``: on some installs the fp32 log1p/expm1 kernels of ATen's CPU build run
    10-20x slower than exp and log (measured with byte-identical torch builds in two venvs of this machine, cause not
    found; docs/attention.md), and softplus is built on log1p.  ``sigmoid`` and ``log`` run at full speed in both;
    on a [1024, 256] fp32 tile this form took 0.25-0.35 ms against 0.33-0.55 (``max(x,0) + log(1+exp(-|x|))``) and
    1.5 (``F.softplus``).  ``-log(sigmoid(-x)) = log(1 + e^x)``; the clamp keeps ``sigmoid(-x)`` from underflowing and
    the ``max`` restores x above 80, where softplus(x) = x in fp32.  Exact up to the rounding of ``sigmoid(-x)`` near 1:
    absolute error <= 1.2e-7 (relative only where softplus(x) < 1.2e-7 itself); NaN and +-inf map like F.softplus.
    """
    e = torch.clamp(x, max=80.0, out=scratch).neg_().sigmoid_().log_().neg_()
    return torch.maximum(x, e, out=x)


# In-place forms for the CPU inference path, ``(x, scratch) -> x`` (aten ops: F.gelu / F.softplus have no inplace flag).
_NONNEG_INPLACE: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "softplus": softplus_inplace_, "relu": lambda t, _: torch.relu_(t), "exp": lambda t, _: torch.exp_(t)}
_ACT_INPLACE: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": torch.ops.aten.gelu_, "relu": torch.relu_, "silu": lambda t: F.silu(t, inplace=True),
    "tanh": torch.tanh_, "sigmoid": torch.sigmoid_}
# Rows of one head per inference tile: the hidden and output tiles (2 x 1024 x 256 fp32 = 2 MiB) stay in cache
# between the GEMM that writes them and the elementwise passes that follow (benchmarks/feature_maps.py: per-head
# tiles of 1024-2048 rows ran at 0.82-0.86 of the bare bmm rate; whole-head-batch tiles at 0.76-0.80).
TILE_ROWS = 1024


@register_feature_map("polynomial")
class PolynomialFeatureMap(FeatureMap):
    """The paper's map: a per-head 2-layer MLP psi whose output is split into P equal parts, part i raised to power i.

    ``phi(x) = [psi_1(x)^1, psi_2(x)^2, ..., psi_P(x)^P]``.  Non-negativity guarantee: psi's output passes through a
    non-negative function (``output_activation``: softplus by default, or relu / exp) before the powers, so every
    part, odd powers included, is >= 0.  Inputs are scaled by ``head_dim**-0.25`` so that ``phi_q . phi_k`` is
    compared against ``exp(q.k / sqrt(D))`` at the same scale as the softmax branch.
    """

    def __init__(self, num_heads: int, head_dim: int, hidden_dim: int = 256, feature_dim: int = 256, degree: int = 2,
                 activation: str = "gelu", output_activation: str = "softplus"):
        super().__init__(num_heads, head_dim)
        if feature_dim % degree:
            raise ValueError(f"feature_dim={feature_dim} must split into degree={degree} equal parts")
        if output_activation not in _NONNEG:
            raise ValueError(f"output_activation must be one of {sorted(_NONNEG)}")
        self.hidden_dim, self.feature_dim, self.degree = hidden_dim, feature_dim, degree
        self.activation, self.output_activation = activation, output_activation
        self.fc1 = PerHeadLinear(num_heads, head_dim, hidden_dim)
        self.fc2 = PerHeadLinear(num_heads, hidden_dim, feature_dim)
        self._act = getattr(F, activation)
        self._nonneg = _NONNEG[output_activation]

    def config(self) -> dict:
        return super().config() | {
            "hidden_dim": self.hidden_dim, "feature_dim": self.feature_dim, "degree": self.degree,
            "activation": self.activation, "output_activation": self.output_activation,
        }

    def forward(self, x: Tensor) -> Tensor:
        xt, alpha = head_major(x), self.head_dim ** -0.25
        if x.device.type == "cpu" and not is_tracing() and not (torch.is_grad_enabled() and (
                x.requires_grad or any(p.requires_grad for p in self.parameters()))):
            return from_head_major(self._forward_cpu_tiles(xt, alpha), x)
        # autograd, compiled/exported graphs (inductor fuses the elementwise passes) and every non-CPU device: one
        # batched GEMM per layer
        psi = self._nonneg(self.fc2.head_major_forward(self._act(self.fc1.head_major_forward(xt, alpha))))
        parts = psi.chunk(self.degree, dim=-1)
        return from_head_major(torch.cat([p.pow(i + 1) for i, p in enumerate(parts)], dim=-1), x)

    @torch.no_grad()
    def _forward_cpu_tiles(self, xt: Tensor, alpha: float) -> Tensor:
        """CPU inference: [H, M, D] -> [H, M, F] in per-head row tiles that stay in cache.

        Per tile: ``addmm`` (bias inside the GEMM, alpha folded into the weight) into a reused hidden buffer,
        activation in place, ``addmm`` straight into the output rows, non-negativity and powers in place.  Reused
        buffers: no page faults after the first tile.  (``baddbmm`` with a bias copies the broadcast bias into its
        output first and ran the map at 0.50 of the bmm rate.)
        """
        act = _ACT_INPLACE.get(self.activation)
        nonneg = _NONNEG_INPLACE[self.output_activation]
        heads, rows = xt.shape[0], xt.shape[1]
        w1 = self.fc1.weight.to(xt.dtype) * alpha
        w2 = self.fc2.weight.to(xt.dtype)
        b1 = None if self.fc1.bias is None else self.fc1.bias.to(xt.dtype)
        b2 = None if self.fc2.bias is None else self.fc2.bias.to(xt.dtype)
        out = xt.new_empty(heads, rows, self.feature_dim)
        tile = max(1, min(TILE_ROWS, rows))  # rows = 0: an empty output, no tiles
        hidden, scratch = xt.new_empty(tile, self.hidden_dim), xt.new_empty(tile, self.feature_dim)
        part = self.feature_dim // self.degree
        for m0 in range(0, rows, tile):
            m1 = min(rows, m0 + tile)
            for i in range(heads):
                h = _affine(xt[i, m0:m1], w1[i], None if b1 is None else b1[i], hidden[:m1 - m0])
                h = act(h) if act is not None else hidden[:m1 - m0].copy_(self._act(h))
                o = _affine(h, w2[i], None if b2 is None else b2[i], out[i, m0:m1])
                nonneg(o, scratch[:m1 - m0])
                for p in range(1, self.degree):
                    o[:, p * part:(p + 1) * part].pow_(p + 1)
        return out


def _affine(x: Tensor, w: Tensor, b: Tensor | None, out: Tensor) -> Tensor:
    """``x w + b`` into ``out``.  x: [M, I], w: [I, O], b: [O] or None, out: [M, O]."""
    return torch.mm(x, w, out=out) if b is None else torch.addmm(b, x, w, out=out)


@register_feature_map("hedgehog")
class HedgehogFeatureMap(FeatureMap):
    """Hedgehog (LoLCATs / fla): per-head linear projection, then ``[softmax(xW), softmax(-xW)]`` over features.

    Output F = 2 * proj_dim; softmax outputs are positive.  W starts as the identity (when proj_dim == head_dim), as
    in LoLCATs, so the untrained map already tracks the query/key direction.
    """

    def __init__(self, num_heads: int, head_dim: int, feature_dim: int | None = None, bias: bool = True):
        super().__init__(num_heads, head_dim)
        feature_dim = 2 * head_dim if feature_dim is None else feature_dim
        if feature_dim % 2:
            raise ValueError("hedgehog feature_dim must be even ([softmax(xW), softmax(-xW)])")
        proj = feature_dim // 2
        self.feature_dim, self.bias = feature_dim, bias
        self.proj = PerHeadLinear(num_heads, head_dim, proj, bias=bias, init="identity" if proj == head_dim else "default")

    def config(self) -> dict:
        return super().config() | {"feature_dim": self.feature_dim, "bias": self.bias}

    def forward(self, x: Tensor) -> Tensor:
        y = self.proj.head_major_forward(head_major(x), self.head_dim ** -0.25)
        return from_head_major(torch.cat([torch.softmax(y, dim=-1), torch.softmax(-y, dim=-1)], dim=-1), x)


@register_feature_map("relu")
class ReLUFeatureMap(FeatureMap):
    """SANA-Video's map: ``ReLU(x)`` (parameter-free, F = D)."""

    def __init__(self, num_heads: int, head_dim: int):
        super().__init__(num_heads, head_dim)
        self.feature_dim = head_dim

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


@register_feature_map("elu1")
class ELU1FeatureMap(FeatureMap):
    """Katharopoulos et al.: ``1 + ELU(x)`` (parameter-free, F = D, strictly positive)."""

    def __init__(self, num_heads: int, head_dim: int):
        super().__init__(num_heads, head_dim)
        self.feature_dim = head_dim

    def forward(self, x: Tensor) -> Tensor:
        return 1.0 + F.elu(x)
