"""The Streamlit app under AppTest: signed links, open enrolment, consent, voting, validation, resume, quota, gold
items, missing videos, a second tab, completion, blinding, admin."""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hs_helpers import MODEL_NAMES, write_study
from streamlit.testing.v1 import AppTest

from human_study import ui
from human_study.blinding import find_leaks
from human_study.config import load_study
from human_study.links import link_signature
from human_study.store import VoteStore

APP = Path(__file__).resolve().parents[2] / "human_study" / "app.py"
CRITERIA = ("visual_quality", "overall")


@pytest.fixture
def study_path(tmp_path: Path, monkeypatch) -> Path:
    path = write_study(tmp_path, n_prompts=4, quota=4, repeats=1, n_gold=1, criteria=CRITERIA)
    monkeypatch.setenv("HUMAN_STUDY_FILE", str(path))
    return path


def _sig(rater: str) -> str:
    study = load_study(os.environ["HUMAN_STUDY_FILE"])
    return link_signature(VoteStore.open(study).link_secret, study.name, rater)


def _app(rater: str | None = None, signed: bool = True, **params) -> AppTest:
    """A fresh session (a new tab) opening the rater's signed link (``signed=False``: the bare id)."""
    at = AppTest.from_file(str(APP), default_timeout=60)
    if rater is not None:
        at.query_params["rater"] = rater
        if signed:
            at.query_params["sig"] = _sig(rater)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


class _VideoTags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.videos: list[dict] = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        if tag == "video":
            self.videos.append(dict(attrs))


def _videos(at: AppTest) -> list[dict]:
    """The attributes of the ``<video>`` tags of the player (one ``st.iframe`` document holds both)."""
    frames = at.get("iframe")
    assert len(frames) == 1
    parser = _VideoTags()
    parser.feed(frames[0].proto.srcdoc)
    return parser.videos


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
    videos = _videos(at)
    assert len(videos) == 2
    for v, side in zip(videos, ("Left", "Right")):
        assert "autoplay" in v and "loop" in v and "muted" in v and "playsinline" in v
        assert re.fullmatch(r"(/mock)?/media/[0-9a-f]+\.webm", v["src"])  # content hash, no file name
        assert v["aria-label"] == f"{side} video"
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
        assert all(not find_leaks(v["src"] + v["aria-label"], MODEL_NAMES + ("webm/", "videos")) for v in _videos(at))
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


# ------------------------------------------------------------------------------------------- identity and links


def test_unsigned_tampered_and_repeated_links_are_refused(study_path: Path):
    good = _sig("r1")
    for at in (_app("r1", signed=False),                     # the bare id: anyone could type it
               _app("r1", signed=False, sig=good[:-1] + "0"),  # a tampered signature
               _app("bob", signed=False, sig=good),          # r1's signature on another id
               _app(signed=False, rater=["r1", "bob"], sig=good)):  # a second rater= must not switch identity
        assert "not valid" in at.error[0].value and not at.radio and not at.checkbox
    assert _store(study_path).rater_progress().empty  # nobody was registered


@pytest.fixture
def open_study_path(tmp_path: Path, monkeypatch) -> Path:
    path = write_study(tmp_path, n_prompts=4, quota=2, repeats=0, n_gold=0, criteria=CRITERIA,
                       extra={"raters": {"enrolment": "open"},
                              "completion": {"code": "C0MPL3TE",
                                             "url": "https://example.org/complete?cc=C0MPL3TE"}})
    monkeypatch.setenv("HUMAN_STUDY_FILE", str(path))
    return path


def test_open_enrolment_assigns_the_id_and_stores_platform_parameters(open_study_path: Path):
    at = _app(PROLIFIC_PID="5f0c0ffee0000000000000aa", STUDY_ID="st1", SESSION_ID="se1")
    assert at.checkbox(key="consent_box")  # enrolled: the consent page
    rater = at.query_params["rater"][0] if isinstance(at.query_params["rater"], list) else at.query_params["rater"]
    assert rater.startswith("o") and "PROLIFIC_PID" not in at.query_params  # the URL is now the signed link
    store = _store(open_study_path)
    row = store.rater_progress().set_index("rater").loc[rater]
    assert (row["participant_id"], row["platform_study_id"], row["platform_session_id"]) == \
        ("5f0c0ffee0000000000000aa", "st1", "se1")
    again = _app(PROLIFIC_PID="5f0c0ffee0000000000000aa", STUDY_ID="st1", SESSION_ID="se2")
    assert "already started this study" in again.error[0].value  # one rater per participant
    assert "not valid" in _app("bob", signed=False).error[0].value  # the URL cannot pick an identity
    assert len(store.rater_progress()) == 1
    resumed = _consent(_app(rater))  # the signed link the server put in the address bar resumes
    assert len(resumed.radio) == 2


def test_done_page_shows_the_completion_code_and_redirects(open_study_path: Path):
    at = _consent(_app())
    at = _vote(_vote(at))
    assert "completed all 2 comparisons" in at.success[0].value
    assert "C0MPL3TE" in at.code[0].value
    assert at.get("link_button")[0].proto.url == "https://example.org/complete?cc=C0MPL3TE"
    html = at.get("html")[0].proto.body
    assert 'window.location.replace("https://example.org/complete?cc=C0MPL3TE")' in html


def test_redirect_script_cannot_be_broken_out_of():
    assert "</script>" not in ui.redirect_script("https://x.org/?a=</script><script>alert(1)")[:-9]


# --------------------------------------------------------------------------------------------- errors and tabs


def test_missing_video_skips_the_item_without_leaking_and_admin_lists_it(study_path: Path, monkeypatch):
    at = _consent(_app("r1"))
    store = _store(study_path)
    study = load_study(study_path)
    upcoming = store.plan("r1")[1]
    item = store.item(upcoming.item_id)
    victim = (study.model(item.model_a).videos[item.prompt_id] if item.kind != "gold"
              else study.gold[0].video_a)
    victim.unlink()
    at = _vote(at)  # the next item's video is missing: it is skipped, the rater sees the one after it
    assert not at.exception
    assert ui.SKIPPED in at.info[0].value
    assert _progress_text(at) == "Comparison 2 of 5" and _item_id(at) != upcoming.item_id
    for blob in _all_protos(at._tree):
        assert not find_leaks(blob, MODEL_NAMES + (str(victim), victim.name, "FileNotFoundError", "videos/"))
    assert _app("r1").radio  # a reload stays on the rater's next item, not stuck on the broken one
    problems = store.problems_frame()
    assert len(problems) == 1 and str(victim) in problems.loc[0, "reason"]
    monkeypatch.setenv("HS_TEST_ADMIN_PW", "pw")
    admin = _app(admin="1")
    admin.text_input(key="admin_pw").input("pw")
    admin.button(key="admin_login").click()
    admin.run()
    listed = admin.dataframe[1].value  # progress, then problems
    assert list(admin.dataframe[0].value.set_index("rater").loc[["r1"], "dropped"]) == [1]
    assert listed.loc[0, "item"] == upcoming.item_id and str(victim) in listed.loc[0, "reason"]


def test_a_second_tab_is_told_the_item_was_already_answered(study_path: Path):
    tab1 = _consent(_app("r1"))
    tab2 = _app("r1")
    item = _item_id(tab1)
    assert _item_id(tab2) == item
    _vote(tab1, "left")
    tab2 = _vote(tab2, "right")  # the stale tab answers the same item
    assert ui.ANSWERED_ELSEWHERE in tab2.info[0].value and _item_id(tab2) != item
    votes = _store(study_path).votes_frame()
    assert set(votes["chosen_side"]) == {"left"}  # the first answer is kept


def test_a_broken_study_file_shows_a_generic_message(tmp_path: Path, monkeypatch):
    bad = tmp_path / "broken.yaml"
    bad.write_text(f"name: x\nmodels: [{{name: {MODEL_NAMES[0]}, folder: /srv/secret/{MODEL_NAMES[0]}}}]\n")
    monkeypatch.setenv("HUMAN_STUDY_FILE", str(bad))
    at = _app("r1", signed=False)
    assert at.error[0].value == ui.UNAVAILABLE and not at.exception
    for blob in _all_protos(at._tree):
        assert not find_leaks(blob, MODEL_NAMES + ("/srv/secret", "broken.yaml", "Traceback"))


def test_an_unexpected_failure_shows_a_generic_message(study_path: Path, monkeypatch):
    def boom(*_a, **_k):
        raise RuntimeError(f"/srv/videos/{MODEL_NAMES[0]}/p0.webm exploded")
    monkeypatch.setattr(VoteStore, "next_entry", boom)
    at = _consent(_app("r1"))
    assert at.error[0].value == ui.GENERIC_ERROR and not at.exception
    for blob in _all_protos(at._tree):
        assert not find_leaks(blob, MODEL_NAMES + ("/srv/videos", "exploded", "RuntimeError"))
