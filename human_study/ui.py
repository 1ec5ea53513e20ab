"""The Streamlit pages: consent, one comparison, done, admin.

Everything the rater's browser receives is neutral: prompt text, "Left video"/"Right video", video bytes (served by
Streamlit under a content hash), opaque item ids in widget keys, and the rater's own token. The next item is
recomputed from the database on every rerun, so a refresh or a server restart resumes where the rater stopped;
``st.session_state`` only holds per-tab conveniences (when the current item was first shown, for dwell time).
"""

from __future__ import annotations

import hmac
import os
import time
import uuid
from pathlib import Path

import streamlit as st

from .assignment import Item
from .blinding import mime_type
from .config import Study, load_study
from .stats.tables import AnalysisConfig, analyse
from .store import Entry, StoreError, VoteStore

ANSWER_CODES = ("left", "tie", "right")


@st.cache_resource(show_spinner=False)
def open_study(path: str) -> tuple[Study, VoteStore]:
    """The study and its store, shared by all sessions (the SQLAlchemy engine pool is thread-safe)."""
    study = load_study(path)
    return study, VoteStore.open(study)


def main(study_path: str | None) -> None:
    """Route to the page the URL and the database call for."""
    if not study_path:
        st.error("No study file: run `streamlit run human_study/app.py -- --study FILE`.")
        st.stop()
    study, store = open_study(str(Path(study_path).resolve()))
    st.set_page_config(page_title=study.title, layout="wide")
    if st.query_params.get("admin") is not None:
        admin_page(study, store)
        return
    token = st.query_params.get("rater", "")
    if not token:
        st.title(study.title)
        st.error("This link has no rater token. Please use the personal link you were given.")
        st.stop()
    try:
        store.register_rater(token)
    except StoreError:
        st.title(study.title)
        st.error("This rater link is not valid.")
        st.stop()
    if not store.has_consented(token):
        consent_page(study, store, token)
        return
    entry, done, total = store.next_entry(token)
    if entry is None:
        done_page(total)
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


def done_page(total: int) -> None:
    st.title("Thank you!")
    st.success(f"You have completed all {total} comparisons. You can close this page.")


def _prompt_text(study: Study, item: Item) -> str:
    if item.kind == "gold":
        gold = next(g for g in study.gold if g.id == item.gold_id)
        return gold.prompt
    return study.prompt_text(item.prompt_id)


def _video_paths(study: Study, item: Item) -> tuple[Path, Path]:
    """(video of A, video of B) — read on the server only."""
    if item.kind == "gold":
        gold = next(g for g in study.gold if g.id == item.gold_id)
        return gold.video_a, gold.video_b
    return study.model(item.model_a).videos[item.prompt_id], study.model(item.model_b).videos[item.prompt_id]


def item_page(study: Study, store: VoteStore, token: str, entry: Entry, done: int, total: int) -> None:
    """Two videos side by side and one question per criterion (nothing pre-selected), then submit."""
    item = store.item(entry.item_id)
    shown = st.session_state.setdefault("shown_at", {})
    if entry.item_id not in shown:
        shown[entry.item_id] = time.monotonic()
        store.mark_shown(token, entry.item_id)
    submission = st.session_state.setdefault("submission_ids", {}).setdefault(entry.item_id, uuid.uuid4().hex)

    st.progress(done / total, text=f"Comparison {done + 1} of {total}")
    flash = st.session_state.pop("flash_error", None)
    if flash:
        st.error(flash)
    st.markdown(f"**Prompt:** {_prompt_text(study, item)}")
    path_a, path_b = _video_paths(study, item)
    left, right = (path_a, path_b) if entry.left_is_a else (path_b, path_a)
    cols = st.columns(2, gap="medium")
    for col, path, side in ((cols[0], left, "Left"), (cols[1], right, "Right")):
        with col:
            st.markdown(f"**{side} video**")
            st.video(path.read_bytes(), format=mime_type(path), loop=True, autoplay=True, muted=True,
                     alt=f"{side} video")
    labels = study.options.labels()
    with st.form(key=f"form_{entry.item_id}"):
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
        store.record_votes(token, item_id, answers, dwell_ms=dwell_ms, submission_id=submission)
    except StoreError as exc:
        st.session_state["flash_error"] = f"Your answer could not be stored: {exc}"


def _admin_password(study: Study) -> str | None:
    return os.environ.get(study.admin_password_env) or None


def admin_page(study: Study, store: VoteStore) -> None:
    """Progress per rater, live results and CSV export, behind the password from the study's environment variable."""
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
    votes = store.votes_frame()
    st.subheader(f"Live results ({len(votes)} votes)")
    if len(votes):
        results = analyse(votes, AnalysisConfig.from_study(study, n_boot=200, bt_boot=50))
        st.dataframe(results.win_tie_loss, hide_index=True, key="admin_wtl")
        st.dataframe(results.raters, hide_index=True, key="admin_raters")
    st.download_button("Download votes (CSV)", votes.to_csv(index=False), file_name=f"{study.name}-votes.csv",
                       mime="text/csv", key="admin_download", on_click="ignore")
