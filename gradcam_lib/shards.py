"""Sharded runs, exactly once: under ``torchrun`` every rank runs a disjoint, deterministic share of
a run's items into its own results file (a *shard*), and a merge turns the complete set of shards
into the one results file a single-process run would have written.

    torchrun --nproc_per_node=8 -m gradcam_lib.experiments 01_localization --profile full

* **Share** (:func:`share`): rank ``r`` of ``W`` owns the positions ``r, r + W, r + 2W, ...``. Every
  item is owned by exactly one rank and none is repeated: torch's ``DistributedSampler`` pads the
  last round with repeated items to even out the ranks, which would count those images twice.
* **Shard** (:func:`shard_path`): ``<run>.rank<r>-of-<W>.csv`` beside the run's file, written by
  :func:`~gradcam_lib.results.run_resumable` with the run's own protocol (journal, lock, resume),
  so a rank killed mid-run resumes its own share when the command is run again.
* **Merge** (:func:`merge_shards`): once every rank is done, rank 0 checks that the shards are
  ranks ``0 .. W-1`` of one ``W``, all of the same run key (the key is in the file name: a shard
  written under another key, e.g. by a node whose data or weights differ, is named in the error),
  that no rank is still writing, and that every position and every ``image_id`` appears exactly
  once; it then commits all rows, in data set order, as one batch of the run's file and removes the
  shards. A chapter run in one process merges complete shards the same way before it starts, so it
  finds its results done and only reports.

The ranks only synchronise (barriers, on a CPU ``gloo`` group whatever the device); rows are never
sent between processes: they meet in the results folder, which every rank must see (one node's
disk, or a shared file system with working ``flock``).
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist

from gradcam_lib.results import _commit, _read_journal, _read_rows, _recover, _writer_lock

__all__ = [
    "ShardError",
    "completed_positions",
    "distributed",
    "merge_shards",
    "rank_world",
    "read_run",
    "shard_path",
    "share",
    "synchronise",
]

logger = logging.getLogger(__name__)

#: How long a rank waits at a barrier for the others (a share's run time differs between ranks).
BARRIER_TIMEOUT = timedelta(hours=12)


class ShardError(RuntimeError):
    """The shards of a run are incomplete, inconsistent, or mixed with a single-process run."""


def rank_world() -> tuple[int, int]:
    """This process's rank and the world size: ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def synchronise() -> None:
    """A barrier across the ranks (nothing outside a process group)."""
    if rank_world()[1] > 1:
        dist.barrier()


@contextmanager
def distributed() -> Iterator[tuple[int, int]]:
    """Join torchrun's process group when its environment says ``WORLD_SIZE`` > 1 (a CPU ``gloo``
    group: only barriers go through it), pin the rank to its GPU (``LOCAL_RANK``) when CUDA is
    available, and leave the group on exit. Yields ``(rank, world)``; outside torchrun ``(0, 1)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        yield rank_world()
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    try:
        yield rank_world()
    finally:
        dist.destroy_process_group()


def share(n_items: int, rank: int, world: int) -> range:
    """The positions rank ``rank`` of ``world`` owns: ``rank, rank + world, ...`` (no padding)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0 .. {world - 1}")
    return range(rank, n_items, world)


def shard_path(csv_path: str | os.PathLike[str], rank: int, world: int) -> Path:
    """``<dir>/<run>.rank<rank>-of-<world>.csv`` for the run's ``<dir>/<run>.csv``."""
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}.rank{rank}-of-{world}.csv")


_SHARD = re.compile(r"^(?P<run>.+)\.rank(?P<rank>\d+)-of-(?P<world>\d+)\.csv$")


def _shards_of(csv_path: Path) -> dict[tuple[int, int], Path]:
    """The shard files of ``csv_path``'s run: ``(rank, world) -> path``."""
    found = {}
    for path in csv_path.parent.glob(f"{glob.escape(csv_path.stem)}.rank*-of-*.csv"):
        match = _SHARD.match(path.name)
        if match and match["run"] == csv_path.stem:
            found[int(match["rank"]), int(match["world"])] = path
    return found


def _other_keys(csv_path: Path) -> list[str]:
    """Shards of the same model, tag and data set name under another run key (the key is the file
    name's last ``_`` part): the likely culprits when a shard is missing."""
    prefix = csv_path.stem.rsplit("_", 1)[0]
    matches = (_SHARD.match(p.name) for p in csv_path.parent.glob(f"{glob.escape(prefix)}_*.rank*-of-*.csv"))
    return sorted(m.string for m in matches if m and m["run"] != csv_path.stem)


def _remove_shard(path: Path) -> None:
    for suffix in (".done", "", ".lock"):  # the journal first: a CSV without it is refused, never read
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def completed_positions(csv_path: str | os.PathLike[str]) -> set[int]:
    """The positions the run's journal holds as done, read without repairing anything (a torn last
    line is ignored); empty when there is no journal."""
    csv_path = Path(csv_path)
    done = csv_path.with_name(csv_path.name + ".done")
    if not done.exists():
        return set()
    records, _, _ = _read_journal(csv_path, done)
    return {p for record in records for p in record["positions"]}


def merge_shards(csv_path: str | os.PathLike[str], n_items: int) -> int:
    """Merge the complete shards of ``csv_path``'s run into it (see the module notes); returns the
    number of items merged (0 when there are no shards, or when the run's file is already complete,
    in which case leftover shards are removed with a warning).

    Raises:
        ShardError: shards of several world sizes, a missing rank, an item missing or present twice,
            a repeated ``image_id``, or a run file that already holds a partial single-process run.
        RunLockedError: a rank is still writing its shard, or another process writes the run.
    """
    csv_path = Path(csv_path)
    shards = _shards_of(csv_path)
    if not shards:
        return 0
    done_path = csv_path.with_name(csv_path.name + ".done")
    with _writer_lock(csv_path):
        records = _recover(csv_path, done_path)
        finished = {p for record in records for p in record["positions"]}
        if finished and finished == set(range(n_items)):
            logger.warning("%s is complete; removing %d leftover shard(s) of an earlier merge", csv_path, len(shards))
            for path in shards.values():
                _remove_shard(path)
            return 0
        if records:
            names = sorted(p.name for p in shards.values())
            raise ShardError(f"{csv_path} holds a partial single-process run ({len(finished)} of {n_items} items) "
                             f"and shards of a sharded run exist beside it ({names}); remove one of the two to go on")
        worlds = sorted({world for _, world in shards})
        if len(worlds) > 1:
            raise ShardError(f"{csv_path}: shards of several world sizes {worlds}; remove the ones of the run "
                             "you do not want")
        world = worlds[0]
        missing = sorted(set(range(world)) - {rank for rank, _ in shards})
        if missing:
            others = _other_keys(csv_path)
            hint = (f"; shards under another run key (different data, weights or settings on that rank?): {others}"
                    if others else "")
            raise ShardError(f"{csv_path}: the shards of rank(s) {missing} of {world} are missing{hint}")
        frames: list[pd.DataFrame] = []
        owner: dict[str, tuple[int, int]] = {}
        for (rank, _), path in sorted(shards.items()):
            with _writer_lock(path):
                shard_records = _recover(path, path.with_name(path.name + ".done"))
                for record in shard_records:
                    for position, image_id in zip(record["positions"], record["ids"], strict=True):
                        if image_id in owner:
                            raise ShardError(f"{csv_path}: image_id {image_id!r} is in the shards of rank "
                                             f"{owner[image_id][0]} and rank {rank}")
                        owner[image_id] = (rank, position)
                frames.append(_read_rows(path))
        positions = sorted(position for _, position in owner.values())
        if positions != list(range(n_items)):
            done_by = {rank: sum(1 for r, _ in owner.values() if r == rank) for rank in range(world)}
            raise ShardError(f"{csv_path}: the shards hold {len(positions)} of {n_items} items (per rank: {done_by}); "
                             "run the sharded command again to finish them (each rank resumes its share)")
        rows = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)  # an empty shard adds no NaN
        order = rows["image_id"].map(lambda image_id: owner[image_id][1])
        rows = rows.iloc[order.argsort(kind="stable")].reset_index(drop=True)
        ids = sorted(owner, key=lambda image_id: owner[image_id][1])
        with open(csv_path, "ab") as rows_file, open(done_path, "ab") as journal:
            _commit(rows_file, journal, rows, None, csv_path, positions, ids, 0)
        for path in shards.values():
            _remove_shard(path)
    logger.info("%s: merged %d shard(s), %d items, %d rows", csv_path, world, n_items, len(rows))
    return n_items


def read_run(csv_path: str | os.PathLike[str]) -> pd.DataFrame:
    """Every row of a run's file, as :func:`~gradcam_lib.results.run_resumable` returns them."""
    return _read_rows(Path(csv_path))

