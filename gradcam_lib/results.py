"""Resumable batch runs: every chapter's long loop writes its rows to a CSV after each batch, so an
interrupted run keeps what it finished and a re-run continues where it stopped."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from gradcam_lib.datasets.base import Sample, collate_samples

__all__ = ["dataset_fingerprint", "run_key", "run_resumable"]

BatchFn = Callable[[torch.Tensor, list[Sample]], list[dict[str, Any]]]


def run_key(config: Mapping[str, Any]) -> str:
    """A short, stable name for a run's settings: results of different settings never mix."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def dataset_fingerprint(dataset: Dataset) -> str:
    """Identify a data set by its size and its first and last items (ids and pixel sums), so that
    changing the data, its generator's settings or the model's geometry starts a fresh run."""
    if len(dataset) == 0:
        return "empty"
    ends = [dataset[0], dataset[len(dataset) - 1]]
    return f"{len(dataset)}:" + ":".join(f"{s.image_id}={float(s.image.double().sum()):.6e}" for s in ends)


def _append(rows: pd.DataFrame, csv_path: Path) -> None:
    """Append rows under the file's header, in its column order (a batch whose rows lack a column
    gets it empty); a column the file does not have is an error, not a silent shift."""
    if csv_path.exists() and csv_path.stat().st_size:
        header = pd.read_csv(csv_path, nrows=0).columns
        unknown = sorted(set(rows.columns) - set(header))
        if unknown:
            raise ValueError(f"rows have columns {unknown} that {csv_path} does not; remove the file to start again")
        rows.reindex(columns=header).to_csv(csv_path, mode="a", header=False, index=False)
    else:
        rows.to_csv(csv_path, index=False)


def run_resumable(
    dataset: Dataset,
    evaluate_batch: BatchFn,
    csv_path: str | Path,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    description: str = "",
) -> pd.DataFrame:
    """Evaluate ``dataset`` in order, batch by batch, appending the rows of each batch to
    ``csv_path``; items whose ``image_id`` is already in the file are skipped.

    Args:
        dataset: yields :class:`Sample`.
        evaluate_batch: ``(images on device, samples) -> rows``; each row must hold ``image_id``.
        csv_path: where the rows go (created with its folders).
        batch_size, num_workers: DataLoader settings; memory is pinned on CUDA.
        device: where the images go.
        description: the progress bar's label.

    Returns:
        Every row of the file, old and new.
    """
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    done = pd.read_csv(csv_path) if csv_path.exists() and csv_path.stat().st_size else pd.DataFrame()
    finished = done["image_id"].nunique() if len(done) else 0
    remaining = Subset(dataset, range(finished, len(dataset)))
    device = torch.device(device)
    loader = DataLoader(
        remaining,
        batch_size=batch_size,
        collate_fn=collate_samples,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    with tqdm(total=len(dataset), initial=finished, desc=description, unit="img") as progress:
        for images, samples in loader:
            rows = pd.DataFrame(evaluate_batch(images.to(device, non_blocking=True), samples))
            _append(rows, csv_path)
            progress.update(len(samples))
    return pd.read_csv(csv_path)
