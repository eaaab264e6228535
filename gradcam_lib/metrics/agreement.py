"""The analysis of a user study's ratings (chapter 4; the paper's Sec. 5.2 trust study): answers
mapped so that + means the more accurate model was judged more reasonable (:func:`score_ratings`);
per-method mean, sd and bootstrap CI over raters (:func:`method_summary`, Efron 1979, whole raters
resampled); the difference between methods with its interval from resampling raters
(:func:`rater_paired_difference`, Davison & Hinkley 1997, Sec. 3.8) and a paired Wilcoxon
signed-rank test across raters (:func:`paired_test`); a per-image breakdown; Krippendorff's alpha
(ordinal, :func:`agreement`). :func:`analyse_study` runs them all. Published answer counts without
rater ids go through :func:`counts_summary`; intervals over raters for those are in
:mod:`gradcam_lib.metrics.study_power`. Pure functions of tables: no file is read here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import krippendorff
import numpy as np
import pandas as pd
from scipy import stats

from gradcam_lib.methods import labels as method_labels
from gradcam_lib.stats import PairedDifference, paired_difference

__all__ = ["KEY_COLUMNS", "RATINGS_COLUMNS", "SCALE", "STUDY_METHODS", "StudyAnalysis", "agreement",
           "analyse_study", "bootstrap_means", "counts_summary", "expand_counts", "method_summary",
           "paired_test", "per_image_summary", "percentile_interval", "rater_paired_difference", "score_ratings"]

SCALE: tuple[int, ...] = (-2, -1, 0, 1, 2)
#: The study's two methods under their older keys (a view of :mod:`gradcam_lib.methods`:
#: ``guided_gradcam`` is ``guided_grad_cam``).
STUDY_METHODS: dict[str, str] = method_labels(("guided_backprop", "guided_gradcam"))
RATINGS_COLUMNS: tuple[str, ...] = ("study_id", "rater_id", "question_id", "answer")
KEY_COLUMNS: tuple[str, ...] = (
    "study_id", "question_id", "position", "image_id", "class_index", "class_name", "method",
    "stronger_side", "model_a", "model_b",
)


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
                             f"gradcam_lib.experiments.user_study.{reader}, which keeps ids as text")


def score_ratings(ratings: pd.DataFrame, key: pd.DataFrame) -> pd.DataFrame:
    """Join ratings to the key and map every answer to the paper's score: + = the more accurate
    ("stronger") model judged more reasonable, i.e. ``score = answer`` where the stronger model was
    on side A and ``-answer`` where it was on side B.

    Raises:
        ValueError: missing columns, answers outside -2..2 or missing, a missing or empty rater id,
            ids that were parsed as numbers (read the files with ``read_ratings`` and ``read_key`` of
            :mod:`gradcam_lib.experiments.user_study`), ratings of another study, unknown questions,
            or one rater answering one question twice.

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
    """The chapter's analysis of a ratings table (``experiments.user_study.read_ratings``) against its key: per-method
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


