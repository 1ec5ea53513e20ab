import json

import pytest
import torch
from diffusers import WanTransformer3DModel

from rehyat.tiny import tiny_model_dir
from rehyat.wan.checkpoint import (CONFIG_NAME, WEIGHTS_NAME, BaseCheckpointNotFoundError, load_rehyat,
                                   save_rehyat)
from rehyat.wan.convert import convert_wan_to_rehyat, feature_map_state_dict
from rehyat.wan.pipeline import load_pipeline

from wan_helpers import SMALL_PHI, make_inputs, make_transformer


def _outputs(m, frames=5):
    with torch.no_grad():
        return m(**make_inputs(frames=frames)).sample


@pytest.fixture
def base_dir(tmp_path):
    """A base Wan transformer written locally with save_pretrained (bare transformer folder)."""
    d = tmp_path / "base"
    make_transformer(num_layers=3).save_pretrained(d)
    return d


def test_round_trip_feature_maps_on_base(tmp_path, base_dir):
    m = WanTransformer3DModel.from_pretrained(base_dir).eval()
    convert_wan_to_rehyat(m, [0, 2], chunk_frames=2, overlap_frames=1, causal=True, feature_map_kwargs=SMALL_PHI,
                          seed=7)
    with torch.no_grad():  # make phi differ from a fresh init of the same seed
        for p in feature_map_state_dict(m).values():
            p.mul_(1.5)
    ck = save_rehyat(m, tmp_path / "ck", base_model=base_dir)
    meta = json.loads((ck / CONFIG_NAME).read_text())
    assert meta["weights"] == "feature_maps" and meta["rehyat"]["blocks"] == [0, 2]
    assert (ck / WEIGHTS_NAME).stat().st_size < 200_000  # phi only, not the base weights
    loaded = load_rehyat(ck)
    assert loaded.rehyat_config == m.rehyat_config
    assert torch.equal(_outputs(loaded), _outputs(m))
    # an explicitly given base wins over the recorded one
    assert torch.equal(_outputs(load_rehyat(ck, base_model=base_dir)), _outputs(m))


def test_round_trip_full_weights_needs_no_base(tmp_path):
    m = convert_wan_to_rehyat(make_transformer(), "all", chunk_frames=1, overlap_frames=0, causal=True,
                              feature_map_kwargs=SMALL_PHI)
    with torch.no_grad():
        m.blocks[0].ffn.net[0].proj.weight.add_(0.1)  # "fine-tuned" base weights
    ck = save_rehyat(m, tmp_path / "ck", full_weights=True)
    assert torch.equal(_outputs(load_rehyat(ck)), _outputs(m))


def test_relative_base_moves_with_checkpoint(tmp_path, base_dir):
    m = convert_wan_to_rehyat(WanTransformer3DModel.from_pretrained(base_dir), "all", feature_map_kwargs=SMALL_PHI)
    save_rehyat(m, base_dir / "rehyat", base_model="..")
    moved = tmp_path / "moved"
    base_dir.rename(moved)
    assert torch.equal(_outputs(load_rehyat(moved / "rehyat")), _outputs(m))


def test_missing_base_is_a_clear_error(tmp_path, base_dir, monkeypatch):
    m = convert_wan_to_rehyat(WanTransformer3DModel.from_pretrained(base_dir), "all", feature_map_kwargs=SMALL_PHI)
    ck = save_rehyat(m, tmp_path / "ck", base_model=tmp_path / "nowhere")
    with pytest.raises(BaseCheckpointNotFoundError, match="Wan-AI/Wan2.1-T2V-1.3B-Diffusers") as e:
        load_rehyat(ck)
    assert str(tmp_path / "nowhere") in str(e.value) and "never downloads" in str(e.value)
    monkeypatch.delenv("REHYAT_WAN_BASE", raising=False)
    ck2 = save_rehyat(m, tmp_path / "ck2")  # no base recorded, none given, no env
    with pytest.raises(BaseCheckpointNotFoundError, match="REHYAT_WAN_BASE"):
        load_rehyat(ck2)
    monkeypatch.setenv("REHYAT_WAN_BASE", str(base_dir))
    assert torch.equal(_outputs(load_rehyat(ck2)), _outputs(m))
    empty = tmp_path / "empty" / "transformer"
    empty.mkdir(parents=True)
    (empty / "config.json").write_text("{}")
    with pytest.raises(BaseCheckpointNotFoundError, match="no weight files"):
        load_rehyat(ck, base_model=empty.parent)
    with pytest.raises(BaseCheckpointNotFoundError, match="model_index.json"):
        load_pipeline(ck, base_model=base_dir)  # a bare transformer is not a pipeline folder


def test_mismatched_base_or_weights_rejected(tmp_path, base_dir):
    m = convert_wan_to_rehyat(WanTransformer3DModel.from_pretrained(base_dir), [1], feature_map_kwargs=SMALL_PHI)
    ck = save_rehyat(m, tmp_path / "ck", base_model=base_dir)
    other = tmp_path / "other"
    make_transformer(num_layers=2).save_pretrained(other)
    with pytest.raises(ValueError, match="num_layers"):
        load_rehyat(ck, base_model=other)
    from safetensors.torch import load_file, save_file

    sd = load_file(str(ck / WEIGHTS_NAME))
    sd.pop(next(iter(sd)))
    save_file(sd, str(ck / WEIGHTS_NAME))
    with pytest.raises(ValueError, match="do not match"):
        load_rehyat(ck)


def test_pipeline_from_locally_saved_wan_folder(tiny_root):
    """The tiny model folder is a WanPipeline.save_pretrained folder, loaded back like a real Wan download."""
    folder = tiny_model_dir(0, tiny_root)
    for sub in ("model_index.json", "transformer", "vae", "text_encoder", "tokenizer", "scheduler", "rehyat"):
        assert (folder / sub).exists(), sub
    base = load_pipeline(folder)
    rehyat = load_pipeline(folder / "rehyat", mode="recurrent")
    assert rehyat.transformer.rehyat_config.blocks == [0, 1]
    sd_b, sd_r = base.transformer.state_dict(), rehyat.transformer.state_dict()
    assert all(torch.equal(v, sd_r[k]) for k, v in sd_b.items())  # base weights identical, phi added
    with pytest.raises(BaseCheckpointNotFoundError, match="does not exist"):
        load_pipeline(tiny_root / "missing-folder")


def test_linear_scale_is_a_saved_mixing_parameter(tmp_path):
    """linear_scale=True adds one per-head log-scale per converted block; it multiplies phi_k and round-trips."""
    import torch
    from diffusers import WanTransformer3DModel

    from rehyat.wan.checkpoint import load_rehyat, save_rehyat
    from rehyat.wan.convert import convert_wan_to_rehyat, rehyat_processors

    cfg = {"patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 12, "in_channels": 4,
           "out_channels": 4, "text_dim": 16, "freq_dim": 256, "ffn_dim": 32, "num_layers": 2,
           "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 32}
    torch.manual_seed(0)
    base = WanTransformer3DModel(**cfg).eval()
    base_dir = tmp_path / "base"
    base.save_pretrained(base_dir)
    model = convert_wan_to_rehyat(base, [1], chunk_frames=1, overlap_frames=0, causal=True, seed=0, linear_scale=True)
    proc = rehyat_processors(model)[1]
    q, k = torch.randn(1, 8, 2, 12), torch.randn(1, 8, 2, 12)
    fq0, fk0 = proc.features(q, k)
    with torch.no_grad():
        proc.linear_log_scale.copy_(torch.tensor([0.5, -1.0]))
    fq1, fk1 = proc.features(q, k)
    torch.testing.assert_close(fq1, fq0)
    torch.testing.assert_close(fk1, fk0 * torch.tensor([0.5, -1.0]).exp().view(1, 1, 2, 1))
    x, t, e = torch.randn(1, 4, 3, 8, 8), torch.tensor([500]), torch.randn(1, 5, 16)
    with torch.no_grad():
        y = model(x, t, e).sample
    save_rehyat(model, tmp_path / "rh", base_model=base_dir)
    loaded = load_rehyat(tmp_path / "rh")
    torch.testing.assert_close(rehyat_processors(loaded)[1].linear_log_scale, proc.linear_log_scale)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, e).sample, y)
