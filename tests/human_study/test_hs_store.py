"""Vote storage: idempotent writes, canonical choices, resume after restart, registration, export — on SQLite and
on a local PostgreSQL server (``db_url``); open enrolment, dropped items and second-tab submissions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hs_helpers import write_study

from human_study import store as store_mod
from human_study.config import load_study
from human_study.store import VOTE_COLUMNS, Enrolment, StoreError, VoteStore, load_votes

ALL_LEFT = {"visual_quality": "left", "overall": "left"}


@pytest.fixture
def study(tmp_path: Path, db_url: str):
    """The conftest study on each backend."""
    return load_study(write_study(tmp_path, extra={"storage": {"url": db_url}}))


@pytest.fixture
def sqlite_study(study_file: Path):
    return load_study(study_file)


def _db_path(study) -> str:
    return study.storage_url.removeprefix("sqlite:///")


def test_sqlite_pragmas_and_unique_constraint(sqlite_study):
    study = sqlite_study
    store = VoteStore.open(study)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    store.register_rater("r1")
    entry, _, _ = store.next_entry("r1")
    store.record_votes("r1", entry.item_id, ALL_LEFT)
    raw = sqlite3.connect(_db_path(study))
    with pytest.raises(sqlite3.IntegrityError):  # the database itself refuses duplicates
        raw.execute("INSERT INTO votes (vote_uuid, rater_id, item_id, criterion, choice, shown_left, created_at) "
                    "VALUES ('x', 'r1', ?, 'overall', 'A', 'A', 'now')", (entry.item_id,))
    raw.close()


def test_double_submit_is_idempotent_and_first_answer_wins(study):
    store = VoteStore.open(study)
    store.register_rater("r1")
    entry, done, total = store.next_entry("r1")
    assert done == 0 and total == 4 + 1 + 1
    first = store.record_votes("r1", entry.item_id, ALL_LEFT, dwell_ms=1234, submission_id="s1")
    again = store.record_votes("r1", entry.item_id, ALL_LEFT, dwell_ms=1300, submission_id="s1")
    other = store.record_votes("r1", entry.item_id, {"visual_quality": "right", "overall": "tie"})
    assert (first.inserted, again.inserted, other.inserted) == (2, 0, 0)
    assert again.already_recorded
    votes = store.votes_frame()
    assert len(votes) == 2
    shown_left = "A" if entry.left_is_a else "B"
    assert set(votes["choice"]) == {shown_left} and set(votes["chosen_side"]) == {"left"}
    assert set(votes["dwell_ms"]) == {1234}
    assert store.next_entry("r1")[1] == 1


def test_display_answers_map_to_canonical_choices(study):
    store = VoteStore.open(study)
    store.register_rater("r1")
    plan = store.plan("r1")
    a_left = next(e for e in plan if e.left_is_a and e.kind == "core")
    b_left = next(e for e in plan if not e.left_is_a and e.kind == "core")
    store.record_votes("r1", a_left.item_id, {"visual_quality": "left", "overall": "right"})
    store.record_votes("r1", b_left.item_id, {"visual_quality": "left", "overall": "tie"})
    v = store.votes_frame().set_index(["item", "criterion"])
    assert v.loc[(a_left.item_id, "visual_quality"), ["choice", "shown_left"]].tolist() == ["A", "A"]
    assert v.loc[(a_left.item_id, "overall"), ["choice", "chosen_side"]].tolist() == ["B", "right"]
    assert v.loc[(b_left.item_id, "visual_quality"), ["choice", "shown_left"]].tolist() == ["B", "B"]
    assert v.loc[(b_left.item_id, "overall"), ["choice", "chosen_side"]].tolist() == ["tie", "none"]


def test_incomplete_or_foreign_votes_are_refused(study):
    store = VoteStore.open(study)
    store.register_rater("r1")
    store.register_rater("r2")
    entry = store.plan("r1")[0]
    with pytest.raises(StoreError, match="missing"):
        store.record_votes("r1", entry.item_id, {"overall": "left"})
    with pytest.raises(StoreError, match="unknown answers"):
        store.record_votes("r1", entry.item_id, {"visual_quality": "A", "overall": "left"})
    not_mine = next(e.item_id for e in store.plan("r2") if e.item_id not in {x.item_id for x in store.plan("r1")})
    with pytest.raises(StoreError, match="not assigned"):
        store.record_votes("r1", not_mine, ALL_LEFT)
    assert store.votes_frame().empty


def test_resume_after_server_restart(study):
    store = VoteStore.open(study)
    store.register_rater("r1")
    for _ in range(3):
        entry, _, _ = store.next_entry("r1")
        store.record_votes("r1", entry.item_id, ALL_LEFT)
    expected = store.plan("r1")[3]
    store.engine.dispose()
    restarted = VoteStore.open(study)  # a new process would do the same
    assert restarted.secret == store.secret
    assert restarted.register_rater("r1") == 0  # idempotent
    entry, done, total = restarted.next_entry("r1")
    assert (entry, done, total) == (expected, 3, 6)


def test_registration_indices_tokens_and_study_identity(study, tmp_path: Path):
    store = VoteStore.open(study)
    assert [store.register_rater(t) for t in ("a", "b", "a", "c")] == [0, 1, 0, 2]
    with pytest.raises(StoreError):
        store.register_rater("no spaces allowed")
    other = load_study(write_study(tmp_path / "other", extra={"name": "another-study",
                                                              "storage": {"url": study.storage_url}}))
    with pytest.raises(StoreError, match="belongs to study"):
        VoteStore.open(other)


def test_consent_and_shown_at(study):
    store = VoteStore.open(study)
    store.register_rater("r1")
    assert not store.has_consented("r1")
    store.consent("r1")
    store.consent("r1")
    assert store.has_consented("r1")
    entry = store.plan("r1")[0]
    store.mark_shown("r1", entry.item_id)
    with store.read() as conn:
        shown = conn.execute(store_mod.select(store_mod.assignments.c.shown_at)
                             .where(store_mod.assignments.c.item_id == entry.item_id)).scalar()
    assert shown and shown.endswith("+00:00")


def test_generic_dialect_fallback_is_idempotent(study, monkeypatch):
    monkeypatch.setattr(store_mod, "INSERT_IGNORE", {})  # as for a dialect without ON CONFLICT support
    store = VoteStore.open(study)
    store.register_rater("r1")
    entry = store.plan("r1")[0]
    assert store.record_votes("r1", entry.item_id, ALL_LEFT).inserted == 2
    assert store.record_votes("r1", entry.item_id, ALL_LEFT).inserted == 0
    assert len(store.votes_frame()) == 2


def test_load_votes_columns_and_progress(study):
    store = VoteStore.open(study)
    store.register_rater("r1")
    store.register_rater("r2")
    entry = store.plan("r1")[0]
    store.record_votes("r1", entry.item_id, ALL_LEFT)
    votes = load_votes(study)
    assert list(votes.columns) == VOTE_COLUMNS and len(votes) == 2
    assert set(votes["model_a"]) <= {"ModelSecretAlpha", "gold:a"}
    progress = store.rater_progress().set_index("rater")
    assert progress.loc["r1", "answered"] == 1 and progress.loc["r2", "answered"] == 0
    assert progress.loc["r1", "assigned"] == 6


def test_postgres_schema_and_unique_constraint(postgres_url: str, tmp_path: Path):
    """The store really runs on the PostgreSQL server, and the database itself refuses a duplicate vote."""
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    study = load_study(write_study(tmp_path, extra={"storage": {"url": postgres_url}}))
    store = VoteStore.open(study)
    assert store.engine.dialect.name == "postgresql"
    store.register_rater("r1")
    entry, _, _ = store.next_entry("r1")
    store.record_votes("r1", entry.item_id, ALL_LEFT)
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(text("INSERT INTO votes (vote_uuid, rater_id, item_id, criterion, choice, shown_left, created_at) "
                          "VALUES ('x', 'r1', :item, 'overall', 'A', 'A', 'now')"), {"item": entry.item_id})
    assert len(store.votes_frame()) == 2


def test_replicas_opening_a_new_database_together(db_url: str, tmp_path: Path):
    """Several app replicas starting at once on one empty database: one schema, one secret pair, no error."""
    import concurrent.futures

    study = load_study(write_study(tmp_path, extra={"storage": {"url": db_url}}))
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        stores = list(pool.map(lambda _: VoteStore.open(study), range(6)))
    assert len({(s.secret, s.link_secret) for s in stores}) == 1
    assert stores[0].secret != stores[0].link_secret


def test_open_enrolment_assigns_ids_and_keeps_platform_ids(study):
    store = VoteStore.open(study)
    a = store.enrol_open(Enrolment("pid-1", "study-9", "sess-1"))
    b = store.enrol_open(Enrolment())
    c = store.enrol_open(Enrolment())
    assert len({a, b, c}) == 3 and all(study.token_allowed(r) and r.startswith("o") for r in (a, b, c))
    assert store.enrolment(a) == Enrolment("pid-1", "study-9", "sess-1")
    with pytest.raises(StoreError, match="already enrolled"):  # one rater per platform participant
        store.enrol_open(Enrolment("pid-1", "study-9", "sess-2"))
    progress = store.rater_progress().set_index("rater")
    assert list(progress["idx"]) == [0, 1, 2]  # the refused enrolment registered nobody
    assert progress.loc[a, "participant_id"] == "pid-1" and progress.loc[a, "enrolment"] == "open"
    # a signed-link rater arriving with platform ids keeps them (first arrival wins)
    store.register_rater("r1", Enrolment("pid-2", "study-9", "s"))
    store.register_rater("r1", Enrolment("pid-3", "study-9", "t"))
    assert store.enrolment("r1") == Enrolment("pid-2", "study-9", "s")
    assert store.enrolment("nobody") is None


def test_dropped_items_leave_the_plan_and_are_listed(study):
    store = VoteStore.open(study)
    store.register_rater("r1")
    first, done, total = store.next_entry("r1")
    store.drop_item("r1", first.item_id, "/srv/videos/x.webm: FileNotFoundError")
    store.drop_item("r1", first.item_id, "again")  # idempotent
    entry, done, total2 = store.next_entry("r1")
    assert entry != first and (done, total2) == (0, total - 1)
    store.register_rater("r2")
    assert store.next_entry("r2")[2] == total  # another rater's plan is untouched
    problems = store.problems_frame()
    assert len(problems) == 1 and problems.loc[0, "reason"].startswith("/srv/videos")
    assert problems.loc[0, "rater"] == "r1" and problems.loc[0, "model_a"] in study.model_names + ["gold:a"]
    assert store.rater_progress().set_index("rater").loc["r1", "dropped"] == 1


def test_second_tab_submission_is_told_apart_from_a_double_click(study):
    store = VoteStore.open(study)
    store.register_rater("r1")
    entry = store.plan("r1")[0]
    first = store.record_votes("r1", entry.item_id, ALL_LEFT, submission_id="tab1")
    double = store.record_votes("r1", entry.item_id, ALL_LEFT, submission_id="tab1")
    other_tab = store.record_votes("r1", entry.item_id, {"visual_quality": "right", "overall": "tie"},
                                   submission_id="tab2")
    assert (first.already_recorded, double.already_recorded, other_tab.already_recorded) == (False, True, True)
    assert double.by_this_submission and not other_tab.by_this_submission
    assert set(store.votes_frame()["chosen_side"]) == {"left"}  # the first answer is kept
