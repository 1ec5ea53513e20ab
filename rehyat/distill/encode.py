"""Encode mp4 files and prompts into the latent dataset (``python -m rehyat.distill encode``).

Needs the Wan VAE and umT5 text encoder of a local diffusers Wan folder (``vae/``, ``text_encoder/``, ``tokenizer/``;
nothing is downloaded).  Input: a manifest — JSONL lines ``{"video": "clip.mp4", "prompt": "..."}`` (paths relative to
the manifest) or a folder of ``NAME.mp4`` + ``NAME.txt`` pairs; ``--prompts-only`` with a text file (one prompt a line)
or a JSONL without ``video`` keys writes prompt embeddings only (enough for stage 1).

Per video: frames are taken at ``fps`` (nearest source frame, starting at 0) until ``num_frames`` (``4k+1``), centre-
cropped to the target aspect, resized (bilinear, antialiased) to ``height x width``, scaled to [-1, 1], encoded with
``vae.encode(x).latent_dist.mode()`` (``--sample-posterior`` draws instead) in float32 and normalised with the VAE
config's ``latents_mean`` / ``latents_std`` (the space ``WanPipeline`` denoises in).  Prompts are cleaned and encoded
exactly like ``WanPipeline._get_t5_prompt_embeds``; only the valid tokens are stored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import DatasetWriter

DEFAULT_REPO = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"


class WanWeightsNotFoundError(FileNotFoundError):
    """The Wan VAE / text encoder weights needed by the encoder are not on disk."""


def _weights_in(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith((".safetensors", ".bin"))] if folder.is_dir() else []


def check_wan_encoders(wan: str | os.PathLike | None, need_vae: bool = True) -> Path:
    """The Wan folder if it holds the VAE, text encoder and tokenizer; else :class:`WanWeightsNotFoundError` naming
    every missing file and where to put it."""
    root = Path(wan).expanduser() if wan else None
    missing = []
    if root is None or not root.is_dir():
        missing.append(f"{root or '<no --wan folder given>'} (the Wan diffusers folder itself)")
    else:
        parts = [("text_encoder", "config.json"), ("tokenizer", None)]
        if need_vae:
            parts.insert(0, ("vae", "config.json"))
        for sub, cfg in parts:
            d = root / sub
            if cfg and not (d / cfg).is_file():
                missing.append(str(d / cfg))
            if sub == "tokenizer":
                if not d.is_dir() or not any(d.glob("*token*")) and not any(d.glob("spiece.model")):
                    missing.append(f"{d}/ (tokenizer files: tokenizer.json or spiece.model + tokenizer_config.json)")
            elif not _weights_in(d):
                name = "diffusion_pytorch_model.safetensors" if sub == "vae" else "model*.safetensors"
                missing.append(f"{d / name} (weights)")
    if missing:
        where = root or Path("/path/to/Wan2.1-T2V-1.3B-Diffusers")
        raise WanWeightsNotFoundError(
            "Wan VAE / text-encoder weights not found; missing:\n  - " + "\n  - ".join(missing) + "\n"
            f"The encoder runs offline and never downloads. On a machine with internet access run\n"
            f"    hf download {DEFAULT_REPO} --local-dir {where}\n"
            f"and pass that folder as --wan (it must hold vae/config.json + vae/diffusion_pytorch_model.safetensors, "
            f"text_encoder/config.json + text_encoder/model*.safetensors, and tokenizer/).")
    return root


@dataclass
class EncodeConfig:
    wan: str = field(default="", metadata={"help": "local diffusers Wan folder (vae/, text_encoder/, tokenizer/)"})
    manifest: str = field(default="", metadata={"help": "JSONL {video, prompt}, a folder of NAME.mp4 + NAME.txt, or "
                                                        "a text file of prompts (--prompts-only)"})
    out: str = ""
    prompts_only: bool = False
    num_frames: int = 81
    height: int = 480
    width: int = 832
    fps: float = 16.0
    max_sequence_length: int = 512
    negative_prompt: str = ""
    sample_posterior: bool = False
    seed: int = 0
    device: str = "auto"
    text_dtype: str = "float32"
    skip_short: bool = field(default=True, metadata={"help": "skip (and list) videos shorter than num_frames"})


def read_manifest(path: str | os.PathLike, prompts_only: bool) -> list[dict]:
    p = Path(path)
    if p.is_dir():
        items = []
        for v in sorted(p.glob("*.mp4")):
            txt = v.with_suffix(".txt")
            if not txt.is_file():
                raise FileNotFoundError(f"{v} has no prompt file {txt.name}")
            items.append({"video": str(v), "prompt": txt.read_text().strip()})
        return items
    if not p.is_file():
        raise FileNotFoundError(f"manifest {p} not found")
    items = []
    if p.suffix == ".jsonl":
        for ln in p.read_text().splitlines():
            if ln.strip():
                d = json.loads(ln)
                if "video" in d and not prompts_only:
                    d["video"] = str((p.parent / d["video"]) if not Path(d["video"]).is_absolute() else d["video"])
                items.append(d)
    else:
        items = [{"prompt": ln.strip()} for ln in p.read_text().splitlines() if ln.strip()]
    if not prompts_only and any("video" not in d for d in items):
        raise ValueError(f"{p}: every line needs a 'video' (or pass --prompts-only)")
    return items


def read_video(path: str, num_frames: int, fps: float) -> torch.Tensor:
    """``[F, H, W, 3]`` uint8 frames at ``fps`` (nearest source frame); raises ValueError if the clip is too short."""
    import av

    with av.open(path) as c:
        st = c.streams.video[0]
        src_fps = float(st.average_rate or st.guessed_rate or fps)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    idx = [round(k * src_fps / fps) for k in range(num_frames)]
    if not frames or idx[-1] >= len(frames):
        raise ValueError(f"{path}: {len(frames)} frames at {src_fps:g} fps, need {num_frames} at {fps:g} fps")
    import numpy as np

    return torch.from_numpy(np.stack([frames[i] for i in idx]))


def preprocess(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 ``[F, H, W, 3]`` -> float ``[1, 3, F, height, width]`` in [-1, 1] (centre crop to aspect, resize)."""
    x = frames.permute(0, 3, 1, 2).float()  # F, 3, H, W
    h, w = x.shape[-2:]
    target = width / height
    if w / h > target:
        nw = round(h * target)
        x = x[..., :, (w - nw) // 2:(w - nw) // 2 + nw]
    else:
        nh = round(w / target)
        x = x[..., (h - nh) // 2:(h - nh) // 2 + nh, :]
    x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    x = (x / 127.5 - 1.0).clamp(-1, 1)
    return x.permute(1, 0, 2, 3).unsqueeze(0)


class WanEncoders:
    def __init__(self, wan: Path, device: torch.device, text_dtype: torch.dtype, need_vae: bool = True):
        from diffusers import AutoencoderKLWan
        from transformers import AutoTokenizer, UMT5EncoderModel

        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(wan / "tokenizer", local_files_only=True)
        self.text_encoder = UMT5EncoderModel.from_pretrained(wan / "text_encoder", torch_dtype=text_dtype,
                                                             local_files_only=True).to(device).eval()
        self.vae = None
        if need_vae:
            self.vae = AutoencoderKLWan.from_pretrained(wan, subfolder="vae", torch_dtype=torch.float32,
                                                        local_files_only=True).to(device).eval()
            cfg = self.vae.config
            self.mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1)
            self.std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)

    @torch.no_grad()
    def encode_prompt(self, prompt: str, max_len: int) -> torch.Tensor:
        """[L, text_dim] valid-token embeddings, as ``WanPipeline._get_t5_prompt_embeds`` computes them."""
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        ti = self.tokenizer([prompt_clean(prompt)], padding="max_length", max_length=max_len, truncation=True,
                            add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        n = int(ti.attention_mask.gt(0).sum())
        emb = self.text_encoder(ti.input_ids.to(self.device), ti.attention_mask.to(self.device)).last_hidden_state
        return emb[0, :n].float().cpu()

    @torch.no_grad()
    def encode_video(self, x: torch.Tensor, sample: bool, generator: torch.Generator | None) -> torch.Tensor:
        dist = self.vae.encode(x.to(self.device)).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        z = z.float().cpu()
        return ((z - self.mean) / self.std)[0]


def encode_dataset(cfg: EncodeConfig) -> dict:
    """Run the encoder; returns a small report ``{"items", "skipped", "out"}``."""
    if not cfg.out:
        raise ValueError("--out DATASET is required")
    if not cfg.prompts_only and (cfg.num_frames - 1) % 4:
        raise ValueError(f"num_frames must be 4k+1 (Wan's VAE), got {cfg.num_frames}")
    if not cfg.prompts_only and (cfg.height % 16 or cfg.width % 16):
        raise ValueError(f"height and width must be multiples of 16, got {cfg.height}x{cfg.width}")
    wan = check_wan_encoders(cfg.wan, need_vae=not cfg.prompts_only)
    items = read_manifest(cfg.manifest, cfg.prompts_only)
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    from .models import parse_dtype

    enc = WanEncoders(wan, dev, parse_dtype(cfg.text_dtype), need_vae=not cfg.prompts_only)
    text_dim = enc.text_encoder.config.d_model
    vae_meta = None
    if enc.vae is not None:
        vae_meta = {"folder": str(wan.resolve()), "latents_mean": list(enc.vae.config.latents_mean),
                    "latents_std": list(enc.vae.config.latents_std), "posterior": "sample" if cfg.sample_posterior
                    else "mode", "num_frames": cfg.num_frames, "height": cfg.height, "width": cfg.width, "fps": cfg.fps}
    wr = DatasetWriter(cfg.out, text_dim=text_dim, latent_channels=None if enc.vae is None else enc.vae.config.z_dim,
                       latents=None if enc.vae is None else "wan_normalized", vae=vae_meta)
    g = torch.Generator(device=dev).manual_seed(cfg.seed) if cfg.sample_posterior else None
    skipped = []
    from tqdm.auto import tqdm

    for k, it in enumerate(tqdm(items, desc="encode", dynamic_ncols=True)):
        emb = enc.encode_prompt(it["prompt"], cfg.max_sequence_length)
        lat = None
        if enc.vae is not None:
            try:
                frames = read_video(it["video"], cfg.num_frames, cfg.fps)
            except ValueError as e:
                if not cfg.skip_short:
                    raise
                skipped.append({"video": it["video"], "reason": str(e)})
                continue
            lat = enc.encode_video(preprocess(frames, cfg.height, cfg.width), cfg.sample_posterior, g)
        wr.add(emb, lat, prompt=it["prompt"], item_id=Path(it["video"]).stem if "video" in it else None)
    wr.set_negative(enc.encode_prompt(cfg.negative_prompt, cfg.max_sequence_length))
    wr.meta["skipped"] = skipped
    if not wr.meta["items"]:
        raise ValueError(f"no item could be encoded ({len(skipped)} skipped: {skipped[:3]})")
    wr.close()
    return {"items": len(wr.meta["items"]), "skipped": skipped, "out": cfg.out}
