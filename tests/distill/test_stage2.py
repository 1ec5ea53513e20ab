import json

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from rehyat.distill.common import DistInfo, METRICS_NAME, SimulatedKill
from rehyat.distill.flow import FlowMatching
from rehyat.distill.stage2 import Stage2Config, Stage2Sampler, build_stage2_model, train_stage2
from rehyat.wan.checkpoint import load_rehyat


@pytest.fixture
def make_cfg(synth_data):
    def make(tmp_path, **kw):
        base = dict(model="tiny", data=str(synth_data), out=str(tmp_path / "s2"), max_sequence_length=16,
                    progress=False, steps=4, lr=1e-3, checkpoint_every=100)
        return Stage2Config(**(base | kw))

    return make


def test_flow_matching_follows_the_diffusers_scheduler():
    fm = FlowMatching(shift=3.0)
    ref = FlowMatchEulerDiscreteScheduler(shift=3.0)
    torch.testing.assert_close(fm.timesteps, ref.timesteps.float())
    torch.testing.assert_close(fm.sigmas, ref.sigmas[:1000].float())
    torch.testing.assert_close(fm.timesteps, fm.sigmas * 1000)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 16, 3, 4, 4, generator=g), torch.randn(2, 16, 3, 4, 4, generator=g)
    t, sigma = fm.sample(2, g)
    xt = fm.noisy(x0, noise, sigma)
    v = fm.target(x0, noise)
    # the scheduler's Euler step with the true velocity lands on x0 when it steps to sigma = 0
    s = sigma.view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(xt + (0 - s) * v, x0, atol=1e-5, rtol=1e-5)
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(4)
    x = sched.step(v[:1], sched.timesteps[0], fm.noisy(x0[:1], noise[:1], sched.sigmas[:1])).prev_sample
    torch.testing.assert_close(x, fm.noisy(x0[:1], noise[:1], sched.sigmas[1:2]), atol=1e-5, rtol=1e-5)


def test_stage2_lowers_the_flow_matching_loss(tmp_path, make_cfg):
    s = train_stage2(make_cfg(tmp_path, steps=20, eval_every=20, eval_samples=4))
    recs = [json.loads(x) for x in (tmp_path / "s2" / METRICS_NAME).read_text().splitlines()]
    ev = {r["step"]: r["loss"] for r in recs if r["kind"] == "eval"}
    assert ev[20] < 0.95 * ev[0], ev
    assert len([r for r in recs if r["kind"] == "train"]) == 20
    loaded = load_rehyat(tmp_path / "s2" / "rehyat")  # full-weights export
    for k, v in s["model"].state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_stage2_resume_after_kill_equals_uninterrupted(tmp_path, make_cfg):
    kw = dict(steps=6, checkpoint_every=2, batch_size=2, eval_every=3, eval_samples=1)
    a = train_stage2(make_cfg(tmp_path / "a", **kw))["model"]
    cfg = make_cfg(tmp_path / "b", **kw)
    with pytest.raises(SimulatedKill):
        train_stage2(cfg, fail_at_step=3)
    res = train_stage2(cfg)
    assert res["resumed_from"] == 2
    b = res["model"]
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k  # bitwise
    ma = [json.loads(x)["loss"] for x in (tmp_path / "a" / "s2" / METRICS_NAME).read_text().splitlines()]
    mb = [json.loads(x)["loss"] for x in (tmp_path / "b" / "s2" / METRICS_NAME).read_text().splitlines()]
    assert ma == mb


def test_stage2_trainable_sets(tmp_path, make_cfg):
    phi = train_stage2(make_cfg(tmp_path / "phi", trainable="phi", lr=1e-2))
    base_model, _, _ = build_stage2_model(make_cfg(tmp_path / "x"), torch.device("cpu"))
    ref = base_model.state_dict()
    got = phi["model"].state_dict()
    changed = {k for k in ref if not torch.equal(ref[k], got[k])}
    assert changed and all(".attn1.processor." in k for k in changed)
    meta = json.loads((tmp_path / "phi" / "s2" / "rehyat" / "rehyat_config.json").read_text())
    assert meta["weights"] == "feature_maps"

    lora = train_stage2(make_cfg(tmp_path / "lora", trainable="lora", lora_rank=4, lr=1e-2))
    m = lora["model"]  # after export: LoRA fused into the weights and unloaded
    assert lora["trainable_parameters"] > 0 and not any("lora_" in k for k in m.state_dict())
    out = tmp_path / "lora" / "s2" / "rehyat"
    assert (out / "lora_adapter.safetensors").is_file()
    loaded = load_rehyat(out)
    sampler = Stage2Sampler(make_cfg(tmp_path / "y"), DistInfo())
    x, t, e, _ = sampler.batch(0)
    with torch.no_grad():
        y_fused = m.eval()(hidden_states=x, timestep=t, encoder_hidden_states=e, return_dict=False)[0]
        y_loaded = loaded(hidden_states=x, timestep=t, encoder_hidden_states=e, return_dict=False)[0]
        y_base = base_model.eval()(hidden_states=x, timestep=t, encoder_hidden_states=e, return_dict=False)[0]
    torch.testing.assert_close(y_loaded, y_fused, atol=1e-5, rtol=1e-5)
    assert (y_loaded - y_base).abs().max() > 1e-4  # the LoRA really trained something


def test_stage2_gradient_checkpointing_matches(tmp_path, make_cfg):
    a = train_stage2(make_cfg(tmp_path / "a", steps=2, gradient_checkpointing="off"))["model"]
    b = train_stage2(make_cfg(tmp_path / "b", steps=2, gradient_checkpointing="on"))["model"]
    assert b.gradient_checkpointing
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, atol=1e-6, rtol=1e-5, msg=k)


def test_stage2_needs_latents(tmp_path, make_cfg):
    from rehyat.distill.data import DatasetFormatError, DatasetWriter

    wr = DatasetWriter(tmp_path / "p", text_dim=32, latent_channels=None, latents=None)
    wr.add(torch.randn(3, 32), prompt="x")
    wr.close()
    with pytest.raises(DatasetFormatError, match="prompts-only"):
        train_stage2(make_cfg(tmp_path, data=str(tmp_path / "p")))


def test_gradient_accumulation_equals_the_larger_batch(tmp_path, make_cfg):
    """accelerate's accumulation: 2 micro-batches of 1 = one batch of 2 (the same samples, the mean loss)."""
    a = train_stage2(make_cfg(tmp_path / "a", steps=2, batch_size=2))["model"]
    b = train_stage2(make_cfg(tmp_path / "b", steps=2, gradient_accumulation_steps=2))
    assert b["global_batch"] == 2
    for (k, va), vb in zip(a.state_dict().items(), b["model"].state_dict().values()):
        torch.testing.assert_close(va, vb, atol=1e-6, rtol=1e-5, msg=k)


def test_ema_is_exported_beside_the_model_and_resumes_exactly(tmp_path, make_cfg):
    kw = dict(steps=4, checkpoint_every=2, ema=True, ema_decay=0.5, trainable="phi", lr=1e-2)
    full = train_stage2(make_cfg(tmp_path / "a", **kw))
    cfg = make_cfg(tmp_path / "b", **kw)
    with pytest.raises(SimulatedKill):
        train_stage2(cfg, fail_at_step=2)
    res = train_stage2(cfg)
    assert res["resumed_from"] == 2 and res["ema_export"].endswith("rehyat_ema")
    ema_a = load_rehyat(tmp_path / "a" / "s2" / "rehyat_ema").state_dict()
    ema_b = load_rehyat(tmp_path / "b" / "s2" / "rehyat_ema").state_dict()
    last = full["model"].state_dict()
    for k in ema_a:
        assert torch.equal(ema_a[k], ema_b[k]), k  # the EMA state was checkpointed and restored bitwise
    assert any(not torch.equal(ema_a[k], last[k]) for k in ema_a if ".attn1.processor." in k)


def test_trackers_curves_and_summary(tmp_path, make_cfg):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    s = train_stage2(make_cfg(tmp_path, steps=3, eval_every=3, eval_samples=1))
    run = tmp_path / "s2"
    ea = EventAccumulator(str(run / "logs" / "stage2"))
    ea.Reload()
    assert {"train/loss", "train/lr", "eval/loss"} <= set(ea.Tags()["scalars"])
    assert [e.step for e in ea.Scalars("train/loss")] == [1, 2, 3]
    assert (run / "curves.png").stat().st_size > 1000
    summary = json.loads((run / "summary.json").read_text())
    assert summary["curves"] == str(run / "curves.png") and summary["last_eval_loss"] == s["last_eval_loss"] > 0


def test_lr_schedules_are_the_library_ones():
    from rehyat.distill.engine import make_lr_scheduler

    def lrs(schedule, warmup, total, floor):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = make_lr_scheduler(opt, schedule, warmup, total, floor)
        out = []
        for _ in range(total):
            out.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        return out

    import math

    cos = lrs("cosine", 2, 10, 0.1)
    assert cos[:2] == [0.0, 0.5] and cos[2] == 1.0
    assert cos[6] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    lin = lrs("linear", 0, 10, 0.1)
    assert lin[0] == 1.0 and lin[5] == pytest.approx(0.1 + 0.9 * 0.5)
    assert lrs("constant", 3, 6, 0.1) == [0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="unknown lr schedule"):
        lrs("step", 0, 3, 0.1)
