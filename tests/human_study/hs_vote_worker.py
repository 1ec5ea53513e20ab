"""Worker process of the concurrency test: ``python hs_vote_worker.py STUDY PROC GO_FILE``.

Touches ``ready<PROC>`` beside ``GO_FILE``, waits for ``GO_FILE`` (so all workers write at once), registers two raters, votes through their plans (double
submitting every 10th item, answering a rater shared by all workers every 5th) and prints the count as JSON.
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from pathlib import Path

from human_study.config import load_study
from human_study.store import VoteStore

N_PROCS = 8
VOTES_PER_PROC = 300  # two own raters x 150 items each
ANSWERS = ("left", "tie", "right")


def expected_answer(rater: str, item: str, criterion: str) -> str:
    """A deterministic answer (``hash`` of str is salted per process, crc32 is not)."""
    return ANSWERS[zlib.crc32(f"{rater}/{item}/{criterion}".encode()) % 3]


def vote_worker(study_path: str, proc: int, go_file: Path) -> int:
    study = load_study(study_path)
    store = VoteStore.open(study)
    (go_file.parent / f"ready{proc}").touch()
    deadline = time.time() + 120
    while not go_file.exists() and time.time() < deadline:  # start writing together
        time.sleep(0.005)
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
    return written


if __name__ == "__main__":
    path, proc, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    print(json.dumps({"proc": proc, "written": vote_worker(path, proc, go)}))
