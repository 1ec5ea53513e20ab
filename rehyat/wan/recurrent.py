"""Constant-memory recurrent forward of a fully converted, causal ReHyAt Wan transformer.

Schedule (this project's decision; the paper leaves it open): **each call of the transformer — i.e. each denoising
step, and each CFG branch — sweeps the latent video chunk by chunk**.  Chunk ``c`` (``T_c`` latent frames) goes through
every block before chunk ``c + 1`` starts; every block's self-attention is one :func:`rehyat.attention.
hybrid_attention_step` that reads and updates that layer's state (``S``, ``z`` and the K/V/phi(K) tail of the last
``T_o`` frames).  State is built from the keys of the *current* (noisy) step and dropped at the end of the call.
The states live in one mapping owned by the sweep, handed to every layer inside the chunk's RoPE argument (a
:class:`~rehyat.wan.processor.FrameRotary` carrying the chunk's geometry too), so processors hold no state.

Everything else in Wan is per token and computed per chunk: the Conv3d patch embedding (temporal patch 1, so a slice of
latent frames patches exactly), RoPE (frequencies of the chunk's *global* frame indices, :func:`chunk_rotary_emb`),
the timestep modulation and the cross-attention to the (shared) text tokens, the FFN, the output head and unpatchify.
Hence the result equals the parallel causal forward up to float rounding, while the activations alive at any time are
one chunk's (plus the per-layer states, whose size does not depend on the number of frames).  The only tensors that
grow with the video are the input latent and the output, which the caller owns.

**Continuing a sweep** (what streamed sampling, :mod:`rehyat.wan.stream`, does): a call may hold only some chunks of
the video — post-patch frames ``[first_frame, first_frame + n)`` — and continue the states that the earlier chunks
left.  Both ride in ``attention_kwargs[SWEEP_KEY]`` as a :class:`Sweep` (``sweep_kwargs(first_frame, states)``),
because the call goes through the model's own ``forward`` (so diffusers' offload hooks see it) whose signature is
diffusers'; ``attention_kwargs`` is the argument diffusers passes through for the attention processors, and these
states are the processors'.  ``states`` is updated in place, so the caller keeps it for the next chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from .convert import get_rehyat_config, recurrent_unsupported_reason
from .processor import FrameRotary, RecurrentStates

Tensor = torch.Tensor
SWEEP_KEY = "rehyat_sweep"


@dataclass
class Sweep:
    """Where a recurrent call continues a longer sweep: its input holds post-patch frames ``[first_frame, ...)``
    (a chunk boundary) and ``states`` (processor -> :class:`~rehyat.attention.HybridState`) holds what the frames
    before left; the call updates it in place."""

    first_frame: int
    states: RecurrentStates


def sweep_kwargs(first_frame: int, states: RecurrentStates) -> dict:
    """``attention_kwargs`` for a transformer call that continues a sweep (see the module docstring)."""
    return {SWEEP_KEY: Sweep(int(first_frame), states)}


def chunk_rotary_emb(rope, first_frame: int, num_frames: int, height: int, width: int,
                     states: RecurrentStates | None = None) -> FrameRotary:
    """RoPE ``(cos, sin)`` of shape ``[1, n*h*w, 1, D]`` for post-patch frames ``[first_frame, first_frame + n)``,
    as a :class:`FrameRotary` with geometry ``(n, h*w)`` and the sweep's recurrent ``states`` (if any).

    Equals the matching token slice of ``WanRotaryPosEmbed.forward`` on the whole video, without building the whole
    video's table.  ``rope`` is the transformer's ``WanRotaryPosEmbed`` (its cached ``freqs_cos`` / ``freqs_sin``).
    """
    if first_frame + num_frames > rope.max_seq_len or max(height, width) > rope.max_seq_len:
        raise ValueError(f"frames [{first_frame}, {first_frame + num_frames}) x {height} x {width} exceed the rotary "
                         f"table (rope_max_seq_len={rope.max_seq_len})")
    split = [rope.t_dim, rope.h_dim, rope.w_dim]

    def build(table: Tensor) -> Tensor:
        t, h, w = table.split(split, dim=1)
        n = num_frames
        t = t[first_frame:first_frame + n].view(n, 1, 1, -1).expand(n, height, width, -1)
        h = h[:height].view(1, height, 1, -1).expand(n, height, width, -1)
        w = w[:width].view(1, 1, width, -1).expand(n, height, width, -1)
        return torch.cat([t, h, w], dim=-1).reshape(1, n * height * width, 1, -1)

    return FrameRotary(build(rope.freqs_cos), build(rope.freqs_sin), num_frames, height * width, states)


def _unpatchify(x: Tensor, batch: int, frames: int, height: int, width: int, patch: tuple[int, int, int]) -> Tensor:
    """``[B, f*h*w, C*pt*ph*pw]`` tokens -> ``[B, C, f*pt, h*ph, w*pw]`` (inverse of Conv3d patching)."""
    pt, ph, pw = patch
    x = x.reshape(batch, frames, height, width, pt, ph, pw, -1)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(x.shape[0], x.shape[1], frames * pt, height * ph, width * pw)


@torch.no_grad()
def recurrent_forward(transformer, hidden_states: Tensor, timestep: Tensor, encoder_hidden_states: Tensor,
                      encoder_hidden_states_image: Tensor | None = None, return_dict: bool = True,
                      attention_kwargs: dict | None = None, chunk_frames: int | None = None):
    """Same inputs/outputs as ``WanTransformer3DModel.forward``; computed chunk by chunk with per-layer state.

    ``chunk_frames`` defaults to the model's T_c (any value gives the same result only when it equals T_c: the
    chunking *is* the model).  Needs every block converted and ``causal=True``.  Inference only (no autograd).
    ``attention_kwargs`` may hold only a :class:`Sweep` under :data:`SWEEP_KEY` (continue a sweep: the input is the
    part of the video from ``first_frame`` on, ``states`` what the frames before left); without one the call is a
    whole sweep from frame 0 with fresh states.
    """
    reason = recurrent_unsupported_reason(transformer)
    if reason:
        raise ValueError(f"recurrent forward unavailable: {reason}")
    extra = dict(attention_kwargs or {})
    sweep = extra.pop(SWEEP_KEY, None)
    if extra:
        raise NotImplementedError(f"attention_kwargs {sorted(extra)} (e.g. a LoRA scale) are not supported by the "
                                  f"recurrent forward")
    if timestep.ndim != 1:
        raise NotImplementedError("per-token timesteps (Wan2.2 TI2V expand_timesteps) are not supported")
    cfg = get_rehyat_config(transformer)
    tc = cfg.chunk_frames if chunk_frames is None else int(chunk_frames)
    batch, _, num_frames, height, width = hidden_states.shape
    patch = tuple(transformer.config.patch_size)
    pt, ph, pw = patch
    ppf, pph, ppw = num_frames // pt, height // ph, width // pw

    temb, timestep_proj, text, text_img = transformer.condition_embedder(
        timestep, encoder_hidden_states, encoder_hidden_states_image)
    timestep_proj = timestep_proj.unflatten(1, (6, -1))
    if text_img is not None:
        text = torch.cat([text_img, text], dim=1)
    shift, scale = (transformer.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)

    first = sweep.first_frame if sweep is not None else 0
    if first % tc:
        raise ValueError(f"a continued sweep starts on a chunk boundary (a multiple of T_c={tc}), not frame {first}")
    # one sweep's per-layer states: fresh and dropped when the call returns, or the caller's (continued sweep)
    states: RecurrentStates = sweep.states if sweep is not None else {}
    out = None
    for f0 in range(0, ppf, tc):
        f1 = min(f0 + tc, ppf)
        x = transformer.patch_embedding(hidden_states[:, :, f0 * pt:f1 * pt])
        x = x.flatten(2).transpose(1, 2).contiguous()
        rotary = chunk_rotary_emb(transformer.rope, first + f0, f1 - f0, pph, ppw, states)
        for block in transformer.blocks:
            x = block(x, text, timestep_proj, rotary)
        x = (transformer.norm_out(x.float()) * (1 + scale.to(x.device)) + shift.to(x.device)).type_as(x)
        y = _unpatchify(transformer.proj_out(x), batch, f1 - f0, pph, ppw, patch)
        del x
        if out is None:
            out = y.new_empty(batch, y.shape[1], ppf * pt, pph * ph, ppw * pw)
        out[:, :, f0 * pt:f1 * pt] = y
        del y
    if not return_dict:
        return (out,)
    return Transformer2DModelOutput(sample=out)
