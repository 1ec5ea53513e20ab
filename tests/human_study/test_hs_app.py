"""The Streamlit app under AppTest: consent, voting, validation, resume, quota, gold items, blinding, admin."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hs_helpers import MODEL_NAMES, write_study
from streamlit.testing.v1 import AppTest

from human_study.blinding import find_leaks
from human_study.config import load_study
from human_study.store import VoteStore

APP = Path(__file__).resolve().parents[2] / "human_study" / "app.py"
CRITERIA = ("visual_quality", "overall")


@pytest.fixture
def study_path(tmp_path: Path, monkeypatch) -> Path:
    path = write_study(tmp_path, n_prompts=4, quota=4, repeats=1, n_gold=1, criteria=CRITERIA)
    monkeypatch.setenv("HUMAN_STUDY_FILE", str(path))
    return path


def _app(rater: str | None = None, **params) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    if rater is not None:
        at.query_params["rater"] = rater
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def _consent(at: AppTest) -> AppTest:
    at.checkbox(key="consent_box").check()
    at.button(key="start").click()
    return at.run()


def _item_id(at: AppTest) -> str:
    keys = [r.key for r in at.radio]
    assert len(keys) == len(CRITERIA)
    return keys[0].removeprefix("ans_").rsplit(f"_{CRITERIA[0]}", 1)[0]


def _vote(at: AppTest, answer: str = "left") -> AppTest:
    item = _item_id(at)
    for crit in CRITERIA:
        at.radio(key=f"ans_{item}_{crit}").set_value(answer)
    at.button[0].click()
    return at.run()


def _progress_text(at: AppTest) -> str:
    return at.get("progress")[0].proto.text


def _store(study_path: Path) -> VoteStore:
    return VoteStore.open(load_study(study_path))


def _all_protos(node) -> list[bytes]:  # noqa: ANN001 - AppTest tree node
    out = []
    proto = getattr(node, "proto", None)
    if proto is not None and hasattr(proto, "SerializeToString"):
        out.append(proto.SerializeToString())
    for child in getattr(node, "children", {}).values():
        out += _all_protos(child)
    return out


def test_no_token_and_bad_token_are_refused(study_path: Path):
    at = _app()
    assert "no rater token" in at.error[0].value
    at = _app("bad token!")
    assert "not valid" in at.error[0].value


def test_consent_is_required_and_stored(study_path: Path):
    at = _app("r1")
    assert at.button(key="start") and not at.radio
    at.button(key="start").click()
    at.run()
    assert "tick the consent box" in at.error[0].value and not at.radio
    at = _consent(at)
    assert len(at.radio) == 2 and _store(study_path).has_consented("r1")
    assert not _app("r1").checkbox  # asked once: a new session goes straight to the items


def test_item_page_shows_two_muted_looping_videos_and_nothing_preselected(study_path: Path):
    at = _consent(_app("r1"))
    videos = at.get("video")
    assert len(videos) == 2
    for v, side in zip(videos, ("Left", "Right")):
        assert v.proto.autoplay and v.proto.loop and v.proto.muted
        assert re.fullmatch(r"(/mock)?/media/[0-9a-f]+\.webm", v.proto.url)  # content hash, no file name
        assert v.proto.alt == f"{side} video"
    assert all(r.value is None for r in at.radio)
    assert all(r.options == ["Left is better", "No preference", "Right is better"] for r in at.radio)
    assert _progress_text(at) == "Comparison 1 of 6"


def test_vote_is_stored_with_displayed_order_and_dwell(study_path: Path):
    at = _consent(_app("r1"))
    item = _item_id(at)
    at = _vote(at, "right")
    assert _progress_text(at) == "Comparison 2 of 6"
    votes = _store(study_path).votes_frame()
    assert len(votes) == 2 and set(votes["item"]) == {item}
    assert set(votes["chosen_side"]) == {"right"}
    assert set(votes["choice"]) == {"B" if set(votes["shown_left"]) == {"A"} else "A"}
    assert votes["dwell_ms"].notna().all() and (votes["dwell_ms"] >= 0).all()


def test_incomplete_answer_is_rejected(study_path: Path):
    at = _consent(_app("r1"))
    item = _item_id(at)
    at.radio(key=f"ans_{item}_overall").set_value("tie")
    at.button[0].click()
    at.run()
    assert "Please answer every question" in at.error[0].value and "Visual quality" in at.error[0].value
    assert _item_id(at) == item and _store(study_path).votes_frame().empty


def test_resume_in_a_new_session(study_path: Path):
    at = _consent(_app("r1"))
    at = _vote(_vote(at))
    expected = _item_id(at)
    fresh = _app("r1")  # a refresh, another browser or a restarted server: state comes from the database
    assert _progress_text(fresh) == "Comparison 3 of 6" and _item_id(fresh) == expected


def test_quota_done_page_and_gold_item(study_path: Path):
    at = _consent(_app("r1"))
    prompts = []
    for _ in range(6):  # 4 core + 1 repeat + 1 gold
        prompts.append(at.markdown[0].value)
        at = _vote(at, "left")
    assert "completed all 6 comparisons" in at.success[0].value and not at.radio
    assert any("Attention check 0" in p for p in prompts)
    votes = _store(study_path).votes_frame()
    assert len(votes) == 6 * 2 and not votes.duplicated(["rater", "item", "criterion"]).any()
    assert sorted(votes.drop_duplicates("item")["kind"]) == ["core"] * 4 + ["gold", "repeat"]
    assert "completed" in _app("r1").success[0].value  # quota reached: no further items, also after refresh


def test_nothing_sent_to_the_browser_names_a_model(study_path: Path):
    at = _consent(_app("r1"))
    for _ in range(6):
        blobs = _all_protos(at._tree)
        assert blobs and not any(find_leaks(b, MODEL_NAMES) for b in blobs)
        assert all(not find_leaks(v.proto.url + v.proto.alt, MODEL_NAMES + ("webm/", "videos")) for v in at.get("video"))
        at = _vote(at)


def test_admin_page_requires_the_password(study_path: Path, monkeypatch):
    monkeypatch.delenv("HS_TEST_ADMIN_PW", raising=False)
    at = _app(admin="1")
    assert "HS_TEST_ADMIN_PW" in at.error[0].value and not at.text_input
    monkeypatch.setenv("HS_TEST_ADMIN_PW", "s3cret")
    at = _app(admin="1")
    assert not at.dataframe and not at.get("download_button")
    at.text_input(key="admin_pw").input("wrong")
    at.button(key="admin_login").click()
    at.run()
    assert "Wrong password" in at.error[0].value and not at.dataframe
    # a rater votes, then the admin logs in and sees progress and live results
    _vote(_consent(_app("r1")))
    at.text_input(key="admin_pw").input("s3cret")
    at.button(key="admin_login").click()
    at.run()
    frames = at.dataframe
    assert len(frames) == 3
    progress = frames[0].value
    assert progress.set_index("rater").loc["r1", "answered"] == 1
    assert set(frames[1].value["model_a"]) == {MODEL_NAMES[0]}
    assert at.get("download_button")
