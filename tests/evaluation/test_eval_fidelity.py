import math

import numpy as np
import pytest

from evaluation.run import main
from evaluation.store import load_records
from evaluation.suites.fidelity import latent_rel_err, psnr_video, ssim_video

SPEC = "tests.evaluation.eval_stand_in:"


def test_metric_values_by_hand():
    ref = np.zeros((2, 16, 16, 3), np.uint8)
    cand = ref.copy()
    cand[1] += 1  # frame 1 off by one everywhere: MSE 1 -> PSNR 20*log10(255)
    whole, per = psnr_video(ref, cand)
    assert per[0] == math.inf and per[1] == pytest.approx(20 * math.log10(255))
    assert whole == pytest.approx(10 * math.log10(255 ** 2 / 0.5))
    s, sper = ssim_video(ref, ref)
    assert s == 1.0 and sper == [1.0, 1.0]
    import torch

    z = torch.ones(1, 2, 3, 4, 4)
    e, eper = latent_rel_err(z, z * 1.5)
    assert e == pytest.approx(0.5) and eper == pytest.approx([0.5, 0.5, 0.5])
    with pytest.raises(ValueError):
        psnr_video(ref, cand[:1])


def test_identical_models_infinite_psnr_ssim_one(tmp_path):
    rc = main(["--suite", "fidelity", "--model", SPEC + "make_tiny_same", "--reference", SPEC + "make_tiny",
               "--num-prompts", "2", "--seeds-per-prompt", "2", "--out", str(tmp_path / "same"), "--quiet"])
    assert rc == 0
    df = load_records(tmp_path / "same")
    assert len(df) == 12 and set(df["status"]) == {"ok"}
    assert set(df["model"]) == {"tiny-same"} and {d["reference"] for d in df["details"]} == {"tiny-ref"}
    assert (df[df.dimension == "psnr"]["score"] == math.inf).all()
    assert (df[df.dimension == "ssim"]["score"] == 1.0).all()
    assert (df[df.dimension == "latent_rel_err"]["score"] == 0.0).all()
    per_frame = df[df.dimension == "ssim"].iloc[0]["details"]["per_frame"]
    assert len(per_frame) == 9 and all(v == 1.0 for v in per_frame)


def test_different_models_are_not_identical(tmp_path):
    rc = main(["--suite", "fidelity", "--model", SPEC + "make_tiny_candidate", "--reference", SPEC + "make_tiny",
               "--num-prompts", "2", "--out", str(tmp_path / "diff"), "--quiet"])
    assert rc == 0
    df = load_records(tmp_path / "diff")
    psnr = df[df.dimension == "psnr"]["score"]
    ssim = df[df.dimension == "ssim"]["score"]
    err = df[df.dimension == "latent_rel_err"]["score"]
    assert np.isfinite(psnr).all() and (psnr > 10).all()
    assert (ssim < 1.0).all() and (ssim > 0.0).all()
    assert (err > 0).all() and (err < 1).all()
    assert all(len(d["per_frame"]) == 9 for d in df[df.dimension == "psnr"]["details"])
    prov = df.iloc[0]["provenance"]
    assert prov["model_config_hash"] != prov["reference_config_hash"] and "versions" in prov and prov["seed"] == 0
