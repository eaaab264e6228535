"""Resumable runs: finished rows are kept, a re-run continues, columns never shift."""

from __future__ import annotations

import pytest
import torch

from gradcam_lib.datasets.base import Sample
from gradcam_lib.results import run_key, run_resumable


def _samples(n: int) -> list[Sample]:
    return [Sample(torch.full((3, 4, 4), float(i)), (i,), torch.zeros((0, 4), dtype=torch.long),
                   torch.zeros(0, dtype=torch.long), f"img{i}") for i in range(n)]


class Interrupted(Exception):
    pass


def test_a_rerun_continues_where_the_last_one_stopped(tmp_path):
    path = tmp_path / "rows.csv"
    seen: list[str] = []
    interrupt_at = {"img3"}

    def evaluate(images, samples):
        seen.extend(s.image_id for s in samples)
        if interrupt_at & {s.image_id for s in samples}:
            raise Interrupted  # the first run stops during its second batch
        return [{"image_id": s.image_id, "mean": float(x.mean())} for s, x in zip(samples, images)]

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


def test_run_key_is_stable_and_order_free():
    assert run_key({"a": 1, "b": [1, 2]}) == run_key({"b": [1, 2], "a": 1})
    assert run_key({"a": 1}) != run_key({"a": 2})
