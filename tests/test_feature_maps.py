import pytest
import torch

from rehyat.feature_maps import FEATURE_MAPS, build_feature_map

PARAMS_AT_WAN_1P3B = {"polynomial": 1_185_792, "hedgehog": 198_144, "relu": 0, "elu1": 0}


@pytest.mark.parametrize("name", sorted(FEATURE_MAPS))
def test_features_are_non_negative_with_documented_width(name):
    phi = build_feature_map(name, num_heads=3, head_dim=8)
    x = torch.randn(2, 11, 3, 8) * 5  # large inputs of both signs
    y = phi(x)
    assert y.shape == (2, 11, 3, phi.feature_dim)
    assert (y >= 0).all() and torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(FEATURE_MAPS))
def test_parameter_count_at_wan_shape(name):
    phi = build_feature_map(name, num_heads=12, head_dim=128)
    assert sum(p.numel() for p in phi.parameters()) == PARAMS_AT_WAN_1P3B[name]


def test_polynomial_block_has_about_2p4m_parameters():
    pair = [build_feature_map("polynomial", num_heads=12, head_dim=128) for _ in range(2)]
    total = sum(p.numel() for m in pair for p in m.parameters())
    assert total == pytest.approx(2.4e6, rel=0.02)


def test_polynomial_parts_have_their_degree():
    phi = build_feature_map("polynomial", num_heads=2, head_dim=4, hidden_dim=6, feature_dim=6, degree=3)
    x = torch.randn(1, 5, 2, 4)
    psi = torch.nn.functional.softplus(phi.fc2(torch.nn.functional.gelu(phi.fc1(x * 4 ** -0.25))))
    y = phi(x)
    torch.testing.assert_close(y[..., 0:2], psi[..., 0:2])
    torch.testing.assert_close(y[..., 2:4], psi[..., 2:4] ** 2)
    torch.testing.assert_close(y[..., 4:6], psi[..., 4:6] ** 3)


def test_heads_are_untied():
    phi = build_feature_map("polynomial", num_heads=2, head_dim=4, hidden_dim=6, feature_dim=4)
    x = torch.randn(1, 3, 1, 4).expand(1, 3, 2, 4)  # same input on both heads
    y = phi(x)
    assert not torch.allclose(y[:, :, 0], y[:, :, 1])


def test_unknown_map_lists_registered():
    with pytest.raises(KeyError, match="registered"):
        build_feature_map("nope", num_heads=1, head_dim=4)


def test_config_round_trips():
    phi = build_feature_map("polynomial", num_heads=2, head_dim=4, hidden_dim=6, feature_dim=4)
    cfg = phi.config()
    assert type(build_feature_map("polynomial", **cfg)).__name__ == "PolynomialFeatureMap"
