"""The experiment template: one chapter's run, from settings to result rows, exactly once.

An experiment is a model entry, a data set and a frozen settings dataclass; the only part a chapter
writes is :meth:`Experiment.batch`, ``(images, samples) -> rows``. Everything else is shared and
final (Quantus's pattern: the abstract piece is the batch step):

* the run key (:meth:`Experiment.key`): everything that changes the rows -- the model's name,
  weights fingerprint and layer, the data set's name and fingerprint over every item's annotations,
  and every field of the settings -- so results of different runs never mix;
* the results file ``<results_dir>/<model>_<tag>_<dataset>_<key>.csv`` and the exactly-once,
  resumable loop over it (:func:`gradcam_lib.results.run_resumable`: a batch's rows appear all
  at once, a second writer is refused, a torn tail is repaired);
* state: the loop runs inside :func:`~gradcam_lib.methods.scopes.explanation_scope`, so the caller's
  model leaves the run in the train / eval mode and with the ``requires_grad`` flags it came with,
  and BatchNorm statistics are never updated; no global RNG is touched (settings carry seeds,
  used through generators);
* identification: every returned row carries ``model``, ``dataset`` and the :meth:`labels`
  (``method`` where the settings have one); timings never go into rows.

A new chapter's experiment is a settings dataclass and a ``batch``::

    @dataclass(frozen=True)
    class MySettings:
        method: str = "gradcam"

    class MyExperiment(Experiment[MySettings]):
        tag = "mine"
        def batch(self, images, samples):
            maps = method_maps(self.settings.method, self.entry.model, self.entry.layer, images,
                               [s.labels[0] for s in samples], reduction="max_abs")
            return [{"image_id": s.image_id, "score": my_metric(m, s)} for s, m in zip(samples, maps)]

    rows = MyExperiment(entry, dataset, "composite", MySettings()).run("results/default/09_mine")
"""

from __future__ import annotations

import dataclasses
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence, Sized
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast

import pandas as pd
import torch
from torch.utils.data import Dataset

from gradcam_lib.datasets.base import Sample
from gradcam_lib.methods.scopes import explanation_scope
from gradcam_lib.models import ModelEntry
from gradcam_lib.results import run_resumable
from gradcam_lib.run_keys import dataset_fingerprint, model_fingerprint, run_key
from gradcam_lib.shards import (
    ShardError,
    completed_positions,
    merge_shards,
    rank_world,
    read_run,
    shard_path,
    share,
    synchronise,
)

__all__ = ["Experiment"]

S = TypeVar("S")


class Experiment(ABC, Generic[S]):
    """One (model, data set, settings) run of a chapter; subclasses write :meth:`batch` only.

    ``settings`` must be a frozen dataclass instance (it goes into the run key field by field);
    ``tag`` names the experiment in the results file (default: the settings' ``method``)."""

    tag: ClassVar[str] = ""

    def __init__(self, entry: ModelEntry, dataset: Dataset, dataset_name: str, settings: S) -> None:
        if not (dataclasses.is_dataclass(settings) and not isinstance(settings, type)):
            raise TypeError(f"settings must be a dataclass instance, got {type(settings).__name__}")
        self.entry, self.dataset, self.dataset_name, self.settings = entry, dataset, dataset_name, settings

    @abstractmethod
    def batch(self, images: torch.Tensor, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        """The rows of one batch (``images`` on the run's device); each row holds the ``image_id``
        of one of ``samples``; an item may yield no row or several."""

    def labels(self) -> dict[str, Any]:
        """Columns added to every returned row besides ``model`` and ``dataset`` (not stored)."""
        method = getattr(self.settings, "method", None)
        return {} if method is None else {"method": method}

    def key(self) -> dict[str, Any]:
        """Everything that changes the rows (hashed into the file name by :func:`run_key`)."""
        return {
            "experiment": type(self).__name__,
            "model": self.entry.name,
            "weights": model_fingerprint(self.entry.model),
            "layer": self.entry.layer_name,
            "dataset": self.dataset_name,
            "data": dataset_fingerprint(self.dataset),
            **dataclasses.asdict(self.settings),  # type: ignore[call-overload]
        }

    def path(self, results_dir: str | Path) -> Path:
        """``<results_dir>/<model>_<tag>_<dataset>_<key>.csv`` (characters other than letters, digits,
        ``_``, ``.`` and ``-`` replaced by ``_``)."""
        tag = self.tag or str(getattr(self.settings, "method", type(self).__name__.lower()))
        name = f"{self.entry.name}_{tag}_{self.dataset_name}"
        safe = re.sub(r"[^\w.-]", "_", name)  # "xrv:densenet..." -> a file name valid everywhere
        return Path(results_dir) / f"{safe}_{run_key(self.key())}.csv"

    def run(self, results_dir: str | Path, batch_size: int = 8, device: str | torch.device = "cpu",
            num_workers: int = 0) -> pd.DataFrame:
        """Every row of the run, computing only the items not yet done (resumable, exactly once).

        Under torchrun (a process group of ``W`` > 1 ranks, :func:`gradcam_lib.shards.distributed`)
        each rank computes its share into its own shard, rank 0 merges the shards into the run's
        file, and every rank returns all the rows. In one process, the complete shards of an earlier
        sharded run are merged first (:func:`~gradcam_lib.shards.merge_shards`)."""
        path = self.path(results_dir)
        n_items = len(cast(Sized, self.dataset))
        rank, world = rank_world()
        description = " ".join(str(v) for v in (self.entry.name, *self.labels().values(), self.dataset_name))
        if world > 1:
            description += f" [rank {rank}/{world}]"
            finished = completed_positions(path)
            if len(finished) < n_items:
                if finished:
                    raise ShardError(f"{path} holds a partial single-process run ({len(finished)} of {n_items} "
                                     "items); finish it in one process or remove it before a sharded run")
                with explanation_scope(self.entry.model):
                    run_resumable(self.dataset, self.batch, shard_path(path, rank, world), batch_size=batch_size,
                                  device=device, num_workers=num_workers, description=description,
                                  positions=share(n_items, rank, world))
                synchronise()
                if rank == 0:
                    merge_shards(path, n_items)
                synchronise()
            rows = read_run(path)
        else:
            merge_shards(path, n_items)
            with explanation_scope(self.entry.model):
                rows = run_resumable(self.dataset, self.batch, path, batch_size=batch_size, device=device,
                                     num_workers=num_workers, description=description)
        return rows.assign(model=self.entry.name, **self.labels(), dataset=self.dataset_name)
