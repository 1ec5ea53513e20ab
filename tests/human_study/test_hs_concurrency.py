"""8 processes x 300 votes on one database (a SQLite file, and a local PostgreSQL server): nothing lost, nothing
duplicated, no item half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from hs_helpers import write_study
from hs_vote_worker import N_PROCS, VOTES_PER_PROC, expected_answer

from human_study.config import load_study
from human_study.store import VoteStore

WORKER = Path(__file__).with_name("hs_vote_worker.py")


def test_eight_processes_lose_and_duplicate_nothing(tmp_path: Path, db_url: str):
    path = write_study(tmp_path, models=("ModelSecretAlpha", "ModelSecretBeta", "ModelSecretGamma"), n_prompts=50,
                       quota=150, repeats=0, n_gold=0, criteria=("overall", "motion_quality"),
                       extra={"storage": {"url": db_url}})
    study = load_study(path)
    store = VoteStore.open(study)
    store.register_rater("shared")
    go = tmp_path / "go"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(path), str(p), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for p in range(N_PROCS)]
    deadline = time.time() + 180
    while not all((tmp_path / f"ready{p}").exists() for p in range(N_PROCS)):  # all loaded, then go at once
        assert time.time() < deadline and all(p.poll() is None for p in procs), "a worker did not start"
        time.sleep(0.05)
    go.touch()
    started = time.time()
    results = {}
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        row = json.loads(out)
        results[row["proc"]] = row["written"]
    assert results == {p: VOTES_PER_PROC for p in range(N_PROCS)}

    elapsed = time.time() - started
    votes = store.votes_frame()
    own = votes[votes["rater"] != "shared"]
    sent = N_PROCS * VOTES_PER_PROC * 2
    stored = own.drop_duplicates(["rater", "item", "criterion"])
    print(f"\nstorm on {store.engine.dialect.name}: {N_PROCS} processes x {VOTES_PER_PROC} items x 2 criteria: "
          f"{sent} votes sent, {len(own)} rows stored, lost {sent - len(stored)}, "
          f"duplicated {len(own) - len(stored)}, {elapsed:.1f} s")
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
