"""The latent dataset both stages read, and synthetic stand-ins for tests and the proxy benchmark.

Format (a folder; written by ``python -m rehyat.distill encode`` or :func:`make_synthetic_dataset`)::

    DATASET/
      dataset.json                  # {"format": "rehyat-latents", "version": 1, "text_dim": 4096,
                                    #  "latent_channels": 16,
                                    #  "latents": "wan_normalized" | "raw" | "synthetic" | null, "vae": {...} | null,
                                    #  "negative": "negative.safetensors" | null,
                                    #  "items": [{"id": str, "file": "items/000000.safetensors", "prompt": str | null,
                                    #             "latent_shape": [C, F, H, W] | null, "text_len": L}, ...]}
      items/000000.safetensors      # "prompt_embeds": [L, text_dim] float (unpadded: the text encoder's valid tokens)
                                    # "latents": [C, F, H, W] float32 (absent in a prompts-only dataset)
      negative.safetensors          # optional "prompt_embeds" of the negative prompt (stage-1 CFG trajectories)

``latents == "wan_normalized"``: ``(vae.encode(x).latent_dist.mode() - latents_mean) / latents_std`` with the VAE
config's ``latents_mean`` / ``latents_std`` — the space ``WanPipeline`` denoises in (it un-normalises before decoding).
Prompt embeddings are zero-padded to ``max_sequence_length`` at load time, exactly as ``WanPipeline.encode_prompt``
pads them (512 for Wan2.1).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FORMAT = "rehyat-latents"
VERSION = 1
INDEX_NAME = "dataset.json"


class DatasetFormatError(ValueError):
    pass


def pad_prompt(emb: torch.Tensor, max_len: int) -> torch.Tensor:
    """[L, D] -> [max_len, D]: truncate, then zero-pad (WanPipeline's convention)."""
    emb = emb[:max_len]
    if emb.shape[0] < max_len:
        emb = torch.cat([emb, emb.new_zeros(max_len - emb.shape[0], emb.shape[1])])
    return emb


class DatasetWriter:
    """Write items one by one; ``close()`` writes ``dataset.json`` (atomically, last)."""

    def __init__(self, root: str | os.PathLike, *, text_dim: int, latent_channels: int | None, latents: str | None,
                 vae: dict | None = None, extra: dict | None = None):
        self.root = Path(root)
        (self.root / "items").mkdir(parents=True, exist_ok=True)
        self.meta = {"format": FORMAT, "version": VERSION, "text_dim": int(text_dim),
                     "latent_channels": latent_channels, "latents": latents, "vae": vae, "negative": None,
                     "items": [], **(extra or {})}

    def add(self, prompt_embeds: torch.Tensor, latents: torch.Tensor | None = None, *, prompt: str | None = None,
            item_id: str | None = None) -> None:
        i = len(self.meta["items"])
        if prompt_embeds.dim() != 2 or prompt_embeds.shape[1] != self.meta["text_dim"]:
            raise DatasetFormatError(f"prompt_embeds must be [L, {self.meta['text_dim']}], "
                                     f"got {tuple(prompt_embeds.shape)}")
        rel = f"items/{i:06d}.safetensors"
        tensors = {"prompt_embeds": prompt_embeds.detach().to("cpu", torch.float32).contiguous()}
        if latents is not None:
            if latents.dim() != 4:
                raise DatasetFormatError(f"latents must be [C, F, H, W], got {tuple(latents.shape)}")
            tensors["latents"] = latents.detach().to("cpu", torch.float32).contiguous()
        save_file(tensors, str(self.root / rel))
        self.meta["items"].append({"id": item_id or f"{i:06d}", "file": rel, "prompt": prompt,
                                   "latent_shape": None if latents is None else list(latents.shape),
                                   "text_len": int(prompt_embeds.shape[0])})

    def set_negative(self, prompt_embeds: torch.Tensor) -> None:
        save_file({"prompt_embeds": prompt_embeds.detach().to("cpu", torch.float32).contiguous()},
                  str(self.root / "negative.safetensors"))
        self.meta["negative"] = "negative.safetensors"

    def close(self) -> Path:
        from .common import atomic_write_json

        atomic_write_json(self.root / INDEX_NAME, self.meta)
        return self.root


class LatentDataset:
    """Reader of the format above.  ``item(i)`` -> ``{"prompt_embeds": [max_len, D], "latents": [C,F,H,W] | None}``."""

    def __init__(self, root: str | os.PathLike, max_sequence_length: int = 512, require_latents: bool = False):
        self.root = Path(root)
        idx = self.root / INDEX_NAME
        if not idx.is_file():
            raise FileNotFoundError(f"{self.root} is not a latent dataset: no {INDEX_NAME} (see docs/distill.md, "
                                    f"or build one with `python -m rehyat.distill encode`)")
        self.meta = json.loads(idx.read_text())
        if self.meta.get("format") != FORMAT:
            raise DatasetFormatError(f"{idx}: format {self.meta.get('format')!r}, expected {FORMAT!r}")
        if int(self.meta.get("version", 0)) > VERSION:
            raise DatasetFormatError(f"{idx}: version {self.meta['version']} is newer than this code ({VERSION})")
        self.items = self.meta["items"]
        if not self.items:
            raise DatasetFormatError(f"{idx}: no items")
        self.max_sequence_length = int(max_sequence_length)
        self.text_dim = int(self.meta["text_dim"])
        if require_latents and any(it.get("latent_shape") is None for it in self.items):
            raise DatasetFormatError(f"{self.root}: some items have no latents (a prompts-only dataset cannot be used "
                                     f"for stage 2)")
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.items)

    def latent_shape(self, i: int) -> tuple[int, ...] | None:
        s = self.items[i].get("latent_shape")
        return None if s is None else tuple(s)

    def item(self, i: int) -> dict:
        if i not in self._cache:
            t = load_file(str(self.root / self.items[i]["file"]))
            self._cache[i] = {"prompt_embeds": pad_prompt(t["prompt_embeds"], self.max_sequence_length),
                              "latents": t.get("latents")}
        return self._cache[i]

    def negative(self) -> torch.Tensor | None:
        if not self.meta.get("negative"):
            return None
        t = load_file(str(self.root / self.meta["negative"]))
        return pad_prompt(t["prompt_embeds"], self.max_sequence_length)


@dataclass
class RandomPrompts:
    """A pool of random prompt embeddings (``N(0, 1)`` of valid length ``text_len``, zero-padded): the stand-in for
    real umT5 embeddings with the tiny model, in tests and in the proxy benchmark."""

    num: int
    text_len: int
    text_dim: int
    max_sequence_length: int
    seed: int = 0

    def __post_init__(self):
        g = torch.Generator().manual_seed(self.seed)
        self.embeds = torch.randn(self.num, self.text_len, self.text_dim, generator=g)

    def __len__(self) -> int:
        return self.num

    def item(self, i: int) -> dict:
        return {"prompt_embeds": pad_prompt(self.embeds[i], self.max_sequence_length), "latents": None}

    def negative(self) -> torch.Tensor | None:
        return None


def smooth_field(shape: tuple[int, ...], corr: tuple[float, float, float], generator: torch.Generator,
                 velocity: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """Gaussian random field ``[C, F, H, W]``, unit variance per channel, correlation lengths ``corr = (frames, rows,
    cols)`` (Gaussian low-pass in Fourier space, periodic), optionally translating by ``velocity`` (rows, cols per
    frame) so content moves over time as in a video."""
    c, f, h, w = shape
    noise = torch.randn(c, f, h, w, generator=generator)
    kf = torch.fft.fftfreq(f).view(f, 1, 1)
    kh = torch.fft.fftfreq(h).view(1, h, 1)
    kw = torch.fft.fftfreq(w).view(1, 1, w)
    ct, ch, cw = corr
    filt = torch.exp(-2 * math.pi**2 * ((ct * kf) ** 2 + (ch * kh) ** 2 + (cw * kw) ** 2))
    spec = torch.fft.fftn(noise, dim=(1, 2, 3)) * filt
    if velocity != (0.0, 0.0):
        t = torch.arange(f).view(f, 1, 1).float()
        spec = torch.fft.fftn(torch.fft.ifftn(spec, dim=(1, 2, 3)).real, dim=(2, 3))
        spec = spec * torch.exp(-2j * math.pi * t * (velocity[0] * kh + velocity[1] * kw))
        x = torch.fft.ifftn(spec, dim=(2, 3)).real
    else:
        x = torch.fft.ifftn(spec, dim=(1, 2, 3)).real
    x = x - x.mean(dim=(1, 2, 3), keepdim=True)
    return x / x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)


def make_synthetic_dataset(root: str | os.PathLike, *, num_items: int, latent_shape: tuple[int, int, int, int],
                           text_dim: int, text_len: int = 8, seed: int = 0,
                           corr: tuple[float, float, float] = (1.5, 2.0, 2.0), motion: float = 0.5) -> Path:
    """Smooth, moving random latents + random prompt embeddings in the dataset format (tests, proxy benchmark)."""
    g = torch.Generator().manual_seed(seed)
    wr = DatasetWriter(root, text_dim=text_dim, latent_channels=latent_shape[0], latents="synthetic",
                       extra={"synthetic": {"seed": seed, "corr": list(corr), "motion": motion}})
    for i in range(num_items):
        ang = float(torch.rand((), generator=g)) * 2 * math.pi
        vel = (motion * math.sin(ang), motion * math.cos(ang))
        lat = smooth_field(tuple(latent_shape), corr, g, vel)
        emb = torch.randn(text_len, text_dim, generator=g)
        wr.add(emb, lat, prompt=f"synthetic item {i}")
    return wr.close()
