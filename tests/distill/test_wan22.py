"""Distillation and generation accept the Wan2.2 family (tiny A14B / TI2V-5B folders, written like real ones)."""

import json

import torch
from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel
from rehyat.distill.__main__ import main as distill_main
from rehyat.tiny import TINY_TRANSFORMER_CONFIG, TINY_VAE_CONFIG, build_tiny_components


def _save_pipeline(path, **kind):
    comps = build_tiny_components(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        if kind.get("ti2v"):
            comps["transformer"] = WanTransformer3DModel(**(TINY_TRANSFORMER_CONFIG | dict(
                in_channels=48, out_channels=48))).eval()
            comps["vae"] = AutoencoderKLWan(**(TINY_VAE_CONFIG | dict(
                z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2, latents_mean=[0.0] * 48,
                latents_std=[1.0] * 48, scale_factor_spatial=16))).eval()
            WanPipeline(**comps, expand_timesteps=True).save_pretrained(path)
        else:
            comps["transformer_2"] = WanTransformer3DModel(**TINY_TRANSFORMER_CONFIG).eval()
            WanPipeline(**comps, boundary_ratio=0.5).save_pretrained(path)
    return path


def test_stage1_distils_one_a14b_expert_with_a_preset(tmp_path):
    wan = _save_pipeline(tmp_path / "a14b")
    out = tmp_path / "s1"
    rc = distill_main(["stage1", "--teacher", str(wan), "--teacher-subfolder", "transformer_2", "--preset",
                       "long-video", "--chunk-frames", "2", "--feature-map-kwargs",
                       '{"hidden_dim": 16, "feature_dim": 16}', "--steps", "1", "--latent-frames", "5",
                       "--latent-height", "8", "--latent-width", "8", "--num-inference-steps", "2",
                       "--guidance-scale", "1.0", "--max-sequence-length", "16", "--num-random-prompts", "2",
                       "--random-prompt-len", "6", "--no-progress", "--out", str(out)])
    assert rc == 0
    stored = json.loads((out / "config.json").read_text())["config"]
    assert stored["teacher_subfolder"] == "transformer_2"
    assert stored["rehyat"]["causal"] and stored["rehyat"]["chunk_frames"] == 2 and stored["rehyat"]["blocks"] == "all"
    from rehyat.wan import ReHyAtWanTransformer3DModel, load_base_transformer

    student = ReHyAtWanTransformer3DModel.from_pretrained(out / "rehyat", base_model=wan)
    assert student.rehyat_config.blocks == [0, 1]
    teacher2 = load_base_transformer(wan, subfolder="transformer_2")
    name = "blocks.0.attn2.to_q.weight"  # the expert's own dense weights under the distilled phi
    assert torch.equal(student.state_dict()[name], teacher2.state_dict()[name])


def test_generate_from_a_converted_ti2v_pipeline_folder(tmp_path):
    from rehyat.convert import main as convert_main
    from rehyat.generate import generate_videos, read_mp4

    wan = _save_pipeline(tmp_path / "ti2v", ti2v=True)
    assert convert_main(["--model", str(wan), "--preset", "paper-vbench2", "--blocks", "1", "--feature-map-kwargs",
                         '{"hidden_dim": 16, "feature_dim": 16}', "--out", str(tmp_path / "conv")]) == 0
    paths = generate_videos(str(tmp_path / "conv"), ["a red ball"], tmp_path / "videos", num_frames=9, height=32,
                            width=32, num_inference_steps=1, videos_per_prompt=1, max_sequence_length=16,
                            device="cpu", log=None)
    assert read_mp4(paths[0]).shape[:3] == (9, 32, 32)
    meta = json.loads((tmp_path / "videos" / "meta" / f"{paths[0].stem}.json").read_text())
    assert meta["model"]["attention"] == "rehyat" and meta["model"]["rehyat"]["chunk_frames"] == 5
