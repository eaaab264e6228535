"""What identifies a run, so that results of different runs never mix: :func:`run_key` hashes a
run's settings, :func:`model_fingerprint` its weights, :func:`dataset_fingerprint` every item's id
and annotations. :mod:`gradcam_lib.results` names each results file by them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence, Sized
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = ["dataset_fingerprint", "model_fingerprint", "run_key"]


def run_key(config: Mapping[str, Any]) -> str:
    """A short, stable name for a run's settings: results of different settings never mix.

    Put everything that changes the rows in ``config``: the model's name and
    :func:`model_fingerprint`, the Grad-CAM layer, the method settings and
    :func:`dataset_fingerprint`."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _hash_tensor(digest: Any, tensor: torch.Tensor) -> None:
    """Feed a tensor's dtype, shape and raw bytes (row-major, whatever its memory format) to ``digest``."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest.update(f"{flat.dtype}{tuple(tensor.shape)}\0".encode())
    if flat.numel():  # an empty tensor has no bytes (and a sliced one may not be viewed as bytes)
        digest.update(flat.view(torch.uint8).numpy().data)  # .data: the array's buffer as a memoryview


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the state dict's names, dtypes, shapes and bytes (parameters and buffers): a
    fine-tuned model under an old name gets a new key. About 0.5 GB/s (VGG-16: ~1 s on a CPU)."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(f"{name}\0".encode())
        if isinstance(value, torch.Tensor):
            _hash_tensor(digest, value)
        else:  # extra state
            digest.update(f"{value!r}\0".encode())
    return digest.hexdigest()[:16]


def _hash_sample(digest: Any, sample: Any) -> None:
    """Feed everything a sample carries but its pixels (id, labels, boxes, box labels, flags of a
    subclass such as VOC's ``difficult``; the image's shape and dtype) to ``digest``."""
    fields = ([(f.name, getattr(sample, f.name)) for f in dataclasses.fields(sample)]
              if dataclasses.is_dataclass(sample) else sorted(vars(sample).items()))
    for name, value in fields:
        digest.update(f"{name}\0".encode())
        if name == "image" and isinstance(value, torch.Tensor):
            digest.update(f"{value.dtype}{tuple(value.shape)}\0".encode())
        elif isinstance(value, torch.Tensor):
            _hash_tensor(digest, value)
        else:
            digest.update(f"{value!r}\0".encode())


def _as_list(samples: list[Any]) -> list[Any]:
    return list(samples)


def _annotation_records(dataset: Dataset) -> Sequence[Any] | None:
    """``dataset.annotation_records()`` (also through a :class:`Subset`), or None without one."""
    if isinstance(dataset, Subset):
        records = _annotation_records(dataset.dataset)
        return None if records is None else [records[i] for i in dataset.indices]
    method = getattr(dataset, "annotation_records", None)
    return list(method()) if callable(method) else None


def dataset_fingerprint(dataset: Dataset, num_workers: int = 0) -> str:
    """Identify a data set by its size, every item's id and annotations, and the pixel sums of its
    first and last images, so that changing the data, its annotations, its generator's settings or
    the model's geometry starts a fresh run.

    Cost: a data set with an ``annotation_records()`` method (one JSON-able description of each
    item's id and annotations, in order, read without decoding images) is hashed from it, and only
    two images are decoded. Otherwise every item is loaded once (one pass of data loading, like an
    epoch without the model: seconds for the default profile, minutes for ILSVRC val);
    ``num_workers`` spreads that over DataLoader workers. Pixels other than the first and last
    image's are not hashed: a change that only alters pixels belongs in the run's settings."""
    n = len(cast(Sized, dataset))
    if n == 0:
        return "empty"
    digest = hashlib.sha256()
    records = _annotation_records(dataset)
    if records is not None:
        if len(records) != n:
            raise ValueError(f"annotation_records() of {type(dataset).__name__} gives {len(records)} records "
                             f"for {n} items; it must describe every item, in order")
        for record in records:
            digest.update(json.dumps(record, sort_keys=True, default=str).encode() + b"\n")
        ends = [dataset[0], dataset[n - 1]]
    else:
        # a generator of its own: the DataLoader would otherwise draw its base seed from the global RNG
        loader = DataLoader(dataset, batch_size=16, collate_fn=_as_list, num_workers=num_workers,
                            generator=torch.Generator().manual_seed(0))
        ends = []
        for position, sample in enumerate(s for batch in loader for s in batch):
            _hash_sample(digest, sample)
            digest.update(b"\n")
            if position in (0, n - 1):
                ends.append(sample)
        ends = ends * 2 if n == 1 else ends
    for sample in ends:
        digest.update(f"{sample.image_id}={float(sample.image.double().sum()):.6e}\n".encode())
    return f"{n}:{digest.hexdigest()[:16]}"
