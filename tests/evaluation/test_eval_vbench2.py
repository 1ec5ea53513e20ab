"""VBench-2.0: prompts from the vbench2 wheel, external-interpreter runner, results-file ingestion."""
import json
import sys
import textwrap
from pathlib import Path

import pytest

from evaluation import prompts as P
from evaluation.run import main
from evaluation.store import load_records

from eval_stand_in import TinyGenerator, write_clip

ROOT = Path(__file__).resolve().parents[2]

FAKE_DIVERSITY = textwrap.dedent('''
    import json, os
    def compute_diversity(json_dir, device, submodules_dict, **kwargs):
        assert os.environ.get("HF_HUB_OFFLINE") == "1"
        info = json.load(open(json_dir))
        res = [{"video_path": v, "video_results": 0.25 + 0.01 * i, "frames": 9}
               for e in info for i, v in enumerate(e["video_list"])]
        return sum(r["video_results"] for r in res) / len(res), res
''')


def _diversity_prompt():
    return [e["prompt_en"] for e in P.load_full_info("vbench2") if e["dimension"] == ["Diversity"]][0]


def test_prompt_suite_and_naming_from_the_wheel():
    info = P.load_full_info("vbench2")
    assert len(info) == 1230
    slots = P.v2_slots(["Diversity"])
    assert len(slots) == 10 * 20
    hp = P.v2_slots(["Human_Anatomy"])
    assert len(hp) == 120 * 3 and {s.index for s in hp} == {0, 1, 2}
    long_prompt = max((e["prompt_en"] for e in info), key=len)
    assert len(long_prompt) > 180
    assert P.v2_filename(long_prompt, 2) == long_prompt[:180] + "-2.mp4"
    v1 = P.v1_slots(["temporal_flickering"])
    assert len(v1) == 75 * 5 and len(P.v1_slots(["temporal_flickering"], sampling=True)) == 75 * 25
    assert P.prompt_from_filename("a cat, running-12.mp4") == "a cat, running"


def test_external_interpreter_runs_upstream_compute_and_results_are_ingested(tmp_path, cache_roots, monkeypatch):
    fake = tmp_path / "fakepkgs" / "vbench2"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "diversity.py").write_text(FAKE_DIVERSITY)
    monkeypatch.setenv("PYTHONPATH", f"{fake.parent}:{ROOT}")
    vgg = cache_roots["TORCH_HOME"] / "hub/checkpoints/vgg19-dcbb9e9d.pth"
    vgg.parent.mkdir(parents=True)
    vgg.write_bytes(b"fake vgg")
    prompt = _diversity_prompt()
    d = tmp_path / "videos" / "Diversity"
    gen = TinyGenerator()
    for i in range(3):
        write_clip(d / P.v2_filename(prompt, i), gen, prompt, i)
    (d / "stray.mp4").write_bytes(b"junk")
    rc = main(["--suite", "vbench2", "--videos", str(tmp_path / "videos"), "--dimensions", "Diversity",
               "--vbench2-python", sys.executable, "--out", str(tmp_path / "run"), "--label", "m", "--quiet"])
    assert rc == 0
    df = load_records(tmp_path / "run")
    per = df[df.video.notna()].set_index("video")
    ok = per[per.status == "non_standard"]
    assert sorted(ok.index) == sorted(f"Diversity/{P.v2_filename(prompt, i)}" for i in range(3))
    assert sorted(ok.score) == pytest.approx([0.25, 0.26, 0.27])
    assert ok.iloc[0].details == {"frames": 9}
    assert per.loc["Diversity/stray.mp4", "status"] == "error"
    agg = df[df.video.isna()].iloc[0]
    assert agg.score == pytest.approx(0.26) and agg.status == "non_standard"
    assert agg.provenance["runner"] == "external" and agg.provenance["python"] == sys.executable
    assert agg.provenance["checkpoint_hashes"]["hub/checkpoints/vgg19-dcbb9e9d.pth"]
    assert "197 expected video(s) missing" in agg.message


def test_not_importable_and_no_interpreter_is_a_clear_error(tmp_path, cache_roots):
    vgg = cache_roots["TORCH_HOME"] / "hub/checkpoints/vgg19-dcbb9e9d.pth"
    vgg.parent.mkdir(parents=True)
    vgg.write_bytes(b"fake vgg")
    write_clip(tmp_path / "v" / "x-0.mp4", TinyGenerator(), "x", 0)
    rc = main(["--suite", "vbench2", "--videos", str(tmp_path / "v"), "--mode", "custom", "--dimensions",
               "Diversity", "--out", str(tmp_path / "run"), "--quiet"])
    df = load_records(tmp_path / "run")
    try:
        import vbench2  # noqa: F401
    except Exception:
        assert rc == 1
        assert df.iloc[0].status == "error" and "--vbench2-python" in df.iloc[0].message


def test_gpu_dimensions_are_skipped_on_cpu_when_weights_exist(tmp_path, cache_roots):
    for rel in ("arcface/resnet18_110.pth",):
        f = cache_roots["VBENCH2_CACHE_DIR"] / rel
        f.parent.mkdir(parents=True)
        f.write_bytes(b"x")
    f = cache_roots["TORCH_HOME"] / "hub/checkpoints/retinaface_resnet50_2020-07-20-f168fae3c.zip"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"x")
    write_clip(tmp_path / "v" / "x-0.mp4", TinyGenerator(), "x", 0)
    rc = main(["--suite", "vbench2", "--videos", str(tmp_path / "v"), "--mode", "custom", "--out",
               str(tmp_path / "run"), "--quiet", "--dimensions", "Human_Identity", "Mechanics"])
    assert rc == 1
    agg = load_records(tmp_path / "run").set_index("dimension")
    assert agg.loc["Human_Identity", "status"] == "skipped" and "CUDA" in agg.loc["Human_Identity", "message"]
    assert agg.loc["Mechanics", "status"] == "missing_weights"


def test_results_file_ingestion(tmp_path):
    prompt = _diversity_prompt()
    names = [s.filename for s in P.v2_slots(["Diversity"])]
    res = {"Diversity": [0.41, [{"video_path": f"/elsewhere/Diversity/{n}", "video_results": 0.41} for n in names]],
           "Human_Anatomy": [0.8, [{"video_path": f"/x/{P.v2_filename(prompt, 0)}", "video_results": 0.8}]]}
    f = tmp_path / "model_eval_results.json"
    f.write_text(json.dumps(res))
    rc = main(["--suite", "vbench2", "--vbench2-results", str(f), "--label", "wan", "--out", str(tmp_path / "run"),
               "--quiet", "--dimensions", "Diversity", "Human_Anatomy", "Composition"])
    assert rc == 1  # Composition requested but absent from the file
    df = load_records(tmp_path / "run")
    agg = df[df.video.isna()].set_index("dimension")
    assert agg.loc["Diversity", "status"] == "ok" and agg.loc["Diversity", "score"] == pytest.approx(0.41)
    assert agg.loc["Human_Anatomy", "status"] == "non_standard"
    assert agg.loc["Composition", "status"] == "skipped" and pd_isnan(agg.loc["Composition", "score"])
    assert (df.video.notna() & (df.dimension == "Diversity")).sum() == 200


def pd_isnan(x):
    return x != x


def test_submodules_are_built_from_local_paths_for_every_dimension(cache_roots):
    from evaluation.registry import discover
    from evaluation.weights import preflight

    for suite in ("vbench", "vbench2"):
        s = discover()[suite]
        for dim in s.dimensions.values():
            sub = s.submodules(dim, preflight(dim, verify_hashes=False))
            blob = json.dumps(sub)
            assert "http" not in blob, (suite, dim.name)
            for art in dim.artifacts:
                if art.root in ("VBENCH_CACHE_DIR", "VBENCH2_CACHE_DIR") and art.kind == "file":
                    if art.path == "ViCLIP/bpe_simple_vocab_16e6.txt.gz":
                        continue  # upstream reads it from $VBENCH_CACHE_DIR itself
                    full = cache_roots[art.root] / art.path
                    assert f'"{full}"' in blob or f'"{full.parent}"' in blob, (suite, dim.name, art.path)
    cam = discover()["vbench2"].submodules(discover()["vbench2"].dimensions["Camera_Motion"], None)
    assert cam["repo"].endswith(":main")  # no github probe by torch.hub
