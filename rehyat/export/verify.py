"""An exported graph in its runtime (onnxruntime, ExecuTorch) against the eager recurrent step, chunk by chunk.

The reference is the model's own recurrent computation — :func:`rehyat.wan.recurrent.recurrent_forward` for the whole
transformer, the block with its :class:`~rehyat.wan.processor.ReHyAtWanAttnProcessor` and a
:class:`~rehyat.wan.processor.FrameRotary` carrying a :class:`~rehyat.attention.HybridState` for one block (the
fused kernels, the growing tail) — not the exported module, so a fault in the fixed-shape form shows up here.
Inputs are random, over ``2 T_c + 1`` frames by default: a first chunk (empty tail), a full chunk with a carried
state and, for ``T_c > 1``, a ragged last chunk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from .driver import ExportedTransformerStep
from .formats import format_for_path
from .step import window_valid


@dataclass(frozen=True)
class Agreement:
    """``max_abs``: max |runtime - eager| over the outputs; ``scale``: max |eager output|; ``rel`` = ratio."""

    max_abs: float
    scale: float
    chunks: int
    runtime: str

    @property
    def rel(self) -> float:
        return self.max_abs / max(self.scale, 1e-30)

    def describe(self) -> str:
        return (f"max |{self.runtime} - eager| = {self.max_abs:.3g} over {self.chunks} chunks (output scale "
                f"{self.scale:.3g}, relative {self.rel:.2g})")


def _frames(tc: int, frames: int | None) -> int:
    return 2 * tc + (1 if tc > 1 else 0) if frames is None else int(frames)


@torch.no_grad()
def check_transformer(export_dir: str | os.PathLike, transformer, *, frames: int | None = None, seed: int = 0,
                      threads: int | None = None) -> Agreement:
    """The exported whole-transformer step (chained over the chunks of ``frames`` latent frames) against
    ``recurrent_forward`` of ``transformer`` on the same random latents, timestep and text."""
    from rehyat.wan.recurrent import recurrent_forward

    step = ExportedTransformerStep(export_dir, threads=threads)
    geo = step.geometry
    tc = geo["chunk_frames"]
    n = _frames(tc, frames)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, geo["in_channels"], n, geo["latent_height"], geo["latent_width"], generator=g)
    text = torch.randn(1, geo["text_tokens"], geo["text_dim"], generator=g)
    ts = torch.tensor([637])
    ref = recurrent_forward(transformer.float().eval(), x, ts, text, return_dict=False)[0]
    states, outs = step.zero_states(), []
    for f0 in range(0, n, tc):
        out, states = step(x[:, :, f0:f0 + tc], ts, text, f0, states)
        outs.append(out)
    got = np.concatenate(outs, axis=2)
    return Agreement(float(np.abs(got - ref.numpy()).max()), float(ref.abs().max()), len(outs), step.format.runtime)


@torch.no_grad()
def check_block(path: str | os.PathLike, step, block, *, frames: int | None = None, seed: int = 0,
                threads: int | None = None) -> Agreement:
    """An exported :class:`~rehyat.export.graphs.BlockChunkStep` of ``block`` (file ``path``, ``.onnx`` or ``.pte``,
    run in its format's runtime) chained over the chunks of ``frames`` frames against ``block`` itself: its ReHyAt
    processor's eager recurrent step on a ``HybridState``."""
    from rehyat.wan.processor import FrameRotary

    fmt = format_for_path(path)
    runner = fmt.open(path, threads)
    geo = step.geometry
    tc, to, ft = geo.chunk_frames, geo.overlap_frames, geo.frame_tokens
    n = _frames(tc, frames)
    g = torch.Generator().manual_seed(seed)
    c, d = step.dim, geo.head_dim
    x = torch.randn(1, n * ft, c, generator=g)
    text = torch.randn(1, step.text_tokens, c, generator=g)
    tproj = torch.randn(1, 6, c, generator=g) * 0.1
    angles = torch.randn(1, n * ft, 1, d // 2, generator=g).repeat_interleave(2, dim=-1)
    cos, sin = angles.cos(), angles.sin()

    def padded(t: torch.Tensor) -> np.ndarray:  # a ragged last chunk: padding tokens at the end
        missing = tc * ft - t.shape[1]
        return torch.cat([t, t.new_zeros(t.shape[0], missing, *t.shape[2:])], 1).numpy() if missing else t.numpy()

    eager_states: dict = {}
    state = [t.numpy() for t in geo.zero_state().tensors()[:len(geo.state_fields())]]
    max_abs = scale = 0.0
    chunks = 0
    for f0 in range(0, n, tc):
        f1 = min(f0 + tc, n)
        sl = slice(f0 * ft, f1 * ft)
        ref = block(x[:, sl], text, tproj, FrameRotary(cos[:, sl], sin[:, sl], f1 - f0, ft, eager_states))
        feeds = [padded(x[:, sl]), text.numpy(), tproj.numpy(), padded(cos[:, sl]), padded(sin[:, sl]),
                 window_valid(min(to, f0), tc, to, f1 - f0).numpy(), *state]
        out, *state = runner.run(feeds)
        max_abs = max(max_abs, float(np.abs(out[:, :(f1 - f0) * ft] - ref.numpy()).max()))
        scale = max(scale, float(ref.abs().max()))
        chunks += 1
    return Agreement(max_abs, scale, chunks, fmt.runtime)


__all__ = ["Agreement", "check_block", "check_transformer"]
