"""ReHyAtWanTransformer3DModel behaves like every diffusers model: save/load round trips, pipelines from folders,
conversion and reversion, presets, one config object, Wan2.2 (TI2V-5B, A14B) at tiny sizes."""

import copy
import json

import pytest
import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from rehyat.config import PRESETS, ReHyAtConfig, get_preset, register_preset
from rehyat.wan import (ReHyAtWanTransformer3DModel, convert_pipeline, convert_wan_to_rehyat, load_rehyat,
                        rehyat_processors, save_rehyat)
from wan_helpers import SMALL_PHI, make_inputs, make_transformer

CFG = ReHyAtConfig(blocks=[0, 1], chunk_frames=2, overlap_frames=1, causal=True, feature_map_kwargs=SMALL_PHI)


def _run(model, frames=5, **kw):
    with torch.no_grad():
        return model(**make_inputs(frames=frames, **kw)).sample


def test_save_pretrained_round_trip_is_bit_identical(tmp_path):
    m = ReHyAtWanTransformer3DModel.from_wan(make_transformer(), CFG, seed=0)
    m.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["_class_name"] == "ReHyAtWanTransformer3DModel" and cfg["rehyat"]["blocks"] == [0, 1]
    back = ReHyAtWanTransformer3DModel.from_pretrained(tmp_path / "m")
    assert type(back) is ReHyAtWanTransformer3DModel and back.rehyat_config == m.rehyat_config
    sd, sd2 = m.state_dict(), back.state_dict()
    assert set(sd) == set(sd2) and all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert torch.equal(_run(m), _run(back))
    for mode in ("recurrent", "parallel"):
        m.set_rehyat_mode(mode)
        back.set_rehyat_mode(mode)
        assert torch.equal(_run(m), _run(back))


def test_sharded_dtype_and_device_map(tmp_path):
    m = ReHyAtWanTransformer3DModel.from_wan(make_transformer(), CFG, seed=0)
    m.save_pretrained(tmp_path / "m", max_shard_size="20KB")
    assert len(list((tmp_path / "m").glob("*.safetensors"))) > 1
    assert (tmp_path / "m" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    back = ReHyAtWanTransformer3DModel.from_pretrained(tmp_path / "m", device_map="cpu")
    sd, sd2 = m.state_dict(), back.state_dict()
    assert set(sd) == set(sd2) and all(torch.equal(sd[k], sd2[k]) for k in sd)  # weights: bit-identical
    # outputs: tensors memory-mapped from small shards sit at other alignments, so BLAS may round differently
    torch.testing.assert_close(_run(back), _run(m), atol=1e-6, rtol=0)
    bf = ReHyAtWanTransformer3DModel.from_pretrained(tmp_path / "m", torch_dtype=torch.bfloat16)
    proc = bf.blocks[0].attn1.processor
    assert proc.phi_q.fc1.weight.dtype == torch.bfloat16
    assert bf.scale_shift_table.dtype == torch.float32  # diffusers' _keep_in_fp32_modules still apply
    assert torch.equal(proc.phi_q.fc1.weight, m.blocks[0].attn1.processor.phi_q.fc1.weight.to(torch.bfloat16))


def test_from_wan_instance_and_folder_and_to_wan(tmp_path):
    dense = make_transformer()
    ref = copy.deepcopy(dense)
    dense.save_pretrained(tmp_path / "dense")
    with pytest.raises(ValueError, match="cannot convert 15 of 2 blocks"):  # the preset names 15 of Wan's 30
        ReHyAtWanTransformer3DModel.from_wan(copy.deepcopy(dense), "paper-main")
    a = ReHyAtWanTransformer3DModel.from_wan(dense, "paper-main", seed=1, blocks=1, feature_map_kwargs=SMALL_PHI)
    assert a is dense and a.rehyat_config.blocks == [0] and a.rehyat_config.chunk_frames == 3
    b = ReHyAtWanTransformer3DModel.from_wan(tmp_path / "dense", "paper-main", seed=1, blocks=1,
                                             feature_map_kwargs=SMALL_PHI)
    assert torch.equal(_run(a), _run(b))
    with pytest.raises(ValueError, match="already"):
        ReHyAtWanTransformer3DModel.from_wan(a, CFG)
    plain = a.to_wan()
    assert type(plain) is WanTransformer3DModel and "rehyat" not in plain.config
    assert torch.equal(_run(plain), _run(ref))
    plain.save_pretrained(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["_class_name"] == "WanTransformer3DModel"
    with pytest.raises(ValueError, match="from_wan"):  # a dense folder is not silently loaded as ReHyAt
        ReHyAtWanTransformer3DModel.from_pretrained(tmp_path / "plain")


def test_missing_folder_names_file_and_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="hf download Wan-AI/Wan2.1-T2V-1.3B-Diffusers"):
        ReHyAtWanTransformer3DModel.from_pretrained(tmp_path / "nowhere")


def test_old_adapter_layout_loads_with_the_one_loader(tmp_path):
    """A folder in the layout save_rehyat has always written (rehyat_config.json + phi on top of a base)."""
    base = make_transformer()
    base.save_pretrained(tmp_path / "base")
    m = convert_wan_to_rehyat(copy.deepcopy(base), config=CFG, seed=0)
    save_rehyat(m, tmp_path / "old", base_model=tmp_path / "base")
    meta = json.loads((tmp_path / "old" / "rehyat_config.json").read_text())
    meta["rehyat"].pop("kind")  # written before the field existed: loads with its default
    meta["rehyat"].pop("softmax_backend")
    meta["rehyat"].pop("normaliser")
    (tmp_path / "old" / "rehyat_config.json").write_text(json.dumps(meta))
    back = ReHyAtWanTransformer3DModel.from_pretrained(tmp_path / "old")
    assert type(back) is ReHyAtWanTransformer3DModel and back.rehyat_config.kind == "hybrid"
    assert back.rehyat_config.normaliser == "kernel"  # saved before the field existed: today's reading
    assert torch.equal(_run(back), _run(m))
    assert torch.equal(_run(load_rehyat(tmp_path / "old")), _run(m))  # the thin alias


def _tiny_pipeline(transformer_cfg=None, vae_cfg=None, two_experts=False, **pipe_kw):
    from rehyat.tiny import TINY_SCHEDULER_CONFIG, TINY_TRANSFORMER_CONFIG, TINY_VAE_CONFIG, build_tiny_components

    comps = build_tiny_components(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        if transformer_cfg:
            comps["transformer"] = WanTransformer3DModel(**(TINY_TRANSFORMER_CONFIG | transformer_cfg)).eval()
        if vae_cfg:
            comps["vae"] = AutoencoderKLWan(**(TINY_VAE_CONFIG | vae_cfg)).eval()
        if two_experts:
            comps["transformer_2"] = WanTransformer3DModel(**(TINY_TRANSFORMER_CONFIG | (transformer_cfg or {}))).eval()
    comps["scheduler"] = UniPCMultistepScheduler(**TINY_SCHEDULER_CONFIG)
    return WanPipeline(**comps, **pipe_kw)


def _frames(pipe, frames=9):
    g = torch.Generator().manual_seed(0)
    return pipe("a red ball", num_frames=frames, height=32, width=32, num_inference_steps=2, guidance_scale=2.0,
                max_sequence_length=16, generator=g, output_type="pt").frames


TI2V = dict(transformer_cfg=dict(in_channels=48, out_channels=48),
            vae_cfg=dict(z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
                         latents_mean=[0.0] * 48, latents_std=[1.0] * 48, scale_factor_spatial=16),
            expand_timesteps=True)
A14B = dict(two_experts=True, boundary_ratio=0.5)


@pytest.mark.parametrize("family", ["wan2.1", "wan2.2-ti2v-5b", "wan2.2-a14b"])
def test_pipeline_from_folder_round_trip(tmp_path, family):
    """Convert (every expert), save the pipeline, load it with diffusers' own WanPipeline.from_pretrained."""
    import rehyat.wan  # noqa: F401  (diffusers loads the class only from an imported module)

    kw = {"wan2.1": {}, "wan2.2-ti2v-5b": TI2V, "wan2.2-a14b": A14B}[family]
    pipe = _tiny_pipeline(**kw)
    convert_pipeline(pipe, CFG.replace(causal=False), seed=0)
    experts = [t for t in (pipe.transformer, pipe.transformer_2) if t is not None]
    assert len(experts) == (2 if family == "wan2.2-a14b" else 1)
    assert all(type(t) is ReHyAtWanTransformer3DModel for t in experts)
    if len(experts) == 2:  # each expert has its own phi
        assert not torch.equal(experts[0].blocks[0].attn1.processor.phi_q.fc1.weight,
                               experts[1].blocks[0].attn1.processor.phi_q.fc1.weight)
    ref = _frames(pipe)
    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["transformer"] == ["rehyat.modeling_wan", "ReHyAtWanTransformer3DModel"]
    back = WanPipeline.from_pretrained(tmp_path / "pipe")
    assert type(back.transformer) is ReHyAtWanTransformer3DModel
    assert torch.equal(_frames(back), ref)
    if family == "wan2.2-ti2v-5b":
        assert back.config.expand_timesteps
    if family == "wan2.2-a14b":
        assert type(back.transformer_2) is ReHyAtWanTransformer3DModel and back.config.boundary_ratio == 0.5


def test_readme_diffusers_example(tmp_path):
    """The README's diffusers example, as written there (with the tiny model's folder standing in for Wan)."""
    from pathlib import Path

    from rehyat.tiny import tiny_model_dir

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = readme.split("<!-- diffusers-example -->")[1].split("```python")[1].split("```")[0]
    wan = tiny_model_dir()
    code = code.replace('"/models/Wan2.1-T2V-1.3B-Diffusers"', repr(str(wan)))
    code = code.replace('"/models/rehyat-wan"', repr(str(tmp_path / "rehyat-wan")))
    code = code.replace("num_frames=81, height=480, width=832", "num_frames=9, height=32, width=32, "
                        "num_inference_steps=2, max_sequence_length=16")
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the documented example itself
    assert type(scope["pipe"].transformer) is ReHyAtWanTransformer3DModel
    assert scope["video"].shape[:3] == (9, 32, 32)  # [T, H, W, 3]


def test_presets_and_one_object_from_flag_to_op():
    assert set(PRESETS) >= {"paper-main", "paper-vbench2", "long-video"}
    assert get_preset("paper-main").replace(blocks=None) == ReHyAtConfig(blocks=15, chunk_frames=3, overlap_frames=1)
    assert get_preset("paper-vbench2").chunk_frames == 5 and get_preset("paper-vbench2").overlap_frames == 0
    lv = get_preset("long-video")
    assert lv.blocks == "all" and lv.causal
    with pytest.raises(ValueError, match="already registered"):
        register_preset("paper-main", ReHyAtConfig())
    # a CLI flag reaches the op as one object: the model's config is the object every processor holds
    from rehyat.distill.stage1 import Stage1Config

    s1 = Stage1Config(teacher="tiny", preset="long-video", chunk_frames=2, feature_map_kwargs=SMALL_PHI)
    assert s1.rehyat.chunk_frames == 2 and s1.rehyat.causal and s1.rehyat.linear_scale  # stage 1 learns the scale
    m = convert_wan_to_rehyat(make_transformer(), config=s1.rehyat, seed=0)
    assert all(p.config is m.rehyat_config for p in rehyat_processors(m).values())
    m.set_rehyat_mode("recurrent")  # long-video preset streams


def test_recurrent_refusal_names_the_conversion():
    m = ReHyAtWanTransformer3DModel.from_wan(make_transformer(), "paper-main", blocks=1, feature_map_kwargs=SMALL_PHI)
    with pytest.raises(ValueError, match="long-video"):
        m.set_rehyat_mode("recurrent")


def test_one_processor_for_every_kind():
    """linear and chunk_local baselines run through the same processor (the efficiency sweep's model level)."""
    from rehyat.attention import get_attention_kind

    for kind in ("linear", "chunk_local", "softmax"):
        m = ReHyAtWanTransformer3DModel.from_wan(make_transformer(), CFG.replace(
            kind=kind, causal=False, feature_map="relu", feature_map_kwargs={}))
        assert get_attention_kind(kind).needs_features == (m.blocks[0].attn1.processor.phi_q is not None)
        assert torch.isfinite(_run(m)).all()
    dense = _run(make_transformer())
    soft = ReHyAtWanTransformer3DModel.from_wan(make_transformer(), CFG.replace(kind="softmax", causal=False))
    torch.testing.assert_close(_run(soft), dense, atol=1e-6, rtol=1e-5)


def test_registries_refuse_duplicates():
    from rehyat.attention import register_attention_kind
    from rehyat.attention.kinds import _hybrid_sets
    from rehyat.feature_maps import FeatureMap, register_feature_map

    with pytest.raises(ValueError, match="already registered"):
        register_attention_kind("hybrid", needs_features=True, uses_chunks=True, description="x",
                                sets=_hybrid_sets)(lambda *a, **k: None)
    with pytest.raises(ValueError, match="already registered"):
        register_feature_map("polynomial")(type("Other", (FeatureMap,), {}))



@pytest.mark.parametrize("normaliser", ["kernel", "paper"])
def test_normaliser_through_the_model(tmp_path, normaliser):
    """The normaliser is part of the model: saved, loaded, used in parallel and recurrent mode alike."""
    m = ReHyAtWanTransformer3DModel.from_wan(make_transformer(), CFG.replace(normaliser=normaliser), seed=0)
    m.save_pretrained(tmp_path / "m")
    back = ReHyAtWanTransformer3DModel.from_pretrained(tmp_path / "m")
    assert back.rehyat_config.normaliser == normaliser
    par = _run(back, frames=7)
    back.set_rehyat_mode("recurrent")
    torch.testing.assert_close(_run(back, frames=7), par, atol=2e-5, rtol=1e-4)
    other = ReHyAtWanTransformer3DModel.from_wan(make_transformer(), CFG.replace(
        normaliser="kernel" if normaliser == "paper" else "paper"), seed=0)
    assert (_run(other, frames=7) - par).abs().max() > 1e-4  # the two readings are different models


def test_teacher_forcing_is_a_processor_wrapper_with_unchanged_keys():
    from rehyat.distill.teacher_forcing import (DistillSettings, DistillWanAttnProcessor, disable_distillation,
                                                enable_distillation)

    m = ReHyAtWanTransformer3DModel.from_wan(make_transformer(), CFG.replace(linear_scale=True), seed=0)
    before = m.state_dict()
    inner = m.blocks[0].attn1.processor
    enable_distillation(m, DistillSettings(mode="student", linear_scale=True))
    wrapper = m.blocks[0].attn1.processor
    assert isinstance(wrapper, DistillWanAttnProcessor) and wrapper.inner is inner and type(inner) is not type(wrapper)
    after = m.state_dict()
    assert list(after) == list(before) and all(after[k] is before[k] or torch.equal(after[k], before[k]) for k in before)
    assert wrapper.phi_q is inner.phi_q and wrapper.linear_log_scale is inner.linear_log_scale  # one set of tensors
    assert torch.equal(_run(m), _run(copy.deepcopy(m)))  # "student" mode is the plain ReHyAt forward
    disable_distillation(m)
    assert m.blocks[0].attn1.processor is inner
