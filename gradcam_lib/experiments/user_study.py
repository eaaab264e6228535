"""Chapter 4's study kit, the part that runs models (the paper's Sec. 5.2 trust study): which images
both models classify correctly (:class:`Top1Experiment`, :func:`agreed_items`), each model's Guided
Backprop and Guided Grad-CAM of them as pictures raters see (:func:`explain_items`), the key (the side
of the more accurate model drawn per question, the order shuffled: :func:`assign_sides`), and the
study's files: :func:`build_study` writes the key apart from the form, which
:mod:`gradcam_lib.report.user_study` renders and writes (``for_raters/rating_form.html``). The
ratings that come back are read with :func:`read_ratings` and :func:`read_key` (ids kept as text)
and analysed by :mod:`gradcam_lib.metrics.agreement`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from gradcam_lib.datasets import build_dataset
from gradcam_lib.datasets.base import Sample
from gradcam_lib.experiments.base import Experiment
from gradcam_lib.methods import maps as method_maps
from gradcam_lib.methods.display import guided_to_display, resize_picture
from gradcam_lib.metrics.agreement import KEY_COLUMNS, RATINGS_COLUMNS, STUDY_METHODS
from gradcam_lib.models import ModelEntry

__all__ = ["Study", "StudyItem", "Top1Experiment", "Top1Settings", "agreed_items", "assign_sides", "build_study",
           "explain_items", "read_key", "read_ratings", "study_id_of", "top1_table", "write_key"]


@dataclass(frozen=True)
class StudyItem:
    """One image of the study and what raters see of it.

    Attributes:
        image_id, class_index, class_name: the image and the class both models predict (top-1).
        picture: ``(S, S, 3)`` uint8, the image as shown.
        maps: ``{(model name, method): (S, S, 3) uint8}``, each explanation as shown.
    """

    image_id: str
    class_index: int
    class_name: str
    picture: np.ndarray
    maps: Mapping[tuple[str, str], np.ndarray]


@dataclass(frozen=True)
class Study:
    """A generated study: the items, the key and where the key was written (the form is rendered
    from ``items`` and ``key`` by :func:`gradcam_lib.report.user_study.render_form`)."""

    items: tuple[StudyItem, ...]
    key: pd.DataFrame
    key_path: Path


@dataclass(frozen=True)
class Top1Settings:
    """Nothing to set: the top-1 class of every image (the run key holds the model and the data)."""


class Top1Experiment(Experiment[Top1Settings]):
    """The top-1 class of every image and whether it is one of the image's ground-truth classes
    (the ILSVRC rule), one row per image; :func:`top1_table` puts the rows in dataset order."""

    tag = "top1"

    def batch(self, images: torch.Tensor, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        with torch.no_grad():
            top1 = self.entry.model(images).argmax(1).tolist()
        return [{"image_id": s.image_id, "top1": t, "correct": t in s.labels}
                for s, t in zip(samples, top1, strict=True)]


def top1_table(rows: pd.DataFrame) -> pd.DataFrame:
    """:class:`Top1Experiment` rows (in dataset order, as :meth:`~Experiment.run` returns them) ->
    ``position`` (index in the data set), ``image_id``, ``top1``, ``correct``."""
    rows = rows.astype({"image_id": str, "top1": int, "correct": bool})
    table = rows.assign(position=np.arange(len(rows)))[["position", "image_id", "top1", "correct"]]
    return table.reset_index(drop=True)


def agreed_items(
    stronger: pd.DataFrame, weaker: pd.DataFrame, n_items: int | None = None, seed: int = 0
) -> pd.DataFrame:
    """Images that both models classify correctly with the same top-1 class (paper Sec. 5.2: "images
    where both models made the correct prediction"; one class, so both explain the same thing).

    Args:
        stronger, weaker: :func:`top1_table` tables of the same data set, in the same order.
        n_items: keep at most this many, drawn at random with ``seed`` (dataset order kept).

    Returns:
        ``position, image_id, class_index``.
    """
    if len(stronger) != len(weaker) or not (stronger["image_id"].to_numpy() == weaker["image_id"].to_numpy()).all():
        raise ValueError("the two prediction tables must list the same images in the same order")
    both = (
        stronger["correct"].to_numpy()
        & weaker["correct"].to_numpy()
        & (stronger["top1"].to_numpy() == weaker["top1"].to_numpy())
    )
    chosen = stronger[both]
    if n_items is not None and len(chosen) > n_items:
        keep = np.sort(np.random.default_rng(seed).choice(len(chosen), size=n_items, replace=False))
        chosen = chosen.iloc[keep]
    return chosen.rename(columns={"top1": "class_index"})[["position", "image_id", "class_index"]].reset_index(
        drop=True
    )


def _explain(
    entry: ModelEntry, images: torch.Tensor, targets: torch.Tensor, methods: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The study's input-space explanations; Guided Grad-CAM reuses the Guided Backprop pass."""
    unknown = set(methods) - set(STUDY_METHODS)
    if unknown:
        raise KeyError(f"unknown study method {sorted(unknown)}; choose from {', '.join(STUDY_METHODS)}")
    guided = method_maps("guided_backprop", entry.model, entry.layer, images, targets, reduction="none")
    maps = {"guided_backprop": guided}
    if "guided_gradcam" in methods:
        maps["guided_gradcam"] = method_maps("guided_gradcam", entry.model, entry.layer, images, targets,
                                             reduction="none", guided=guided)
    return {method: maps[method].detach().cpu() for method in methods}


def explain_items(
    entry: ModelEntry,
    dataset: Dataset[Sample],
    items: pd.DataFrame,
    methods: Sequence[str] = tuple(STUDY_METHODS),
    size: int = 160,
    batch_size: int = 16,
    device: str = "cpu",
) -> tuple[list[np.ndarray], dict[tuple[str, str], np.ndarray]]:
    """Each method's explanation of ``items`` (rows of :func:`agreed_items`) by one model, rendered
    as images raters see (:func:`gradcam_lib.methods.display.guided_to_display`, resized to ``size``).

    Returns:
        ``(pictures, maps)``: the images as shown, one per item, and ``{(image_id, method): map}``.
    """
    pictures: list[np.ndarray] = []
    maps: dict[tuple[str, str], np.ndarray] = {}
    for start in range(0, len(items), batch_size):
        chunk = items.iloc[start:start + batch_size]
        samples = [dataset[int(p)] for p in chunk["position"]]
        if [s.image_id for s in samples] != chunk["image_id"].astype(str).tolist():
            raise ValueError("items do not match the data set (positions point to other images)")
        images = torch.stack([s.image for s in samples]).to(device)
        targets = torch.tensor(chunk["class_index"].to_numpy(copy=True), dtype=torch.long, device=device)
        pictures += [resize_picture(entry.transform.to_display(s.image), size) for s in samples]
        for method, explained in _explain(entry, images, targets, methods).items():
            for image_id, gradient in zip(chunk["image_id"].astype(str), explained, strict=True):
                maps[image_id, method] = resize_picture(guided_to_display(gradient), size)
    return pictures, maps


def assign_sides(
    items: pd.DataFrame,
    stronger: str,
    weaker: str,
    methods: Sequence[str] = tuple(STUDY_METHODS),
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The study's key: one question per (image, method), the stronger model's side (A or B) drawn
    independently for each question, and the question order shuffled (KTH drew the sides once for
    the whole form).

    Returns:
        :data:`KEY_COLUMNS`, one row per question in the order raters see them; ``question_id`` is
        ``q01, q02, ...`` in that order, so it tells raters nothing about the side.
    """
    pairs = [(row, method) for row in items.itertuples(index=False) for method in methods]
    rng = np.random.default_rng(seed)
    stronger_is_a = rng.random(len(pairs)) < 0.5
    order = rng.permutation(len(pairs))
    rows = []
    for position, index in enumerate(order):
        row, method = pairs[index]
        a_is_stronger = bool(stronger_is_a[index])
        rows.append({
            "question_id": f"q{position + 1:02d}",
            "position": position + 1,
            "image_id": str(row.image_id),
            "class_index": int(row.class_index),
            "class_name": class_names[int(row.class_index)] if class_names is not None else str(row.class_index),
            "method": method,
            "stronger_side": "A" if a_is_stronger else "B",
            "model_a": stronger if a_is_stronger else weaker,
            "model_b": weaker if a_is_stronger else stronger,
        })
    key = pd.DataFrame(rows, columns=[c for c in KEY_COLUMNS if c != "study_id"])
    return key.assign(study_id=study_id_of(key))[list(KEY_COLUMNS)]


def study_id_of(key: pd.DataFrame) -> str:
    """A short name for a study, derived from its questions and sides: ratings carry it, so that
    ratings of one study are never scored with another study's key."""
    text = key[["question_id", "image_id", "class_index", "method", "model_a", "model_b"]].to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def write_key(out_dir: str | Path, key: pd.DataFrame) -> Path:
    """Write the key, which raters must not see, to ``out_dir/key/key.csv`` (apart from the form's
    ``out_dir/for_raters/``); returns its path."""
    path = Path(out_dir) / "key" / "key.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    key.to_csv(path, index=False)
    return path


def build_study(
    stronger: ModelEntry,
    weaker: ModelEntry,
    dataset: str,
    out_dir: str | Path,
    n_images: int | None = None,
    n_items: int | None = 13,
    data_root: str | None = None,
    seed: int = 0,
    methods: Sequence[str] = tuple(STUDY_METHODS),
    size: int = 160,
    batch_size: int = 16,
    device: str = "cpu",
    num_workers: int = 0,
) -> Study:
    """Everything a study needs but its form, the key written under ``out_dir``: top-1 of both models
    over ``dataset`` (``gradcam_lib.datasets.build_dataset`` in each model's geometry;
    :class:`Top1Experiment`, resumable CSVs in ``out_dir``), the images both classify correctly (at
    most ``n_items``), their explanations and the key."""
    data = {e.name: build_dataset(dataset, e.transform, n_images, data_root, seed) for e in (stronger, weaker)}
    predictions = {
        entry.name: top1_table(Top1Experiment(entry, data[entry.name], dataset, Top1Settings())
                               .run(out_dir, batch_size, device, num_workers))
        for entry in (stronger, weaker)
    }
    items = agreed_items(predictions[stronger.name], predictions[weaker.name], n_items, seed)
    if items.empty:
        raise ValueError(f"no image of {dataset!r} is classified correctly by both {stronger.name} and {weaker.name}")
    pictures, strong_maps = explain_items(stronger, data[stronger.name], items, methods, size, batch_size, device)
    _, weak_maps = explain_items(weaker, data[weaker.name], items, methods, size, batch_size, device)
    study_items = tuple(
        StudyItem(
            image_id=row.image_id,
            class_index=int(row.class_index),
            class_name=stronger.class_names[int(row.class_index)],
            picture=picture,
            maps={
                (entry.name, m): maps[row.image_id, m]
                for entry, maps in ((stronger, strong_maps), (weaker, weak_maps))
                for m in methods
            },
        )
        for row, picture in zip(items.itertuples(index=False), pictures, strict=True)
    )
    key = assign_sides(items, stronger.name, weaker.name, methods, seed, stronger.class_names)
    return Study(study_items, key, write_key(out_dir, key))


_KEY_TEXT_COLUMNS = (
    "study_id",
    "question_id",
    "image_id",
    "class_name",
    "method",
    "stronger_side",
    "model_a",
    "model_b",
)


def _read_table(path: Path, kind: str, text_columns: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """One CSV with ``text_columns`` read as text exactly as written (pandas' defaults would turn an
    id such as ``55631e2294`` into ``inf`` and an empty field or ``NA`` into NaN); refused, naming
    the file, when it is missing, empty, header-only or lacks one of ``columns``."""
    if not path.is_file():
        raise FileNotFoundError(f"no {kind} file at {path}")
    try:
        table = pd.read_csv(path, dtype=dict.fromkeys(text_columns, str), keep_default_na=False)
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"{kind} file {path} is empty; expected a header {list(columns)} and rows") from error
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{kind} file {path} lacks columns {missing}; expected {list(columns)}")
    if table.empty:
        raise ValueError(f"{kind} file {path} holds no rows (only a header): nothing to read")
    return table


def read_key(path: str | Path) -> pd.DataFrame:
    """The key written by :func:`write_key` (``key/key.csv``), its ids read as text: read with
    pandas' defaults, a study id such as ``55631e2294`` (about 1.6 % of them look like numbers)
    becomes ``inf`` and no rating matches it any more."""
    return _read_table(Path(path), "key", _KEY_TEXT_COLUMNS, KEY_COLUMNS)


def read_ratings(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate the CSV files that raters sent back (columns :data:`RATINGS_COLUMNS`), the ids
    read as text exactly as written (an empty rater id stays ``""`` and is refused by
    :func:`gradcam_lib.metrics.agreement.score_ratings`; a rater id saved with the form's leading
    ``'``, see the template, keeps it).

    Raises:
        FileNotFoundError: a path that is not a file.
        ValueError: no path, or a file that is empty, holds only a header or lacks a column (the
            message names the file).
    """
    frames = [_read_table(Path(path), "ratings", ("study_id", "rater_id", "question_id"), RATINGS_COLUMNS)
              for path in paths]
    if not frames:
        raise ValueError("no ratings files given")
    return pd.concat(frames, ignore_index=True)

