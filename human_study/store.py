"""Concurrency-safe, idempotent vote storage on SQLAlchemy (SQLite by default, any SQLAlchemy URL).

SQLite (the embedded default): WAL journal, ``busy_timeout`` 30 s, and ``BEGIN IMMEDIATE`` for every write
transaction, so read-then-write sequences (registering a rater, checking what is already voted then inserting)
never fail with "database is locked" and never interleave. PostgreSQL (``postgresql+psycopg://...``, for several app
replicas on one database): the rater counter row and the (rater, item) assignment row are locked with
``SELECT ... FOR UPDATE``; votes use ``ON CONFLICT DO NOTHING``; creating the schema takes a transaction-level
advisory lock, so replicas starting together do not race on ``CREATE TABLE``.

Besides votes the database holds the study's secrets (``meta``: the item-id secret and the key that signs rater
links, so every replica verifies the same links), the crowd-platform ids of enrolled raters (``participants``) and
items taken out of a rater's plan because their video could not be read (``problems``, listed on the admin page).

Every vote row is unique per ``(rater, item, criterion)``; a repeated submission (double click, rerun, retry after
a network error) inserts nothing and loses nothing. The displayed side is read from the stored assignment, never from
the browser, and stored with every vote (``shown_left``) next to the canonical choice (``A``/``tie``/``B``).

Readers for ``reports``: :func:`load_votes` (a pandas DataFrame, see :data:`VOTE_COLUMNS`).
"""

from __future__ import annotations

import contextlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator

import pandas as pd
from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError

from . import __version__
from .assignment import Item, core_items, gold_items, rater_plan
from .blinding import new_secret
from .config import Study

metadata = MetaData()

meta = Table("meta", metadata, Column("key", String(64), primary_key=True), Column("value", Text, nullable=False))

items = Table(
    "items",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("prompt_id", String(256), nullable=False),
    Column("model_a", String(256), nullable=False),
    Column("model_b", String(256), nullable=False),
    Column("gold_id", String(256)),
    Column("answer", String(8)),
    Column("criteria", Text, nullable=False, default=""),
    Column("duplicate_of", String(64)),
    Column("seq", Integer, nullable=False, default=-1),
)

raters = Table(
    "raters",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("idx", Integer, nullable=False, unique=True),
    Column("created_at", String(40), nullable=False),
    Column("consented_at", String(40)),
)

assignments = Table(
    "assignments",
    metadata,
    Column("rater_id", String(64), nullable=False),
    Column("item_id", String(64), nullable=False),
    Column("position", Integer, nullable=False),
    Column("left_is_a", Boolean, nullable=False),
    Column("shown_at", String(40)),
    UniqueConstraint("rater_id", "item_id", name="uq_assignment_item"),
    UniqueConstraint("rater_id", "position", name="uq_assignment_position"),
)

votes = Table(
    "votes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("vote_uuid", String(64), nullable=False, unique=True),
    Column("rater_id", String(64), nullable=False),
    Column("item_id", String(64), nullable=False),
    Column("criterion", String(64), nullable=False),
    Column("choice", String(8), nullable=False),
    Column("shown_left", String(1), nullable=False),
    Column("dwell_ms", Integer),
    Column("created_at", String(40), nullable=False),
    Column("app_version", String(32)),
    UniqueConstraint("rater_id", "item_id", "criterion", name="uq_vote"),
)

participants = Table(
    "participants",
    metadata,
    Column("rater_id", String(64), primary_key=True),
    Column("participant_id", String(128), unique=True),  # one rater per platform participant (NULLs may repeat)
    Column("platform_study_id", String(128)),
    Column("platform_session_id", String(128)),
    Column("enrolment", String(16), nullable=False),
    Column("created_at", String(40), nullable=False),
)

problems = Table(
    "problems",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rater_id", String(64), nullable=False),
    Column("item_id", String(64), nullable=False),
    Column("reason", Text, nullable=False),  # may name a server path: shown on the admin page only
    Column("created_at", String(40), nullable=False),
    UniqueConstraint("rater_id", "item_id", name="uq_problem"),
)

#: Display answer -> how to get the canonical choice from the displayed left model (``A`` or ``B``).
DISPLAY_ANSWERS: dict[str, Callable[[str], str]] = {
    "left": lambda shown_left: shown_left,
    "right": lambda shown_left: "B" if shown_left == "A" else "A",
    "tie": lambda shown_left: "tie",
}

#: Columns of :func:`load_votes` / ``python -m human_study export``.
VOTE_COLUMNS = [
    "vote_uuid", "rater", "item", "kind", "prompt", "model_a", "model_b", "criterion", "choice", "shown_left",
    "chosen_side", "dwell_ms", "created_at", "gold_answer", "gold_criteria", "duplicate_of", "position", "app_version",
]


def utc_now() -> str:
    """ISO-8601 UTC timestamp with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# ------------------------------------------------------------------------------------------------------------ engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001 - DB-API connection
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        readonly = conn.get_execution_options().get("readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


#: Per-dialect engine set-up.
ENGINE_SETUP: dict[str, Callable[[Engine], None]] = {"sqlite": _configure_sqlite}

#: How long :meth:`VoteStore.open` retries a new SQLite file that another process is creating at the same moment.
OPEN_RETRY_S = 30.0

#: Per-dialect statement run first in the schema-creating transaction: serialises replicas that start together
#: (SQLite needs none: ``BEGIN IMMEDIATE`` already holds the write lock).
SCHEMA_LOCK: dict[str, str] = {"postgresql": "SELECT pg_advisory_xact_lock(4818211805)"}


def safe_url(url: str) -> str:
    """``url`` with any password masked (for messages)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable database URL>"


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the dialect's concurrency set-up (:data:`ENGINE_SETUP`)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"not a database URL: {url!r} (e.g. sqlite:///votes.sqlite or "
                         "postgresql+psycopg://user@host/db)") from exc
    connect_args = {"timeout": 30} if parsed.get_backend_name() == "sqlite" else {}
    try:
        engine = create_engine(url, connect_args=connect_args, pool_pre_ping=parsed.get_backend_name() != "sqlite")
    except ModuleNotFoundError as exc:  # e.g. psycopg missing for postgresql+psycopg://
        raise StoreError(f"the database driver for {safe_url(url)} is not installed ({exc.name}); for PostgreSQL: "
                         "pip install 'rehyat[postgres]' (psycopg)") from exc
    setup = ENGINE_SETUP.get(engine.dialect.name)
    if setup:
        setup(engine)
    return engine


#: Insert statements that skip rows violating a unique constraint, by dialect.
INSERT_IGNORE = {
    "sqlite": lambda table: sqlite.insert(table).on_conflict_do_nothing(),
    "postgresql": lambda table: postgresql.insert(table).on_conflict_do_nothing(),
}


def insert_ignore(conn: Connection, table: Table, rows: list[dict]) -> None:
    """Insert ``rows``, silently skipping those that already exist (by any unique constraint)."""
    if not rows:
        return
    builder = INSERT_IGNORE.get(conn.dialect.name)
    if builder is not None:
        conn.execute(builder(table), rows)
        return
    for row in rows:  # generic fallback: one savepoint per row
        try:
            with conn.begin_nested():
                conn.execute(insert(table), [row])
        except IntegrityError:
            pass


# ------------------------------------------------------------------------------------------------------------- store


class StoreError(RuntimeError):
    """A request the store refuses (unknown rater or item, incomplete vote, database of another study)."""


@dataclass(frozen=True)
class Entry:
    """One row of a rater's plan with what the app needs to show it."""

    position: int
    item_id: str
    left_is_a: bool
    kind: str
    prompt_id: str


@dataclass(frozen=True)
class VoteResult:
    """What :meth:`VoteStore.record_votes` stored: ``inserted`` rows; ``already_recorded`` when the item had all
    its votes before; ``by_this_submission`` when those earlier votes came from the same submission (a double
    click or retry) rather than from another tab or window."""

    inserted: int
    already_recorded: bool
    by_this_submission: bool = True


@dataclass(frozen=True)
class Enrolment:
    """Crowd-platform parameters of a rater's link (any may be missing)."""

    participant_id: str | None = None
    study_id: str | None = None
    session_id: str | None = None


class VoteStore:
    """The votes of one study in one database."""

    def __init__(self, engine: Engine, study: Study):
        self.engine = engine
        self.study = study
        self.secret, self.link_secret = self._init_study()

    @classmethod
    def open(cls, study: Study, url: str | None = None) -> "VoteStore":
        """Open (creating if needed) the study's database (``url`` defaults to the study's storage URL).

        A database that cannot be reached or created raises :class:`StoreError` naming the URL (password masked).
        Several processes creating one new SQLite file at once can get "database is locked" without SQLite's
        busy handler waiting (switching the new file to WAL needs an exclusive lock), so opening retries that
        for up to :data:`OPEN_RETRY_S` seconds.
        """
        url = url or study.storage_url
        engine = make_engine(url)
        deadline = time.monotonic() + OPEN_RETRY_S
        while True:
            try:
                return cls(engine, study)
            except OperationalError as exc:
                if engine.dialect.name == "sqlite" and "locked" in str(exc.orig) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                error = exc
            except SQLAlchemyError as exc:
                error = exc
            engine.dispose()
            reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
            raise StoreError(f"cannot open the vote database {safe_url(url)}: {reason}") from error

    # transactions -----------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite)."""
        with self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (deferred on SQLite: readers never wait for writers under WAL)."""
        with self.engine.connect() as conn:
            conn.execution_options(readonly=True)
            with conn.begin():
                yield conn

    # study ------------------------------------------------------------------------------------------------------
    def _init_study(self) -> tuple[str, str]:
        """Create the schema and the study's meta rows (idempotent); returns (item secret, link secret)."""
        with self.write() as conn:
            lock = SCHEMA_LOCK.get(conn.dialect.name)
            if lock:
                conn.exec_driver_sql(lock)
            metadata.create_all(conn)
            insert_ignore(conn, meta, [{"key": "secret", "value": new_secret()},
                                       {"key": "link_secret", "value": new_secret()},
                                       {"key": "study", "value": self.study.name},
                                       {"key": "rater_count", "value": "0"}])
            found = dict(conn.execute(select(meta.c.key, meta.c.value)).all())
            if found["study"] != self.study.name:
                raise StoreError(f"database belongs to study {found['study']!r}, not {self.study.name!r}")
            secret = found["secret"]
            rows = [_item_row(it) for it in core_items(self.study, secret) + gold_items(self.study, secret)]
            insert_ignore(conn, items, rows)
        return secret, found["link_secret"]

    # raters -----------------------------------------------------------------------------------------------------
    def register_rater(self, rater: str, enrolment: Enrolment | None = None) -> int:
        """Register ``rater`` (idempotent) and store its plan; returns the rater's registration index.

        The caller has checked the rater's identity (a signed link, or an id this store assigned by
        :meth:`enrol_open`); ``enrolment`` holds crowd-platform parameters to keep with the rater (first time only).
        """
        if not self.study.token_allowed(rater):
            raise StoreError("unknown or malformed rater token")
        with self.read() as conn:  # the common case (every rerun of the app) needs no write lock
            idx = conn.execute(select(raters.c.idx).where(raters.c.id == rater)).scalar_one_or_none()
        if idx is not None:
            if enrolment is not None and any(vars(enrolment).values()):
                self._record_enrolment(rater, enrolment, "link")
            return idx
        with self.write() as conn:
            idx = self._register(conn, rater)
        if enrolment is not None and any(vars(enrolment).values()):
            self._record_enrolment(rater, enrolment, "link")
        return idx

    def _register(self, conn: Connection, rater: str) -> int:
        """Insert the rater and its plan inside the caller's write transaction (counter row locked first)."""
        counter = select(meta.c.value).where(meta.c.key == "rater_count").with_for_update()
        count = int(conn.execute(counter).scalar_one())  # locked first: registrations are serialised
        idx = conn.execute(select(raters.c.idx).where(raters.c.id == rater)).scalar_one_or_none()
        if idx is not None:
            return idx
        idx = count
        conn.execute(update(meta).where(meta.c.key == "rater_count").values(value=str(idx + 1)))
        conn.execute(insert(raters), [{"id": rater, "idx": idx, "created_at": utc_now()}])
        plan, repeats = rater_plan(self.study, self.secret, rater, idx)
        insert_ignore(conn, items, [_item_row(it) for it in repeats])
        conn.execute(insert(assignments), [
            {"rater_id": rater, "item_id": e.item_id, "position": e.position, "left_is_a": e.left_is_a}
            for e in plan
        ])
        return idx

    def enrol_open(self, enrolment: Enrolment) -> str:
        """Open enrolment: register a new rater under a server-made id and return the id.

        A platform participant id enrols once: a second arrival with the same id raises :class:`StoreError`
        (the participant continues from the signed link of the first visit), so nobody can take over another
        participant's session by typing their id into a URL.
        """
        rater = "o" + secrets.token_hex(12)
        with self.write() as conn:
            self._register(conn, rater)  # locks the counter row first: enrolments are serialised
            if enrolment.participant_id is not None:
                taken = conn.execute(select(participants.c.rater_id)
                                     .where(participants.c.participant_id == enrolment.participant_id)).first()
                if taken is not None:
                    raise StoreError("participant already enrolled")  # rolls the registration back
            conn.execute(insert(participants), [_participant_row(rater, enrolment, "open")])
        return rater

    def _record_enrolment(self, rater: str, enrolment: Enrolment, kind: str) -> None:
        """Keep the platform parameters a signed-link rater arrived with (first arrival wins; never an error)."""
        with self.write() as conn:
            known = conn.execute(select(participants.c.rater_id).where(participants.c.rater_id == rater)).first()
            taken = enrolment.participant_id is not None and conn.execute(
                select(participants.c.rater_id).where(participants.c.participant_id == enrolment.participant_id)
            ).first() is not None
            if known is None:
                row = _participant_row(rater, enrolment, kind)
                if taken:  # the same participant id on two links: keep the link, not a second claim on the id
                    row["participant_id"] = None
                insert_ignore(conn, participants, [row])

    def enrolment(self, rater: str) -> Enrolment | None:
        """The platform parameters stored with ``rater`` (``None`` when it arrived without any)."""
        with self.read() as conn:
            row = conn.execute(select(participants).where(participants.c.rater_id == rater)).mappings().first()
        if row is None:
            return None
        return Enrolment(row["participant_id"], row["platform_study_id"], row["platform_session_id"])

    def consent(self, rater: str) -> None:
        """Record the rater's consent (first time only)."""
        with self.write() as conn:
            conn.execute(update(raters).where(raters.c.id == rater, raters.c.consented_at.is_(None))
                         .values(consented_at=utc_now()))

    def has_consented(self, rater: str) -> bool:
        with self.read() as conn:
            return conn.execute(select(raters.c.consented_at).where(raters.c.id == rater)).scalar() is not None

    # plan and progress -----------------------------------------------------------------------------------------
    def plan(self, rater: str) -> list[Entry]:
        """The rater's plan in display order."""
        q = (select(assignments.c.position, assignments.c.item_id, assignments.c.left_is_a, items.c.kind,
                    items.c.prompt_id)
             .join(items, items.c.id == assignments.c.item_id)
             .where(assignments.c.rater_id == rater).order_by(assignments.c.position))
        with self.read() as conn:
            return [Entry(*row) for row in conn.execute(q).all()]

    def answered(self, rater: str) -> set[str]:
        """Items for which the rater's votes are stored."""
        with self.read() as conn:
            return set(conn.execute(select(votes.c.item_id).where(votes.c.rater_id == rater).distinct()).scalars())

    def dropped(self, rater: str) -> set[str]:
        """Items taken out of the rater's plan (their video could not be read, :meth:`drop_item`)."""
        with self.read() as conn:
            return set(conn.execute(select(problems.c.item_id).where(problems.c.rater_id == rater)).scalars())

    def next_entry(self, rater: str) -> tuple[Entry | None, int, int]:
        """``(next unanswered entry or None, answered count, plan length)`` — recomputed from the database.

        Dropped items (:meth:`drop_item`) count neither as answered nor towards the plan length, unless they
        were answered before they were dropped.
        """
        done = self.answered(rater)
        dropped = self.dropped(rater) - done
        plan = [e for e in self.plan(rater) if e.item_id not in dropped]
        pending = [e for e in plan if e.item_id not in done]
        return (pending[0] if pending else None), len(plan) - len(pending), len(plan)

    def drop_item(self, rater: str, item_id: str, reason: str) -> None:
        """Take an item out of one rater's plan (idempotent) and keep the reason for the admin page."""
        with self.write() as conn:
            insert_ignore(conn, problems, [{"rater_id": rater, "item_id": item_id, "reason": reason,
                                            "created_at": utc_now()}])

    def problems_frame(self) -> pd.DataFrame:
        """Dropped items with rater, prompt, models and reason (admin only: reasons may name server paths)."""
        q = (select(problems.c.created_at, problems.c.rater_id.label("rater"), problems.c.item_id.label("item"),
                    items.c.kind, items.c.prompt_id.label("prompt"), items.c.model_a, items.c.model_b,
                    problems.c.reason)
             .outerjoin(items, items.c.id == problems.c.item_id).order_by(problems.c.id))
        with self.read() as conn:
            return pd.DataFrame(conn.execute(q).mappings().all(),
                                columns=["created_at", "rater", "item", "kind", "prompt", "model_a", "model_b",
                                         "reason"])

    def item(self, item_id: str) -> Item:
        with self.read() as conn:
            row = conn.execute(select(items).where(items.c.id == item_id)).mappings().one_or_none()
        if row is None:
            raise StoreError("unknown item")
        return Item(row["id"], row["kind"], row["prompt_id"], row["model_a"], row["model_b"], row["gold_id"],
                    row["answer"], tuple(c for c in row["criteria"].split(",") if c), row["duplicate_of"], row["seq"])

    def mark_shown(self, rater: str, item_id: str) -> None:
        """Stamp the first time an item was shown to the rater."""
        with self.write() as conn:
            conn.execute(update(assignments)
                         .where(assignments.c.rater_id == rater, assignments.c.item_id == item_id,
                                assignments.c.shown_at.is_(None))
                         .values(shown_at=utc_now()))

    # votes ------------------------------------------------------------------------------------------------------
    def record_votes(self, rater: str, item_id: str, answers: dict[str, str], dwell_ms: int | None = None,
                     submission_id: str | None = None) -> VoteResult:
        """Store one answer per criterion for an item (``answers[criterion]`` in ``left``/``tie``/``right``).

        Idempotent: criteria already stored for (rater, item) are left as they are. All criteria are written in
        one transaction, so an item is never half-answered. ``submission_id`` makes the vote uuids deterministic
        for client retries.
        """
        missing = set(self.study.criterion_ids) - set(answers)
        extra = set(answers) - set(self.study.criterion_ids)
        if missing or extra:
            raise StoreError(f"answers must cover exactly the criteria (missing {sorted(missing)}, extra {sorted(extra)})")
        bad = {v for v in answers.values() if v not in DISPLAY_ANSWERS}
        if bad:
            raise StoreError(f"unknown answers {sorted(bad)}")
        submission_id = submission_id or uuid.uuid4().hex
        with self.write() as conn:
            left_is_a = conn.execute(  # row lock on servers: one submission per (rater, item) at a time
                select(assignments.c.left_is_a)
                .where(assignments.c.rater_id == rater, assignments.c.item_id == item_id).with_for_update()
            ).scalar_one_or_none()
            if left_is_a is None:
                raise StoreError("item is not assigned to this rater")
            stored = set(conn.execute(select(votes.c.criterion)
                                      .where(votes.c.rater_id == rater, votes.c.item_id == item_id)).scalars())
            shown_left = "A" if left_is_a else "B"
            now = utc_now()
            uuids = {crit: str(uuid.uuid5(uuid.NAMESPACE_URL, f"{submission_id}/{rater}/{item_id}/{crit}"))
                     for crit in answers}
            rows = [
                {"vote_uuid": uuids[crit], "rater_id": rater, "item_id": item_id, "criterion": crit,
                 "choice": DISPLAY_ANSWERS[ans](shown_left), "shown_left": shown_left, "dwell_ms": dwell_ms,
                 "created_at": now, "app_version": __version__}
                for crit, ans in answers.items() if crit not in stored
            ]
            insert_ignore(conn, votes, rows)
            if rows:
                return VoteResult(len(rows), already_recorded=False)
            mine = set(conn.execute(select(votes.c.vote_uuid).where(votes.c.vote_uuid.in_(list(uuids.values()))))
                       .scalars())
        return VoteResult(0, already_recorded=True, by_this_submission=mine == set(uuids.values()))

    # views ------------------------------------------------------------------------------------------------------
    def rater_progress(self) -> pd.DataFrame:
        """Per rater: registration index, consent time, plan length, items answered and dropped, last vote time,
        and the crowd-platform ids it enrolled with."""
        answered = (select(votes.c.rater_id, func.count(func.distinct(votes.c.item_id)).label("answered"),
                           func.max(votes.c.created_at).label("last_vote_at"))
                    .group_by(votes.c.rater_id).subquery())
        assigned = (select(assignments.c.rater_id, func.count().label("assigned"))
                    .group_by(assignments.c.rater_id).subquery())
        dropped = select(problems.c.rater_id, func.count().label("dropped")).group_by(problems.c.rater_id).subquery()
        q = (select(raters.c.id.label("rater"), raters.c.idx, raters.c.created_at, raters.c.consented_at,
                    assigned.c.assigned, func.coalesce(answered.c.answered, 0).label("answered"),
                    func.coalesce(dropped.c.dropped, 0).label("dropped"), answered.c.last_vote_at,
                    participants.c.enrolment, participants.c.participant_id, participants.c.platform_study_id,
                    participants.c.platform_session_id)
             .outerjoin(assigned, assigned.c.rater_id == raters.c.id)
             .outerjoin(answered, answered.c.rater_id == raters.c.id)
             .outerjoin(dropped, dropped.c.rater_id == raters.c.id)
             .outerjoin(participants, participants.c.rater_id == raters.c.id)
             .order_by(raters.c.idx))
        with self.read() as conn:
            return pd.DataFrame(conn.execute(q).mappings().all(),
                                columns=["rater", "idx", "created_at", "consented_at", "assigned", "answered",
                                         "dropped", "last_vote_at", "enrolment", "participant_id",
                                         "platform_study_id", "platform_session_id"])

    def votes_frame(self) -> pd.DataFrame:
        """All votes joined with their items (model names included: for analysis, never for the browser)."""
        q = (select(votes.c.vote_uuid, votes.c.rater_id.label("rater"), votes.c.item_id.label("item"), items.c.kind,
                    items.c.prompt_id.label("prompt"), items.c.model_a, items.c.model_b, votes.c.criterion,
                    votes.c.choice, votes.c.shown_left, votes.c.dwell_ms, votes.c.created_at,
                    items.c.answer.label("gold_answer"), items.c.criteria.label("gold_criteria"),
                    items.c.duplicate_of, assignments.c.position, votes.c.app_version)
             .join(items, items.c.id == votes.c.item_id)
             .join(assignments, (assignments.c.item_id == votes.c.item_id)
                   & (assignments.c.rater_id == votes.c.rater_id))
             .order_by(votes.c.id))
        with self.read() as conn:
            df = pd.DataFrame(conn.execute(q).mappings().all())
        if df.empty:
            return pd.DataFrame(columns=VOTE_COLUMNS)
        df["chosen_side"] = [_chosen_side(c, s) for c, s in zip(df["choice"], df["shown_left"])]
        return df[VOTE_COLUMNS]


def _chosen_side(choice: str, shown_left: str) -> str:
    if choice == "tie":
        return "none"
    return "left" if choice == shown_left else "right"


def _participant_row(rater: str, enrolment: Enrolment, kind: str) -> dict:
    return {"rater_id": rater, "participant_id": enrolment.participant_id, "platform_study_id": enrolment.study_id,
            "platform_session_id": enrolment.session_id, "enrolment": kind, "created_at": utc_now()}


def _item_row(it: Item) -> dict:
    return {"id": it.id, "kind": it.kind, "prompt_id": it.prompt_id, "model_a": it.model_a, "model_b": it.model_b,
            "gold_id": it.gold_id, "answer": it.answer, "criteria": ",".join(it.criteria),
            "duplicate_of": it.duplicate_of, "seq": it.seq}


def load_votes(study: Study, url: str | None = None) -> pd.DataFrame:
    """Reader for ``reports`` and the CLI: the study's votes as a DataFrame (:data:`VOTE_COLUMNS`)."""
    store = VoteStore.open(study, url)
    try:
        return store.votes_frame()
    finally:
        store.engine.dispose()
