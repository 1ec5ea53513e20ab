"""The Streamlit pages: consent, one comparison, done, admin.

Everything the rater's browser receives is neutral: prompt text, "Left video"/"Right video", video bytes (served by
Streamlit under a content hash), opaque item ids in widget keys, and the rater's own id and link signature. The
next item is recomputed from the database on every rerun, so a refresh or a server restart resumes where the rater
stopped; ``st.session_state`` only holds per-tab conveniences (when the current item was first shown, for dwell).

Identity comes from a signed link on every load (:mod:`human_study.links`). Nothing raises to the browser: a page
that fails shows a generic message and logs the details on the server (``client.showErrorDetails`` is off as
well); a video that cannot be read takes its item out of that rater's plan, listed on the admin page.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
import uuid
from pathlib import Path

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from .assignment import Item
from .blinding import mime_type
from .config import Study, StudyError, load_study
from .links import identify, link_params
from .player import player_html
from .stats.tables import AnalysisConfig, analyse
from .store import Entry, StoreError, VoteStore

LOG = logging.getLogger("human_study.app")
ANSWER_CODES = ("left", "tie", "right")

GENERIC_ERROR = ("Something went wrong on our side. Please reload the page in a minute; if it happens again, "
                 "contact the study team.")
UNAVAILABLE = "This study is not available right now. Please try again later."
SKIPPED = "One comparison could not be loaded and was skipped; it does not count against you."
ANSWERED_ELSEWHERE = ("That comparison had already been answered in another tab or window; the earlier answer is "
                      "kept. Here is your next comparison.")
ALREADY_ENROLLED = ("You have already started this study. Please continue in the browser tab of your first visit: "
                    "its address resumes where you stopped.")


class VideoUnavailable(Exception):
    """An item's video cannot be shown (missing, unreadable, unsupported, or no longer in the study file)."""


@st.cache_resource(show_spinner=False)
def open_study(path: str) -> tuple[Study, VoteStore]:
    """The study and its store, shared by all sessions (the SQLAlchemy engine pool is thread-safe)."""
    study = load_study(path)
    return study, VoteStore.open(study)


def _debug() -> bool:
    return bool(os.environ.get("HUMAN_STUDY_DEBUG"))


def main(study_path: str | None) -> None:
    """Route to the page the URL and the database call for; never show a traceback or a server path to a rater."""
    if not _debug():
        st.set_option("client.showErrorDetails", "none")
    try:
        _route(study_path)
    except Exception:  # st.stop()/st.rerun() are BaseExceptions and pass through
        if _debug():
            raise
        LOG.exception("human study page failed")
        st.error(GENERIC_ERROR)


def _route(study_path: str | None) -> None:
    if not study_path:
        st.error("No study file: run `python -m human_study serve --study FILE`.")
        st.stop()
    try:
        study, store = open_study(str(Path(study_path).resolve()))
    except (StudyError, StoreError, SQLAlchemyError, OSError):
        LOG.exception("cannot open the study %s", study_path)
        st.error(UNAVAILABLE)
        st.stop()
    st.set_page_config(page_title=study.title, layout="wide")
    if st.query_params.get("admin") is not None:
        admin_page(study, store)
        return
    who = identify(st.query_params.get_all, study, store.link_secret)
    if who.error:
        st.title(study.title)
        st.error(who.error)
        st.stop()
    if who.enrol:  # open enrolment: the server picks the id and puts the rater's signed link in the address bar
        try:
            rater = store.enrol_open(who.enrolment)
        except StoreError:
            st.title(study.title)
            st.error(ALREADY_ENROLLED)
            st.stop()
        st.query_params.from_dict(link_params(store.link_secret, study.name, rater))
        st.rerun()
    token = who.rater
    store.register_rater(token, who.enrolment)
    if not store.has_consented(token):
        consent_page(study, store, token)
        return
    entry, done, total = store.next_entry(token)
    if entry is None:
        done_page(study, total)
        return
    item_page(study, store, token, entry, done, total)


def consent_page(study: Study, store: VoteStore, token: str) -> None:
    """Instructions and consent; the consent is stored in the database (asked once per rater)."""
    st.title(study.title)
    st.markdown("### Instructions")
    st.markdown(study.instructions)
    st.markdown("### Consent")
    st.markdown(study.consent)
    agreed = st.checkbox("I have read the above and agree to take part.", key="consent_box")
    if st.button("Start", key="start", type="primary"):
        if agreed:
            store.consent(token)
            st.rerun()
        else:
            st.error("Please tick the consent box to start.")


def redirect_script(url: str, delay_ms: int = 1500) -> str:
    """A script that sends the browser to ``url`` (from the study file) after ``delay_ms``."""
    target = json.dumps(url).replace("</", "<\\/")  # a JSON string cannot end the <script> element
    return f"<script>setTimeout(function () {{ window.location.replace({target}); }}, {int(delay_ms)});</script>"


def done_page(study: Study, total: int) -> None:
    """Thanks, the completion code, and the redirect to the crowd platform when the study file names one."""
    st.title("Thank you!")
    code, url = study.completion.code, study.completion.url
    after = "You will be taken back to the study platform." if url else "You can close this page."
    st.success(f"You have completed all {total} comparisons. {after}")
    if code:
        st.markdown("Your completion code:")
        st.code(code, language=None)
    if url:
        st.link_button("Back to the study platform", url, type="primary")
        st.html(redirect_script(url), unsafe_allow_javascript=True)


def _pair(study: Study, item: Item) -> tuple[str, Path, Path]:
    """(prompt text, video of A, video of B) — paths are read on the server only."""
    try:
        if item.kind == "gold":
            gold = next(g for g in study.gold if g.id == item.gold_id)
            return gold.prompt, gold.video_a, gold.video_b
        return (study.prompt_text(item.prompt_id), study.model(item.model_a).videos[item.prompt_id],
                study.model(item.model_b).videos[item.prompt_id])
    except (KeyError, StopIteration) as exc:  # the study file no longer has this model, prompt or gold item
        raise VideoUnavailable(f"item no longer in the study file ({item.kind} {item.prompt_id!r}: {exc!r})")


def _read_video(path: Path) -> tuple[bytes, str]:
    try:
        mime = mime_type(path)
        data = path.read_bytes()
    except (OSError, ValueError) as exc:
        raise VideoUnavailable(f"{path}: {type(exc).__name__}: {exc}") from exc
    if not data:
        raise VideoUnavailable(f"{path}: empty file")
    return data, mime


def media_url(data: bytes, mime: str, slot: str) -> str:
    """A content-hashed Streamlit media URL for ``data`` (what ``st.video`` uses; no file name in it).

    The file stays registered for this session while each run adds it again (Streamlit drops media that no run
    of any session references).
    """
    from streamlit import config, runtime

    url = runtime.get_instance().media_file_mgr.add(data, mime, f"human_study.player.{slot}")
    base = str(config.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}{url}" if base else url


def item_page(study: Study, store: VoteStore, token: str, entry: Entry, done: int, total: int) -> None:
    """The prompt, the two-video player beside one question per criterion (nothing pre-selected), then submit."""
    item = store.item(entry.item_id)
    try:
        prompt, path_a, path_b = _pair(study, item)
        (data_a, mime_a), (data_b, mime_b) = _read_video(path_a), _read_video(path_b)
    except VideoUnavailable as exc:
        LOG.warning("rater %s: item %s taken out of the plan: %s", token, entry.item_id, exc)
        store.drop_item(token, entry.item_id, str(exc))
        st.session_state["flash_info"] = SKIPPED
        st.rerun()
    shown = st.session_state.setdefault("shown_at", {})
    if entry.item_id not in shown:
        shown[entry.item_id] = time.monotonic()
        store.mark_shown(token, entry.item_id)
    submission = st.session_state.setdefault("submission_ids", {}).setdefault(entry.item_id, uuid.uuid4().hex)

    st.progress(done / total, text=f"Comparison {done + 1} of {total}")
    st.markdown(f"**Prompt:** {prompt}")
    (data_l, mime_l), (data_r, mime_r) = ((data_a, mime_a), (data_b, mime_b)) if entry.left_is_a \
        else ((data_b, mime_b), (data_a, mime_a))
    videos, questions = st.columns([3, 2], gap="medium")
    with videos:
        st.iframe(player_html(media_url(data_l, mime_l, "left"), media_url(data_r, mime_r, "right")),
                  height="content", alt="Left and right video")
    with questions:
        messages = st.container()  # always present, so the elements after it keep their place across reruns
        with messages:
            for kind, show in (("flash_info", st.info), ("flash_error", st.error)):
                text = st.session_state.pop(kind, None)
                if text:
                    show(text)
        labels = study.options.labels()
        with st.form(key=f"form_{entry.item_id}", border=False):
            for crit in study.criteria:
                st.radio(f"**{crit.label}** — {crit.question}", ANSWER_CODES, index=None, horizontal=True,
                         format_func=labels.__getitem__, key=f"ans_{entry.item_id}_{crit.id}")
            st.form_submit_button("Submit", type="primary", on_click=_submit,
                                  args=(study, store, token, entry.item_id, submission))


def _submit(study: Study, store: VoteStore, token: str, item_id: str, submission: str) -> None:
    """Form callback: validate, then store all criteria at once (idempotent by (rater, item, criterion))."""
    answers = {c.id: st.session_state.get(f"ans_{item_id}_{c.id}") for c in study.criteria}
    missing = [c.label for c in study.criteria if answers[c.id] is None]
    if missing:
        st.session_state["flash_error"] = "Please answer every question: " + ", ".join(missing) + "."
        return
    started = st.session_state.get("shown_at", {}).get(item_id)
    dwell_ms = int((time.monotonic() - started) * 1000) if started is not None else None
    if dwell_ms is not None and dwell_ms < study.min_view_seconds * 1000:
        st.session_state["flash_error"] = "Please watch both videos fully before answering."
        return
    try:
        result = store.record_votes(token, item_id, answers, dwell_ms=dwell_ms, submission_id=submission)
    except Exception:  # noqa: BLE001 - a callback's exception would reach the browser; log it, tell the rater
        LOG.exception("rater %s: storing the answers for item %s failed", token, item_id)
        st.session_state["flash_error"] = "Your answer could not be stored. Please submit again."
        return
    if result.already_recorded and not result.by_this_submission:
        st.session_state["flash_info"] = ANSWERED_ELSEWHERE


def _admin_password(study: Study) -> str | None:
    return os.environ.get(study.admin_password_env) or None


def admin_page(study: Study, store: VoteStore) -> None:
    """Progress per rater, problems, live results and CSV export, behind the password from the study's
    environment variable."""
    st.title(f"Admin — {study.title}")
    password = _admin_password(study)
    if password is None:
        st.error(f"The admin page is disabled: set the environment variable {study.admin_password_env}.")
        st.stop()
    if not st.session_state.get("admin_ok"):
        given = st.text_input("Password", type="password", key="admin_pw")
        if st.button("Log in", key="admin_login"):
            if hmac.compare_digest(given.encode(), password.encode()):
                st.session_state["admin_ok"] = True
                st.rerun()
            st.error("Wrong password.")
        st.stop()
    progress = store.rater_progress()
    st.subheader("Progress per rater")
    st.dataframe(progress, hide_index=True, key="admin_progress")
    problems = store.problems_frame()
    if len(problems):
        st.subheader(f"Problems ({len(problems)} items taken out of a rater's plan)")
        st.warning("These videos could not be shown; the raters went on without them. Fix the files (see "
                   "`python -m human_study validate`); raters who already met a problem keep going without it.")
        st.dataframe(problems, hide_index=True, key="admin_problems")
    votes = store.votes_frame()
    st.subheader(f"Live results ({len(votes)} votes)")
    if len(votes):
        results = analyse(votes, AnalysisConfig.from_study(study, n_boot=200, bt_boot=50))
        st.dataframe(results.win_tie_loss, hide_index=True, key="admin_wtl")
        st.dataframe(results.raters, hide_index=True, key="admin_raters")
    st.download_button("Download votes (CSV)", votes.to_csv(index=False), file_name=f"{study.name}-votes.csv",
                       mime="text/csv", key="admin_download", on_click="ignore")
