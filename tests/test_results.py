"""Resumable runs: every item's rows exactly once (also after kill -9 in the middle of a write), one
writer, torn files repaired, ids kept as strings, columns never shift; fingerprints see everything."""

from __future__ import annotations

import json
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


def test_several_rows_per_item_survive_an_interruption_exactly_once(tmp_path):
    """The chapters write one row per (image, threshold) or (image, method): an interrupted run and
    its resumption give every item all its rows, once, in data set order (the journal counts rows)."""
    path = tmp_path / "rows.csv"
    calls = {"n": 0}

    def three_rows(images, samples):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupted
        return [{"image_id": s.image_id, "t": t, "mean": float(x.mean()) + t} for s, x in zip(samples, images)
                for t in (0.1, 0.2, 0.3)]

    with pytest.raises(Interrupted):
        run_resumable(_samples(7), three_rows, path, batch_size=2)
    journal = [line for line in path.with_name("rows.csv.done").read_text().splitlines() if line]
    assert [len(json.loads(line)["ids"]) for line in journal] == [2, 2]  # two batches committed
    assert [json.loads(line)["rows"] for line in journal] == [6, 6]
    rows = run_resumable(_samples(7), three_rows, path, batch_size=3)
    assert rows["image_id"].tolist() == [f"img{i}" for i in range(7) for _ in range(3)]
    assert rows["t"].tolist() == [0.1, 0.2, 0.3] * 7
    assert rows["mean"].tolist() == pytest.approx([i + t for i in range(7) for t in (0.1, 0.2, 0.3)])
    again = run_resumable(_samples(7), three_rows, path, batch_size=3)
    assert again.equals(rows) and calls["n"] == 4  # one batch resumed the run; nothing ran the third time


# ---- mutation tests: run keys

import dataclasses  # noqa: E402  (this block is appended; the slotted sample below needs them at module level)
import types  # noqa: E402


def test_run_key_is_the_first_12_hex_digits_of_sha256_of_the_sorted_json():
    """run_keys.run_key: sha256 of ``json.dumps(config, sort_keys=True, default=str)``, first 12 hex digits;
    values JSON lacks (a dtype, a path) are written as their str(). Reference: the JSON text written by hand."""
    import hashlib

    config = {"root": Path("/data/voc"), "dtype": torch.float32, "layer": "features.29", "sizes": [1, 2]}
    text = '{"dtype": "torch.float32", "layer": "features.29", "root": "/data/voc", "sizes": [1, 2]}'
    assert run_key(config) == hashlib.sha256(text.encode()).hexdigest()[:12]
    assert run_key(config) != run_key(config | {"root": Path("/data/voc2")})


class _ExtraState(nn.Module):
    """A module whose state dict carries non-tensor extra state (``get_extra_state``), no random init."""

    def __init__(self, version: int) -> None:
        super().__init__()
        self.version = version
        self.register_buffer("table", torch.arange(4.0))

    def get_extra_state(self) -> dict:
        return {"version": self.version}

    def set_extra_state(self, state: dict) -> None:
        self.version = state["version"]


def test_model_fingerprint_sees_extra_state():
    """model_fingerprint hashes the whole state dict, extra state included (its docstring): a changed
    non-tensor entry is a changed model; equal state gives an equal key."""
    key = model_fingerprint(_ExtraState(1))
    assert model_fingerprint(_ExtraState(1)) == key and len(key) == 16
    assert model_fingerprint(_ExtraState(2)) != key


def _other_device() -> list[str]:
    """Devices other than the CPU to put a model on: torch's lazy (TorchScript) backend runs on a CPU-only
    machine; CUDA where there is one."""
    import importlib

    devices = []
    try:
        torch.empty(0, device="lazy")
        devices.append("lazy")
    except Exception:
        try:
            importlib.import_module("torch._lazy.ts_backend").init()
            torch.empty(0, device="lazy")
            devices.append("lazy")
        except Exception:
            pass
    if torch.cuda.is_available():
        devices.append("cuda")
    return devices


def test_model_fingerprint_does_not_depend_on_the_device():
    """_hash_tensor: "dtype, shape and raw bytes" -- the same weights on another device are the same model
    (the bytes are read after copying to the CPU)."""
    devices = _other_device()
    if not devices:
        pytest.skip("no device other than the CPU")
    model = nn.Sequential(nn.Linear(3, 2, bias=True), nn.BatchNorm1d(2))
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(6.0).reshape(2, 3))
        model[0].bias.copy_(torch.tensor([0.5, -1.0]))
    key = model_fingerprint(model)
    for device in devices:
        assert model_fingerprint(deepcopy(model).to(device)) == key, device


class _Pixels(Dataset):
    """Item i: a (3, 2, 2) image of value i (``bumped``: +1 on one pixel of that item; ``image_of``: another
    image for that item), label i, one box; ``records``: an ``annotation_records()`` of the ids; ``log``: a file
    each load appends its process id to."""

    def __init__(self, n: int, bumped: int | None = None, records: bool = False, log: Path | None = None,
                 image_of: dict[int, torch.Tensor] | None = None) -> None:
        self.n, self.bumped, self.log, self.image_of = n, bumped, log, image_of or {}
        if records:
            self.annotation_records = lambda: [{"id": f"p{i}"} for i in range(n)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Sample:
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(f"{os.getpid()}\n")
        image = self.image_of.get(i, torch.full((3, 2, 2), float(i)))
        if i == self.bumped:
            image = image.clone()
            image[0, 0, 0] += 1
        return Sample(image, (i,), torch.tensor([[0, 0, 1, 1]]), torch.tensor([i]), f"p{i}")


@pytest.mark.parametrize("records", [False, True], ids=["loading", "records"])
def test_dataset_fingerprint_sees_the_first_and_last_pixels_and_only_those(records):
    """dataset_fingerprint's docstring: "the pixel sums of its first and last images" are hashed, "pixels other
    than the first and last image's are not hashed" -- brute force over every item of 1, 2, 3 and 5 items."""
    for n in (1, 2, 3, 5):
        key = dataset_fingerprint(_Pixels(n, records=records))
        assert dataset_fingerprint(_Pixels(n, records=records)) == key
        changed = [dataset_fingerprint(_Pixels(n, bumped=k, records=records)) != key for k in range(n)]
        assert changed == [k in (0, n - 1) for k in range(n)], n


def test_dataset_fingerprint_sees_a_middle_images_shape_and_dtype():
    """_hash_sample: everything a sample carries but its pixels, "the image's shape and dtype" included."""
    key = dataset_fingerprint(_Pixels(5))
    assert dataset_fingerprint(_Pixels(5, image_of={2: torch.full((3, 2, 3), 2.0)})) != key
    assert dataset_fingerprint(_Pixels(5, image_of={2: torch.full((3, 2, 2), 2.0, dtype=torch.float64)})) != key
    same = torch.full((2, 2, 3), 2.0).permute(2, 0, 1)  # (3, 2, 2) in another memory layout: not content
    assert dataset_fingerprint(_Pixels(5, image_of={2: same})) == key


@dataclasses.dataclass(frozen=True, slots=True)
class _SlottedSample:
    """A sample dataclass with ``__slots__``: fields, but no ``vars()``."""

    image: torch.Tensor
    labels: tuple[int, ...]
    image_id: str


class _PlainSample:
    """A sample that is not a dataclass: plain attributes."""

    def __init__(self, image, labels, image_id):
        self.image, self.labels, self.image_id = image, labels, image_id


def test_dataset_fingerprint_reads_samples_that_are_not_plain_dataclasses():
    """_hash_sample reads a dataclass's fields (also one with ``__slots__``, which has no ``vars()``) and any
    other object's attributes: each kind is fingerprinted and its middle item's label is seen."""
    for kind in (_SlottedSample, _PlainSample, types.SimpleNamespace):
        def items(label_of_1, kind=kind):
            return [kind(image=torch.full((3, 2, 2), float(i)), labels=(label_of_1 if i == 1 else i,),
                         image_id=f"s{i}") for i in range(3)]

        key = dataset_fingerprint(items(1))
        assert dataset_fingerprint(items(1)) == key, kind
        assert dataset_fingerprint(items(7)) != key, kind


def test_dataset_fingerprint_loads_in_this_process_by_default_and_in_workers_when_asked(tmp_path):
    """dataset_fingerprint(num_workers=0) by default: every item loaded once, here; ``num_workers`` "spreads
    that over DataLoader workers" (other processes), with the same key and the global RNG left alone."""
    here = tmp_path / "here.log"
    key = dataset_fingerprint(_Pixels(5, log=here))
    assert here.read_text().split() == [str(os.getpid())] * 5
    workers = tmp_path / "workers.log"
    torch.manual_seed(7)
    before = torch.get_rng_state()
    assert dataset_fingerprint(_Pixels(5, log=workers), num_workers=2) == key
    assert torch.equal(torch.get_rng_state(), before)
    pids = workers.read_text().split()
    assert len(pids) == 5 and str(os.getpid()) not in pids


def test_dataset_fingerprint_hashes_annotation_records_as_sorted_json_lines():
    """annotation_records() are "JSON-able descriptions": key order does not matter and values JSON lacks are
    written as str(). Known-answer vector: the key names result files (README), so it must be the same on every
    machine and version; reference written by hand from the docstring's recipe: sha256 over one JSON line per
    record (sorted keys) then one ``id=pixel sum`` line for the first and for the last image; ``n:`` + 16 hex."""
    import hashlib

    class Records(_Pixels):
        def annotation_records(self):
            return [{"root": Path("/d"), "id": f"p{i}", "box": [0, 0, 1, 1]} for i in range(self.n)]

    lines = ''.join(f'{{"box": [0, 0, 1, 1], "id": "p{i}", "root": "/d"}}\n' for i in range(3))
    lines += "p0=0.000000e+00\np2=2.400000e+01\n"
    assert dataset_fingerprint(Records(3)) == "3:" + hashlib.sha256(lines.encode()).hexdigest()[:16]
    one = '{"box": [0, 0, 1, 1], "id": "p0", "root": "/d"}\np0=0.000000e+00\np0=0.000000e+00\n'
    assert dataset_fingerprint(Records(1)) == "1:" + hashlib.sha256(one.encode()).hexdigest()[:16]


def test_dataset_fingerprint_of_loaded_samples_known_answer():
    """Known-answer vector for data sets without annotation_records() (the key names result files, README, so it
    must not drift between versions): per item, each field in declaration order as ``name\\0`` then, for the image,
    its dtype and shape, for another tensor its dtype, shape and raw bytes, else its repr, each ended by ``\\0``;
    a newline ends the item; then ``id=pixel sum`` lines for the first and the last image (for one item: the
    same image twice, it is both); ``n:`` + 16 hex digits of the sha256. Written by hand from the docstrings."""
    import hashlib

    import numpy as np

    def item(i):
        box = np.array([0, 0, 1, 1], dtype=np.int64).tobytes()
        return (b"image\0torch.float32(3, 2, 2)\0" + f"labels\0({i},)\0".encode()
                + b"boxes\0torch.int64(1, 4)\0" + box
                + b"box_labels\0torch.int64(1,)\0" + np.array([i], dtype=np.int64).tobytes()
                + f"image_id\0'p{i}'\0".encode() + b"\n")

    sums = {0: "p0=0.000000e+00\n", 2: "p2=2.400000e+01\n"}
    three = b"".join(item(i) for i in range(3)) + (sums[0] + sums[2]).encode()
    assert dataset_fingerprint(_Pixels(3)) == "3:" + hashlib.sha256(three).hexdigest()[:16]
    one = item(0) + (sums[0] * 2).encode()
    assert dataset_fingerprint(_Pixels(1)) == "1:" + hashlib.sha256(one).hexdigest()[:16]
    two = item(0) + item(1) + b"p0=0.000000e+00\np1=1.200000e+01\n"
    assert dataset_fingerprint(_Pixels(2)) == "2:" + hashlib.sha256(two).hexdigest()[:16]


# ---- mutation tests: resumable runs

import gradcam_lib.results as results_module  # noqa: E402  (this block is appended; the spy below patches it)


def _six_item_run(tmp_path):
    """A finished 6-item run in batches of 2: its paths, rows and journal (module notes: the file layout)."""
    path, done = tmp_path / "rows.csv", tmp_path / "rows.csv.done"
    reference = run_resumable(_samples(6), _means, path, batch_size=2)
    return path, done, reference, done.read_bytes()


def test_journal_records_with_bytes_going_back_or_ids_missing_are_refused(tmp_path):
    """Module notes: a damaged journal line in the middle is refused with a message naming the journal and the
    CSV; a record is whole only with positions, ids, rows and bytes, one id per position and bytes never
    decreasing (the CSV only grows)."""
    path, done, _, journal = _six_item_run(tmp_path)
    lines = [json.loads(line) for line in journal.decode().splitlines()]
    damaged = {
        "bytes go back": [lines[0], {**lines[1], "bytes": lines[0]["bytes"] - 1}, lines[2]],
        "an id missing": [lines[0], {**lines[1], "ids": lines[1]["ids"][:1]}, lines[2]],
        "a key missing": [lines[0], {k: v for k, v in lines[1].items() if k != "rows"}, lines[2]],
    }
    for case, records in damaged.items():
        done.write_text("".join(json.dumps(r) + "\n" for r in records))
        with pytest.raises(ValueError, match=rf"^{done}: line 2 is not a completion record, so the journal of {path} "
                                             rf"is damaged; remove {path} and {done}"):
            run_resumable(_samples(6), _means, path, batch_size=2)
        assert done.read_text().count("\n") == 3, case  # refused: nothing repaired, nothing run


def test_a_clean_rerun_warns_nothing_and_leaves_both_files_alone(tmp_path, caplog):
    """Module notes: recovery only acts (and warns) when the CSV or the journal holds more or less than the
    last complete batch; a finished run's files are left byte for byte as they are."""
    path, done, reference, journal = _six_item_run(tmp_path)
    csv_bytes = path.read_bytes()
    recorder = Recorder()
    with caplog.at_level(logging.DEBUG, logger="gradcam_lib.results"):
        rows = run_resumable(_samples(6), recorder, path, batch_size=2)
    assert caplog.messages == [] and recorder.seen == []
    assert path.read_bytes() == csv_bytes and done.read_bytes() == journal
    pd.testing.assert_frame_equal(rows, reference)


def test_the_repair_warnings_read_in_full(tmp_path, caplog):
    """Module notes: rows written after the last commit and a torn journal line disappear "with a logged warning
    naming the file and the count"; the whole text of each warning is the contract (hand-counted: 2 lines,
    15 bytes)."""
    path, done, reference, journal = _six_item_run(tmp_path)
    with open(path, "ab") as handle:
        handle.write(b"img5,5.0\nimg5,5")
    with open(done, "ab") as handle:
        handle.write(b'{"positions": [6')
    with caplog.at_level(logging.WARNING, logger="gradcam_lib.results"):
        rows = run_resumable(_samples(6), _means, path, batch_size=2)
    assert caplog.messages == [
        f"{path}: dropped 2 line(s) (15 bytes) written after the last complete batch (an interrupted run); their "
        "items will be run again",
        f"{done}: dropped a completion record cut in the middle (an interrupted run)",
    ]
    pd.testing.assert_frame_equal(rows, reference)
    assert done.read_bytes() == journal


def test_an_emptied_csv_forgets_every_batch_and_the_run_starts_over(tmp_path, caplog):
    """Module notes: a CSV shorter than its journal says forgets the batches past its end (here all of them:
    the journal is emptied) and runs them again, with a warning naming both files, the sizes (68 bytes =
    the 14-byte header + 6 rows of 9 bytes, hand-counted) and the counts; the files end as a fresh run's."""
    path, done, reference, journal = _six_item_run(tmp_path)
    assert len(path.read_bytes()) == 14 + 6 * 9
    path.write_bytes(b"")
    recorder = Recorder()
    with caplog.at_level(logging.WARNING, logger="gradcam_lib.results"):
        rows = run_resumable(_samples(6), recorder, path, batch_size=2)
    assert caplog.messages == [f"{path} is 0 bytes, shorter than its journal rows.csv.done says (68): the last 3 "
                               "batch(es) (6 items) will be run again"]
    assert recorder.seen == [f"img{i}" for i in range(6)]
    assert done.read_bytes() == journal  # the old records are gone: exactly the fresh run's journal
    pd.testing.assert_frame_equal(rows, reference)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gradcam_lib.results"):
        pd.testing.assert_frame_equal(run_resumable(_samples(6), _means, path, batch_size=2), reference)
    assert caplog.messages == []


def test_the_default_batch_size_is_8(tmp_path):
    """run_resumable's signature: batch_size=8, so 20 items run (and are committed) as 8 + 8 + 4."""
    path = tmp_path / "rows.csv"
    sizes: list[int] = []

    def evaluate(images, samples):
        sizes.append(len(samples))
        return _means(images, samples)

    run_resumable(_samples(20), evaluate, path)
    assert sizes == [8, 8, 4]
    journal = [json.loads(line) for line in (tmp_path / "rows.csv.done").read_text().splitlines()]
    assert [r["positions"] for r in journal] == [list(range(8)), list(range(8, 16)), list(range(16, 20))]


def test_the_progress_bar_starts_at_the_done_count_and_has_no_label_by_default(tmp_path, capfd):
    """run_resumable: the progress bar counts the data set (done items included: a resumed 7-item run starts at
    4/7) and ``description`` (default "", tqdm's no-label) is its label."""
    path = tmp_path / "rows.csv"
    run_resumable(_samples(4), _means, path, batch_size=2)
    capfd.readouterr()
    run_resumable(_samples(7), _means, path, batch_size=2)
    bars = [b.strip() for b in capfd.readouterr().err.replace("\n", "\r").split("\r") if b.strip()]
    assert bars[0].startswith("57%|") and "| 4/7 [" in bars[0]
    assert bars[-1].startswith("100%|") and "| 7/7 [" in bars[-1] and "img/s" in bars[-1]
    run_resumable(_samples(8), _means, path, batch_size=2, description="voc")
    assert capfd.readouterr().err.strip().split("\r")[-1].strip().startswith("voc: 100%|")


def test_the_csv_is_created_with_all_its_missing_folders(tmp_path):
    """run_resumable's docstring: csv_path is "created with its folders" (several levels, like mkdir -p)."""
    path = tmp_path / "a" / "b" / "c" / "rows.csv"
    assert run_resumable(_samples(2), _means, path)["image_id"].tolist() == ["img0", "img1"]
    assert path.exists() and (path.parent / "rows.csv.done").exists()


def test_the_empty_frame_has_the_same_string_image_id_as_a_full_one(tmp_path):
    """Module notes: image_id comes back as a string; with no row at all the column is still pandas' string
    dtype (the dtype pandas itself gives a column of str), the same as a file with rows gives."""
    full = run_resumable(_samples(2), _means, tmp_path / "full.csv")
    empty = run_resumable([], _means, tmp_path / "empty.csv")
    assert empty["image_id"].dtype == pd.Series(["a"]).dtype == full["image_id"].dtype


class _WorkerSeeds(Dataset):
    """Each item carries (worker id, torch seed of the process that loaded it) in its labels."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Sample:
        info = torch.utils.data.get_worker_info()
        labels = (-1, torch.initial_seed()) if info is None else (info.id, torch.initial_seed())
        return Sample(torch.zeros(3, 2, 2), labels, torch.zeros((0, 4), dtype=torch.long),
                      torch.zeros(0, dtype=torch.long), f"img{index}")


def test_workers_load_the_items_with_seeds_of_a_loader_seeded_0(tmp_path):
    """run_resumable: num_workers is the DataLoader's; the loader's own generator is seeded 0 so that the global
    RNG stays untouched and the workers' seeds are fixed. Reference: a plain torch DataLoader over the same items
    with generator=Generator().manual_seed(0) (torch: worker seed = base seed drawn from it + worker id)."""
    reference = torch.utils.data.DataLoader(_WorkerSeeds(4), batch_size=1, num_workers=2, collate_fn=list,
                                            generator=torch.Generator().manual_seed(0))
    expected = {f"img{i}": batch[0].labels for i, batch in enumerate(reference)}
    assert {label[0] for label in expected.values()} == {0, 1}
    for run, global_seed in enumerate((1, 2)):
        seen: dict[str, tuple] = {}

        def evaluate(images, samples, seen=seen):
            seen.update({s.image_id: s.labels for s in samples})
            return _means(images, samples)

        state = torch.get_rng_state()
        torch.manual_seed(global_seed)  # the workers' seeds must not depend on it
        try:
            run_resumable(_WorkerSeeds(4), evaluate, tmp_path / f"rows{run}.csv", batch_size=1, num_workers=2)
        finally:
            torch.set_rng_state(state)
        assert seen == expected


@pytest.mark.parametrize(("device", "pinned"), [("cpu", False), ("meta", False), ("cuda", True)])
def test_memory_is_pinned_on_cuda_only(tmp_path, monkeypatch, device, pinned):
    """run_resumable's docstring: "memory is pinned on CUDA" (and only there). An empty data set runs nothing on
    the device, so the cuda case needs no GPU; the loader's settings are read by a spy around DataLoader."""
    settings: list[dict] = []
    real = results_module.DataLoader

    def spy(*args, **kwargs):
        settings.append(dict(kwargs))
        return real(*args, **{**kwargs, "pin_memory": False})

    monkeypatch.setattr(results_module, "DataLoader", spy)
    run_resumable([], _means, tmp_path / "rows.csv", device=device)
    assert len(settings) == 1 and settings[0].get("pin_memory") is pinned


def test_fingerprint_of_an_empty_sliced_tensor_is_that_of_an_empty_one():
    """A sample without boxes whose ``box_labels`` is a slice (stride 4, no bytes) hashes as an
    empty contiguous tensor of its dtype and shape would (it used to fail to be viewed as bytes)."""
    from gradcam_lib.datasets.base import Sample
    from gradcam_lib.run_keys import dataset_fingerprint

    empty = torch.zeros((0, 4), dtype=torch.long)
    image = torch.zeros(1, 4, 4)
    sliced = [Sample(image, (1,), empty, empty[:, 0], "a")]
    plain = [Sample(image, (1,), empty, torch.zeros(0, dtype=torch.long), "a")]
    assert dataset_fingerprint(sliced) == dataset_fingerprint(plain)
    assert dataset_fingerprint(plain) != dataset_fingerprint([Sample(image, (2,), empty, plain[0].box_labels, "a")])
