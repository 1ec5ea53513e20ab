"""8 processes x 300 votes on one SQLite file: nothing lost, nothing duplicated, no item half-written."""

from __future__ import annotations

import multiprocessing as mp
import zlib
from pathlib import Path

import pytest
from hs_helpers import write_study

from human_study.config import load_study
from human_study.store import VoteStore

N_PROCS = 8
VOTES_PER_PROC = 300  # two own raters x 150 items each
ANSWERS = ("left", "tie", "right")


def expected_answer(rater: str, item: str, criterion: str) -> str:
    """A deterministic answer (``hash`` of str is salted per process, crc32 is not)."""
    return ANSWERS[zlib.crc32(f"{rater}/{item}/{criterion}".encode()) % 3]


def _worker(study_path: str, proc: int, barrier, out: mp.Queue) -> None:  # noqa: ANN001 - mp.Barrier
    study = load_study(study_path)
    store = VoteStore.open(study)
    barrier.wait(timeout=120)  # start writing together
    import time as _t; _t0=_t.time()
    own = [f"p{proc}r{k}" for k in range(2)]
    for rater in own:
        store.register_rater(rater)
    shared_plan = store.plan("shared")
    written = 0
    for rater in own:
        for n, entry in enumerate(store.plan(rater)):
            answers = {c: expected_answer(rater, entry.item_id, c) for c in study.criterion_ids}
            store.record_votes(rater, entry.item_id, answers, dwell_ms=n)
            written += 1
            if n % 10 == 0:  # a double click: the same submission again
                store.record_votes(rater, entry.item_id, answers, dwell_ms=n)
            if n % 5 == 0:  # every process also answers the shared rater's items, each with its own answers
                shared = shared_plan[(n // 5 + proc) % len(shared_plan)]
                store.record_votes("shared", shared.item_id, {c: ANSWERS[proc % 3] for c in study.criterion_ids})
    print('ELAPSED', proc, _t.time()-_t0, flush=True)
    out.put((proc, written))


@pytest.mark.slow
def test_eight_processes_lose_and_duplicate_nothing(tmp_path: Path):
    path = write_study(tmp_path, models=("ModelSecretAlpha", "ModelSecretBeta", "ModelSecretGamma"), n_prompts=50,
                       quota=150, repeats=0, n_gold=0, criteria=("overall", "motion_quality"))
    study = load_study(path)
    store = VoteStore.open(study)
    store.register_rater("shared")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    barrier = ctx.Barrier(N_PROCS)
    procs = [ctx.Process(target=_worker, args=(str(path), p, barrier, queue)) for p in range(N_PROCS)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=240) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results == {p: VOTES_PER_PROC for p in range(N_PROCS)}

    votes = store.votes_frame()
    own = votes[votes["rater"] != "shared"]
    assert len(own) == N_PROCS * VOTES_PER_PROC * 2  # two criteria per vote
    assert not own.duplicated(["rater", "item", "criterion"]).any()
    assert own["vote_uuid"].is_unique
    # every stored answer is the one its process sent (through the stored side mapping)
    sides = {(r, e.item_id): e.left_is_a for r in own["rater"].unique() for e in store.plan(r)}
    for row in own.itertuples():
        shown = "A" if sides[(row.rater, row.item)] else "B"
        answer = expected_answer(row.rater, row.item, row.criterion)
        want = {"left": shown, "right": "B" if shown == "A" else "A", "tie": "tie"}[answer]
        assert row.choice == want
    # registration under contention: 16 distinct indices after the shared rater's 0
    progress = store.rater_progress()
    assert sorted(progress["idx"]) == list(range(1 + 2 * N_PROCS))
    # the shared rater: one answer per (item, criterion), and both criteria of an item from one process
    shared = votes[votes["rater"] == "shared"]
    assert not shared.duplicated(["item", "criterion"]).any()
    assert (shared.groupby("item")["choice"].nunique() == 1).all()
    assert (shared.groupby("item")["criterion"].count() == 2).all()
