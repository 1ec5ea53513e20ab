"""Scoring sharded over ranks under ``torchrun`` (as upstream's distributed evaluation shards videos), merged into
one results store.

Ranks come from ``RANK`` / ``WORLD_SIZE`` (set by torchrun); the process group is gloo (works on CPU and beside
NCCL-free GPU runs; only barriers go through it).  Rank 0 writes the run's ``records.jsonl`` directly; rank r > 0
writes ``OUT/shards/rank{r}/records.jsonl`` and reads the main store for resume (:class:`RankStore`).  After the
sharded pass every rank meets at a barrier, rank 0 appends the shards' records to the main store
(:func:`evaluation.store.merge_records`: a record already final there is never appended twice) and deletes the shard
files, then computes the aggregates from the merged per-video records — so the store ends with every record once,
whatever the number of ranks.  Which work a rank takes: see ``UpstreamSuite.run`` (videos of per-video-mean
dimensions round-robin, ``items[rank::world]`` like vbench's ``distribute_list_to_rank``; whole dimensions for the
others, whose upstream aggregate is not a mean of per-video scores).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from evaluation.store import FINAL_STATUSES, RECORDS_FILE, ResultsStore, iter_lines, merge_records, record_key

SHARDS_DIR = "shards"


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1

    def take(self, items: list) -> list:
        """This rank's share: ``items[rank::world]`` (upstream's ``distribute_list_to_rank``)."""
        return list(items)[self.rank::self.world]

    def owns(self, index: int) -> bool:
        return index % self.world == self.rank


def current() -> Shard:
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if not 0 <= rank < max(world, 1):
        raise ValueError(f"RANK={rank} outside WORLD_SIZE={world}")
    return Shard(rank, max(world, 1))


def rank_if_sharded() -> int | None:
    """This process's rank under torchrun (recorded in provenance), None for a single process."""
    shard = current()
    return shard.rank if shard.world > 1 else None


def barrier() -> None:
    """All ranks wait here (no-op for one process).  Initialises a gloo group from torchrun's environment."""
    if current().world <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()


def shard_dir(out_dir: str | os.PathLike, rank: int) -> Path:
    return Path(out_dir) / SHARDS_DIR / f"rank{rank}"


class RankStore:
    """The store a rank r > 0 writes: appends go to its shard; reads see the main store plus its own shard.

    Same query/append interface as :class:`evaluation.store.ResultsStore` (the suites do not know which one they
    have)."""

    def __init__(self, out_dir: str | os.PathLike, rank: int, run_id: str | None = None):
        self.out_dir = Path(out_dir)
        self.run_id = run_id or self.out_dir.name
        self.shard = ResultsStore(shard_dir(out_dir, rank), run_id=self.run_id)
        self.run_dir = self.shard.run_dir
        self.path = self.shard.path
        self._main = {record_key(r): r for r in iter_lines(self.out_dir / RECORDS_FILE)}

    def get(self, suite, model, video, dimension, details=None):
        mine = self.shard.get(suite, model, video, dimension, details)
        if mine is not None:
            return mine
        probe = {"run_id": self.run_id, "suite": suite, "model": model, "video": video, "dimension": dimension,
                 "details": details or {}}
        return self._main.get(record_key(probe))

    def is_done(self, suite, model, video, dimension, details=None) -> bool:
        rec = self.get(suite, model, video, dimension, details)
        return rec is not None and rec["status"] in FINAL_STATUSES

    def records(self, suite=None, model=None, dimension=None) -> list[dict]:
        merged = {k: r for k, r in self._main.items()
                  if (suite is None or r.get("suite") == suite) and (model is None or r["model"] == model)
                  and (dimension is None or r["dimension"] == dimension)}
        merged.update({record_key(r): r for r in self.shard.records(suite, model, dimension)})
        return list(merged.values())

    def append(self, record: dict) -> dict:
        return self.shard.append(record)

    def add(self, **kwargs) -> dict:
        return self.shard.add(**kwargs)

    def write_run_info(self, info: dict) -> None:  # rank 0 writes run.json
        return None


def open_store(out_dir: str | os.PathLike, run_id: str | None = None):
    """The store this process writes: the run's own on rank 0 (or without torchrun), else a :class:`RankStore`."""
    shard = current()
    if shard.rank == 0:
        return ResultsStore(out_dir, run_id=run_id)
    return RankStore(out_dir, shard.rank, run_id=run_id)


def gather_records(out_dir: str | os.PathLike, suite: str, dimension: str) -> list[dict]:
    """Every rank's latest records of one (suite, dimension), read from the main store and all shard files (after a
    barrier: what the other ranks wrote so far)."""
    latest: dict[tuple, dict] = {}
    paths = [Path(out_dir) / RECORDS_FILE] + sorted((Path(out_dir) / SHARDS_DIR).glob(f"rank*/{RECORDS_FILE}"))
    for p in paths:
        for rec in iter_lines(p):
            if rec.get("suite") == suite and rec.get("dimension") == dimension:
                key = record_key(rec)
                if key not in latest or latest[key]["status"] not in FINAL_STATUSES:
                    latest[key] = rec
    return list(latest.values())


def merge_shards(store: ResultsStore, out_dir: str | os.PathLike) -> dict[str, int]:
    """Rank 0, after the barrier: append every shard's records to ``store``, then remove the shard folders.
    Returns {"added": n, "skipped": n} (skipped: already final in the main store)."""
    added = skipped = 0
    root = Path(out_dir) / SHARDS_DIR
    for path in sorted(root.glob(f"rank*/{RECORDS_FILE}")):
        a, s = merge_records(store, path)
        added, skipped = added + a, skipped + s
    if root.is_dir():
        shutil.rmtree(root)
    return {"added": added, "skipped": skipped}
