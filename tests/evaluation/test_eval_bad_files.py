"""Corrupt, unreadable, too-short and mis-named files get per-file errors; the run goes on."""
import numpy as np

from evaluation import prompts as P
from evaluation.run import main
from evaluation.store import load_records
from evaluation.videos import check_video

from eval_stand_in import TinyGenerator, write_clip


def _folder(tmp_path, names_ok):
    d = tmp_path / "videos"
    d.mkdir()
    gen = TinyGenerator()
    for i, name in enumerate(names_ok):
        write_clip(d / name, gen, name, i)
    good = d / names_ok[0]
    (d / names_ok[0].replace("-0.", "-7.")).write_bytes(good.read_bytes()[: len(good.read_bytes()) // 3])  # truncated
    (d / "empty-0.mp4").write_bytes(b"")
    (d / "garbage-0.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    write_clip(d / "one frame-0.mp4", gen, "x", 0, num_frames=1)
    (d / "readme.txt").write_text("not a video")
    return d


def test_check_video_messages(tmp_path):
    d = _folder(tmp_path, ["a dog-0.mp4"])
    assert check_video(d / "a dog-0.mp4").ok
    assert check_video(d / "a dog-0.mp4").n_frames == 9
    assert "empty" in check_video(d / "empty-0.mp4").message
    assert "corrupt" in check_video(d / "garbage-0.mp4").message
    assert "too short" in check_video(d / "one frame-0.mp4").message
    assert "extension" in check_video(d / "readme.txt").message


def test_custom_mode_bad_files_are_per_file_errors(tmp_path):
    d = _folder(tmp_path, ["a dog-0.mp4", "a dog-1.mp4", "a cat-0.mp4"])
    rc = main(["--suite", "vbench", "--videos", str(d), "--mode", "custom", "--dimensions", "temporal_flickering",
               "--out", str(tmp_path / "run"), "--quiet"])
    assert rc == 0
    df = load_records(tmp_path / "run")
    per = df[df.video.notna()].set_index("video")
    assert set(per[per.status == "non_standard"].index) == {"a dog-0.mp4", "a dog-1.mp4", "a cat-0.mp4"}
    errors = per[per.status == "error"]
    assert set(errors.index) == {"a dog-7.mp4", "empty-0.mp4", "garbage-0.mp4", "one frame-0.mp4", "readme.txt"}
    assert errors.score.isna().all()
    assert "too short" in errors.loc["one frame-0.mp4", "message"]
    assert "mis-named" in errors.loc["readme.txt", "message"]
    agg = df[df.video.isna()].iloc[0]
    assert agg.score == np.mean(per[per.status == "non_standard"].score)
    assert "5 file(s) unusable" in agg.message


def test_standard_mode_misnamed_and_corrupt(tmp_path):
    prompt = [e["prompt_en"] for e in P.load_full_info("vbench") if "temporal_flickering" in e["dimension"]][0]
    d = _folder(tmp_path, [P.v1_filename(prompt, i) for i in range(3)])
    (d / P.v1_filename(prompt, 3)).write_bytes(b"\x00" * 100)  # corrupt official file
    rc = main(["--suite", "vbench", "--videos", str(d), "--dimensions", "temporal_flickering",
               "--out", str(tmp_path / "run"), "--quiet"])
    assert rc == 0
    df = load_records(tmp_path / "run")
    per = df[df.video.notna()].set_index("video")
    assert per.loc[P.v1_filename(prompt, 3), "status"] == "error"
    assert (per.loc[[P.v1_filename(prompt, i) for i in range(3)], "status"] == "non_standard").all()
    assert "mis-named" in per.loc["garbage-0.mp4", "message"]
    assert "mis-named" in per.loc["readme.txt", "message"]
    agg = df[df.video.isna()].iloc[0]
    assert agg.details["n_videos"] == 3
