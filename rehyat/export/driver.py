"""Chunk-by-chunk video generation with the exported transformer step in its runtime (onnxruntime or ExecuTorch).

The transformer runs in the export's runtime only (the sidecar's ``graph_format``, through a
:class:`rehyat.export.formats.GraphRunner`): :class:`ExportedTransformerStep` feeds one chunk (padded to ``T_c``
frames), the timestep, the text hidden states, the chunk's first frame index, the window's slot mask and every
layer's state, and returns the chunk's noise prediction and the next states.  The driver carries the states.  The rest of the
pipeline stays in PyTorch: the text encoder (once per video), the scheduler (one copy per chunk), the initial noise
and the VAE decode — :mod:`rehyat.wan.stream`'s pieces (:class:`~rehyat.wan.stream.ChunkNoise`,
:class:`~rehyat.wan.stream.StreamingWanDecoder`).

Schedule: stream mode's (docs/wan.md §2): chunk ``c`` goes through every denoising step and both CFG branches, is
decoded and handed out before chunk ``c + 1`` starts; the states are kept per (step, CFG branch) — the per-step state
cache — so that chunk ``c + 1`` at step ``i`` continues what chunks ``<= c`` left at step ``i``.  Same frames as
``--mode stream`` / ``--mode recurrent`` of the PyTorch model (``tests/export/test_export_driver.py``).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .exporter import read_sidecar, sidecar_format
from .step import window_valid

def _numpy(x) -> np.ndarray:
    return x.detach().to("cpu", torch.float32).numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)


class ExportedTransformerStep:
    """The exported whole-transformer chunk step of ``export_dir`` in its runtime (onnxruntime session or ExecuTorch
    method; ``threads``: the runtime's intra-op threads).

    ``states`` are dicts ``{"state.{layer}.{field}": float32 array}`` (:meth:`zero_states` for a fresh sweep); a call
    returns the chunk's prediction and the next states under the same names.
    """

    def __init__(self, export_dir: str | os.PathLike, *, threads: int | None = None):
        self.dir = Path(export_dir).expanduser()
        self.sidecar = read_sidecar(self.dir)
        graph = self.sidecar["graphs"].get("transformer")
        if graph is None:
            raise ValueError(f"{self.dir} holds no whole-transformer graph (exported with --graphs blocks only)")
        self.graph = graph
        self.format = sidecar_format(self.sidecar)
        self.runner = self.format.open(self.dir / graph["files"][0], threads)
        self.input_names = [s["name"] for s in graph["inputs"]]
        self.output_names = [s["name"] for s in graph["outputs"]]
        geo = self.sidecar["geometry"]
        self.geometry = geo
        self.chunk_frames, self.overlap_frames = geo["chunk_frames"], geo["overlap_frames"]
        self.state_names = [s["name"] for s in graph["inputs"] if s["name"].startswith("state.")]
        self._state_specs = {s["name"]: s for s in graph["inputs"] if s["name"].startswith("state.")}
        if geo["batch"] != 1:
            raise ValueError(f"the driver runs batch-1 graphs (one CFG branch per call); this one has batch "
                             f"{geo['batch']}")

    def zero_states(self) -> dict[str, np.ndarray]:
        return {n: np.zeros(self._state_specs[n]["shape"], np.float32) for n in self.state_names}

    def __call__(self, latents, timestep, text, first_frame: int, states: dict[str, np.ndarray]
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``latents [1, C, n, h, w]`` (``n <= T_c`` frames; fewer only for the last chunk), ``first_frame``: the
        chunk's global (post-patch) frame index; returns ``(noise_pred [1, C_out, n, h, w], next states)``."""
        lat = _numpy(latents)
        n, tc = lat.shape[2], self.chunk_frames
        if not 1 <= n <= tc:
            raise ValueError(f"a chunk holds 1..T_c={tc} latent frames, got {n}")
        if first_frame % tc:
            raise ValueError(f"chunks start at multiples of T_c={tc}, not frame {first_frame}")
        if first_frame + n > self.geometry["max_frames"]:
            raise ValueError(f"frame {first_frame + n} exceeds the model's rotary table ({self.geometry['max_frames']} "
                             f"frames)")
        if n < tc:  # ragged last chunk: padding slots at the end, marked empty
            lat = np.concatenate([lat, np.zeros((*lat.shape[:2], tc - n, *lat.shape[3:]), np.float32)], axis=2)
        valid = window_valid(min(self.overlap_frames, first_frame), tc, self.overlap_frames, n).numpy()
        feeds = {"latents": lat, "timestep": np.full((1,), float(timestep), np.float32),
                 "encoder_hidden_states": _numpy(text), "first_frame": np.array([first_frame], np.int64),
                 "window_valid": valid, **states}
        res = dict(zip(self.output_names, self.runner.run([feeds[n] for n in self.input_names]), strict=True))
        nxt = {n_.replace("next_state.", "state.", 1): v for n_, v in res.items() if n_.startswith("next_state.")}
        return res["noise_pred"][:, :, :n], nxt


@dataclass
class ExportedChunk:
    """One finished chunk: ``frames`` uint8 ``[t, H, W, 3]`` (video frames from ``first_frame``), ``latents`` float32
    ``[C, f, h, w]`` (final, before the VAE; latent frames ``latent_frames``), ``state_bytes``: the per-step state
    cache the driver holds after it."""

    index: int
    num_chunks: int
    latent_frames: tuple[int, int]
    first_frame: int
    frames: np.ndarray
    latents: torch.Tensor
    state_bytes: int


def load_host_pipeline(spec, *, base_model=None):
    """The PyTorch parts the driver uses (text encoder, tokenizer, scheduler, VAE) of model ``spec``, float32 on CPU;
    the PyTorch transformer is dropped."""
    from rehyat.generate import load_model

    pipe = load_model(spec, device="cpu", torch_dtype=torch.float32, base_model=base_model)
    pipe.register_modules(transformer=None)
    return pipe


@torch.no_grad()
def exported_stream_video(export_dir: str | os.PathLike, prompt: str, seed: int, *, num_frames: int,
                          num_inference_steps: int, guidance_scale: float, negative_prompt: str | None = None,
                          pipe=None, step: ExportedTransformerStep | None = None, threads: int | None = None,
                          on_step: Callable[[int, int], None] | None = None) -> Iterator[ExportedChunk]:
    """Sample one video chunk by chunk with the exported transformer (module docstring); yields each chunk as soon as
    it is decoded.  Frame size and text length are the export's (sidecar).  ``pipe``: the host pipeline
    (:func:`load_host_pipeline` of the sidecar's model by default).  Same inputs and frames as
    :func:`rehyat.wan.stream.stream_video` with ``generator = torch.Generator("cpu").manual_seed(seed)``."""
    from rehyat.wan.stream import ChunkNoise, latent_chunks, sample_chunks, scheduler_unsupported_reason

    step = step or ExportedTransformerStep(export_dir, threads=threads)
    side = step.sidecar
    if pipe is None:
        pipe = load_host_pipeline(side["model"]["spec"], base_model=side["model"].get("base"))
    why = scheduler_unsupported_reason(pipe.scheduler)
    if why:
        raise ValueError(f"chunk-by-chunk sampling needs an element-wise scheduler: {why}")
    if num_frames < 1 or (num_frames - 1) % pipe.vae_scale_factor_temporal:
        raise ValueError(f"num_frames must be {pipe.vae_scale_factor_temporal}k+1, got {num_frames}")
    geo, px = side["geometry"], side["pixels"]
    cfg = guidance_scale > 1.0
    cond, uncond = pipe.encode_prompt(prompt=prompt, negative_prompt=negative_prompt, do_classifier_free_guidance=cfg,
                                      num_videos_per_prompt=1, max_sequence_length=geo["text_tokens"], device="cpu")
    branches = [cond] + ([uncond] if cfg else [])
    template = copy.deepcopy(pipe.scheduler)
    template.set_timesteps(num_inference_steps, device="cpu")
    template.set_begin_index(0)
    latent_f = (num_frames - 1) // pipe.vae_scale_factor_temporal + 1
    noise = ChunkNoise((1, geo["in_channels"], latent_f, geo["latent_height"], geo["latent_width"]),
                       torch.Generator("cpu").manual_seed(int(seed)))
    cache: dict[tuple[int, int], dict[str, np.ndarray]] = {}  # (step, CFG branch) -> every layer's state
    chunks = latent_chunks(latent_f, step.chunk_frames)

    def predict(chunk, i, b, t, latents, text):
        pred, cache[(i, b)] = step(latents, t, text, chunks[chunk][0], cache.get((i, b)) or step.zero_states())
        return torch.from_numpy(pred)

    for ci, first_frame, latents, frames in sample_chunks(pipe, chunks, noise, template, branches, predict,
                                                          lambda t: guidance_scale, on_step=on_step):
        if frames.shape[1:3] != (px["height"], px["width"]):
            raise RuntimeError(f"decoded frames {frames.shape[1:3]} != the export's {px['height']}x{px['width']}")
        yield ExportedChunk(ci, len(chunks), chunks[ci], first_frame, frames, latents[0].to(torch.float32),
                            sum(a.nbytes for e in cache.values() for a in e.values()))


def exported_sample(export_dir, prompt: str, seed: int, **kw):
    """:func:`exported_stream_video` concatenated: a :class:`rehyat.generate.VideoSample`."""
    from rehyat.generate import WAN_FPS, VideoSample

    chunks = list(exported_stream_video(export_dir, prompt, seed, **kw))
    return VideoSample(frames=np.concatenate([c.frames for c in chunks]),
                       latents=torch.cat([c.latents for c in chunks], dim=1), fps=WAN_FPS, prompt=prompt,
                       seed=int(seed))


__all__ = ["ExportedChunk", "ExportedTransformerStep", "exported_sample", "exported_stream_video",
           "load_host_pipeline"]
