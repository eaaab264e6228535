"""Resumable runs: every item's rows exactly once (also after kill -9 in the middle of a write), one
writer, torn files repaired, ids kept as strings, columns never shift; fingerprints see everything."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from copy import deepcopy
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from gradcam_lib.datasets.base import Sample
from gradcam_lib.results import RunLockedError, dataset_fingerprint, model_fingerprint, run_key, run_resumable

ROOT = Path(__file__).resolve().parents[1]


def _samples(n: int, ids: list[str] | None = None) -> list[Sample]:
    ids = ids or [f"img{i}" for i in range(n)]
    return [Sample(torch.full((3, 4, 4), float(i)), (i,), torch.zeros((0, 4), dtype=torch.long),
                   torch.zeros(0, dtype=torch.long), ids[i]) for i in range(n)]


def _means(images: torch.Tensor, samples: list[Sample]) -> list[dict[str, Any]]:
    return [{"image_id": s.image_id, "mean": float(x.mean())} for s, x in zip(samples, images)]


class Interrupted(Exception):
    pass


class Recorder:
    """An ``evaluate_batch`` that remembers which items it saw."""

    def __init__(self, evaluate=_means) -> None:
        self.seen: list[str] = []
        self.evaluate = evaluate

    def __call__(self, images: torch.Tensor, samples: list[Sample]) -> list[dict[str, Any]]:
        self.seen.extend(s.image_id for s in samples)
        return self.evaluate(images, samples)


def test_a_rerun_continues_where_the_last_one_stopped(tmp_path):
    path = tmp_path / "rows.csv"
    seen: list[str] = []
    interrupt_at = {"img3"}

    def evaluate(images, samples):
        seen.extend(s.image_id for s in samples)
        if interrupt_at & {s.image_id for s in samples}:
            raise Interrupted  # the first run stops during its second batch
        return _means(images, samples)

    with pytest.raises(Interrupted):
        run_resumable(_samples(6), evaluate, path, batch_size=2)
    seen.clear()
    interrupt_at.clear()
    rows = run_resumable(_samples(6), evaluate, path, batch_size=2)
    assert seen == ["img2", "img3", "img4", "img5"]
    assert rows["image_id"].tolist() == [f"img{i}" for i in range(6)]
    assert rows["mean"].tolist() == [float(i) for i in range(6)]


def test_missing_columns_stay_empty_and_unknown_columns_are_refused(tmp_path):
    path = tmp_path / "rows.csv"

    def evaluate(images, samples):
        if samples[0].image_id == "img0":
            return [{"image_id": s.image_id, "a": 1, "b": 2} for s in samples]
        return [{"image_id": s.image_id, "b": 5} for s in samples]

    rows = run_resumable(_samples(4), evaluate, path, batch_size=2)
    assert rows["a"].isna().tolist() == [False, False, True, True]
    assert rows["b"].tolist() == [2, 2, 5, 5]

    with pytest.raises(ValueError, match="columns"):
        run_resumable(_samples(6), lambda images, samples: [{"image_id": s.image_id, "c": 0} for s in samples],
                      path, batch_size=2)
    assert run_resumable(_samples(4), evaluate, path, batch_size=2)["image_id"].tolist() == [f"img{i}" for i in range(4)]


# The run that the kill -9 test interrupts: ``evaluate`` gives 0, 1 or 2 rows per item; in the
# subprocess, os.fsync sleeps right after the CSV rows of batch KILL_BATCH reach the disk, before
# their completion record is written (the window where a kill leaves rows that are not committed).
_RUN = '''
import os, sys, time
import torch
from gradcam_lib.datasets.base import Sample
from gradcam_lib.results import run_resumable

N, BATCH, KILL_BATCH = 11, 3, 2
IDS = [f"{i:06d}" for i in range(1, N + 1)]  # VOC-style ids: numeric-looking strings

def samples():
    return [Sample(torch.full((3, 4, 4), float(i)), (i,), torch.zeros((0, 4), dtype=torch.long),
                   torch.zeros(0, dtype=torch.long), IDS[i]) for i in range(N)]

def evaluate(images, batch):
    rows = []
    for s, x in zip(batch, images):
        k = int(s.image_id) % 3  # 000003, 000006, 000009 yield no row
        rows += [{"image_id": s.image_id, "copy": c, "mean": float(x.mean()), "hit": c == 0} for c in range(k)]
    return rows

if __name__ == "__main__":
    csv_path, ready = os.path.realpath(sys.argv[1]), sys.argv[2]
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        real_fsync(fd)
        if os.readlink(f"/proc/self/fd/{fd}") == csv_path:
            calls.append(fd)
            if len(calls) == KILL_BATCH + 1:
                open(ready, "w").close()
                time.sleep(600)

    os.fsync = fsync
    run_resumable(samples(), evaluate, csv_path, batch_size=BATCH)
'''


def test_kill_9_in_the_middle_of_a_write_leaves_every_item_exactly_once(tmp_path, caplog):
    run: dict[str, Any] = {"__name__": "run"}
    exec(_RUN, run)
    reference = run_resumable(run["samples"](), run["evaluate"], tmp_path / "reference.csv", batch_size=run["BATCH"])

    path, ready = tmp_path / "rows.csv", tmp_path / "ready"
    script = tmp_path / "run.py"
    script.write_text(_RUN)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, str(script), str(path), str(ready)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not ready.exists():
            if process.poll() is not None:
                pytest.fail(f"the run ended before its write window: {process.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the run did not reach its write window in 240 s")
            time.sleep(0.05)
        # inside the window: batch 2's rows are on disk, its completion record is not
        assert "000007" in path.read_text()
        assert len((tmp_path / "rows.csv.done").read_text().splitlines()) == run["KILL_BATCH"]
        with pytest.raises(RunLockedError, match=f"is being written by another run \\(pid {process.pid} holds"):
            run_resumable(run["samples"](), run["evaluate"], path, batch_size=run["BATCH"])
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL

    recorder = Recorder(run["evaluate"])
    with caplog.at_level(logging.WARNING, logger="gradcam_lib.results"):
        rows = run_resumable(run["samples"](), recorder, path, batch_size=4)  # another batch size: still exact
    assert recorder.seen == run["IDS"][6:]  # batches 0 and 1 were complete; batch 2 runs again
    assert f"{path}: dropped 3 line(s)" in caplog.text  # 000007 x1, 000008 x2: not committed
    assert f"taking over the lock of process {process.pid}" in caplog.text
    pd.testing.assert_frame_equal(rows, reference)
    counts = rows.groupby("image_id").size()
    assert counts.to_dict() == {i: int(i) % 3 for i in run["IDS"] if int(i) % 3}
    assert rows["image_id"].tolist()[:3] == ["000001", "000002", "000002"]


def test_a_second_writer_is_refused_and_the_lock_is_released(tmp_path):
    path = tmp_path / "rows.csv"
    refusals: list[str] = []

    def evaluate(images, samples):
        try:
            run_resumable(_samples(4), _means, path, batch_size=2)
        except RunLockedError as error:
            refusals.append(str(error))
        return _means(images, samples)

    rows = run_resumable(_samples(4), evaluate, path, batch_size=2)
    assert len(refusals) == 2 and f"pid {os.getpid()}" in refusals[0] and str(path) in refusals[0]
    assert rows["image_id"].tolist() == [f"img{i}" for i in range(4)]  # the refused run wrote nothing
    assert not (tmp_path / "rows.csv.lock").exists()
    assert run_resumable(_samples(4), _means, path, batch_size=2)["image_id"].tolist() == [f"img{i}" for i in range(4)]


def test_a_csv_cut_mid_line_is_repaired_and_its_batch_run_again(tmp_path, caplog):
    path = tmp_path / "rows.csv"
    reference = run_resumable(_samples(6), _means, path, batch_size=2)
    text = path.read_bytes()
    path.write_bytes(text[:text.index(b"img5") + 2])  # cut inside the last batch's last line
    recorder = Recorder()
    with caplog.at_level(logging.WARNING, logger="gradcam_lib.results"):
        rows = run_resumable(_samples(6), recorder, path, batch_size=2)
    assert recorder.seen == ["img4", "img5"]
    assert "shorter than its journal" in caplog.text and "the last 1 batch(es) (2 items) will be run again" in caplog.text
    assert f"{path}: dropped 2 line(s)" in caplog.text  # img4's whole line and img5's half line
    pd.testing.assert_frame_equal(rows, reference)


def test_uncommitted_rows_and_a_torn_record_are_dropped(tmp_path, caplog):
    path, done = tmp_path / "rows.csv", tmp_path / "rows.csv.done"
    reference = run_resumable(_samples(6), _means, path, batch_size=2)
    with open(path, "ab") as handle:
        handle.write(b"img5,5.0\nimg5,5")  # rows of no batch, the last one cut
    with open(done, "ab") as handle:
        handle.write(b'{"positions": [6')
    recorder = Recorder()
    with caplog.at_level(logging.WARNING, logger="gradcam_lib.results"):
        rows = run_resumable(_samples(6), recorder, path, batch_size=2)
    assert recorder.seen == []
    assert f"{path}: dropped 2 line(s) (15 bytes)" in caplog.text
    assert f"{done}: dropped a completion record cut in the middle" in caplog.text
    pd.testing.assert_frame_equal(rows, reference)
    assert done.read_text().count("\n") == 3 and done.read_text().endswith("}\n")


def test_unrepairable_files_are_refused_with_what_to_do(tmp_path):
    path, done = tmp_path / "rows.csv", tmp_path / "rows.csv.done"
    path.write_text("image_id,mean\nimg0,0.0\n")  # no journal: an old or hand-made file
    with pytest.raises(ValueError, match=r"rows\.csv has no completion journal rows\.csv\.done.*remove it"):
        run_resumable(_samples(2), _means, path)
    path.unlink()
    run_resumable(_samples(6), _means, path, batch_size=2)
    lines = done.read_text().splitlines()
    done.write_text("\n".join([lines[0], "garbage", lines[2]]) + "\n")
    with pytest.raises(ValueError, match=r"rows\.csv\.done: line 2 is not a completion record.*remove"):
        run_resumable(_samples(6), _means, path, batch_size=2)


def test_numeric_looking_ids_stay_strings_and_numbers_stay_numbers(tmp_path):
    path = tmp_path / "rows.csv"
    ids = ["000001", "1e5", "NA", "007", "", "nan"]

    def evaluate(images, samples):
        return [{"image_id": s.image_id, "mean": float(x.mean()), "count": 3, "hit": True, "note": None}
                for s, x in zip(samples, images)]

    for _ in range(2):  # the fresh run and the re-run read the same
        rows = run_resumable(_samples(6, ids), evaluate, path, batch_size=4)
        assert rows["image_id"].tolist() == ids
        assert rows["mean"].dtype == "float64" and rows["count"].dtype == "int64" and rows["hit"].dtype == bool
        assert rows["note"].isna().all()


def test_an_empty_first_batch_then_rows(tmp_path):
    path = tmp_path / "rows.csv"

    def evaluate(images, samples):
        return [] if samples[0].image_id == "img0" else _means(images, samples)

    rows = run_resumable(_samples(4), evaluate, path, batch_size=2)
    assert rows["image_id"].tolist() == ["img2", "img3"]
    recorder = Recorder(evaluate)
    assert run_resumable(_samples(4), recorder, path, batch_size=2)["mean"].tolist() == [2.0, 3.0]
    assert recorder.seen == []


def test_items_without_rows_are_done_and_not_run_again(tmp_path):
    path = tmp_path / "rows.csv"

    def evaluate(images, samples):
        return [r for r in _means(images, samples) if r["image_id"] not in ("img1", "img4", "img5")]

    first = run_resumable(_samples(6), evaluate, path, batch_size=2)
    recorder = Recorder(evaluate)
    again = run_resumable(_samples(6), recorder, path, batch_size=2)
    assert recorder.seen == []
    assert again["image_id"].tolist() == first["image_id"].tolist() == ["img0", "img2", "img3"]
    recorder = Recorder(evaluate)  # the data set grows: only the new items run
    assert run_resumable(_samples(8), recorder, path, batch_size=2)["image_id"].tolist()[-2:] == ["img6", "img7"]
    assert recorder.seen == ["img6", "img7"]


def test_a_repeated_id_is_refused_before_its_batch_runs(tmp_path):
    recorder = Recorder()
    with pytest.raises(ValueError, match=r"image_id 'img0' is used by items 0 and 2 of the data set"):
        run_resumable(_samples(3, ["img0", "img1", "img0"]), recorder, tmp_path / "a.csv", batch_size=2)
    assert recorder.seen == ["img0", "img1"]
    with pytest.raises(ValueError, match="'img0' is used by items 0 and 2"):  # also on resume, from the journal
        run_resumable(_samples(3, ["img0", "img1", "img0"]), recorder, tmp_path / "a.csv", batch_size=2)
    assert recorder.seen == ["img0", "img1"]
    recorder = Recorder()
    with pytest.raises(ValueError, match="'b' is used by items 1 and 2"):  # inside one batch
        run_resumable(_samples(3, ["a", "b", "b"]), recorder, tmp_path / "b.csv", batch_size=4)
    assert recorder.seen == []


def test_rows_without_their_items_id_name_the_batch(tmp_path):
    path = tmp_path / "rows.csv"
    run_resumable(_samples(2), _means, path, batch_size=2)
    with pytest.raises(ValueError, match=r"batch 1 \(items 'img2' \.\. 'img3'\) returned rows without an 'image_id'"):
        run_resumable(_samples(4), lambda images, samples: [{"mean": 1.0} for _ in samples], path, batch_size=2)
    with pytest.raises(ValueError, match=r"batch 1 .* returned rows for image_id\(s\) \['img9'\] that are not in"):
        run_resumable(_samples(4), lambda images, samples: [{"image_id": "img9"}], path, batch_size=2)
    rows = run_resumable(_samples(4), _means, path, batch_size=2)  # nothing was written by the refused batches
    assert rows["image_id"].tolist() == ["img0", "img1", "img2", "img3"]


def test_an_empty_data_set_gives_an_empty_frame(tmp_path):
    recorder = Recorder()
    rows = run_resumable([], recorder, tmp_path / "out" / "rows.csv")
    assert rows.empty and list(rows.columns) == ["image_id"] and recorder.seen == []
    assert run_resumable([], recorder, tmp_path / "out" / "rows.csv").empty


def test_run_key_is_stable_and_order_free():
    assert run_key({"a": 1, "b": [1, 2]}) == run_key({"b": [1, 2], "a": 1})
    assert run_key({"a": 1}) != run_key({"a": 2})


def test_model_fingerprint_sees_every_weight_and_buffer():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))
    copy = deepcopy(model)
    key = model_fingerprint(model)
    assert model_fingerprint(copy) == key and len(key) == 16
    assert model_fingerprint(copy.to(memory_format=torch.channels_last)) == key  # layout is not content
    with torch.no_grad():
        copy[4].weight[0, 7] += 1e-6
    assert model_fingerprint(copy) != key
    copy.load_state_dict(model.state_dict())
    copy[1].running_mean[2] = 0.5  # a buffer, not a parameter
    assert model_fingerprint(copy) != key
    before = model_fingerprint(copy)
    assert model_fingerprint(copy.to(torch.bfloat16)) != before  # dtypes that numpy lacks work too


class _Boxes(Dataset):
    """Items whose annotations can change in the middle; counts image loads."""

    def __init__(self, n: int, box_of_3: int = 1, label_of_3: int = 3, id_of_3: str = "x3",
                 records: bool = False) -> None:
        self.n, self.box_of_3, self.label_of_3, self.id_of_3 = n, box_of_3, label_of_3, id_of_3
        self.loads = 0
        if records:
            self.annotation_records = lambda: [{"id": self._id(i), "box": self._box(i)} for i in range(n)]

    def _id(self, i: int) -> str:
        return self.id_of_3 if i == 3 else f"x{i}"

    def _box(self, i: int) -> list[int]:
        return [0, 0, self.box_of_3 if i == 3 else 1, 1]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Sample:
        self.loads += 1
        label = self.label_of_3 if i == 3 else i
        return Sample(torch.ones(3, 4, 4), (label,), torch.tensor([self._box(i)]), torch.tensor([label]), self._id(i))


def test_dataset_fingerprint_sees_every_items_id_and_annotations():
    key = dataset_fingerprint(_Boxes(8))
    assert dataset_fingerprint(_Boxes(8)) == key
    assert dataset_fingerprint(_Boxes(8), num_workers=0) == key
    changed = [_Boxes(8, box_of_3=2), _Boxes(8, label_of_3=5), _Boxes(8, id_of_3="y3"), _Boxes(7)]
    assert len({key, *(dataset_fingerprint(d) for d in changed)}) == 5  # item 3 is neither first nor last
    assert dataset_fingerprint(Subset(_Boxes(8), range(1, 8))) != key
    assert dataset_fingerprint(_Boxes(0)) == "empty"


def test_dataset_fingerprint_uses_cheap_annotation_records():
    data = _Boxes(8, records=True)
    key = dataset_fingerprint(data)
    assert data.loads == 2  # the first and last images only
    assert dataset_fingerprint(_Boxes(8, box_of_3=2, records=True)) != key
    assert dataset_fingerprint(Subset(_Boxes(8, records=True), range(8))) == key
    broken = _Boxes(8, records=True)
    broken.annotation_records = lambda: [{}]
    with pytest.raises(ValueError, match="annotation_records\\(\\) of _Boxes gives 1 records for 8 items"):
        dataset_fingerprint(broken)


def test_runs_and_fingerprints_leave_the_global_rng_alone(tmp_path):
    """No library function touches the global RNG: a DataLoader draws its base seed from it unless
    it is given a generator of its own (issue 10, one state discipline)."""
    torch.manual_seed(123)
    before = torch.get_rng_state()
    dataset_fingerprint(_samples(5))
    run_resumable(_samples(5), _means, tmp_path / "rows.csv", batch_size=2)
    assert torch.equal(torch.get_rng_state(), before)
