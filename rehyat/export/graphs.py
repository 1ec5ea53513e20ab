"""Exportable chunk steps: ``nn.Module`` s with flat tensor inputs/outputs and static shapes.

* :class:`BlockChunkStep` — one converted Wan block, one chunk: ``hidden_states`` of the chunk, the embedded text and
  timestep projection, the chunk's RoPE tables, the window's slot mask and the layer's :class:`FixedState` in; the
  block's output and the next state out.
* :class:`TransformerChunkStep` — the whole fully converted transformer, one chunk, one denoising step, one CFG
  branch: the chunk's latent frames, the timestep, the text encoder's hidden states, the chunk's first post-patch
  frame index and every layer's state in; the chunk's noise prediction and every layer's next state out.  Built from
  the pieces :func:`rehyat.wan.recurrent.recurrent_forward` runs inside its chunk loop (patch embedding, condition
  embedder, RoPE of the chunk's global frames, every block, ``norm_out`` / ``proj_out`` / unpatchify).
* :class:`DenseBlockStep` — an unconverted (softmax) block on a whole window, for the benchmark's comparison.

The blocks are diffusers' own ``WanTransformerBlock.forward``; only the self-attention processor differs: each step
holds a *twin* of every block — a shallow copy whose ``attn1`` carries a :class:`FixedStepProcessor` — sharing every
parameter with the model (no weight is copied, the model is not modified).  The processor takes Wan's q/k/v (QK-norm,
RoPE) from :func:`rehyat.wan.processor.wan_self_attention_qkv`, phi from the model's own processor and computes
:func:`rehyat.export.step.fixed_hybrid_step`; states reach it through the RoPE argument (a :class:`ChunkRotary`, the
same route :class:`rehyat.wan.processor.FrameRotary` takes in the recurrent sweep).

Every step describes its graph signature (:meth:`inputs` / :meth:`outputs`: name, shape, dtype) and makes example
inputs from it, so the exporter, the sidecar and the driver read one description.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from rehyat.wan.processor import FrameRotary, ReHyAtWanAttnProcessor, project_out, wan_self_attention_qkv
from rehyat.wan.recurrent import chunk_rotary_emb

from .step import STATE_FIELDS, FixedState, fixed_hybrid_step

Tensor = torch.Tensor


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, static shape, dtype and what it is."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    doc: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": str(self.dtype).replace("torch.", ""),
                "doc": self.doc}

    def example(self, generator: torch.Generator | None = None) -> Tensor:
        if self.dtype.is_floating_point:
            return torch.randn(self.shape, generator=generator, dtype=self.dtype)
        return torch.zeros(self.shape, dtype=self.dtype)


class ChunkRotary(FrameRotary):
    """:class:`~rehyat.wan.processor.FrameRotary` of one chunk step: ``states`` maps each layer index to its
    :class:`FixedState` (updated by the layer), ``valid`` is the window's ``[T_o + T_c]`` slot mask.  Keyed by index,
    not by processor: ``torch.export`` may trace copies of the modules."""

    valid: Tensor

    def __new__(cls, cos: Tensor, sin: Tensor, frames: int, frame_tokens: int, states: dict, valid: Tensor):
        self = super().__new__(cls, cos, sin, frames, frame_tokens, states)
        self.valid = valid
        return self


class FixedStepProcessor(nn.Module):
    """Self-attention of a converted block as one fixed-shape chunk step, for export.

    Wraps the block's :class:`~rehyat.wan.processor.ReHyAtWanAttnProcessor` (its phi and config; parameters shared)
    and replaces its ``hybrid_attention_step`` call (fused kernels, growing tail) with
    :func:`~rehyat.export.step.fixed_hybrid_step`.  Called with a :class:`ChunkRotary` only.
    """

    def __init__(self, processor: ReHyAtWanAttnProcessor, layer: int):
        super().__init__()
        self.rehyat, self.layer = processor, int(layer)

    def forward(self, attn, hidden_states: Tensor, encoder_hidden_states=None, attention_mask=None,
                rotary_emb: ChunkRotary | None = None, **kwargs) -> Tensor:
        if not isinstance(rotary_emb, ChunkRotary):
            raise TypeError("FixedStepProcessor runs inside a chunk step (rotary_emb must be a ChunkRotary)")
        query, key, value = wan_self_attention_qkv(attn, hidden_states, rotary_emb)
        fq, fk = self.rehyat.features(query, key)
        out, rotary_emb.states[self.layer] = fixed_hybrid_step(
            query, key, value, fq, fk, rotary_emb.states[self.layer], rotary_emb.valid,
            frame_tokens=rotary_emb.frame_tokens, normaliser=self.rehyat.config.normaliser)
        return project_out(attn, out, query)


def _twin(module: nn.Module, **children: nn.Module) -> nn.Module:
    """A shallow copy of ``module`` sharing its parameters and buffers, with some child modules replaced."""
    twin = copy.copy(module)
    twin._modules = dict(module._modules, **children)
    return twin


def step_block(block: nn.Module, layer: int = 0) -> tuple[nn.Module, FixedStepProcessor]:
    """A twin of a converted ``WanTransformerBlock`` whose self-attention is a :class:`FixedStepProcessor`."""
    proc = block.attn1.processor
    if not isinstance(proc, ReHyAtWanAttnProcessor):
        raise ValueError(f"block self-attention is {type(proc).__name__}, not a converted ReHyAt processor")
    if not proc.kind.needs_features or not proc.causal or proc.config.kind not in ("hybrid", "hybrid_recurrent"):
        raise ValueError(f"only causal hybrid blocks have a chunk step (this one: kind={proc.config.kind!r}, "
                         f"causal={proc.causal}); convert with the 'long-video' preset")
    if proc.phi_k is None:
        raise ValueError("the block has no feature map; the hybrid chunk step needs phi")
    fixed = FixedStepProcessor(proc, layer)
    return _twin(block, attn1=_twin(block.attn1, processor=fixed)), fixed


@dataclass(frozen=True)
class StepShapes:
    """Static shapes of a chunk step: batch, post-patch frame size ``height x width`` (tokens ``frame_tokens``),
    ``T_c`` / ``T_o`` and the layer widths (heads, head dim, feature dim)."""

    batch: int
    height: int
    width: int
    chunk_frames: int
    overlap_frames: int
    heads: int
    head_dim: int
    features: int

    @property
    def frame_tokens(self) -> int:
        return self.height * self.width

    @property
    def chunk_tokens(self) -> int:
        return self.chunk_frames * self.frame_tokens

    @property
    def tail_tokens(self) -> int:
        return self.overlap_frames * self.frame_tokens

    def state_specs(self, layer: int, prefix: str, dtype: torch.dtype = torch.float32) -> list[TensorSpec]:
        """The per-layer state tensors (no tail ones when ``T_o = 0``)."""
        b, h, d, f, t = self.batch, self.heads, self.head_dim, self.features, self.tail_tokens
        shapes = {"s": ((b, h, f, d), "sum of phi(k) v^T over flushed frames"),
                  "z": ((b, h, f), "sum of phi(k) over flushed frames"),
                  "tail_k": ((b, t, h, d), "post-RoPE keys of the last T_o frame slots"),
                  "tail_v": ((b, t, h, d), "values of the last T_o frame slots"),
                  "tail_fk": ((b, t, h, f), "phi(k) of the last T_o frame slots")}
        return [TensorSpec(f"{prefix}.{layer}.{name}", shapes[name][0], dtype, shapes[name][1])
                for name in self.state_fields()]

    def state_fields(self) -> tuple[str, ...]:
        return STATE_FIELDS if self.overlap_frames else STATE_FIELDS[:2]

    def zero_state(self, dtype: torch.dtype = torch.float32) -> FixedState:
        return FixedState.zeros(self.batch, self.heads, self.head_dim, self.features, self.tail_tokens, dtype)

    def valid_spec(self) -> TensorSpec:
        return TensorSpec("window_valid", (self.overlap_frames + self.chunk_frames,), torch.float32,
                          "1 = the softmax-window frame slot holds a real frame: T_o tail slots (right-aligned), "
                          "then T_c chunk slots (left-aligned)")

    def to_json(self) -> dict:
        return {"batch": self.batch, "post_patch_height": self.height, "post_patch_width": self.width,
                **{k: getattr(self, k) for k in ("frame_tokens", "chunk_frames", "overlap_frames", "heads", "head_dim",
                                                 "features")}}


def _layer_geometry(processor: ReHyAtWanAttnProcessor, batch: int, height: int, width: int) -> StepShapes:
    c = processor.config
    return StepShapes(batch, height, width, c.chunk_frames, c.overlap_frames, processor.num_heads,
                         processor.head_dim, processor.phi_k.feature_dim)


class _Step(nn.Module):
    """Shared parts of the chunk steps: the signature (:meth:`inputs`, :meth:`outputs`) and example inputs."""

    geometry: StepShapes
    layers: int

    def inputs(self) -> list[TensorSpec]:
        raise NotImplementedError

    def outputs(self) -> list[TensorSpec]:
        raise NotImplementedError

    def example_inputs(self, seed: int = 0) -> tuple[Tensor, ...]:
        """Random inputs of the graph's shapes (states zero, the mask of a first chunk, frame index 0)."""
        g = torch.Generator().manual_seed(seed)
        geo = self.geometry
        values = {"window_valid": torch.ones(geo.overlap_frames + geo.chunk_frames)}
        values["window_valid"][:geo.overlap_frames] = 0
        for layer in range(self.layers):
            for name, t in zip(geo.state_fields(), geo.zero_state().tensors()):
                values[f"state.{layer}.{name}"] = t
        return tuple(values[s.name] if s.name in values else s.example(g) for s in self.inputs())

    def _states(self, flat: tuple[Tensor, ...]) -> dict[int, FixedState]:
        """Flat graph inputs -> ``{layer: FixedState}`` (empty tails when ``T_o = 0``)."""
        n = len(self.geometry.state_fields())
        out = {}
        for layer in range(self.layers):
            part = flat[layer * n:(layer + 1) * n]
            if n == len(STATE_FIELDS):
                out[layer] = FixedState(*part)
            else:
                s, z = part
                b, h, f, d = s.shape
                out[layer] = FixedState(s, z, s.new_zeros(b, 0, h, d), s.new_zeros(b, 0, h, d),
                                        s.new_zeros(b, 0, h, f))
        return out

    def _flat(self, states: dict[int, FixedState]) -> tuple[Tensor, ...]:
        n = len(self.geometry.state_fields())
        return tuple(t for layer in range(self.layers) for t in states[layer].tensors()[:n])


class BlockChunkStep(_Step):
    """One converted block, one chunk (module docstring).  ``height x width``: post-patch frame size;
    ``text_tokens``: length of the text sequence (512 in Wan)."""

    def __init__(self, block: nn.Module, *, height: int, width: int, text_tokens: int, batch: int = 1):
        super().__init__()
        self.block, self.processor = step_block(block)
        self.geometry = _layer_geometry(self.processor.rehyat, batch, height, width)
        self.layers = 1
        self.dim = block.attn1.inner_dim
        self.text_tokens = text_tokens

    def inputs(self) -> list[TensorSpec]:
        g, c = self.geometry, self.dim
        d = g.head_dim
        return [TensorSpec("hidden_states", (g.batch, g.chunk_tokens, c), torch.float32, "the chunk's tokens"),
                TensorSpec("encoder_hidden_states", (g.batch, self.text_tokens, c), torch.float32,
                           "text tokens after the condition embedder"),
                TensorSpec("timestep_proj", (g.batch, 6, c), torch.float32, "the condition embedder's timestep "
                           "projection, unflattened to [B, 6, C]"),
                TensorSpec("rope_cos", (1, g.chunk_tokens, 1, d), torch.float32, "RoPE of the chunk's global frames"),
                TensorSpec("rope_sin", (1, g.chunk_tokens, 1, d), torch.float32, ""),
                g.valid_spec(), *g.state_specs(0, "state")]

    def outputs(self) -> list[TensorSpec]:
        g = self.geometry
        return [TensorSpec("hidden_states_out", (g.batch, g.chunk_tokens, self.dim), torch.float32, "block output"),
                *g.state_specs(0, "next_state")]

    def forward(self, hidden_states, encoder_hidden_states, timestep_proj, rope_cos, rope_sin, window_valid, *state):
        g = self.geometry
        states = self._states(state)
        rotary = ChunkRotary(rope_cos, rope_sin, g.chunk_frames, g.frame_tokens, states, window_valid)
        out = self.block(hidden_states, encoder_hidden_states, timestep_proj, rotary)
        return (out, *self._flat(states))


class ChunkRope(nn.Module):
    """RoPE tables of the chunk whose first post-patch frame is ``first_frame`` (an int64 ``[1]`` tensor), inside the
    graph: equal to :func:`rehyat.wan.recurrent.chunk_rotary_emb` (tested).  Frame indices past the table are clamped
    (only padding slots of a ragged last chunk can reach them)."""

    def __init__(self, rope, chunk_frames: int, height: int, width: int):
        super().__init__()
        self.chunk_frames, self.max_frames = chunk_frames, rope.max_seq_len
        split = [rope.t_dim, rope.h_dim, rope.w_dim]
        for name, table in (("cos", rope.freqs_cos), ("sin", rope.freqs_sin)):
            t, _, _ = table.split(split, dim=1)
            hw = chunk_rotary_emb(rope, 0, 1, height, width)[0 if name == "cos" else 1][..., rope.t_dim:]
            self.register_buffer(f"t_{name}", t.clone(), persistent=False)  # [max frames, t_dim]
            self.register_buffer(f"hw_{name}", hw.reshape(1, height * width, -1).clone(), persistent=False)
        self.register_buffer("offsets", torch.arange(chunk_frames), persistent=False)

    def forward(self, first_frame: Tensor) -> tuple[Tensor, Tensor]:
        idx = (first_frame.reshape(1) + self.offsets).clamp(max=self.max_frames - 1)
        out = []
        for t, hw in ((self.t_cos, self.hw_cos), (self.t_sin, self.hw_sin)):
            n, ft = self.chunk_frames, hw.shape[1]
            tt = t.index_select(0, idx).view(n, 1, -1).expand(n, ft, t.shape[1])
            out.append(torch.cat([tt, hw.expand(n, ft, hw.shape[2])], dim=-1).reshape(1, n * ft, 1, -1))
        return out[0], out[1]


class TransformerChunkStep(_Step):
    """The whole fully converted causal transformer, one chunk (module docstring).

    ``height x width``: *latent* frame size (pixels / the VAE's spatial factor); ``text_tokens``: the text encoder's
    sequence length (``max_sequence_length``, 512 in Wan).  Text-to-video only (no image conditioning), one timestep
    per sample.
    """

    def __init__(self, transformer, *, height: int, width: int, text_tokens: int, batch: int = 1):
        super().__init__()
        reason = transformer.recurrent_unsupported_reason() if hasattr(transformer, "recurrent_unsupported_reason") \
            else "not a ReHyAt transformer"
        if reason:
            raise ValueError(f"no chunk step for this transformer: {reason}")
        if transformer.condition_embedder.image_embedder is not None:
            raise ValueError("image-conditioned (I2V) transformers are not exportable as a chunk step yet")
        cfg = transformer.config
        pt, ph, pw = cfg.patch_size
        if pt != 1 or height % ph or width % pw:
            raise ValueError(f"latent size {height}x{width} must be a multiple of the patch {tuple(cfg.patch_size)} "
                             f"(temporal patch 1)")
        self.t = transformer  # read-only: the twins below share its parameters
        pairs = [step_block(b, i) for i, b in enumerate(transformer.blocks)]
        self.blocks = nn.ModuleList(b for b, _ in pairs)
        self.processors = [p for _, p in pairs]
        self.geometry = _layer_geometry(self.processors[0].rehyat, batch, height // ph, width // pw)
        self.layers = len(self.processors)
        self.latent_size, self.patch = (height, width), (pt, ph, pw)
        self.in_channels, self.out_channels = cfg.in_channels, cfg.out_channels
        self.text_tokens, self.text_dim = text_tokens, cfg.text_dim
        self.rope = ChunkRope(transformer.rope, self.geometry.chunk_frames, self.geometry.height,
                              self.geometry.width)

    def inputs(self) -> list[TensorSpec]:
        g = self.geometry
        h, w = self.latent_size
        return [TensorSpec("latents", (g.batch, self.in_channels, g.chunk_frames, h, w), torch.float32,
                           "the chunk's latent frames (a ragged last chunk: padded at the end)"),
                TensorSpec("timestep", (g.batch,), torch.float32, "the denoising step's timestep"),
                TensorSpec("encoder_hidden_states", (g.batch, self.text_tokens, self.text_dim), torch.float32,
                           "the text encoder's hidden states (one CFG branch)"),
                TensorSpec("first_frame", (1,), torch.int64, "global index of the chunk's first post-patch frame"),
                g.valid_spec(),
                *(s for layer in range(self.layers) for s in g.state_specs(layer, "state"))]

    def outputs(self) -> list[TensorSpec]:
        g = self.geometry
        h, w = self.latent_size
        return [TensorSpec("noise_pred", (g.batch, self.out_channels, g.chunk_frames, h, w), torch.float32,
                           "the transformer's output for the chunk"),
                *(s for layer in range(self.layers) for s in g.state_specs(layer, "next_state"))]

    def forward(self, latents, timestep, encoder_hidden_states, first_frame, window_valid, *state):
        t, g = self.t, self.geometry
        temb, timestep_proj, text, _ = t.condition_embedder(timestep, encoder_hidden_states, None)
        timestep_proj = timestep_proj.unflatten(1, (6, -1))
        shift, scale = (t.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        x = patch_embed_2d(t.patch_embedding, latents)
        cos, sin = self.rope(first_frame)
        states = self._states(state)
        rotary = ChunkRotary(cos, sin, g.chunk_frames, g.frame_tokens, states, window_valid)
        for block in self.blocks:
            x = block(x, text, timestep_proj, rotary)
        x = (t.norm_out(x.float()) * (1 + scale) + shift).type_as(x)
        y = unpatchify_6d(t.proj_out(x), g.batch, g.chunk_frames, g.height, g.width, self.patch)
        return (y, *self._flat(states))


def patch_embed_2d(conv: nn.Conv3d, latents: Tensor) -> Tensor:
    """Wan's patch embedding (a ``Conv3d`` with kernel = stride = ``(1, ph, pw)``) as a ``conv2d`` per frame:
    ``[B, C, f, h, w]`` -> tokens ``[B, f*h/ph*w/pw, dim]``, as ``conv(latents).flatten(2).transpose(1, 2)``.  A
    temporal kernel of 1 makes it the same sum; ExecuTorch's portable kernels have no 3-D convolution."""
    b, c, f, h, w = latents.shape
    frames = latents.transpose(1, 2).reshape(b * f, c, h, w)
    y = torch.nn.functional.conv2d(frames, conv.weight[:, :, 0], conv.bias, stride=conv.stride[1:])
    return y.reshape(b, f, y.shape[1], -1).transpose(2, 3).reshape(b, -1, y.shape[1])


def unpatchify_6d(x: Tensor, batch: int, frames: int, height: int, width: int, patch: tuple[int, int, int]) -> Tensor:
    """:func:`rehyat.wan.recurrent._unpatchify` (``[B, f*h*w, C*ph*pw]`` -> ``[B, C, f, h*ph, w*pw]``) for a temporal
    patch of 1 through tensors of at most 6 dims: XNNPACK (ExecuTorch's CPU delegate) refuses more, and the 8-dim
    permute of the eager form passes its partitioner but fails when the program loads.  The same data movement."""
    _, ph, pw = patch
    x = x.reshape(batch * frames, height, width, ph, pw, -1).permute(5, 0, 1, 3, 2, 4)  # [C, B*f, h, ph, w, pw]
    return x.reshape(-1, batch, frames, height * ph, width * pw).transpose(0, 1)


class DenseBlockStep(nn.Module):
    """An unconverted Wan block (diffusers' softmax processor) on a window of ``frames`` post-patch frames — what a
    dense model computes per block, for the benchmark's comparison.  Same inputs as :class:`BlockChunkStep` minus
    the state and mask."""

    def __init__(self, block: nn.Module, *, frames: int, frame_tokens: int, text_tokens: int, batch: int = 1):
        super().__init__()
        self.block = block
        self.dim, self.head_dim = block.attn1.inner_dim, block.attn1.inner_dim // block.attn1.heads
        self.shape = (batch, frames * frame_tokens)
        self.text_tokens = text_tokens

    def inputs(self) -> list[TensorSpec]:
        b, n = self.shape
        c, d = self.dim, self.head_dim
        return [TensorSpec("hidden_states", (b, n, c), torch.float32), TensorSpec(
            "encoder_hidden_states", (b, self.text_tokens, c), torch.float32),
            TensorSpec("timestep_proj", (b, 6, c), torch.float32), TensorSpec("rope_cos", (1, n, 1, d), torch.float32),
            TensorSpec("rope_sin", (1, n, 1, d), torch.float32)]

    def outputs(self) -> list[TensorSpec]:
        b, n = self.shape
        return [TensorSpec("hidden_states_out", (b, n, self.dim), torch.float32)]

    def example_inputs(self, seed: int = 0) -> tuple[Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        return tuple(s.example(g) for s in self.inputs())

    def forward(self, hidden_states, encoder_hidden_states, timestep_proj, rope_cos, rope_sin):
        return self.block(hidden_states, encoder_hidden_states, timestep_proj, (rope_cos, rope_sin))


__all__ = ["BlockChunkStep", "StepShapes", "ChunkRope", "ChunkRotary", "DenseBlockStep", "FixedStepProcessor",
           "TensorSpec", "TransformerChunkStep", "step_block"]
