"""Chapter 4's presentation: the rating form (one self-contained HTML page, template
``report/templates/rating_form.html``: images as ``data:`` URIs, a Content-Security-Policy that
forbids any fetch, five answers per question, saved by the rater as a CSV ``study_id, rater_id,
question_id, answer`` with +2 for "A clearly more reasonable" .. -2 for "B clearly more reasonable"),
and the chapter's tables of the published results, the intervals over raters and the power analysis
(from :mod:`gradcam_lib.metrics.agreement` and :mod:`gradcam_lib.metrics.study_power`). The figures
are in :mod:`gradcam_lib.report.user_study_figures`.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from PIL import Image

from gradcam_lib.metrics import study_power
from gradcam_lib.metrics.agreement import SCALE, STUDY_METHODS, counts_summary

__all__ = [
    "ANSWERS",
    "ANSWER_LABELS",
    "DEFAULT_INSTRUCTIONS",
    "DEFAULT_TITLE",
    "KthCounts",
    "Stimulus",
    "answer_distributions",
    "difference_grid",
    "icc_bound_text",
    "image_data_uri",
    "kth_counts",
    "notebook_form",
    "power_table",
    "published_table",
    "render_form",
    "sides_table",
    "simulated_power_table",
    "write_form",
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

DEFAULT_TITLE = "Which robot seems more reasonable?"
DEFAULT_INSTRUCTIONS = (
    "Two robots were trained to recognise objects in images. For each question, both robots "
    "recognised the object named under the image correctly, and each one shows which details of "
    "the image it relied on (brighter, coloured details mattered more). Judging only from these "
    "two pictures, which robot seems more reasonable, i.e. which one would you trust more? "
    "There are no right answers. When you have answered every question, press the button at the "
    "bottom to save your answers as a file and send that file back."
)


class Stimulus(Protocol):
    """What the form shows of one study image (:class:`gradcam_lib.experiments.user_study.StudyItem`)."""

    @property
    def image_id(self) -> str: ...
    @property
    def class_name(self) -> str: ...
    @property
    def picture(self) -> np.ndarray: ...
    @property
    def maps(self) -> Mapping[tuple[str, str], np.ndarray]: ...


def image_data_uri(image: np.ndarray, quality: int = 80) -> str:
    """``(H, W, 3)`` uint8 -> ``data:image/jpeg;base64,...`` (embedded: the page fetches nothing)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _question_html(question: pd.Series, item: Stimulus, total: int, quality: int) -> str:
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
    items: Sequence[Stimulus],
    key: pd.DataFrame,
    title: str = DEFAULT_TITLE,
    instructions: str = DEFAULT_INSTRUCTIONS,
    quality: int = 80,
) -> str:
    """The rating form: one self-contained HTML page (template ``report/templates/rating_form.html``).

    Nothing in it names a model or a method; the sides come from ``key``
    (:func:`gradcam_lib.experiments.user_study.assign_sides`).
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
    template = resources.files("gradcam_lib.report").joinpath("templates/rating_form.html").read_text(encoding="utf-8")
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


def write_form(out_dir: str | Path, page: str) -> Path:
    """Write the form to ``out_dir/for_raters/rating_form.html`` (the key goes elsewhere:
    :func:`gradcam_lib.experiments.user_study.write_key`); returns its path."""
    path = Path(out_dir) / "for_raters" / "rating_form.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def icc_bound_text(bound: float) -> str:
    """:func:`~gradcam_lib.metrics.study_power.largest_icc_excluding_zero` in words: 'any' (every icc
    in [0, 1]), 'none', or the bound."""
    return "any" if bound >= 1 else "none" if bound < 0 else f"< {bound:.3f}"


def sides_table(key: pd.DataFrame) -> pd.DataFrame:
    """The key as one row per study image: the side (A / B) of the stronger model per method."""
    table = (key.assign(method=key["method"].map(STUDY_METHODS))
             .pivot_table(index=["image_id", "class_name"], columns="method", values="stronger_side", aggfunc="first")
             .reset_index())
    table.columns.name = None
    return table


@dataclass(frozen=True)
class KthCounts:
    """KTH's published answer counts as summaries: per method ``answers, mean, sd`` (``summary``,
    indexed by method label), its raters and images, t-intervals of each mean over raters at
    ``icc`` 0 and 1 (``intervals[method, icc]``, :func:`~gradcam_lib.metrics.study_power.rater_interval`
    with pooled sds) and the ICC below which each excludes 0 (``mean_bounds``); the paper's means."""

    summary: pd.DataFrame
    raters: int
    images: int
    paper_means: pd.Series
    intervals: dict[tuple[str, float], dict[str, float]]
    mean_bounds: dict[str, float]


def kth_counts(counts: pd.DataFrame, means: pd.DataFrame, n_boot: int = 2000, level: float = 0.95, seed: int = 0
               ) -> KthCounts:
    """:class:`KthCounts` from the published ``counts`` (``method, answer, count``) and ``means``
    (``source, method, mean, raters, images``; :mod:`gradcam_lib.report.published.user_study`)."""
    paper_means = means[means["source"] == "paper"].set_index("method")["mean"]
    published = means[means["source"] == "KTH"].set_index("method")
    raters, images = int(published["raters"].iloc[0]), int(published["images"].iloc[0])
    kth = counts_summary(counts, n_boot, level, seed).set_index("method")[["answers", "mean", "sd"]]
    intervals = {(m, icc): study_power.rater_interval(kth.loc[m, "mean"], kth.loc[m, "sd"], raters, images, icc,
                                                      level=level, pooled_sds=True)
                 for m in kth.index for icc in (0.0, 1.0)}
    bounds = {m: study_power.largest_icc_excluding_zero(kth.loc[m, "mean"], kth.loc[m, "sd"], raters, images,
                                                        level=level, pooled_sds=True)
              for m in kth.index}
    return KthCounts(kth, raters, images, paper_means, intervals, bounds)


def published_table(kth: KthCounts, paper_raters: int = 54) -> pd.DataFrame:
    """The paper's means beside KTH's (answers, mean, sd, the 95 % interval over raters at icc 0
    and 1, the ICCs for which it excludes 0)."""
    interval = lambda m, icc: "[{low:.3f}, {high:.3f}]".format(**kth.intervals[m, icc])  # noqa: E731
    s = kth.summary
    return pd.DataFrame(
        [{"source": "paper", "method": m, "raters": paper_raters, "answers": "-", "mean": kth.paper_means[m], "sd": "-",
          "95% CI, icc 0": "-", "95% CI, icc 1": "-", "CI > 0 for icc": "-"} for m in kth.paper_means.index]
        + [{"source": "KTH (from its counts)", "method": m, "raters": kth.raters, "answers": str(s.loc[m, "answers"]),
            "mean": s.loc[m, "mean"], "sd": f"{s.loc[m, 'sd']:.3f}", "95% CI, icc 0": interval(m, 0.0),
            "95% CI, icc 1": interval(m, 1.0), "CI > 0 for icc": icc_bound_text(kth.mean_bounds[m])} for m in s.index])


def difference_grid(sensitivity: pd.DataFrame) -> pd.DataFrame:
    """:func:`~gradcam_lib.metrics.study_power.difference_sensitivity` as a grid: rows rho, columns
    icc (with its n_eff), cells the interval, ``*`` where it excludes 0."""
    bounds = zip(sensitivity["low"], sensitivity["high"], sensitivity["excludes_zero"], strict=True)
    grid = sensitivity.assign(interval=[f"[{lo:+.3f}, {hi:+.3f}]{'*' if ex else ' '}" for lo, hi, ex in bounds])
    grid = grid.pivot(index="rho", columns="icc", values="interval")
    n_eff = sensitivity.drop_duplicates("icc").set_index("icc")["n_eff"]
    grid.columns = [f"icc {icc:g} (n_eff {n_eff[icc]:.0f})" for icc in grid.columns]
    return grid


def power_table(delta: float, sd_first: float, sd_second: float, rhos: Sequence[float], iccs: Sequence[float],
                images: int, target_power: float = 0.8, alpha: float = 0.05, raters: Sequence[int] = (36, 54)
                ) -> pd.DataFrame:
    """Per (icc, rho): the sd of a rater's difference, the raters the paired t-test needs for
    ``target_power``, and its power with each of ``raters`` (KTH's 36, the paper's 54)."""
    rows = []
    for icc in iccs:
        for rho in rhos:
            sd_diff = study_power.paired_difference_sd(sd_first, sd_second, rho, icc, images)
            rows.append({"icc": icc, "images": images, "rho": rho, "sd_diff": sd_diff,
                         "raters_needed": study_power.raters_needed(delta, sd_diff, target_power, alpha),
                         **{f"power_{n}": float(study_power.paired_t_power(n, delta, sd_diff, alpha)) for n in raters}})
    return pd.DataFrame(rows)


def answer_distributions(probs_first: np.ndarray, probs_second: np.ndarray,
                         names: Sequence[str] = ("Guided Grad-CAM", "Guided Backprop")) -> pd.DataFrame:
    """Two answer distributions over -2..2 as a table (rows ``names``)."""
    return pd.DataFrame([probs_first, probs_second], index=list(names), columns=list(SCALE))


def simulated_power_table(probs_first: Sequence[float], probs_second: Sequence[float], raters: Sequence[int],
                          rhos: Sequence[float], delta: float, sd_first: float, sd_second: float, n_sims: int = 2000,
                          alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """SIMULATED raters (:func:`~gradcam_lib.metrics.study_power.simulate_wilcoxon_power`) per latent
    rho and rater count, beside the paired t-test's power at the latent and at the realised
    correlation of the answers."""
    rows = []
    for rho in rhos:
        for n in raters:
            run = study_power.simulate_wilcoxon_power(probs_first, probs_second, n, rho, n_sims, alpha, seed)
            t_at = lambda r, n=n: float(study_power.paired_t_power(  # noqa: E731
                n, delta, study_power.paired_difference_sd(sd_first, sd_second, r), alpha))
            rows.append({"latent_rho": rho, "answer_corr": run["answer_correlation"], "raters": n,
                         "SIMULATED_power": run["power"], "sim_low": run["power_low"], "sim_high": run["power_high"],
                         "t_power_at_latent_rho": t_at(rho), "t_power_at_answer_corr": t_at(run["answer_correlation"])})
    return pd.DataFrame(rows)
