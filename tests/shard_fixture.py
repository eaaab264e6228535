"""A tiny experiment for the sharded-run tests (tests/test_shards.py), importable by the processes
torchrun starts: rows that depend on the item only (not on its batch), 0, 1 or 2 rows per item, and
a way to kill one rank mid-run (``SHARD_TEST_DIE="<rank>:<batches>"``: that rank exits after
evaluating that many batches, before committing the last one)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from toy_models import toy_entry

from gradcam_lib.datasets.base import Sample
from gradcam_lib.experiments.base import Experiment
from gradcam_lib.shards import rank_world


@dataclass(frozen=True)
class SumSettings:
    scale: float = 1.0


class SumExperiment(Experiment[SumSettings]):
    tag = "sum"
    evaluated = 0

    def batch(self, images: torch.Tensor, samples):
        type(self).evaluated += 1
        die = os.environ.get("SHARD_TEST_DIE")
        if die and rank_world()[0] == int(die.split(":")[0]) and type(self).evaluated > int(die.split(":")[1]):
            os._exit(3)
        rows = []
        for image, sample in zip(images, samples, strict=True):
            number = int(sample.image_id[3:])
            total = float(image.double().sum()) * self.settings.scale
            rows += [{"image_id": sample.image_id, "part": part, "sum": total + part} for part in range(number % 3)]
        return rows


def items(n: int) -> list[Sample]:
    generator = torch.Generator().manual_seed(7)
    empty = torch.zeros((0, 4), dtype=torch.long)
    return [Sample(torch.randn(3, 12, 12, generator=generator), (0,), empty, torch.zeros(0, dtype=torch.long),
                   f"img{i}") for i in range(n)]


def experiment(n: int, scale: float = 1.0) -> SumExperiment:
    return SumExperiment(toy_entry(), items(n), "toy_items", SumSettings(scale))
