"""Chapter 4: the trust user study of the paper (Sec. 5.2), as a kit anyone can run again.

The paper reports that 54 AMT workers compared the explanations of two models, VGG-16 (more
accurate) and AlexNet, for images that both classify correctly, on a five-point scale -2..+2 (+ =
the more accurate model judged more reasonable): Guided Backprop scored 1.00, Guided Grad-CAM 1.27.
It publishes neither a spread nor how the answers were spread over workers, images and methods.
This module holds the three parts of such a study:

1. **Stimuli** (:func:`build_study`): images that both models classify correctly (same top-1 class,
   a ground-truth class), Guided Backprop and Guided Grad-CAM of each model for that class, the
   side (A/B) of the more accurate model drawn at random per image and per method, the question
   order shuffled; the key (which model is A) is written apart from the form.
2. **Rating form** (:func:`render_form`): one self-contained HTML page (images as ``data:`` URIs, a
   Content-Security-Policy that forbids any fetch), five answers per question, saved by the rater
   as a CSV with columns ``study_id, rater_id, question_id, answer`` where ``answer`` is +2 for
   "A clearly more reasonable" .. -2 for "B clearly more reasonable". Every rater answers every
   question, so the design is paired: each rater rates both methods on the same images.
3. **Analysis** (:func:`analyse_study`, :func:`counts_summary`): answers mapped so that + means the
   more accurate model was judged more reasonable; per-method mean, sd and bootstrap CI over
   raters; the difference between methods with its interval from resampling raters
   (:func:`rater_paired_difference`) and a paired Wilcoxon signed-rank test across raters; a
   per-image breakdown; Krippendorff's alpha (ordinal). For published aggregates without rater ids
   (KTH's counts), :func:`rater_interval` and :func:`difference_sensitivity` give the interval of
   a mean or of the difference as a function of the two unpublished correlations (a rater's two
   methods, rho; a rater's answers to different images, the ICC behind Kish's design effect).
   The power analysis (:func:`paired_t_power`, :func:`raters_needed`,
   :func:`simulate_wilcoxon_power`) counts raters as the units, with the same two correlations.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import krippendorff
import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy import optimize, stats
from torch.utils.data import Dataset

from gradcam_lib.datasets import build_dataset
from gradcam_lib.datasets.base import Sample
from gradcam_lib.methods import labels as method_labels
from gradcam_lib.methods import maps as method_maps
from gradcam_lib.models import ModelEntry
from gradcam_lib.report import viz
from gradcam_lib.results import dataset_fingerprint, model_fingerprint, run_key, run_resumable
from gradcam_lib.stats import PairedDifference, paired_difference, wilson_ci

__all__ = [
    "ANSWERS",
    "ANSWER_LABELS",
    "KEY_COLUMNS",
    "RATINGS_COLUMNS",
    "SCALE",
    "STUDY_METHODS",
    "Study",
    "StudyAnalysis",
    "StudyItem",
    "agreed_items",
    "agreement",
    "analyse_study",
    "assign_sides",
    "bootstrap_means",
    "build_study",
    "counts_summary",
    "design_effect",
    "difference_sensitivity",
    "effective_units",
    "expand_counts",
    "explain_items",
    "image_data_uri",
    "largest_icc_excluding_zero",
    "method_summary",
    "notebook_form",
    "paired_difference_sd",
    "paired_t_power",
    "paired_test",
    "per_image_summary",
    "percentile_interval",
    "pooled_variance_factor",
    "power_curve",
    "predict_top1",
    "rater_interval",
    "rater_paired_difference",
    "raters_needed",
    "read_key",
    "read_ratings",
    "render_form",
    "score_ratings",
    "simulate_wilcoxon_power",
    "study_id_of",
    "tilt_answer_distribution",
    "write_study",
]

# The five answers, in the order the form shows them; + = the explanation on side A is preferred.
ANSWERS: tuple[int, ...] = (2, 1, 0, -1, -2)
ANSWER_LABELS: dict[int, str] = {
    2: "Robot A clearly more reasonable",
    1: "Robot A slightly more reasonable",
    0: "Both equally reasonable",
    -1: "Robot B slightly more reasonable",
    -2: "Robot B clearly more reasonable",
}
SCALE: tuple[int, ...] = (-2, -1, 0, 1, 2)
#: The study's two methods under their older keys (a view of :mod:`gradcam_lib.methods`:
#: ``guided_gradcam`` is ``guided_grad_cam``).
STUDY_METHODS: dict[str, str] = method_labels(("guided_backprop", "guided_gradcam"))
RATINGS_COLUMNS: tuple[str, ...] = ("study_id", "rater_id", "question_id", "answer")
KEY_COLUMNS: tuple[str, ...] = (
    "study_id", "question_id", "position", "image_id", "class_index", "class_name", "method",
    "stronger_side", "model_a", "model_b",
)

DEFAULT_TITLE = "Which robot seems more reasonable?"
DEFAULT_INSTRUCTIONS = (
    "Two robots were trained to recognise objects in images. For each question, both robots "
    "recognised the object named under the image correctly, and each one shows which details of "
    "the image it relied on (brighter, coloured details mattered more). Judging only from these "
    "two pictures, which robot seems more reasonable, i.e. which one would you trust more? "
    "There are no right answers. When you have answered every question, press the button at the "
    "bottom to save your answers as a file and send that file back."
)


# --------------------------------------------------------------------------------------------
# Stimuli
# --------------------------------------------------------------------------------------------


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
    """A generated study: the items, the key, the form's HTML and where both were written."""

    items: tuple[StudyItem, ...]
    key: pd.DataFrame
    html: str
    form_path: Path
    key_path: Path


def predict_top1(
    entry: ModelEntry,
    dataset: Dataset[Sample],
    csv_path: str | Path,
    batch_size: int = 16,
    device: str = "cpu",
    num_workers: int = 0,
) -> pd.DataFrame:
    """Top-1 class of every image, resumably (:func:`gradcam_lib.results.run_resumable`).

    Returns:
        ``position`` (index in ``dataset``; rows come in dataset order), ``image_id``, ``top1``,
        ``correct`` (top-1 is one of the image's ground-truth classes, the ILSVRC rule).
    """

    def evaluate(images: torch.Tensor, samples: list[Sample]) -> list[dict[str, Any]]:
        with torch.no_grad():
            top1 = entry.model(images).argmax(1).tolist()
        return [
            {"image_id": s.image_id, "top1": t, "correct": t in s.labels} for s, t in zip(samples, top1, strict=True)
        ]

    rows = run_resumable(dataset, evaluate, csv_path, batch_size, device, num_workers, f"{entry.name} top-1")
    rows = rows.astype({"image_id": str, "top1": int, "correct": bool})
    return rows.assign(position=np.arange(len(rows)))[["position", "image_id", "top1", "correct"]]


def agreed_items(
    stronger: pd.DataFrame, weaker: pd.DataFrame, n_items: int | None = None, seed: int = 0
) -> pd.DataFrame:
    """Images that both models classify correctly with the same top-1 class (paper Sec. 5.2: "images
    where both models made the correct prediction"; one class, so both explain the same thing).

    Args:
        stronger, weaker: :func:`predict_top1` tables of the same data set, in the same order.
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


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` float in [0, 1] -> ``(size, size, 3)`` uint8 (bilinear, antialiased)."""
    pixels = Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
    return np.asarray(pixels.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None))


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
    as images raters see (:func:`gradcam_lib.report.viz.guided_to_display`, resized to ``size``).

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
        pictures += [_resize(entry.transform.to_display(s.image), size) for s in samples]
        for method, explained in _explain(entry, images, targets, methods).items():
            for image_id, gradient in zip(chunk["image_id"].astype(str), explained, strict=True):
                maps[image_id, method] = _resize(viz.guided_to_display(gradient), size)
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


def image_data_uri(image: np.ndarray, quality: int = 80) -> str:
    """``(H, W, 3)`` uint8 -> ``data:image/jpeg;base64,...`` (embedded: the page fetches nothing)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _question_html(question: pd.Series, item: StudyItem, total: int, quality: int) -> str:
    qid = html.escape(question["question_id"])
    size = item.picture.shape[1]

    def figure(image: np.ndarray, alt: str, caption: str) -> str:
        """``alt``: plain text (escaped here); ``caption``: markup, its text already escaped."""
        return (f'<figure><img src="{image_data_uri(image, quality)}" width="{size}" height="{size}" '
                f'alt="{html.escape(alt)}"><figcaption>{caption}</figcaption></figure>')

    pictures = [
        figure(item.picture, f"The image: {item.class_name}", f"The image: <b>{html.escape(item.class_name)}</b>"),
        figure(item.maps[question["model_a"], question["method"]], "Robot A", "Robot A"),
        figure(item.maps[question["model_b"], question["method"]], "Robot B", "Robot B"),
    ]
    choices = "".join(
        f'<label><input type="radio" name="{qid}" value="{answer}">'
        f"<span>{html.escape(ANSWER_LABELS[answer])}</span></label>"
        for answer in ANSWERS
    )
    return (
        f'<fieldset class="question" id="{qid}" data-question="{qid}">'
        f"<legend>Question {html.escape(str(question['position']))} of {total}: {html.escape(item.class_name)}</legend>"
        f'<div class="pictures">{"".join(pictures)}</div><div class="choices">{choices}</div></fieldset>'
    )


_PLACEHOLDER = re.compile(r"\{\{[A-Z_]+\}\}")  # the template's {{NAME}} slots


def render_form(
    items: Sequence[StudyItem],
    key: pd.DataFrame,
    title: str = DEFAULT_TITLE,
    instructions: str = DEFAULT_INSTRUCTIONS,
    quality: int = 80,
) -> str:
    """The rating form: one self-contained HTML page (template ``templates/rating_form.html``).

    Nothing in it names a model or a method; the sides come from ``key`` (:func:`assign_sides`).
    Every text from ``title``, ``instructions`` and ``key`` is HTML-escaped, and the placeholders are
    filled in one pass, so a ``{{QUESTIONS}}`` inside the title stays literal text.
    """
    by_id = {item.image_id: item for item in items}
    missing = set(key["image_id"]) - set(by_id)
    if missing:
        raise KeyError(f"the key names images without stimuli: {sorted(missing)}")
    study_ids = key["study_id"].unique()
    if len(study_ids) != 1:
        raise ValueError(f"a key holds exactly one study, got {list(study_ids)}")
    questions = "\n".join(_question_html(q, by_id[q["image_id"]], len(key), quality) for _, q in key.iterrows())
    template = resources.files("gradcam_lib").joinpath("templates/rating_form.html").read_text(encoding="utf-8")
    replacements = {
        "{{TITLE}}": html.escape(title),
        "{{INSTRUCTIONS}}": html.escape(instructions),
        "{{STUDY_ID}}": html.escape(str(study_ids[0])),
        "{{N_QUESTIONS}}": str(len(key)),
        "{{QUESTIONS}}": questions,
    }
    return _PLACEHOLDER.sub(lambda match: replacements.get(match.group(0), match.group(0)), template)


def notebook_form(page: str, height: int = 720) -> Any:
    """The JupyterLab variant: the same page in an ``<iframe srcdoc>`` inside a notebook output
    (raters answer in the notebook; the save button downloads the CSV, or copies it from the box
    that appears under the button)."""
    import warnings

    from IPython.display import HTML

    with warnings.catch_warnings():  # IPython suggests IFrame, which cannot carry a srcdoc
        warnings.simplefilter("ignore", UserWarning)
        return HTML(
            f'<iframe srcdoc="{html.escape(page, quote=True)}" style="width:100%;height:{height}px;border:0"></iframe>'
        )


def write_study(out_dir: str | Path, page: str, key: pd.DataFrame) -> tuple[Path, Path]:
    """Write the form to ``out_dir/for_raters/rating_form.html`` and the key, which raters must not
    see, to ``out_dir/key/key.csv``. Returns both paths."""
    out_dir = Path(out_dir)
    form_path = out_dir / "for_raters" / "rating_form.html"
    key_path = out_dir / "key" / "key.csv"
    for path in (form_path, key_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    form_path.write_text(page, encoding="utf-8")
    key.to_csv(key_path, index=False)
    return form_path, key_path


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
    quality: int = 80,
    batch_size: int = 16,
    device: str = "cpu",
    num_workers: int = 0,
) -> Study:
    """Everything a study needs, written under ``out_dir``: top-1 of both models over ``dataset``
    (``gradcam_lib.datasets.build_dataset`` in each model's geometry; resumable CSVs), the images
    both classify correctly (at most ``n_items``), their explanations, the key and the form."""
    data = {e.name: build_dataset(dataset, e.transform, n_images, data_root, seed) for e in (stronger, weaker)}
    predictions = {}
    for entry in (stronger, weaker):
        settings = {"model": entry.name, "weights": model_fingerprint(entry.model), "dataset": dataset,
                    "data": dataset_fingerprint(data[entry.name])}
        csv_path = Path(out_dir) / f"top1_{entry.name}_{dataset}_{run_key(settings)}.csv"
        predictions[entry.name] = predict_top1(entry, data[entry.name], csv_path, batch_size, device, num_workers)
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
    page = render_form(study_items, key, quality=quality)
    form_path, key_path = write_study(out_dir, page, key)
    return Study(study_items, key, page, form_path, key_path)


# --------------------------------------------------------------------------------------------
# Analysis of ratings
# --------------------------------------------------------------------------------------------


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
    """The key written by :func:`write_study` (``key/key.csv``), its ids read as text: read with
    pandas' defaults, a study id such as ``55631e2294`` (about 1.6 % of them look like numbers)
    becomes ``inf`` and no rating matches it any more."""
    return _read_table(Path(path), "key", _KEY_TEXT_COLUMNS, KEY_COLUMNS)


def read_ratings(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate the CSV files that raters sent back (columns :data:`RATINGS_COLUMNS`), the ids
    read as text exactly as written (an empty rater id stays ``""`` and is refused by
    :func:`score_ratings`; a rater id saved with the form's leading ``'``, see the template, keeps it).

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


def _check_text_ids(table: pd.DataFrame, columns: Sequence[str], what: str, reader: str) -> None:
    """Refuse id columns with missing ids or ids that pandas parsed as numbers (``55631e2294`` ->
    ``inf``: the id is lost)."""
    for column in columns:
        others = [v for v in table[column] if not isinstance(v, str)]
        if others and pd.isna(others[0]):
            raise ValueError(f"{what} column {column!r} has a missing id; every row needs one")
        if others:
            raise ValueError(f"{what} column {column!r} holds {others[0]}, not text: an id that looks like a number "
                             f"(e.g. 55631e2294, read as inf) was parsed as one and is lost; read the file with "
                             f"gradcam_lib.user_study.{reader}, which keeps ids as text")


def score_ratings(ratings: pd.DataFrame, key: pd.DataFrame) -> pd.DataFrame:
    """Join ratings to the key and map every answer to the paper's score: + = the more accurate
    ("stronger") model judged more reasonable, i.e. ``score = answer`` where the stronger model was
    on side A and ``-answer`` where it was on side B.

    Raises:
        ValueError: missing columns, answers outside -2..2 or missing, a missing or empty rater id,
            ids that were parsed as numbers (read the files with :func:`read_ratings` and
            :func:`read_key`), ratings of another study, unknown questions, or one rater answering
            one question twice.

    Returns:
        ``rater_id, question_id, image_id, class_name, method, answer, score``.
    """
    missing = set(RATINGS_COLUMNS) - set(ratings.columns)
    if missing:
        raise ValueError(f"ratings lack columns {sorted(missing)}; expected {list(RATINGS_COLUMNS)}")
    _check_text_ids(key, ("study_id", "question_id"), "the key's", "read_key")
    _check_text_ids(ratings, ("study_id", "question_id"), "the ratings'", "read_ratings")
    raters = ratings["rater_id"]
    unnamed = raters.isna() | (raters.astype(str).str.strip() == "")
    if unnamed.any():
        raise ValueError(f"{int(unnamed.sum())} ratings have no rater_id; every rater needs an id (the form refuses "
                         f"to save without one): fill it in, or drop those rows")
    answers = pd.to_numeric(ratings["answer"], errors="coerce")
    if answers.isna().any() or not answers.isin(SCALE).all():
        bad = ratings.loc[answers.isna() | ~answers.isin(SCALE), "answer"].tolist()
        raise ValueError(f"answers must be integers in -2..2, got {bad[:5]}")
    foreign = set(ratings["study_id"].astype(str)) - set(key["study_id"].astype(str))
    if foreign:
        raise ValueError(f"ratings of study {sorted(foreign)} cannot be scored with the key of study "
                         f"{sorted(set(key['study_id']))}")
    unknown = set(ratings["question_id"].astype(str)) - set(key["question_id"])
    if unknown:
        raise ValueError(f"questions not in the key: {sorted(unknown)}")
    if ratings.duplicated(["rater_id", "question_id"]).any():
        raise ValueError("a rater answered a question twice; keep one answer per rater and question")
    merged = ratings.assign(answer=answers.astype(int), question_id=ratings["question_id"].astype(str)).merge(
        key[["question_id", "image_id", "class_name", "method", "stronger_side"]],
        on="question_id",
        validate="many_to_one",
    )
    merged["score"] = np.where(merged["stronger_side"] == "A", merged["answer"], -merged["answer"])
    return merged[["rater_id", "question_id", "image_id", "class_name", "method", "answer", "score"]]


def expand_counts(counts: pd.DataFrame) -> pd.DataFrame:
    """Answer counts (``method, answer, count``, e.g. :func:`published.user_study.trust_counts`) ->
    one row per answer (``method, score``), for the same summaries as individual ratings."""
    if (counts["count"] < 0).any():
        raise ValueError("counts must be non-negative")
    return pd.DataFrame({
        "method": np.repeat(counts["method"].to_numpy(), counts["count"].to_numpy()),
        "score": np.repeat(counts["answer"].to_numpy(), counts["count"].to_numpy()),
    })


def bootstrap_means(
    values: np.ndarray, groups: np.ndarray | None = None, n_boot: int = 2000, seed: int = 0
) -> np.ndarray:
    """Bootstrap distribution of the mean of ``values`` (Efron 1979), ``n_boot`` draws.

    With ``groups`` (e.g. rater ids) whole groups are resampled (cluster bootstrap): answers of one
    rater are not independent, and resampling answers alone would give too narrow an interval.
    Without, every value is its own group.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0 or np.isnan(values).any():
        raise ValueError("bootstrap needs at least one value and no NaN")
    codes = np.arange(values.size) if groups is None else pd.factorize(np.asarray(groups))[0]
    sums = np.bincount(codes, weights=values)
    sizes = np.bincount(codes).astype(float)
    draws = np.random.default_rng(seed).integers(0, sums.size, size=(n_boot, sums.size))
    return sums[draws].sum(axis=1) / sizes[draws].sum(axis=1)


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap draws."""
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def method_summary(
    scores: pd.DataFrame, cluster: str | None = "rater_id", n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Per method: raters, answers, mean, sd (ddof=1) and the bootstrap CI of the mean score
    (resampling ``cluster`` groups, or answers when ``cluster`` is None). The CI is NaN with a single
    group (one rater): every resample would be that rater, an interval of width 0 that claims
    certainty."""
    rows = []
    for method, group in scores.groupby("method", sort=True):
        groups = group[cluster].to_numpy() if cluster else None
        low, high = np.nan, np.nan
        if (group[cluster].nunique() if cluster else len(group)) >= 2:
            low, high = percentile_interval(bootstrap_means(group["score"].to_numpy(), groups, n_boot, seed), level)
        rows.append({
            "method": method,
            "raters": group[cluster].nunique() if cluster else np.nan,
            "answers": len(group),
            "mean": group["score"].mean(),
            "sd": group["score"].std(ddof=1),
            "ci_low": low,
            "ci_high": high,
        })
    return pd.DataFrame(rows)


def counts_summary(counts: pd.DataFrame, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """:func:`method_summary` of published answer counts (mean, sd with ddof=1, answers). Without
    rater ids its bootstrap resamples answers as if independent, which understates the uncertainty
    when raters give several answers each: use :func:`rater_interval` for an interval over raters."""
    return method_summary(expand_counts(counts), cluster=None, n_boot=n_boot, level=level, seed=seed)


def per_image_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Per image and method: answers, mean and sd of the score."""
    table = scores.groupby(["image_id", "class_name", "method"])["score"].agg(answers="size", mean="mean", sd="std")
    return table.reset_index()


def paired_test(
    scores: pd.DataFrame, first: str = "guided_gradcam", second: str = "guided_backprop"
) -> dict[str, float]:
    """Paired comparison of two methods across raters (for a design in which each rater rated both,
    as this kit's form and KTH's study do): each rater's mean score per method, differences
    ``first - second``, Wilcoxon signed-rank test (two-sided; zero differences dropped, scipy's
    ``zero_method="wilcox"``). Raters who rated only one method are left out.

    Returns:
        ``raters`` (with both methods), ``mean_difference``, ``statistic``, ``p_value`` (NaN when
        every difference is zero: the test is undefined).
    """
    per_rater = scores.groupby(["rater_id", "method"])["score"].mean().unstack("method")
    for method in (first, second):
        if method not in per_rater:
            raise KeyError(f"no ratings of method {method!r}")
    differences = (per_rater[first] - per_rater[second]).dropna().to_numpy()
    result = {
        "raters": float(differences.size),
        "mean_difference": float(differences.mean()) if differences.size else np.nan,
        "statistic": np.nan,
        "p_value": np.nan,
    }
    if np.count_nonzero(differences):
        test = stats.wilcoxon(differences, zero_method="wilcox", alternative="two-sided")
        result.update(statistic=float(test.statistic), p_value=float(test.pvalue))
    return result


def rater_paired_difference(
    scores: pd.DataFrame, first: str = "guided_gradcam", second: str = "guided_backprop", level: float = 0.95,
    seed: int = 0,
) -> tuple[PairedDifference, int]:
    """The difference ``first - second`` of the mean scores, paired within rater and image, with its
    interval from resampling raters (cluster bootstrap, :func:`gradcam_lib.stats.paired_difference`
    with ``clusters`` = rater ids; Davison & Hinkley 1997, Sec. 3.8).

    Each rater answers each (image, method) once, so every (rater, image) with answers for both
    methods is a pair; a rater's pairs are not independent of each other (the rater's own level and
    taste), so whole raters are resampled. The images are held fixed: the interval is about other
    raters judging these images, not other images.

    Returns:
        ``(difference, raters)``: the :class:`~gradcam_lib.stats.PairedDifference` (its ``n`` counts
        pairs) and the number of raters with at least one pair.
    """
    wide = scores.pivot_table(index=["rater_id", "image_id"], columns="method", values="score", aggfunc="mean")
    for method in (first, second):
        if method not in wide:
            raise KeyError(f"no ratings of method {method!r}")
    pairs = wide[[first, second]].dropna()
    raters = pairs.index.get_level_values("rater_id").to_numpy()
    difference = paired_difference(pairs[first].to_numpy(), pairs[second].to_numpy(), clusters=raters,
                                   confidence=level, seed=seed)
    return difference, int(pd.unique(raters).size)


def agreement(scores: pd.DataFrame) -> pd.DataFrame:
    """Inter-rater agreement: Krippendorff's alpha, ordinal, on the scores (units = questions),
    per method and over all questions (``krippendorff`` package, checked against a hand-computed
    case in the tests). NaN where alpha is undefined: the answers hold a single value, or no question
    was answered by two raters (a study with one rater)."""
    rows = []
    for method, group in [*scores.groupby("method", sort=True), ("all", scores)]:
        matrix = group.pivot_table(index="rater_id", columns="question_id", values="score", aggfunc="first")
        data = matrix.to_numpy(dtype=float)
        value = np.nan
        paired = (~np.isnan(data)).sum(axis=0).max(initial=0) >= 2
        if paired and np.unique(data[~np.isnan(data)]).size > 1:
            value = float(
                krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", value_domain=list(SCALE))
            )
        rows.append({"method": method, "raters": matrix.shape[0], "questions": matrix.shape[1], "alpha_ordinal": value})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class StudyAnalysis:
    """Everything :func:`analyse_study` computes from one study's ratings."""

    scores: pd.DataFrame
    summary: pd.DataFrame
    per_image: pd.DataFrame
    paired: dict[str, float]
    agreement: pd.DataFrame
    difference: PairedDifference | None = None
    difference_raters: int = 0


def analyse_study(
    ratings: pd.DataFrame, key: pd.DataFrame, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> StudyAnalysis:
    """The chapter's analysis of a ratings table (:func:`read_ratings`) against its key: per-method
    summary over raters, Guided Grad-CAM minus Guided Backprop with its rater-resampling interval
    (:func:`rater_paired_difference`) and Wilcoxon test (:func:`paired_test`), per image, agreement.

    With a single rater the analysis is defined but says little: means, sds and the per-image table
    as usual; every interval over raters NaN (one rater cannot be resampled); Krippendorff's alpha
    NaN (no question has two answers); the Wilcoxon test of one difference has p = 1.

    Raises:
        ValueError: bad ratings or key (:func:`score_ratings`).
    """
    scores = score_ratings(ratings, key)
    methods = sorted(scores["method"].unique())
    paired, difference, raters = {}, None, 0
    if set(STUDY_METHODS) <= set(methods):
        paired = paired_test(scores)
        difference, raters = rater_paired_difference(scores, level=level, seed=seed)
    return StudyAnalysis(scores, method_summary(scores, "rater_id", n_boot, level, seed), per_image_summary(scores),
                         paired, agreement(scores), difference, raters)


# --------------------------------------------------------------------------------------------
# Raters as the units: intervals from aggregates, and power
# --------------------------------------------------------------------------------------------
#
# Model (the same for the intervals of published aggregates and for the power analysis): ``raters``
# independent raters, each giving ``m`` answers per method (one per image). Per answer, method j has
# sd ``s_j``. Two correlations are unknown without rater ids:
#   icc  -- between two answers of one rater to different images under one method (Kish's
#           intra-cluster correlation, taken equal for both methods);
#   rho  -- across raters, between a rater's mean scores under the two methods.
# A rater's mean under method j then has variance s_j^2 deff / m with deff = 1 + (m - 1) icc, and
# the difference of the two methods' means over all raters has variance
#   (s_1^2 + s_2^2 - 2 rho s_1 s_2) / n_eff,   n_eff = raters * m / deff   (answers per method).
# icc = 0: the answers are as good as independent (n_eff = raters * m); icc = 1: every rater counts
# once (n_eff = raters), the most a rater's m answers can be worth less than m independent ones.


def design_effect(answers_per_rater: int, icc: float) -> float:
    """Kish's (1965) design effect ``1 + (m - 1) icc``: the factor by which ``m`` answers per rater,
    correlated ``icc`` within a rater, inflate the variance of a mean over independent answers."""
    if answers_per_rater < 1 or not 0 <= icc <= 1:
        raise ValueError("need at least one answer per rater and 0 <= icc <= 1")
    return 1.0 + (answers_per_rater - 1) * icc


def effective_units(n_answers: int, answers_per_rater: int, icc: float) -> float:
    """The number of independent answers that ``n_answers`` clustered answers are worth:
    ``n_answers / design_effect(answers_per_rater, icc)``."""
    return n_answers / design_effect(answers_per_rater, icc)


def paired_difference_sd(sd_first: float, sd_second: float, rho: float, icc: float = 1.0, images: int = 1) -> float:
    """sd of one rater's difference between their mean scores under the two methods.

    ``sqrt((s1^2 + s2^2 - 2 rho s1 s2) deff / images)`` with ``deff = 1 + (images - 1) icc``
    (see the model above: ``rho`` correlates a rater's two mean scores, ``icc`` a rater's answers
    to different images under one method). With ``icc = 1`` or one image a rater's mean score is as
    spread as one answer; ``rho = 0`` is also the case of two independent groups of raters.
    """
    if not -1 <= rho <= 1:
        raise ValueError("need -1 <= rho <= 1")
    variance = (sd_first**2 + sd_second**2 - 2 * rho * sd_first * sd_second) * design_effect(images, icc) / images
    return float(np.sqrt(max(variance, 0.0)))


def pooled_variance_factor(raters: int, answers_per_rater: int, icc: float) -> float:
    """``(N - 1) / (N - deff)``, ``N = raters m``: the sample variance (ddof=1) of ``N`` answers
    pooled over clustered raters has expectation ``sigma^2 (N - deff) / (N - 1)`` (the pooled mean
    absorbs part of the rater effects), so ``s^2`` times this factor is unbiased for ``sigma^2``."""
    n = raters * answers_per_rater
    return (n - 1) / (n - design_effect(answers_per_rater, icc))


def rater_interval(
    estimate: float, sd_first: float, raters: int, answers_per_rater: int, icc: float,
    sd_second: float = 0.0, rho: float = 0.0, level: float = 0.95, pooled_sds: bool = False,
) -> dict[str, float]:
    """Interval of a mean score (``sd_second = 0``) or of a difference of two methods' mean scores
    over ``raters`` independent raters, from per-answer sds and assumed ``icc`` and ``rho``:

    ``se^2 = (s1^2 + s2^2 - 2 rho s1 s2) / n_eff`` with ``n_eff = raters m / deff`` (the model above;
    ``se = paired_difference_sd(...) / sqrt(raters)``), and ``estimate +- t se`` with Student's t
    on ``raters - 1`` degrees of freedom: the paired t-interval across raters.

    Args:
        pooled_sds: the sds are the sample sds of all answers pooled over raters (as computed from
            published counts); ``se^2`` is then multiplied by :func:`pooled_variance_factor`.

    Returns:
        ``estimate, se, low, high, deff, n_eff`` and ``excludes_zero`` (1.0 or 0.0).
    """
    if raters < 2:
        raise ValueError("need at least 2 raters")
    deff = design_effect(answers_per_rater, icc)
    n_eff = raters * answers_per_rater / deff
    se = paired_difference_sd(sd_first, sd_second, rho, icc, answers_per_rater) / np.sqrt(raters)
    if pooled_sds:
        se *= np.sqrt(pooled_variance_factor(raters, answers_per_rater, icc))
    half = stats.t.ppf((1 + level) / 2, raters - 1) * se
    low, high = estimate - half, estimate + half
    return {"estimate": float(estimate), "se": float(se), "low": float(low), "high": float(high), "deff": deff,
            "n_eff": float(n_eff), "excludes_zero": float(low > 0 or high < 0)}


def difference_sensitivity(
    mean_first: float, mean_second: float, sd_first: float, sd_second: float, raters: int, answers_per_rater: int,
    rhos: Sequence[float], iccs: Sequence[float], level: float = 0.95, pooled_sds: bool = False,
) -> pd.DataFrame:
    """:func:`rater_interval` of ``mean_first - mean_second`` over a grid of the two unknown
    correlations (long table: ``rho, icc`` and the interval's columns)."""
    rows = [
        {
            "rho": rho,
            "icc": icc,
            **rater_interval(
                mean_first - mean_second, sd_first, raters, answers_per_rater, icc, sd_second, rho, level, pooled_sds
            ),
        }
        for rho in rhos
        for icc in iccs
    ]
    return pd.DataFrame(rows).astype({"excludes_zero": bool})


def largest_icc_excluding_zero(
    estimate: float, sd_first: float, raters: int, answers_per_rater: int,
    sd_second: float = 0.0, rho: float = 0.0, level: float = 0.95, pooled_sds: bool = False,
) -> float:
    """The ICC below which :func:`rater_interval` excludes 0, in closed form (its t quantile does
    not depend on the ICC). With ``v = s1^2 + s2^2 - 2 rho s1 s2`` and ``N = raters m``, the interval
    excludes 0 while ``deff < N estimate^2 / (t^2 v)`` (or, with ``pooled_sds``, while
    ``deff < c N / (1 + c)``, ``c = N estimate^2 / (t^2 v (N - 1))``); ``icc* = (deff* - 1) / (m - 1)``.
    A value below 0: no ICC >= 0 shows a difference from 0; 1 or more: every ICC does."""
    if answers_per_rater < 2:
        raise ValueError("the ICC matters only with at least 2 answers per rater")
    variance = sd_first**2 + sd_second**2 - 2 * rho * sd_first * sd_second
    if variance <= 0:
        return float("inf") if estimate != 0 else float("-inf")
    t = stats.t.ppf((1 + level) / 2, raters - 1)
    n = raters * answers_per_rater
    deff = n * estimate**2 / (t**2 * variance)
    if pooled_sds:
        c = deff / (n - 1)
        deff = c * n / (1 + c)
    return float((deff - 1) / (answers_per_rater - 1))


def paired_t_power(raters: int | np.ndarray, delta: float, sd_diff: float, alpha: float = 0.05) -> np.ndarray:
    """Power of the two-sided paired t-test with ``raters`` pairs to detect a mean difference
    ``delta`` when the differences have sd ``sd_diff`` (noncentral t)."""
    n = np.asarray(raters, dtype=float)
    if np.any(n < 2) or sd_diff <= 0:
        raise ValueError("need at least 2 raters and a positive sd")
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    noncentrality = delta * np.sqrt(n) / sd_diff
    power = stats.nct.sf(critical, df, noncentrality) + stats.nct.cdf(-critical, df, noncentrality)
    # scipy's noncentral t returns NaN far in the tail (large n and effect): the normal limit there
    normal = stats.norm.sf(critical - noncentrality) + stats.norm.cdf(-critical - noncentrality)
    return np.where(np.isnan(power), normal, power)


def raters_needed(delta: float, sd_diff: float, power: float = 0.8, alpha: float = 0.05) -> int:
    """Smallest number of raters whose paired t-test reaches ``power`` (start from the normal
    approximation n = ((z_{1-alpha/2} + z_{power}) sd / delta)^2, then step up)."""
    if delta == 0:
        raise ValueError("no number of raters detects a zero difference")
    guess = ((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * sd_diff / abs(delta)) ** 2
    n = max(2, int(np.floor(guess)) - 2)
    while paired_t_power(n, delta, sd_diff, alpha) < power:
        n += 1
    return n


def power_curve(
    raters: Sequence[int], delta: float, sd_first: float, sd_second: float, rhos: Sequence[float],
    iccs: Sequence[float] = (1.0,), images: int = 1, alpha: float = 0.05,
) -> pd.DataFrame:
    """:func:`paired_t_power` over a grid of rater counts, correlations and ICCs (long table)."""
    rows = []
    for icc in iccs:
        for rho in rhos:
            sd = paired_difference_sd(sd_first, sd_second, rho, icc, images)
            power = paired_t_power(np.asarray(raters), delta, sd, alpha)
            rows += [
                {"icc": icc, "rho": rho, "sd_diff": sd, "raters": n, "power": float(p)}
                for n, p in zip(raters, power, strict=True)
            ]
    return pd.DataFrame(rows)


def tilt_answer_distribution(base: Sequence[float], mean: float, sd: float) -> np.ndarray:
    """The distribution over -2..2 closest to ``base`` (least Kullback-Leibler divergence) with the
    given mean and sd: ``p_k ∝ base_k exp(a k + b k^2)``. Used to give KTH's answer shape the
    paper's means for the simulated raters of the power analysis."""
    shape = np.asarray(base, dtype=float)
    shape = shape / shape.sum()
    k = np.asarray(SCALE, dtype=float)

    def tilted(params: np.ndarray) -> np.ndarray:
        logits = np.log(shape) + params[0] * k + params[1] * k**2
        weights = np.exp(logits - logits.max())
        return weights / weights.sum()

    def moments(params: np.ndarray) -> np.ndarray:
        p = tilted(params)
        return np.array([p @ k - mean, p @ k**2 - (sd**2 + mean**2)])

    solution = optimize.root(moments, x0=np.zeros(2), method="hybr")
    if np.abs(moments(solution.x)).max() > 1e-8:
        raise ValueError(f"no distribution on -2..2 near the base has mean {mean} and sd {sd}")
    return tilted(solution.x)


def simulate_wilcoxon_power(
    probs_first: Sequence[float], probs_second: Sequence[float], raters: int, rho: float,
    n_sims: int = 2000, alpha: float = 0.05, seed: int = 0,
) -> dict[str, float]:
    """SIMULATED raters: the share of simulated studies in which the paired Wilcoxon test
    (:func:`paired_test`'s) finds the two methods different at ``alpha``.

    Each simulated rater gives one 5-point answer per method, drawn from ``probs_first`` /
    ``probs_second`` (over -2..2) and linked by a Gaussian copula with latent correlation ``rho``.
    A study whose differences are all zero counts as not significant.

    Returns:
        ``power`` with ``power_low, power_high`` (Wilson 95 % interval over the ``n_sims``
        independent simulated studies) and ``answer_correlation``: the Pearson correlation of the
        simulated answers of the two methods (pooled over all studies), smaller than ``rho``
        because the answers are coarse, to compare with :func:`paired_t_power` on the same scale.
    """
    rng = np.random.default_rng(seed)
    latent_first = rng.standard_normal((n_sims, raters))
    latent_second = rho * latent_first + np.sqrt(1 - rho**2) * rng.standard_normal((n_sims, raters))
    scale = np.asarray(SCALE)

    def answers(latent: np.ndarray, probs: Sequence[float]) -> np.ndarray:
        cdf = np.cumsum(probs) / np.sum(probs)
        return scale[np.minimum(np.searchsorted(cdf, stats.norm.cdf(latent)), scale.size - 1)]

    first, second = answers(latent_first, probs_first), answers(latent_second, probs_second)
    differences = first - second
    testable = np.count_nonzero(differences, axis=1) > 0
    p_values = np.ones(n_sims)
    if testable.any():
        p_values[testable] = stats.wilcoxon(differences[testable], zero_method="wilcox", axis=1).pvalue
    power, low, high = wilson_ci(np.nan_to_num(p_values, nan=1.0) < alpha)
    return {"power": power, "power_low": low, "power_high": high,
            "answer_correlation": float(np.corrcoef(first.ravel(), second.ravel())[0, 1])}
