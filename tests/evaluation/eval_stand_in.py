"""Tiny stand-in generators for the evaluation tests (deterministic, CPU, milliseconds).

``TinyGenerator`` maps (prompt, seed) to a latent tensor with torch's seeded RNG, runs a fixed random 3D conv "model"
over it, and decodes to uint8 frames.  ``perturb`` changes the "model" weights, giving a different-but-close candidate.
"""
from __future__ import annotations

import hashlib
import os
import time

import numpy as np
import torch

from evaluation.generation import GenerationResult


class TinyGenerator:
    defaults = {"num_frames": 9, "height": 32, "width": 32, "fps": 8}

    def __init__(self, label="tiny", perturb=0.0, weight_seed=1234, static=False, sleep=0.0):
        self.label = label
        self.perturb = float(perturb)
        self.weight_seed = weight_seed
        self.static = static
        self.sleep = sleep
        g = torch.Generator().manual_seed(weight_seed)
        self.conv = torch.nn.Conv3d(4, 4, 3, padding=1)
        with torch.no_grad():
            for p in self.conv.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
                if self.perturb:
                    p.add_(torch.randn(p.shape, generator=g) * self.perturb)
        self.decode = torch.nn.Conv3d(4, 3, 1)
        with torch.no_grad():
            for p in self.decode.parameters():
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(99)) * 0.5)

    def config(self):
        return {"kind": "tiny-stand-in", "perturb": self.perturb, "weight_seed": self.weight_seed,
                "static": self.static}

    @torch.no_grad()
    def generate(self, prompt, seed, num_frames, height, width):
        if self.sleep:
            time.sleep(self.sleep)
        ps = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16)
        g = torch.Generator().manual_seed(seed * 1_000_003 + ps)
        t = 1 if self.static else num_frames
        z = torch.randn(1, 4, t, height, width, generator=g)
        z = z + 0.3 * torch.sin(torch.linspace(0, 3, num_frames)).view(1, 1, -1, 1, 1) if not self.static else \
            z.expand(1, 4, num_frames, height, width)
        lat = self.conv(z.contiguous())
        img = torch.sigmoid(self.decode(lat))[0].permute(1, 2, 3, 0)  # T,H,W,3
        frames = (img * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        return GenerationResult(np.ascontiguousarray(frames), lat, fps=8)


def make_tiny(device="cpu", **kw):
    sleep = float(os.environ.get("EVAL_STAND_IN_SLEEP", "0"))
    return TinyGenerator("tiny-ref", sleep=sleep)


def make_tiny_candidate(device="cpu", **kw):
    sleep = float(os.environ.get("EVAL_STAND_IN_SLEEP", "0"))
    return TinyGenerator("tiny-cand", perturb=0.05, sleep=sleep)


def make_tiny_same(device="cpu", **kw):
    return TinyGenerator("tiny-same")


def write_clip(path, gen, prompt, seed, num_frames=9, size=32):
    from evaluation.videos import write_video

    res = gen.generate(prompt, seed, num_frames, size, size)
    write_video(path, res.frames, fps=8)
    return res
