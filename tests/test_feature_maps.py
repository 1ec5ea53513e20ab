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


def _reference_polynomial(phi, x):
    """The map as first written (einsum per-head MLP, separate passes): the oracle of the GEMM / tiled paths."""
    import torch.nn.functional as F

    def lin(m, t):
        return torch.einsum("bnhi,hio->bnho", t, m.weight) + m.bias

    psi = F.softplus(lin(phi.fc2, F.gelu(lin(phi.fc1, x * phi.head_dim ** -0.25))))
    parts = psi.chunk(phi.degree, dim=-1)
    return torch.cat([p.pow(i + 1) for i, p in enumerate(parts)], dim=-1)


@pytest.mark.parametrize("shape", [(1, 7, 3, 16), (2, 1300, 2, 12)], ids=["small", "multi-tile-ragged"])
@pytest.mark.parametrize("degree", [1, 2, 4])
def test_polynomial_fast_paths_match_reference(shape, degree):
    """Inference (tiled, in place) and autograd (GEMM on head-major views) paths against the einsum form, forward and
    backward; the output is a [B, N, H, F] view of head-major storage."""
    from rehyat.feature_maps import TILE_ROWS

    b, n, h, d = shape
    assert b * n > TILE_ROWS or n < TILE_ROWS
    torch.manual_seed(0)
    phi = build_feature_map("polynomial", h, d, hidden_dim=24, feature_dim=8 * degree, degree=degree).double()
    x = torch.randn(*shape, dtype=torch.float64)
    ref = _reference_polynomial(phi, x)
    with torch.no_grad():
        fast = phi(x)
    assert fast.shape == ref.shape
    torch.testing.assert_close(fast, ref, atol=1e-12, rtol=1e-12)
    xg = x.clone().requires_grad_()
    y = phi(xg)
    torch.testing.assert_close(y, ref, atol=1e-12, rtol=1e-12)
    g = torch.randn(ref.shape, dtype=torch.float64)
    grads = torch.autograd.grad(y, [xg, *phi.parameters()], g)
    xr = x.clone().requires_grad_()
    want = torch.autograd.grad(_reference_polynomial(phi, xr), [xr, *phi.parameters()], g)
    for a, w in zip(grads, want):
        torch.testing.assert_close(a, w, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softplus_inplace_matches_softplus_at_every_magnitude(dtype):
    """The CPU inference path's softplus form against log1p's: absolute error at the fp rounding of 1 + exp(-|x|),
    finite and exact (= x) far out, no overflow at +-1e4."""
    import torch.nn.functional as F

    from rehyat.feature_maps import softplus_inplace_

    x = torch.cat([torch.linspace(-120, 120, 4001, dtype=dtype),
                   torch.tensor([-1e4, -30, 0, 30, 79.9, 80, 80.1, 1e4], dtype=dtype)])
    got = softplus_inplace_(x.clone(), torch.empty_like(x))
    xd = x.double()
    want = xd.clamp_min(0) + torch.log1p(torch.exp(-xd.abs()))  # exact form (F.softplus returns x above 20)
    torch.testing.assert_close(F.softplus(xd), want, atol=3e-9, rtol=0)
    eps = torch.finfo(dtype).eps
    assert torch.isfinite(got).all() and (got >= 0).all()
    torch.testing.assert_close(got.double(), want, atol=eps, rtol=eps)
    special = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype)
    torch.testing.assert_close(softplus_inplace_(special.clone(), torch.empty_like(special)), F.softplus(special),
                               equal_nan=True)


@pytest.mark.parametrize("activation, output_activation", [("gelu", "relu"), ("silu", "exp"), ("elu", "softplus")],
                         ids=["gelu-relu", "silu-exp", "elu(out of place)-softplus"])
def test_polynomial_cpu_tiles_match_batched_form_for_other_activations(activation, output_activation):
    from rehyat.feature_maps import TILE_ROWS

    torch.manual_seed(0)
    phi = build_feature_map("polynomial", 3, 8, hidden_dim=16, feature_dim=8, activation=activation,
                            output_activation=output_activation).double()
    x = torch.randn(1, TILE_ROWS + 17, 3, 8, dtype=torch.float64)  # two tiles, the second ragged
    with torch.no_grad():
        fast = phi(x)
        empty = phi(x[:, :0])
    torch.testing.assert_close(fast, phi(x.clone().requires_grad_()).detach(), atol=1e-12, rtol=1e-12)
    assert empty.shape == (1, 0, 3, 8)


def test_hedgehog_matches_reference():
    torch.manual_seed(0)
    phi = build_feature_map("hedgehog", 2, 8, feature_dim=12).double()
    x = torch.randn(2, 9, 2, 8, dtype=torch.float64, requires_grad=True)
    y = torch.einsum("bnhi,hio->bnho", x * 8 ** -0.25, phi.proj.weight) + phi.proj.bias
    ref = torch.cat([torch.softmax(y, -1), torch.softmax(-y, -1)], -1)
    out = phi(x)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    g = torch.randn(ref.shape, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0])
