"""Worker of the concurrency test (a module of its own so the forkserver can preload it cheaply)."""

from __future__ import annotations

import multiprocessing as mp
import zlib

from human_study.config import load_study
from human_study.store import VoteStore

N_PROCS = 8
VOTES_PER_PROC = 300  # two own raters x 150 items each
ANSWERS = ("left", "tie", "right")


def expected_answer(rater: str, item: str, criterion: str) -> str:
    """A deterministic answer (``hash`` of str is salted per process, crc32 is not)."""
    return ANSWERS[zlib.crc32(f"{rater}/{item}/{criterion}".encode()) % 3]


def vote_worker(study_path: str, proc: int, barrier, out: mp.Queue) -> None:  # noqa: ANN001 - mp.Barrier
    study = load_study(study_path)
    store = VoteStore.open(study)
    barrier.wait(timeout=120)  # start writing together
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
    out.put((proc, written))
