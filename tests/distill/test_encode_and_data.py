import json

import av
import numpy as np
import pytest
import torch

from rehyat.distill.__main__ import main
from rehyat.distill.data import DatasetFormatError, DatasetWriter, LatentDataset, pad_prompt
from rehyat.distill.encode import (EncodeConfig, WanWeightsNotFoundError, check_wan_encoders, encode_dataset,
                                   preprocess, read_video)


def _write_mp4(path, n, width=40, height=32, rate=16):
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=rate)
    s.width, s.height, s.pix_fmt = width, height, "yuv420p"
    y, x = np.mgrid[0:height, 0:width]
    for i in range(n):
        img = np.stack([(x * 6 + i * 8) % 256, (y * 8) % 256, np.full_like(x, 128)], -1).astype(np.uint8)
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()


def test_missing_wan_weights_error_names_the_files(tmp_path, capsys):
    wan = tmp_path / "wan"
    (wan / "vae").mkdir(parents=True)
    (wan / "vae" / "config.json").write_text("{}")
    with pytest.raises(WanWeightsNotFoundError) as e:
        check_wan_encoders(wan)
    msg = str(e.value)
    for needle in ("vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json", "text_encoder/model",
                   "tokenizer", "hf download Wan-AI/Wan2.1-T2V-1.3B-Diffusers", str(wan)):
        assert needle in msg, needle
    assert "vae/config.json" not in msg.split("missing:")[1].split("The encoder")[0]  # present files are not listed
    rc = main(["encode", "--wan", str(tmp_path / "none"), "--manifest", "m.jsonl", "--out", str(tmp_path / "o")])
    assert rc == 2 and "Wan VAE / text-encoder weights not found" in capsys.readouterr().err


def test_encode_tiny_mp4s_with_the_tiny_vae_and_text_encoder(tmp_path, tiny_dir):
    from diffusers import AutoencoderKLWan
    from rehyat.tiny import build_tiny_pipeline

    _write_mp4(tmp_path / "a.mp4", 9)
    _write_mp4(tmp_path / "b.mp4", 20, rate=24)
    _write_mp4(tmp_path / "short.mp4", 3)
    man = tmp_path / "m.jsonl"
    man.write_text("".join(json.dumps({"video": v, "prompt": p}) + "\n" for v, p in
                           [("a.mp4", "a red ball rolls"), ("b.mp4", "a cat"), ("short.mp4", "too short")]))
    cfg = EncodeConfig(wan=str(tiny_dir), manifest=str(man), out=str(tmp_path / "ds"), num_frames=9, height=32,
                       width=32, max_sequence_length=16, negative_prompt="blurry")
    rep = encode_dataset(cfg)
    assert rep["items"] == 2 and [s["video"] for s in rep["skipped"]] == [str(tmp_path / "short.mp4")]
    ds = LatentDataset(tmp_path / "ds", max_sequence_length=16, require_latents=True)
    assert ds.meta["latents"] == "wan_normalized" and ds.latent_shape(0) == (16, 3, 4, 4)

    # latents = normalised VAE posterior mode of the preprocessed frames
    vae = AutoencoderKLWan.from_pretrained(tiny_dir, subfolder="vae").eval()
    x = preprocess(read_video(str(tmp_path / "a.mp4"), 9, 16.0), 32, 32)
    assert x.shape == (1, 3, 9, 32, 32) and x.min() >= -1 and x.max() <= 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(ds.item(0)["latents"], ((z - mean) / std)[0], atol=1e-5, rtol=1e-5)
    # prompt embeddings = WanPipeline's own encoding (padded to max_sequence_length)
    pipe = build_tiny_pipeline(rehyat=False)
    with torch.no_grad():
        ref = pipe._get_t5_prompt_embeds("a red ball rolls", max_sequence_length=16, device=torch.device("cpu"))
        neg = pipe._get_t5_prompt_embeds("blurry", max_sequence_length=16, device=torch.device("cpu"))
    torch.testing.assert_close(ds.item(0)["prompt_embeds"], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ds.negative(), neg[0], atol=1e-5, rtol=1e-5)
    # 24 fps source resampled to 16 fps: frames 0, 2, 3, 4, 6, ... (nearest)
    assert read_video(str(tmp_path / "b.mp4"), 9, 16.0).shape[0] == 9


def test_encode_prompts_only(tmp_path, tiny_dir):
    (tmp_path / "p.txt").write_text("one prompt\nanother prompt\n")
    rep = encode_dataset(EncodeConfig(wan=str(tiny_dir), manifest=str(tmp_path / "p.txt"), out=str(tmp_path / "d"),
                                      prompts_only=True, max_sequence_length=16))
    ds = LatentDataset(tmp_path / "d", max_sequence_length=16)
    assert rep["items"] == 2 and ds.item(1)["latents"] is None and ds.item(1)["prompt_embeds"].shape == (16, 32)
    with pytest.raises(DatasetFormatError):
        LatentDataset(tmp_path / "d", require_latents=True)


def test_dataset_roundtrip_and_padding(tmp_path):
    emb = torch.randn(5, 8)
    assert torch.equal(pad_prompt(emb, 7)[:5], emb) and pad_prompt(emb, 7)[5:].abs().sum() == 0
    assert torch.equal(pad_prompt(emb, 3), emb[:3])
    wr = DatasetWriter(tmp_path, text_dim=8, latent_channels=4, latents="raw")
    lat = torch.randn(4, 2, 3, 3)
    wr.add(emb, lat, prompt="p")
    with pytest.raises(DatasetFormatError):
        wr.add(torch.randn(5, 9), lat)
    wr.close()
    ds = LatentDataset(tmp_path, max_sequence_length=6)
    assert torch.equal(ds.item(0)["latents"], lat) and ds.item(0)["prompt_embeds"].shape == (6, 8)
    with pytest.raises(FileNotFoundError, match="not a latent dataset"):
        LatentDataset(tmp_path / "missing")


def test_run_checkpoints_ignore_partial_writes(tmp_path):
    from accelerate import Accelerator

    from rehyat.distill.engine import STATE_NAME, RunCheckpoints, TrainableTensors

    acc = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 1, bias=False)
    p = model.weight
    acc.register_for_checkpointing(TrainableTensors(model))
    ck = RunCheckpoints(acc, tmp_path, keep=2)
    for s in (1, 2, 3):
        with torch.no_grad():
            p.fill_(s)
        ck.save(s, "h")
    assert sorted(q.name for q in (tmp_path / "checkpoints").glob("step_*")) == ["step_00000002", "step_00000003"]
    # a kill while writing step 4: a .partial folder with a state file, latest still points at 3
    part = tmp_path / "checkpoints" / "step_00000004.partial"
    part.mkdir()
    (part / STATE_NAME).write_text(json.dumps({"step": 4, "config_hash": "h", "world_size": 1}))
    assert ck.latest().name == "step_00000003"
    # a lost pointer falls back to the newest complete folder
    (tmp_path / "checkpoints" / "latest").unlink()
    assert ck.latest().name == "step_00000003"
    with torch.no_grad():
        p.zero_()
    assert ck.resume("h") == 3 and torch.equal(p.detach(), torch.full((1, 3), 3.0))
    with pytest.raises(ValueError, match="different configuration"):
        ck.resume("other")
