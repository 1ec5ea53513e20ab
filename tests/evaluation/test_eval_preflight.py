"""Weights preflight: precise messages, missing_weights status, other dimensions go on, exit code, no downloads."""
import hashlib
import socket
import subprocess

import pytest

from evaluation.registry import discover
from evaluation.run import main
from evaluation.store import load_records
from evaluation.weights import HashCache, preflight

from eval_stand_in import TinyGenerator, write_clip


def test_network_is_blocked_in_tests():
    with pytest.raises(Exception):
        socket.create_connection(("example.com", 80), timeout=1)


def test_missing_file_message_names_file_url_and_expected_path(cache_roots):
    dim = discover()["vbench"].dimensions["aesthetic_quality"]
    pf = preflight(dim)
    assert not pf.ok and pf.status == "missing_weights"
    vb = cache_roots["VBENCH_CACHE_DIR"]
    assert f"{vb}/clip_model/ViT-L-14.pt" in pf.message
    assert f"{vb}/aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth" in pf.message
    assert "https://openaipublic.azureedge.net/clip/models/b8cca3fd" in pf.message
    assert "sha256 b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836" in pf.message
    assert "$VBENCH_CACHE_DIR" in pf.message
    assert {m["path"] for m in pf.missing} == {"clip_model/ViT-L-14.pt",
                                               "aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth"}


def test_v2_messages_use_vbench2_root_and_torch_home(cache_roots):
    dims = discover()["vbench2"].dimensions
    pf = preflight(dims["Human_Identity"])
    assert f"{cache_roots['VBENCH2_CACHE_DIR']}/arcface/resnet18_110.pth" in pf.message
    assert f"{cache_roots['TORCH_HOME']}/hub/checkpoints/retinaface_resnet50_2020-07-20-f168fae3c.zip" in pf.message
    assert "drive.google.com" in pf.message
    pf = preflight(dims["Complex_Plot"])
    assert "Qwen/Qwen2.5-7B-Instruct" in pf.message and "LLaVA-Video-7B-Qwen2" in pf.message


def test_present_files_pass_and_hashes_are_recorded(cache_roots, tmp_path):
    dim = discover()["vbench"].dimensions["dynamic_degree"]
    f = cache_roots["VBENCH_CACHE_DIR"] / "raft_model/models/raft-things.pth"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"fake raft")
    pf = preflight(dim, hash_cache=HashCache(tmp_path / "h.json"))
    assert pf.status in (None, "error")  # present; may still lack the python module (easydict)
    assert pf.checkpoint_hashes["raft_model/models/raft-things.pth"] == hashlib.sha256(b"fake raft").hexdigest()


def test_sha256_mismatch_is_an_error(cache_roots, tmp_path):
    dim = discover()["vbench"].dimensions["background_consistency"]
    f = cache_roots["VBENCH_CACHE_DIR"] / "clip_model/ViT-B-32.pt"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"not clip")
    pf = preflight(dim, hash_cache=HashCache(tmp_path / "h.json"))
    assert pf.status == "error" and "hash mismatch" in pf.message


def test_missing_weights_dimension_does_not_stop_others_and_sets_exit_code(tmp_path, monkeypatch):
    calls = []
    real_run = subprocess.run

    def guarded_run(cmd, *a, **k):
        prog = str(cmd[0] if isinstance(cmd, (list, tuple)) else cmd).split("/")[-1]
        if prog in ("wget", "curl", "git", "unzip", "huggingface-cli", "gdown"):
            calls.append(cmd)
            raise AssertionError(f"download attempted: {cmd}")
        return real_run(cmd, *a, **k)

    monkeypatch.setattr(subprocess, "run", guarded_run)
    d = tmp_path / "v"
    gen = TinyGenerator()
    for i in range(2):
        write_clip(d / f"a boat-{i}.mp4", gen, "a boat", i)
    rc = main(["--suite", "vbench", "--videos", str(d), "--mode", "custom", "--out", str(tmp_path / "r"), "--quiet",
               "--dimensions", "imaging_quality", "temporal_flickering", "subject_consistency"])
    assert rc == 1
    df = load_records(tmp_path / "r").set_index("dimension")
    agg = df[df.video.isna()]
    assert agg.loc["temporal_flickering", "status"] == "non_standard"  # ran after a missing one
    assert agg.loc["imaging_quality", "status"] == "missing_weights"
    assert agg.loc["subject_consistency", "status"] == "missing_weights"
    assert "musiq_spaq_ckpt-358bb6af.pth" in agg.loc["imaging_quality", "message"]
    assert agg.loc[["imaging_quality", "subject_consistency"], "score"].isna().all()
    assert calls == []  # no wget / git clone


def test_default_dimensions_missing_do_not_fail_the_run(tmp_path):
    d = tmp_path / "v"
    write_clip(d / "a boat-0.mp4", TinyGenerator(), "a boat", 0)
    assert main(["--suite", "vbench", "--videos", str(d), "--mode", "custom", "--out", str(tmp_path / "r"),
                 "--quiet"]) == 0
    df = load_records(tmp_path / "r")
    agg = df[df.video.isna()].set_index("dimension")
    assert len(agg) == 16
    assert agg.loc["object_class", "status"] == "missing_weights"
    assert (agg.status == "non_standard").sum() == 1


def test_list_shows_presence(capsys, cache_roots):
    f = cache_roots["VBENCH_CACHE_DIR"] / "amt_model/amt-s.pth"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"x")
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "yes $VBENCH_CACHE_DIR/amt_model/amt-s.pth" in out
    assert "NO  $VBENCH_CACHE_DIR/raft_model/models/raft-things.pth" in out
    for name in ("vbench", "vbench2", "fidelity", "Multi-View_Consistency", "temporal_flickering", "psnr"):
        assert name in out


def test_unknown_dimension_is_rejected(tmp_path):
    with pytest.raises(SystemExit):
        main(["--suite", "vbench", "--videos", str(tmp_path), "--dimensions", "nope", "--out", str(tmp_path / "r")])


def test_upstream_package_not_installed_is_an_error_per_dimension(tmp_path, monkeypatch):
    import evaluation.prompts as P

    def absent(package):
        raise ModuleNotFoundError(f"package {package!r} is not installed; pip install --no-deps vbench==0.1.5")

    monkeypatch.setattr(P, "package_dir", absent)
    write_clip(tmp_path / "v" / "x-0.mp4", TinyGenerator(), "x", 0)
    rc = main(["--suite", "vbench", "--videos", str(tmp_path / "v"), "--dimensions", "temporal_flickering",
               "--out", str(tmp_path / "r"), "--quiet"])
    assert rc == 1
    rec = load_records(tmp_path / "r").iloc[0]
    assert rec.status == "error" and "not installed" in rec.message and rec.score != rec.score


def test_usage_errors_exit_2(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["--suite", "vbench", "--out", str(tmp_path / "r"), "--quiet"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["--suite", "fidelity", "--model", "x:y", "--out", str(tmp_path / "r"), "--quiet"])
    assert e.value.code == 2
