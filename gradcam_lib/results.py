"""Resumable batch runs, exactly once: every chapter's long loop writes its rows to a CSV after each
batch, so an interrupted run keeps what it finished and a re-run continues where it stopped, with
every item's rows in the file once.

Files, for ``rows.csv``:

- ``rows.csv``: a header, then the rows of every finished batch, in data set order.
- ``rows.csv.done``: the completion journal, one JSON line per finished batch:
  ``{"positions": [...], "ids": [...], "rows": n, "bytes": size of rows.csv after the batch}``.
- ``rows.csv.lock``: exists while a run writes (it holds the writer's pid).

Commit protocol: a batch's rows are appended to the CSV and fsync'd, then its journal line is
appended and fsync'd. The journal line is the commit: a batch is done when, and only when, its line
is whole. An item that yields no row is done all the same (its position is in the journal).
Recovery, at the start of every run: a torn last journal line is dropped, and the CSV is cut back
to the ``bytes`` of the last complete record, so rows written after it (a run killed between the
two fsyncs, a line cut in the middle) disappear with a logged warning naming the file and the
count; if the CSV is shorter than the journal says (cut by something else), the batches past its
end are forgotten and run again, also with a warning. A damaged journal line in the middle, or a
CSV without a journal (written by an older version or by hand), is refused with a message saying
to remove the files.

Resume is by position: items whose position is in the journal are skipped, the others are run in
order (so the file stays in data set order, whatever the batch size of each run). The journal also
keeps the ids: an ``image_id`` met twice (in the journal and in a new batch, or twice in one batch)
is refused, naming both positions, before that batch is evaluated; ids must be unique. Positions
are only meaningful for the same data set, which the file name guarantees when it carries
:func:`dataset_fingerprint` through :func:`run_key`, together with :func:`model_fingerprint` and
every setting that changes the rows.

One writer: the run holds ``fcntl.flock`` on the lock file; a second run on the same CSV (another
process, or the same one) is refused with :class:`RunLockedError`. The kernel drops the lock when
its holder dies (also under ``kill -9``), so a lock left by a dead process is taken over by the
next run, with a warning; DataLoader workers hold it until they notice their parent is gone (a few
seconds). POSIX only (flock); on NFS it relies on the server's lock support.

Rows are read back with ``image_id`` as a string, exactly as written (VOC's ``000001`` stays
``000001``; no NA parsing on it); the other columns are parsed by pandas as usual (numbers come
back as numbers, empty cells as NaN).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence, Sized
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, cast

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from gradcam_lib.datasets.base import Sample, collate_samples
from gradcam_lib.run_keys import dataset_fingerprint, model_fingerprint, run_key

__all__ = ["RunLockedError", "dataset_fingerprint", "model_fingerprint", "run_key", "run_resumable"]  # keys: run_keys

BatchFn = Callable[[torch.Tensor, list[Sample]], list[dict[str, Any]]]

logger = logging.getLogger(__name__)

_RECORD_KEYS = {"positions", "ids", "rows", "bytes"}


class RunLockedError(RuntimeError):
    """Another run is writing the same results file."""


@contextmanager
def _writer_lock(csv_path: Path) -> Iterator[None]:
    """Hold ``<csv>.lock`` (flock, exclusive) for the body; refuse if another run holds it."""
    lock_path = csv_path.with_name(csv_path.name + ".lock")
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise RunLockedError(
                f"{csv_path} is being written by another run (pid {holder} holds {lock_path}); wait for it to "
                "finish or stop it: two writers would duplicate rows") from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file between our open and flock: lock the new one
    try:
        stale = os.pread(fd, 64, 0).decode(errors="replace").strip()
        if stale:
            logger.warning("%s: taking over the lock of process %s, which ended without releasing it", lock_path, stale)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        try:
            os.unlink(lock_path)  # while still locked: a waiting opener re-checks the inode
        finally:
            os.close(fd)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _committed_size(records: list[dict[str, Any]]) -> int:
    """The CSV size that ``records`` commit (0 for none)."""
    return int(records[-1]["bytes"]) if records else 0


def _read_journal(csv_path: Path, done_path: Path) -> tuple[list[dict[str, Any]], list[int], bool]:
    """The journal's complete records, the byte offset after each, and whether a torn line follows."""
    lines = done_path.read_bytes().split(b"\n")
    records: list[dict[str, Any]] = []
    ends: list[int] = []
    for number, line in enumerate(lines[:-1], start=1):
        try:
            record = json.loads(line)
            valid = (isinstance(record, dict) and _RECORD_KEYS <= set(record)
                     and len(record["positions"]) == len(record["ids"])
                     and int(record["bytes"]) >= _committed_size(records))
        except (ValueError, TypeError):
            valid = False
        if not valid:
            raise ValueError(f"{done_path}: line {number} is not a completion record, so the journal of {csv_path} "
                             f"is damaged; remove {csv_path} and {done_path} to start the run again")
        records.append(record)
        ends.append((ends[-1] if ends else 0) + len(line) + 1)
    return records, ends, bool(lines[-1])


def _recover(csv_path: Path, done_path: Path) -> list[dict[str, Any]]:
    """Bring the CSV and its journal back to the last complete batch; return the journal's records."""
    csv_size = csv_path.stat().st_size if csv_path.exists() else 0
    if not done_path.exists():
        if csv_size:
            raise ValueError(f"{csv_path} has no completion journal {done_path.name}: it was written by an older "
                             "version of gradcam_lib or by hand, so which of its rows are complete is unknown; "
                             "remove it to start the run again")
        return []
    records, ends, torn = _read_journal(csv_path, done_path)
    kept = len(records)
    while kept and _committed_size(records[:kept]) > csv_size:
        kept -= 1
    if kept < len(records):
        lost = records[kept:]
        logger.warning("%s is %d bytes, shorter than its journal %s says (%d): the last %d batch(es) (%d items) "
                       "will be run again", csv_path, csv_size, done_path.name, _committed_size(records), len(lost),
                       sum(len(r["positions"]) for r in lost))
    committed = _committed_size(records[:kept])
    if committed:
        with open(csv_path, "rb") as handle:
            handle.seek(committed - 1)
            if handle.read(1) != b"\n":
                raise ValueError(f"{csv_path}: byte {committed} should end a batch but is not a line end, so the "
                                 f"file does not match {done_path}; remove both to start the run again")
    if committed < csv_size:
        with open(csv_path, "r+b") as handle:
            handle.seek(committed)
            tail = handle.read()
            handle.truncate(committed)
            handle.flush()
            os.fsync(handle.fileno())
        lines = tail.count(b"\n") + (not tail.endswith(b"\n"))
        logger.warning("%s: dropped %d line(s) (%d bytes) written after the last complete batch (an interrupted "
                       "run); their items will be run again", csv_path, lines, len(tail))
    if torn or kept < len(records):
        if torn:
            logger.warning("%s: dropped a completion record cut in the middle (an interrupted run)", done_path)
        with open(done_path, "r+b") as handle:
            handle.truncate(ends[kept - 1] if kept else 0)
            handle.flush()
            os.fsync(handle.fileno())
    return records[:kept]


def _read_rows(csv_path: Path) -> pd.DataFrame:
    """Every row of the file: ``image_id`` as written (a string), the rest parsed as pandas does."""
    if not csv_path.exists() or not csv_path.stat().st_size:
        return pd.DataFrame({"image_id": pd.Series(dtype=str)})
    rows = pd.read_csv(csv_path, dtype={"image_id": str})
    ids = pd.read_csv(csv_path, usecols=["image_id"], dtype=str, keep_default_na=False)["image_id"]
    return rows.assign(image_id=ids.to_numpy())


def _batch_rows(rows: Any, samples: list[Sample], number: int, csv_path: Path) -> pd.DataFrame:
    """``evaluate_batch``'s rows as a frame, checked: each row names an item of its batch."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    where = f"{csv_path}: batch {number} (items {samples[0].image_id!r} .. {samples[-1].image_id!r})"
    if "image_id" not in frame or frame["image_id"].isna().any():
        raise ValueError(f"{where} returned rows without an 'image_id'; every row must name the item it belongs to")
    strangers = sorted(set(frame["image_id"].astype(str)) - {s.image_id for s in samples})
    if strangers:
        raise ValueError(f"{where} returned rows for image_id(s) {strangers[:5]} that are not in the batch; every "
                         "row must belong to an item of its own batch")
    return frame


def _append(
    handle: BinaryIO, frame: pd.DataFrame, header: list[str] | None, csv_path: Path
) -> tuple[int, list[str] | None]:
    """Write a batch's rows under the file's header, in its column order (a batch whose rows lack a
    column gets it empty; the first batch with rows writes the header); a column the file does not
    have is an error, not a silent shift. Returns the bytes written and the header."""
    if frame.empty:
        return 0, header
    if header is None:
        header, text = list(frame.columns), frame.to_csv(index=False)
    else:
        unknown = sorted(set(frame.columns) - set(header))
        if unknown:
            raise ValueError(f"rows have columns {unknown} that {csv_path} does not; remove it and its .done journal "
                             "to start again")
        text = frame.reindex(columns=header).to_csv(index=False, header=False)
    data = text.encode()
    handle.write(data)
    handle.flush()
    os.fsync(handle.fileno())
    return len(data), header


def _commit(
    rows_file: BinaryIO, journal: BinaryIO, frame: pd.DataFrame, header: list[str] | None, csv_path: Path,
    positions: list[int], ids: list[str], offset: int,
) -> tuple[int, list[str] | None]:
    """Commit one batch (the module's protocol): its rows, fsync'd, then its journal line, fsync'd.
    Returns the CSV's committed size after it and the header."""
    written, header = _append(rows_file, frame, header, csv_path)
    offset += written
    record = {"positions": positions, "ids": ids, "rows": len(frame), "bytes": offset}
    journal.write(json.dumps(record).encode() + b"\n")
    journal.flush()
    os.fsync(journal.fileno())
    return offset, header


def run_resumable(
    dataset: Dataset,
    evaluate_batch: BatchFn,
    csv_path: str | Path,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    description: str = "",
    positions: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Evaluate ``dataset`` in order, batch by batch, committing the rows of each batch to
    ``csv_path`` all at once (see the module notes); items already done are skipped.

    Args:
        dataset: yields :class:`Sample` with unique ``image_id``.
        evaluate_batch: ``(images on device, samples) -> rows``; each row must hold the ``image_id``
            of an item of the batch; an item may yield no row (it is done all the same).
        csv_path: where the rows go (created with its folders, beside ``.done`` and ``.lock``).
        batch_size, num_workers: DataLoader settings; memory is pinned on CUDA.
        device: where the images go.
        description: the progress bar's label.
        positions: the data set positions this run owns (default: all), e.g. one rank's share of a
            sharded run (:mod:`gradcam_lib.shards`); the journal records them as data set positions.

    Returns:
        Every row of the file, old and new, in data set order (an empty frame with an ``image_id``
        column when no item yields a row, e.g. for an empty data set).

    Raises:
        RunLockedError: another run writes ``csv_path``.
        ValueError: rows without ``image_id`` or with a column the file lacks, a repeated
            ``image_id``, or a results file that cannot be repaired (the message names the file).
    """
    csv_path = Path(csv_path)
    done_path = csv_path.with_name(csv_path.name + ".done")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    with _writer_lock(csv_path):
        records = _recover(csv_path, done_path)
        owner = {i: p for r in records for p, i in zip(r["positions"], r["ids"], strict=True)}
        finished = {p for r in records for p in r["positions"]}
        size = len(cast(Sized, dataset))
        owned = range(size) if positions is None else positions
        if positions is not None and (len(set(owned)) != len(owned) or not set(owned) <= set(range(size))):
            raise ValueError(f"{csv_path}: positions must be distinct positions of the data set (0 .. {size - 1})")
        remaining = [p for p in owned if p not in finished]
        header = list(pd.read_csv(csv_path, nrows=0).columns) if _committed_size(records) else None
        if not done_path.exists():
            done_path.touch()  # before any row: rows without a journal would look like an old file
            _fsync_dir(csv_path.parent)
        loader = DataLoader(
            Subset(dataset, remaining),
            batch_size=batch_size,
            collate_fn=collate_samples,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(0),  # the global RNG stays untouched (workers' seeds too)
        )
        with (
            open(csv_path, "ab") as rows_file,
            open(done_path, "ab") as journal,
            tqdm(
                total=len(owned),
                initial=len(owned) - len(remaining),
                desc=description,
                unit="img",
            ) as progress,
        ):
            start, offset = 0, _committed_size(records)
            for number, (images, samples) in enumerate(loader, start=len(records)):
                batch = remaining[start:start + len(samples)]
                start += len(samples)
                for position, sample in zip(batch, samples, strict=True):
                    if sample.image_id in owner:
                        raise ValueError(f"{csv_path}: image_id {sample.image_id!r} is used by items "
                                         f"{owner[sample.image_id]} and {position} of the data set; a resumable run "
                                         "needs unique ids (rename or drop one)")
                    owner[sample.image_id] = position
                frame = _batch_rows(evaluate_batch(images.to(device, non_blocking=True), samples), samples, number,
                                    csv_path)
                offset, header = _commit(rows_file, journal, frame, header, csv_path, batch,
                                         [s.image_id for s in samples], offset)
                progress.update(len(samples))
        return _read_rows(csv_path)
