import json

import pytest
import torch

from rehyat.attention import get_attention_kind
from rehyat.distill.common import METRICS_NAME, SimulatedKill
from rehyat.distill.stage1 import Stage1Config, Stage1Inputs, build_stage1_model, evaluate_stage1, train_stage1
from rehyat.distill.common import DistInfo
from rehyat.distill.teacher_forcing import student_log_weights
from rehyat.wan.checkpoint import load_base_transformer, load_rehyat
from rehyat.wan.convert import feature_map_state_dict


@pytest.fixture
def make_cfg(tiny_s1):
    def make(tmp_path, **kw):
        return Stage1Config(**(tiny_s1 | {"out": str(tmp_path / "s1")} | kw))

    return make


def _inputs(cfg, model, settings, step=0):
    inp = Stage1Inputs(cfg, DistInfo(), model.config.in_channels, model.config.text_dim, torch.device("cpu"))
    return inp, inp.batch(step, model, settings)


def test_teacher_forcing_passes_teacher_activations_downstream(tmp_path, tiny_dir, make_cfg):
    cfg = make_cfg(tmp_path)
    model, procs, settings, _ = build_stage1_model(cfg, torch.device("cpu"))
    teacher = load_base_transformer(tiny_dir).eval()
    _, (hs, t, emb, _) = _inputs(cfg, model, settings)
    kw = dict(hidden_states=hs, timestep=t, encoder_hidden_states=emb, return_dict=False)
    with torch.no_grad():
        ref = teacher(**kw)[0]
        settings.mode = "distill"
        got = model(**kw)[0]
        settings.mode = "student"
        student = model(**kw)[0]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)  # downstream blocks see the teacher
    assert (student - ref).abs().max() > 1e-3  # and the student really is a different model
    assert sorted(settings.stats) == [0, 1] and all(s["loss"] > 0 for s in settings.stats.values())


def test_each_block_loss_depends_only_on_its_own_phi(tmp_path, make_cfg):
    cfg = make_cfg(tmp_path)
    model, procs, settings, _ = build_stage1_model(cfg, torch.device("cpu"))
    _, (hs, t, emb, _) = _inputs(cfg, model, settings)

    def run():
        settings.reset()
        settings.mode = "distill"
        for p in model.parameters():
            p.grad = None
        with torch.no_grad():
            model(hidden_states=hs, timestep=t, encoder_hidden_states=emb, return_dict=False)
        return {i: s["loss"] for i, s in settings.stats.items()}, {i: [p.grad for p in procs[i].parameters()]
                                                                  for i in procs}

    base, grads = run()
    assert all(g is not None and g.abs().sum() > 0 for gs in grads.values() for g in gs)
    assert all(p.grad is None for n, p in model.named_parameters() if ".attn1.processor." not in n)
    with torch.no_grad():
        for p in procs[0].parameters():
            p.add_(0.5 * torch.randn_like(p))
    moved, _ = run()
    assert moved[0] != base[0]
    assert moved[1] == base[1]  # bitwise: block 1 never sees block 0's student


def test_student_weights_match_the_op():
    """The attention weights the xent term uses are exactly the ones each kind applies to v."""

    class P:  # geometry holder like a processor
        frame_tokens, chunk_frames, overlap_frames = 3, 2, 1

    torch.manual_seed(0)
    b, n, h, d = 1, 21, 2, 8  # 7 frames: chunks 2, 2, 2, 1
    q, k, v = (torch.randn(b, n, h, d, dtype=torch.float64) for _ in range(3))
    fq, fk = torch.rand(b, n, h, 5, dtype=torch.float64), torch.rand(b, n, h, 5, dtype=torch.float64)
    idx = torch.arange(n)
    for kind in ("hybrid", "linear", "chunk_local"):
        for causal in (False, True):
            P.causal = causal
            _, logw = student_log_weights(q, k, fq, fk, kind, P, idx)
            y = torch.matmul(logw.exp().to(v.dtype), v.transpose(1, 2)).transpose(1, 2)
            ref = get_attention_kind(kind)(q, k, v, fq, fk, frame_tokens=3, chunk_frames=2, overlap_frames=1,
                                           causal=causal)
            torch.testing.assert_close(y, ref, atol=1e-9, rtol=1e-9, msg=f"{kind} causal={causal}")


def test_stage1_lowers_loss_and_changes_only_phi(tmp_path, make_cfg):
    # φ alone (the learned linear scale has its own test below): the loss must fall through φ itself
    cfg = make_cfg(tmp_path, steps=30, lr=1e-2, eval_every=30, eval_samples=1, checkpoint_every=100, xent_weight=0.1,
                   xent_queries=16, learn_linear_scale=False)
    before = {}
    summary = train_stage1(cfg, model_hook=lambda m: before.update({k: v.clone() for k, v in m.state_dict().items()}))
    model = summary["model"]
    after = model.state_dict()
    assert set(after) == set(before)
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    phi = {k for k in after if ".attn1.processor." in k}
    assert changed <= phi, f"non-φ parameters changed: {sorted(changed - phi)[:5]}"
    assert len(changed) == len(phi)  # every φ tensor trained
    recs = [json.loads(ln) for ln in (tmp_path / "s1" / METRICS_NAME).read_text().splitlines()]
    ev = {(r["step"], r["block"]): r["rel_l2"] for r in recs if r["kind"] == "eval"}
    for blk in (0, 1):
        assert ev[(30, blk)] < 0.9 * ev[(0, blk)], ev
    train = [r for r in recs if r["kind"] == "train" and r["block"] is not None]
    assert {r["step"] for r in train} == set(range(1, 31)) and {r["block"] for r in train} == {0, 1}
    assert all({"loss", "lr", "time", "rel_l2", "grad_norm"} <= set(r) for r in train)
    # the export is a ReHyAt checkpoint the Wan code loads, with exactly the trained φ
    loaded = load_rehyat(tmp_path / "s1" / "rehyat")
    for k, v in feature_map_state_dict(loaded).items():
        assert torch.equal(v, after[k])


def test_stage1_resume_after_kill_equals_uninterrupted(tmp_path, make_cfg):
    kw = dict(steps=7, lr=1e-2, checkpoint_every=3, guidance_scale=2.0, xent_weight=0.1, xent_queries=8)
    full = train_stage1(make_cfg(tmp_path / "a", **kw))["model"]
    cfg_b = make_cfg(tmp_path / "b", **kw)
    with pytest.raises(SimulatedKill):
        train_stage1(cfg_b, fail_at_step=4)  # dies in step 5 (1-based) after the checkpoint at step 3
    res = train_stage1(cfg_b)  # resumes at 3: replays trajectory position 3 of group 0, then continues
    assert res["resumed_from"] == 3
    a, b = feature_map_state_dict(full), feature_map_state_dict(res["model"])
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bitwise
    la = [json.loads(x)["loss"] for x in (tmp_path / "a" / "s1" / METRICS_NAME).read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (tmp_path / "b" / "s1" / METRICS_NAME).read_text().splitlines()]
    assert la == lb


def test_stage1_baseline_kinds(tmp_path, make_cfg):
    lin = train_stage1(make_cfg(tmp_path / "lin", steps=2, student_kind="linear"))
    assert lin["finished"] and lin["last_loss"] > 0
    with pytest.raises(ValueError, match="nothing to train"):
        train_stage1(make_cfg(tmp_path / "cl", steps=2, student_kind="chunk_local"))
    # chunk_local is evaluated, not trained
    cfg = make_cfg(tmp_path / "cl2", student_kind="chunk_local", eval_samples=1)
    model, procs, settings, _ = build_stage1_model(cfg, torch.device("cpu"))
    inp = Stage1Inputs(cfg, DistInfo(), 16, 32, torch.device("cpu"))
    err = evaluate_stage1(model, procs, settings, inp)
    assert set(err) == {0, 1} and all(0 < e < 2 for e in err.values())


def test_cli_missing_teacher_is_a_clear_error(tmp_path, capsys):
    from rehyat.distill.__main__ import main

    rc = main(["stage1", "--teacher", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--steps", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "Base Wan checkpoint not found" in err and "Wan2.1-T2V-1.3B-Diffusers" in err


def test_cli_config_file_and_flags(tmp_path, capsys):
    from rehyat.distill.__main__ import main

    conf = tmp_path / "s1.yaml"
    conf.write_text("teacher: tiny\nsteps: 2\nlatent_frames: 3\nlatent_height: 8\nlatent_width: 8\n"
                    "num_inference_steps: 2\nguidance_scale: 1.0\nmax_sequence_length: 16\n"
                    "feature_map_kwargs: {hidden_dim: 8, feature_dim: 8}\nprogress: false\n")
    out = tmp_path / "run"
    assert main(["stage1", "--config", str(conf), "--out", str(out), "--chunk-frames", "1", "--blocks", "1,"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["rehyat"]["chunk_frames"] == 1 and cfg["blocks"] == [1] and cfg["config"]["steps"] == 2
    meta = json.loads((out / "rehyat" / "rehyat_config.json").read_text())
    assert meta["rehyat"]["blocks"] == [1] and meta["rehyat"]["chunk_frames"] == 1
    conf.write_text("stepz: 3\n")
    assert main(["stage1", "--config", str(conf)]) == 2  # unknown keys are an error, not ignored
    assert "unknown Stage1Config keys: ['stepz']" in capsys.readouterr().err
    # rerunning into the same folder with another configuration is refused (it would resume someone else's run)
    assert main(["stage1", "--out", str(out), "--steps", "3", "--chunk-frames", "2", "--latent-frames", "3",
                 "--latent-height", "8", "--latent-width", "8", "--no-progress"]) == 2
    assert "different configuration" in capsys.readouterr().err


def test_linear_scale_is_data_initialised_trained_and_exported(tmp_path, make_cfg):
    init = {}

    def hook(model):  # runs before the init; record that the scale exists and starts at 0
        from rehyat.wan.convert import rehyat_processors

        init.update({i: p.linear_log_scale.detach().clone() for i, p in rehyat_processors(model).items()})

    res = train_stage1(make_cfg(tmp_path, steps=30, lr=1e-2, eval_every=30, eval_samples=1, checkpoint_every=100,
                                learn_linear_scale=True), model_hook=hook)
    from rehyat.wan.convert import rehyat_processors

    procs = rehyat_processors(res["model"])
    assert all(torch.equal(v, torch.zeros_like(v)) for v in init.values())
    for i, p in procs.items():
        g = p.linear_log_scale.detach()
        assert torch.isfinite(g).all() and g.abs().min() > 0.1  # moved by the data-driven init (then trained)
    recs = [json.loads(ln) for ln in (tmp_path / "s1" / METRICS_NAME).read_text().splitlines()]
    ev = {(r["step"], r["block"]): r["rel_l2"] for r in recs if r["kind"] == "eval"}
    for blk in procs:
        assert ev[(30, blk)] < ev[(0, blk)], ev
    loaded = rehyat_processors(load_rehyat(tmp_path / "s1" / "rehyat"))
    for i, p in procs.items():
        assert torch.equal(loaded[i].linear_log_scale, p.linear_log_scale)


def test_linear_share_and_chunk_local_diagnostic(tmp_path, make_cfg):
    """The diagnostic's share is the linear set's part of the joint normaliser, sum_L fq.fk / (sum_S e^s +
    sum_L fq.fk), averaged over query rows that have a linear set; its baseline error is chunk-local softmax's."""
    from rehyat.distill.teacher_forcing import CallLayout, DistillSettings

    cfg = make_cfg(tmp_path, learn_linear_scale=False)
    model, procs, _, _ = build_stage1_model(cfg, torch.device("cpu"))
    proc = procs[0]
    ft, nf = 4, 5
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, nf * ft, 2, 12, generator=g) for _ in range(3))
    layout = CallLayout(ft, 2, 1, False)
    d = DistillSettings(diagnose=True, diag_queries=10**6, generator=torch.Generator().manual_seed(0))
    y_t = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                           v.transpose(1, 2)).transpose(1, 2)
    with torch.no_grad():
        fq, fk = proc.inner.features(q, k)
        proc._diagnose(d, q, k, v, y_t, fq, fk, layout)
    st = d.stats[0]
    soft, lin = get_attention_kind("hybrid").token_masks(torch.arange(nf * ft), nf, ft, 2, 1, False)
    s = torch.einsum("bnhd,bmhd->bhnm", q.double(), k.double()) / 12 ** 0.5
    kern = torch.einsum("bnhf,bmhf->bhnm", fq.double(), fk.double())
    num = (kern * lin).sum(-1)
    share = num / ((s.exp() * soft).sum(-1) + num)  # [B, H, N]
    rows = lin.any(-1)
    assert st["share_rows"] == 2 * rows.sum()
    torch.testing.assert_close(st["share_sum"] / st["share_rows"], float(share[..., rows].mean()), rtol=1e-5, atol=0)
    y_cl = get_attention_kind("chunk_local")(q, k, v, None, None, frame_tokens=ft, chunk_frames=2, overlap_frames=1,
                                             causal=False)
    torch.testing.assert_close(st["sq_err_cl"], float((y_cl - y_t).pow(2).sum()), rtol=1e-4, atol=0)


def test_diagnostics_in_the_summary_and_a_warning_for_a_dead_linear_branch(tmp_path, make_cfg):
    from rehyat.distill.stage1 import LINEAR_SHARE_WARN, diagnostic_warnings, stage1_diagnostics

    res = train_stage1(make_cfg(tmp_path, steps=2, eval_every=2, eval_samples=1))
    diag = res["diagnostics"]
    recs = [json.loads(ln) for ln in (tmp_path / "s1" / METRICS_NAME).read_text().splitlines()]
    ev = {r["block"]: r for r in recs if r["kind"] == "eval" and r["step"] == 2}
    for b in ("0", "1"):  # the final diagnostics are the last eval's, in metrics.jsonl and the summary
        assert diag[b] == {k: ev[int(b)][k] for k in diag[b]}
        assert 0 < diag[b]["linear_share"] < 1 and diag[b]["vs_chunk_local"] == pytest.approx(
            diag[b]["rel_l2"] / diag[b]["rel_l2_chunk_local"])
    assert res["warnings"] == [] and json.loads((tmp_path / "s1" / "summary.json").read_text())["warnings"] == []
    model, procs, settings = res["model"], None, None
    from rehyat.wan.convert import rehyat_processors

    procs = rehyat_processors(model)
    settings = next(iter(procs.values()))._distill
    with torch.no_grad():
        for p in procs.values():
            p.linear_log_scale.fill_(-80.0)  # the linear branch gets e^-80 of the mass
    inp = Stage1Inputs(make_cfg(tmp_path, steps=2, eval_samples=1), DistInfo(), 16, 32, torch.device("cpu"))
    dead = stage1_diagnostics(model, settings, inp, samples=1, positions=2)
    assert all(d["linear_share"] < LINEAR_SHARE_WARN for d in dead.values())
    warnings = diagnostic_warnings(dead)
    assert len(warnings) == 2 and "chunk-local softmax" in warnings[0]
