"""Whether the current call is being captured into a graph (torch.compile, torch.export strict or not, jit.trace).

Eager-only fast paths (phi's CPU tiles, the complex-multiply RoPE) step aside then: a graph wants the plain form
(inductor fuses it; ONNX and inductor have no complex tensors; a tile loop would unroll into the graph).
"""

from __future__ import annotations

import torch


def is_tracing() -> bool:
    return torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()
