"""The torch.compile path (inductor, CPU here): compiled processors equal eager ones, forward and backward."""

import copy

import pytest
import torch

from rehyat.wan import compile_rehyat, convert_wan_to_rehyat, rehyat_processors, set_rehyat_mode

from wan_helpers import SMALL_PHI, make_inputs, make_transformer

pytestmark = pytest.mark.slow  # inductor compiles C++ kernels: ~1 min on 2 cores


def _converted(causal: bool):
    model = make_transformer()
    convert_wan_to_rehyat(model, "all", chunk_frames=2, overlap_frames=1, causal=causal, feature_map_kwargs=SMALL_PHI,
                          seed=0)
    return model


def test_compiled_model_equals_eager_forward_backward_and_keeps_its_state_dict():
    torch._dynamo.reset()
    eager = _converted(causal=False)
    compiled = compile_rehyat(copy.deepcopy(eager))
    assert all(p.compiled for p in rehyat_processors(compiled).values())
    assert list(compiled.state_dict()) == list(eager.state_dict())
    inputs = make_inputs(frames=5)
    with torch.no_grad():
        torch.testing.assert_close(compiled(**inputs).sample, eager(**inputs).sample, atol=1e-5, rtol=1e-4)
    # it really compiled (not a silent eager fallback), into one graph per call site
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert not torch._dynamo.utils.counters["graph_break"], dict(torch._dynamo.utils.counters["graph_break"])
    grads = []
    for m in (eager, compiled):
        m.zero_grad()
        m(**inputs).sample.square().mean().backward()
        phi = rehyat_processors(m)[0].phi_q
        grads.append([p.grad for p in phi.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_compiled_recurrent_mode_equals_eager():
    """Recurrent sweeps call the compiled region with per-chunk shapes (first, middle, ragged last chunk)."""
    torch._dynamo.reset()
    eager = _converted(causal=True)
    compiled = compile_rehyat(copy.deepcopy(eager), dynamic=True)
    for m in (eager, compiled):
        set_rehyat_mode(m, "recurrent")
    inputs = make_inputs(frames=5)
    with torch.no_grad():
        torch.testing.assert_close(compiled(**inputs).sample, eager(**inputs).sample, atol=1e-5, rtol=1e-4)


def test_compile_refuses_a_dense_model():
    with pytest.raises(ValueError, match="convert the model first"):
        compile_rehyat(make_transformer())
