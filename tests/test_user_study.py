"""The user study kit (experiments.user_study, metrics.agreement, metrics.study_power, report.user_study)
against hand-computed cases, scipy, an independent Krippendorff's alpha and
Monte-Carlo references; the published module against its own counts."""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import itertools
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import stats
from torch import nn

from gradcam_lib.datasets.base import build_sample
from gradcam_lib.datasets.transforms import ImageTransform
from gradcam_lib.experiments import user_study as kit
from gradcam_lib.methods import guided_backprop, guided_grad_cam
from gradcam_lib.methods.display import guided_to_display, resize_picture
from gradcam_lib.metrics import agreement as ag
from gradcam_lib.metrics import study_power as sp
from gradcam_lib.models import ModelEntry
from gradcam_lib.report import user_study as rf
from gradcam_lib.report.published.user_study import trust_counts, trust_means

STRONG, WEAK = "strong_net", "weak_net"


def synthetic_study(n_images: int = 3, size: int = 24, seed: int = 0) -> tuple[list[kit.StudyItem], pd.DataFrame]:
    """Items with pictures and maps of random flat colours (JPEG keeps them; no model needed) and
    their key."""
    rng = np.random.default_rng(seed)
    flat = lambda: np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (size, size, 3)).copy()  # noqa: E731
    items = pd.DataFrame({"position": range(n_images), "image_id": [f"img{i}" for i in range(n_images)],
                          "class_index": list(range(n_images))})
    study_items = [
        kit.StudyItem(
            image_id=row.image_id, class_index=row.class_index, class_name=f"class {row.class_index}",
            picture=flat(),
            maps={(model, method): flat()
                  for model in (STRONG, WEAK) for method in ag.STUDY_METHODS},
        )
        for row in items.itertuples(index=False)
    ]
    key = kit.assign_sides(items, STRONG, WEAK, seed=seed, class_names=[f"class {i}" for i in range(n_images)])
    return study_items, key


def decode_data_uri(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/jpeg;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"), dtype=float)


class FormParser(HTMLParser):
    """Collects, per question fieldset, its image sources and radio values; and every URL-bearing
    attribute of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.questions: dict[str, dict[str, list[str]]] = {}
        self.current: str | None = None
        self.urls: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.add(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href", "action", "data") and v]
        if tag == "fieldset" and "data-question" in attributes:
            self.current = attributes["data-question"]
            self.questions[self.current] = {"images": [], "values": []}
        elif tag == "img" and self.current:
            self.questions[self.current]["images"].append(attributes["src"])
        elif tag == "input" and attributes.get("type") == "radio" and self.current:
            self.questions[self.current]["values"].append(attributes["value"])


# ------------------------------------------------------------------------------------ stimuli


def predictions(image_ids, top1, correct) -> pd.DataFrame:
    return pd.DataFrame({"position": range(len(image_ids)), "image_id": image_ids, "top1": top1, "correct": correct})


def test_agreed_items_need_both_correct_and_the_same_class():
    ids = ["a", "b", "c", "d", "e"]
    strong = predictions(ids, [1, 2, 3, 4, 5], [True, True, False, True, True])
    weak = predictions(ids, [1, 2, 3, 9, 5], [True, False, True, True, True])  # d: both correct, other class
    items = kit.agreed_items(strong, weak)
    assert items["image_id"].tolist() == ["a", "e"]
    assert items["class_index"].tolist() == [1, 5]
    assert items["position"].tolist() == [0, 4]
    with pytest.raises(ValueError, match="same order"):
        kit.agreed_items(strong, weak.iloc[::-1])


def test_agreed_items_subsample_is_seeded_and_keeps_dataset_order():
    ids = [f"i{k}" for k in range(30)]
    table = predictions(ids, list(range(30)), [True] * 30)
    first = kit.agreed_items(table, table, n_items=7, seed=3)
    assert len(first) == 7 and first["position"].is_monotonic_increasing
    assert first.equals(kit.agreed_items(table, table, n_items=7, seed=3))
    assert not first.equals(kit.agreed_items(table, table, n_items=7, seed=4))


def test_sides_are_drawn_per_question_and_the_key_is_consistent():
    items = pd.DataFrame({"position": range(100), "image_id": [f"i{k}" for k in range(100)], "class_index": range(100)})
    key = kit.assign_sides(items, STRONG, WEAK, seed=1)
    assert list(key.columns) == list(ag.KEY_COLUMNS)
    assert len(key) == 200 and not key.duplicated(["image_id", "method"]).any()
    assert key["question_id"].tolist() == [f"q{k:02d}" for k in range(1, 201)]
    a_is_strong = key["stronger_side"] == "A"
    assert ((key["model_a"] == STRONG) == a_is_strong).all() and ((key["model_b"] == STRONG) == ~a_is_strong).all()
    assert 0.4 < a_is_strong.mean() < 0.6  # a fair coin, 200 draws: 5 sd away from failing
    # per method, not per image: both methods of one image are drawn independently
    per_image = key.pivot(index="image_id", columns="method", values="stronger_side")
    assert (per_image["guided_backprop"] != per_image["guided_gradcam"]).any()
    assert key.equals(kit.assign_sides(items, STRONG, WEAK, seed=1))
    other = kit.assign_sides(items, STRONG, WEAK, seed=2)
    assert other["study_id"].iloc[0] != key["study_id"].iloc[0]


def test_form_is_self_contained_and_shows_each_side_as_the_key_says(tmp_path):
    items, key = synthetic_study()
    page = rf.render_form(items, key, quality=95)
    parser = FormParser()
    parser.feed(page)
    assert parser.urls and all(url.startswith("data:") for url in parser.urls)
    assert "link" not in parser.tags and "http://" not in page and "https://" not in page
    assert "default-src 'none'" in page  # the browser itself refuses any fetch
    for name in (STRONG, WEAK, *ag.STUDY_METHODS, *ag.STUDY_METHODS.values()):
        assert name not in page  # nothing tells the rater which model or method is which
    assert list(parser.questions) == key["question_id"].tolist()
    by_id = {item.image_id: item for item in items}
    for question in key.itertuples(index=False):
        shown = parser.questions[question.question_id]
        assert shown["values"] == [str(a) for a in rf.ANSWERS]
        picture, side_a, side_b = (decode_data_uri(src) for src in shown["images"])
        item = by_id[question.image_id]
        strong_map, weak_map = item.maps[STRONG, question.method], item.maps[WEAK, question.method]
        error = lambda shown_image, array: np.abs(shown_image - array).mean()  # noqa: E731
        expected_a, expected_b = (strong_map, weak_map) if question.stronger_side == "A" else (weak_map, strong_map)
        assert error(side_a, expected_a) < 8 and error(side_b, expected_b) < 8  # JPEG at quality 95
        assert error(picture, item.picture) < 8
    form_path, key_path = rf.write_form(tmp_path, page), kit.write_key(tmp_path, key)
    assert form_path.parent != key_path.parent and not (form_path.parent / key_path.name).exists()
    assert pd.read_csv(key_path, dtype={"study_id": str}).equals(key)


def test_form_refuses_a_key_without_stimuli_and_the_notebook_variant_round_trips():
    items, key = synthetic_study()
    with pytest.raises(KeyError, match="without stimuli"):
        rf.render_form(items[:1], key)
    page = rf.render_form(items, key)
    frame = rf.notebook_form(page).data
    assert html.unescape(frame.split('srcdoc="', 1)[1].split('" style=', 1)[0]) == page


def tiny_entry() -> ModelEntry:
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    model = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    return ModelEntry("tiny", model, features, "0", ImageTransform(20, 16), ("zero", "one", "two"))


def test_predictions_and_explanations_of_a_small_model(tmp_path):
    entry = tiny_entry()
    rng = np.random.default_rng(0)
    samples = [build_sample(Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)),
                            torch.tensor([[0, 0, 5, 5]]), torch.tensor([label]), f"s{k}", entry.transform)
               for k, label in enumerate([0, 1, 2, 0, 1])]
    table = kit.top1_table(kit.Top1Experiment(entry, samples, "tiny", kit.Top1Settings()).run(tmp_path, batch_size=2))
    with torch.no_grad():
        expected = entry.model(torch.stack([s.image for s in samples])).argmax(1).tolist()
    assert table["top1"].tolist() == expected
    assert table["correct"].tolist() == [t in s.labels for t, s in zip(expected, samples, strict=True)]
    assert table["position"].tolist() == list(range(5))
    items = table.rename(columns={"top1": "class_index"}).iloc[[1, 3]][["position", "image_id", "class_index"]]
    pictures, maps = kit.explain_items(entry, samples, items, size=12, batch_size=1)
    assert len(pictures) == 2 and pictures[0].shape == (12, 12, 3) and pictures[0].dtype == np.uint8
    assert set(maps) == {(i, m) for i in items["image_id"] for m in ag.STUDY_METHODS}
    assert all(m.shape == (12, 12, 3) and m.dtype == np.uint8 for m in maps.values())
    images = torch.stack([samples[int(p)].image for p in items["position"]])
    targets = torch.as_tensor(items["class_index"].to_numpy(copy=True))
    expected_maps = {"guided_backprop": guided_backprop(entry.model, images, targets),
                     "guided_gradcam": guided_grad_cam(entry.model, entry.layer, images, targets)}
    for method, reference in expected_maps.items():
        for image_id, gradient in zip(items["image_id"], reference, strict=True):
            shown = resize_picture(guided_to_display(gradient), 12)
            assert np.abs(maps[image_id, method].astype(int) - shown).max() <= 1
    with pytest.raises(KeyError, match="unknown study method"):
        kit.explain_items(entry, samples, items, methods=["gradcam"], size=12)
    shifted = items.assign(position=items["position"] + 1)
    with pytest.raises(ValueError, match="do not match"):
        kit.explain_items(entry, samples, shifted, size=12)


# ------------------------------------------------------------------------------------ scoring


class TextParser(HTMLParser):
    """The text a browser shows: of every ``<title>``, ``<h1>``, ``<legend>`` and ``<figcaption>``
    (entities decoded, markup inside dropped), and every ``alt`` attribute."""

    SHOWN = ("title", "h1", "legend", "figcaption")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: dict[str, list[str]] = {tag: [] for tag in (*self.SHOWN, "alt")}
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.texts["alt"] += [v for k, v in attrs if k == "alt" and v is not None]
        if tag in self.SHOWN:
            self.open.append(tag)
            self.texts[tag].append("")

    def handle_endtag(self, tag: str) -> None:
        if self.open and tag == self.open[-1]:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        if self.open:
            self.texts[self.open[-1]][-1] += data


def test_form_text_is_shown_as_written_and_placeholders_in_it_stay_text():
    items, key = synthetic_study(n_images=2)
    odd = "R&D <b>x</b>"
    items = [dataclasses.replace(item, class_name=odd) for item in items]
    hostile = key.assign(position=key["position"].astype(str) + "<img src=x onerror=alert(1)>")
    title, instructions = "Study {{QUESTIONS}} {{STUDY_ID}}", "Read {{QUESTIONS}} & answer"
    page = rf.render_form(items, hostile, title=title, instructions=instructions)
    parser, text = FormParser(), TextParser()
    parser.feed(page)
    text.feed(page)
    # one fieldset per question: the placeholders in the title and the instructions were not filled
    assert list(parser.questions) == key["question_id"].tolist() and page.count("<fieldset") == len(key)
    assert text.texts["title"] == [title] and text.texts["h1"] == [title] and instructions in html.unescape(page)
    # the key's position is text, not markup: no image outside the data: URIs, shown literally
    assert all(url.startswith("data:") for url in parser.urls)
    assert text.texts["legend"] == [f"Question {p} of {len(key)}: {odd}" for p in hostile["position"]]
    # the alt text is plain text, as the caption shows it (before: the escaped markup, literally)
    assert text.texts["alt"] == [f"The image: {odd}", "Robot A", "Robot B"] * len(key)
    assert text.texts["figcaption"] == [f"The image: {odd}", "Robot A", "Robot B"] * len(key)


def _csv_field_js() -> str:
    """The form's ``csvField`` function, cut out of the template."""
    template = (Path(rf.__file__).parent / "templates" / "rating_form.html").read_text(encoding="utf-8")
    match = re.search(r"^  function csvField\(text\) \{\n.*?^  \}\n", template, flags=re.M | re.S)
    assert match, "csvField not found in the template"
    return match.group(0)


@pytest.mark.skipif(shutil.which("node") is None,
                    reason="the form's CSV export test needs node (apt-get install nodejs)")
def test_the_forms_csv_export_neutralises_formulas_outside_a_browser(tmp_path):
    """OWASP's CSV-injection rule on the form's own code, run by node: a field starting with =, +,
    -, @, tab or CR gets a leading single quote; numbers (the answers -2, -1) stay numbers; then RFC
    4180 quoting. Expected values written by hand."""
    cases = {
        "=HYPERLINK(\"http://x\",\"y\")": "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"",
        "+1+cmd": "'+1+cmd", "-1+cmd": "'-1+cmd", "@SUM(A1)": "'@SUM(A1)", "\tx": "'\tx",
        "\rx": "\"'\rx\"", "-2": "-2", "-1": "-1", "+2": "+2", "-0.5": "-0.5", "0": "0",
        "rater 7": "rater 7", "a=b": "a=b", 'rater, "seven"': '"rater, ""seven"""', "": "",
    }
    script = tmp_path / "fields.js"
    script.write_text(_csv_field_js()
                      + "process.stdout.write(JSON.stringify(JSON.parse(process.argv[2]).map(csvField)));\n")
    done = subprocess.run(["node", str(script), json.dumps(list(cases))], capture_output=True, text=True, check=True,
                          timeout=60)
    assert json.loads(done.stdout) == list(cases.values())
    # read back by pandas, as read_ratings reads it: the text with its quote, numbers as numbers
    fields = json.loads(done.stdout)
    kept = [0, 1, 6, 13]  # '=HYPERLINK(...), '+1+cmd, -2, a comma and quotes
    (tmp_path / "row.csv").write_text("a,b,c,d\n" + ",".join(fields[i] for i in kept) + "\n")
    back = pd.read_csv(tmp_path / "row.csv", dtype={"a": str, "b": str, "d": str}).iloc[0].tolist()
    assert back == ["'=HYPERLINK(\"http://x\",\"y\")", "'+1+cmd", -2, 'rater, "seven"']


def ratings_for(key: pd.DataFrame, answers_by_rater: dict[str, list[int]]) -> pd.DataFrame:
    return pd.DataFrame([
        {"study_id": key["study_id"].iloc[0], "rater_id": rater, "question_id": q, "answer": a}
        for rater, answers in answers_by_rater.items() for q, a in zip(key["question_id"], answers, strict=True)
    ])


def test_scores_are_positive_when_the_stronger_model_is_preferred():
    _, key = synthetic_study()
    prefers_a = ratings_for(key, {"r1": [2] * len(key)})
    scores = ag.score_ratings(prefers_a, key)
    expected = np.where(key["stronger_side"] == "A", 2, -2)
    assert scores["score"].tolist() == expected.tolist()
    prefers_strong = ratings_for(key, {"r1": np.where(key["stronger_side"] == "A", 1, -1).tolist()})
    assert (ag.score_ratings(prefers_strong, key)["score"] == 1).all()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.assign(answer=r["answer"].where(r.index != 0, 3)), "integers in -2..2"),
        (lambda r: r.assign(answer=r["answer"].astype(float).where(r.index != 0, np.nan)), "integers in -2..2"),
        (lambda r: r.assign(study_id="other"), "cannot be scored"),
        (lambda r: r.assign(question_id=r["question_id"].where(r.index != 0, "q99")), "not in the key"),
        (lambda r: pd.concat([r, r.iloc[:1]]), "twice"),
        (lambda r: r.drop(columns="rater_id"), "lack columns"),
        (lambda r: r.assign(question_id=r["question_id"].where(r.index != 0, None)), "'question_id' has a missing id"),
    ],
)
def test_bad_ratings_are_refused(change, message):
    _, key = synthetic_study()
    ratings = ratings_for(key, {"r1": [0] * len(key)})
    with pytest.raises(ValueError, match=message):
        ag.score_ratings(change(ratings), key)


def test_read_ratings_concatenates_files_and_names_a_missing_one(tmp_path):
    _, key = synthetic_study()
    for rater in ("r1", "r2"):
        ratings_for(key, {rater: [1] * len(key)}).to_csv(tmp_path / f"{rater}.csv", index=False)
    both = kit.read_ratings([tmp_path / "r1.csv", tmp_path / "r2.csv"])
    assert len(both) == 2 * len(key) and set(both["rater_id"]) == {"r1", "r2"}
    with pytest.raises(FileNotFoundError, match=r"r3\.csv"):
        kit.read_ratings([tmp_path / "r3.csv"])


def test_a_key_with_a_numeric_looking_study_id_is_read_as_text(tmp_path):
    _items, key = synthetic_study(n_images=2, seed=12)
    study = key["study_id"].iloc[0]
    assert study == "9189e94870" and float(study) == float("inf")  # one id in ~60 looks like a number
    key_path = kit.write_key(tmp_path, key)
    ratings_for(key, {"007": [1] * len(key), "7": [2] * len(key)}).to_csv(tmp_path / "ratings.csv", index=False)
    ratings = kit.read_ratings([tmp_path / "ratings.csv"])
    assert set(ratings["rater_id"]) == {"007", "7"} and (ratings["study_id"] == study).all()
    with pytest.raises(ValueError, match=r"the key's column 'study_id' holds inf, not text.*read_key"):
        ag.score_ratings(ratings, pd.read_csv(key_path))  # pandas' defaults: every rating refused before
    with pytest.raises(ValueError, match=r"the ratings' column 'study_id' holds inf.*read_ratings"):
        ag.score_ratings(pd.read_csv(tmp_path / "ratings.csv"), key)
    back = kit.read_key(key_path)
    assert back.equals(key)
    scores = ag.score_ratings(ratings, back)
    assert scores.groupby("rater_id")["answer"].first().to_dict() == {"007": 1, "7": 2}


def test_an_empty_rater_id_is_refused(tmp_path):
    _, key = synthetic_study(n_images=2)
    ratings = ratings_for(key, {"r1": [1] * len(key), "": [2] * len(key)})
    ratings.to_csv(tmp_path / "ratings.csv", index=False)
    read = kit.read_ratings([tmp_path / "ratings.csv"])
    assert (read["rater_id"] == "").sum() == len(key)  # kept as written, not NaN
    for bad in (read, ratings.assign(rater_id=ratings["rater_id"].replace("", np.nan)), ratings.assign(rater_id=" ")):
        with pytest.raises(ValueError, match=r"ratings have no rater_id; every rater needs an id"):
            ag.analyse_study(bad, key, n_boot=50)


def test_a_single_rater_gives_a_defined_analysis():
    _, key = synthetic_study(n_images=2)
    strong_on_a = np.where(key["stronger_side"] == "A", 1, -1)
    answers = np.where(key["method"] == "guided_gradcam", 2, 1) * strong_on_a  # scores 2 (GGC) and 1 (GBP)
    analysis = ag.analyse_study(ratings_for(key, {"only": answers.tolist()}), key, n_boot=50)
    summary = analysis.summary.set_index("method")
    assert summary["mean"].to_dict() == {"guided_backprop": 1.0, "guided_gradcam": 2.0}
    assert (summary["sd"] == 0).all() and (summary["raters"] == 1).all() and (summary["answers"] == 2).all()
    assert summary[["ci_low", "ci_high"]].isna().all().all()  # one rater cannot be resampled
    assert analysis.agreement["alpha_ordinal"].isna().all() and (analysis.agreement["raters"] == 1).all()
    assert analysis.paired["raters"] == 1 and analysis.paired["mean_difference"] == 1.0
    assert analysis.paired["p_value"] == stats.wilcoxon([1.0]).pvalue == 1.0
    assert analysis.difference.mean == 1.0 and np.isnan(analysis.difference.low) and analysis.difference_raters == 1


@pytest.mark.parametrize("text, message", [
    ("study_id,rater_id,question_id,answer\n", "holds no rows \\(only a header\\)"),
    ("", "is empty"),
    ("study_id,rater,question_id,answer\nx,r,q01,1\n", "lacks columns \\['rater_id'\\]"),
])
def test_ratings_files_without_ratings_are_refused_by_name(tmp_path, text, message):
    _, key = synthetic_study(n_images=2)
    good = tmp_path / "good.csv"
    ratings_for(key, {"r1": [1] * len(key)}).to_csv(good, index=False)
    bad = tmp_path / "bad_file.csv"
    bad.write_text(text)
    with pytest.raises(ValueError, match=f"ratings file {re.escape(str(bad))} {message}"):
        kit.read_ratings([good, bad])
    key_only_header = tmp_path / "key.csv"
    key.iloc[:0].to_csv(key_only_header, index=False)
    with pytest.raises(ValueError, match=f"key file {re.escape(str(key_only_header))} holds no rows"):
        kit.read_key(key_only_header)


# ------------------------------------------------------------------------------------ summaries


def test_kth_counts_give_kths_published_means_and_sds():
    summary = ag.counts_summary(trust_counts(), n_boot=200).set_index("method")
    published = trust_means().query("source == 'KTH'").set_index("method")
    assert np.allclose(summary["mean"], published.loc[summary.index, "mean"], atol=5e-5)
    assert np.allclose(summary["sd"], published.loc[summary.index, "sd"], atol=5e-5)
    assert (summary["answers"] == 468).all()


def test_bootstrap_matches_scipy_and_the_cluster_bootstrap_resamples_groups():
    rng = np.random.default_rng(0)
    values = rng.normal(1.0, 2.0, 300)
    ours = ag.percentile_interval(ag.bootstrap_means(values, n_boot=8000, seed=1))
    scipys = stats.bootstrap((values,), np.mean, n_resamples=8000, method="percentile", rng=2).confidence_interval
    assert ours == pytest.approx((scipys.low, scipys.high), abs=0.03)
    # 20 groups of 5 identical values: resampling groups = resampling the 20 group values
    group_values = rng.normal(0, 1, 20)
    clustered = ag.percentile_interval(
        ag.bootstrap_means(np.repeat(group_values, 5), np.repeat(np.arange(20), 5), 8000, 1))
    reference = stats.bootstrap((group_values,), np.mean, n_resamples=8000, method="percentile",
                                rng=3).confidence_interval
    assert clustered == pytest.approx((reference.low, reference.high), abs=0.04)
    with pytest.raises(ValueError, match="NaN"):
        ag.bootstrap_means(np.array([1.0, np.nan]))


def test_wilcoxon_on_rater_means_matches_a_hand_computed_case():
    # rater means: GGC - GB = 1, -2, 3, 4, 5 -> ranks 1..5, W- = 2; exact two-sided p = 2 * 3/32
    rows = []
    for rater, difference in enumerate([1, -2, 3, 4, 5]):
        rows += [{"rater_id": f"r{rater}", "method": "guided_backprop", "score": 0.0},
                 {"rater_id": f"r{rater}", "method": "guided_gradcam", "score": difference / 2},
                 {"rater_id": f"r{rater}", "method": "guided_gradcam", "score": difference * 1.5}]  # mean = difference
    result = ag.paired_test(pd.DataFrame(rows))
    assert result["raters"] == 5 and result["mean_difference"] == pytest.approx(2.2)
    assert result["statistic"] == 2 and result["p_value"] == pytest.approx(6 / 32)
    tied = pd.DataFrame([{"rater_id": r, "method": m, "score": 1.0} for r in "ab" for m in ag.STUDY_METHODS])
    assert np.isnan(ag.paired_test(tied)["p_value"])


def coincidence_alpha_ordinal(data: np.ndarray) -> float:
    """Krippendorff (2011), 'Computing Krippendorff's alpha-reliability', written out independently:
    coincidence matrix, ordinal distances from the marginal frequencies."""
    values = np.unique(data[~np.isnan(data)])
    index = {v: i for i, v in enumerate(values)}
    coincidences = np.zeros((values.size, values.size))
    for unit in data.T:
        present = unit[~np.isnan(unit)]
        if present.size < 2:
            continue
        for i, a in enumerate(present):
            for j, b in enumerate(present):
                if i != j:
                    coincidences[index[a], index[b]] += 1 / (present.size - 1)
    n_c = coincidences.sum(axis=1)
    n = n_c.sum()
    delta = np.array([[(n_c[min(c, k):max(c, k) + 1].sum() - (n_c[c] + n_c[k]) / 2) ** 2 for k in range(values.size)]
                      for c in range(values.size)])
    observed = (coincidences * delta).sum() / n
    expected = (np.outer(n_c, n_c) * delta).sum() / (n * (n - 1))
    return 1 - observed / expected


def test_krippendorff_alpha_ordinal_hand_computed_and_independent():
    # two raters, three units: (1,1), (1,2), (2,3): D_o = 17/6, D_e = 6, alpha = 19/36 (worked by hand)
    scores = pd.DataFrame({
        "rater_id": ["x", "y"] * 3,
        "question_id": ["q1", "q1", "q2", "q2", "q3", "q3"],
        "method": "guided_gradcam",
        "score": [1, 1, 1, 2, 2, 3],
    }).assign(score=lambda t: t["score"] - 2)  # shift into -2..2; alpha is unchanged by a shift
    table = ag.agreement(scores).set_index("method")
    assert table.loc["guided_gradcam", "alpha_ordinal"] == pytest.approx(19 / 36)
    assert table.loc["all", "alpha_ordinal"] == pytest.approx(19 / 36)
    rng = np.random.default_rng(0)
    data = rng.integers(-2, 3, size=(6, 15)).astype(float)
    data[rng.random(data.shape) < 0.2] = np.nan
    long = pd.DataFrame([{"rater_id": r, "question_id": f"q{u:02d}", "method": "m", "score": data[r, u]}
                         for r in range(6) for u in range(15) if not np.isnan(data[r, u])])
    assert ag.agreement(long).iloc[0]["alpha_ordinal"] == pytest.approx(coincidence_alpha_ordinal(data), abs=1e-12)
    constant = long.assign(score=1)
    assert np.isnan(ag.agreement(constant).iloc[0]["alpha_ordinal"])


def test_analyse_study_end_to_end_on_hand_made_ratings():
    _, key = synthetic_study(n_images=2)
    strong_on_a = np.where(key["stronger_side"] == "A", 1, -1)
    ratings = ratings_for(key, {"r1": (2 * strong_on_a).tolist(), "r2": strong_on_a.tolist(), "r3": [0] * len(key)})
    analysis = ag.analyse_study(ratings, key, n_boot=300)
    summary = analysis.summary.set_index("method")
    assert summary.loc["guided_gradcam", "mean"] == pytest.approx(1.0)  # (2 + 1 + 0) / 3 per question
    assert summary.loc["guided_gradcam", "raters"] == 3 and summary.loc["guided_gradcam", "answers"] == 6
    assert (analysis.per_image["mean"] == 1.0).all() and (analysis.per_image["answers"] == 3).all()
    assert analysis.paired["mean_difference"] == 0 and np.isnan(analysis.paired["p_value"])
    # every rater gives both methods the same score: the difference is 0 in every rater resample
    assert analysis.difference_raters == 3 and analysis.difference.n == 6
    assert (analysis.difference.mean, analysis.difference.low, analysis.difference.high) == (0, 0, 0)
    assert len(analysis.agreement) == 3


def paired_scores(differences_by_rater: dict[str, list[float]]) -> pd.DataFrame:
    """Scores with Guided Backprop 0 and Guided Grad-CAM = the given difference, per rater and image."""
    rows = []
    for rater, differences in differences_by_rater.items():
        for image, difference in enumerate(differences):
            rows += [{"rater_id": rater, "image_id": f"i{image}", "method": "guided_backprop", "score": 0.0},
                     {"rater_id": rater, "image_id": f"i{image}", "method": "guided_gradcam", "score": difference}]
    return pd.DataFrame(rows)


def test_rater_paired_difference_resamples_raters_hand_computed():
    # two raters, 13 images each: one always 0, one always 1. Resampling raters gives the mean
    # 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the 95 % percentile interval is [0, 1] exactly;
    # resampling the 26 pairs as if independent would give about 0.5 +- 0.19.
    scores = paired_scores({"a": [0.0] * 13, "b": [1.0] * 13})
    difference, raters = ag.rater_paired_difference(scores)
    assert raters == 2 and difference.n == 26 and difference.mean == pytest.approx(0.5)
    assert (difference.low, difference.high) == (0.0, 1.0)
    each_pair_a_rater = scores.assign(rater_id=scores["rater_id"] + scores["image_id"])
    narrow, _ = ag.rater_paired_difference(each_pair_a_rater)
    assert 0.2 < narrow.low < 0.4 and 0.6 < narrow.high < 0.8


def test_rater_paired_difference_matches_exact_enumeration_of_rater_resamples():
    # four raters with 3, 1, 2, 4 pairs; an unpaired answer (a rater who skipped one method on an
    # image) is left out. Brute force: all 4^4 equally likely resamples of raters.
    differences = {"r1": [2.0, 1.0, 0.0], "r2": [-2.0], "r3": [1.0, -1.0], "r4": [0.0, 1.0, 2.0, 2.0]}
    scores = paired_scores(differences)
    unpaired = pd.DataFrame([{"rater_id": "r2", "image_id": "extra", "method": "guided_gradcam", "score": 2.0}])
    difference, raters = ag.rater_paired_difference(pd.concat([scores, unpaired], ignore_index=True), seed=3)
    sums = {r: sum(d) for r, d in differences.items()}
    sizes = {r: len(d) for r, d in differences.items()}
    assert raters == 4 and difference.n == 10
    assert difference.mean == pytest.approx(sum(sums.values()) / sum(sizes.values()))
    draws = np.array([sum(sums[r] for r in pick) / sum(sizes[r] for r in pick)
                      for pick in itertools.product(differences, repeat=4)])
    below = lambda x: np.mean(draws < x - 1e-12)  # noqa: E731
    at_most = lambda x: np.mean(draws <= x + 1e-12)  # noqa: E731
    for bound, level in ((difference.low, 0.025), (difference.high, 0.975)):
        assert below(bound) <= level + 0.006 and at_most(bound) >= level - 0.006


# ------------------------------------------------------------------------------------ aggregates


def test_design_effect_and_effective_units_closed_forms():
    assert sp.design_effect(13, 0.0) == 1.0 and sp.design_effect(13, 1.0) == 13.0
    assert sp.design_effect(13, 0.25) == pytest.approx(4.0)
    assert sp.effective_units(468, 13, 1.0) == pytest.approx(36.0)  # each rater counts once
    assert sp.effective_units(468, 13, 0.0) == 468
    with pytest.raises(ValueError):
        sp.design_effect(13, 1.5)


@pytest.mark.parametrize("rho, icc", [(0.0, 0.0), (0.25, 0.1), (0.5, 0.2), (0.75, 1.0), (-0.3, 0.5)])
def test_rater_interval_is_the_closed_form_over_the_effective_n(rho, icc):
    sd_a, sd_b, raters, m, estimate = 1.3731, 1.2850, 36, 13, -0.1645
    n_eff = raters * m / (1 + (m - 1) * icc)
    variance = (sd_a**2 + sd_b**2 - 2 * rho * sd_a * sd_b) / n_eff
    result = sp.rater_interval(estimate, sd_a, raters, m, icc, sd_second=sd_b, rho=rho)
    assert result["n_eff"] == pytest.approx(n_eff) and result["se"] ** 2 == pytest.approx(variance)
    half = stats.t.ppf(0.975, raters - 1) * np.sqrt(variance)
    assert (result["low"], result["high"]) == pytest.approx((estimate - half, estimate + half))
    assert result["excludes_zero"] == float(abs(estimate) > half)
    # one method: the interval of its mean, sd_a^2 / n_eff
    single = sp.rater_interval(0.27, sd_a, raters, m, icc)
    assert single["se"] ** 2 == pytest.approx(sd_a**2 / n_eff)
    table = sp.difference_sensitivity(0.1, 0.1 - estimate, sd_a, sd_b, raters, m, [rho], [icc])
    assert table.iloc[0]["low"] == pytest.approx(result["low"])
    assert table.iloc[0]["high"] == pytest.approx(result["high"])
    # sds of the pooled answers: the variance is scaled by (N - 1) / (N - deff)
    pooled = sp.rater_interval(estimate, sd_a, raters, m, icc, sd_second=sd_b, rho=rho, pooled_sds=True)
    n = raters * m
    assert pooled["se"] ** 2 == pytest.approx(variance * (n - 1) / (n - (1 + (m - 1) * icc)))


def test_pooled_sample_variance_of_clustered_answers_has_the_stated_bias():
    # 5 raters x 13 answers, icc 0.5: E[s^2] = sigma^2 (N - deff) / (N - 1) = 58 / 64 sigma^2
    rng = np.random.default_rng(1)
    raters, m, icc, studies = 5, 13, 0.5, 20000
    answers = (np.sqrt(icc) * rng.standard_normal((studies, raters, 1))
               + np.sqrt(1 - icc) * rng.standard_normal((studies, raters, m)))
    mean_variance = answers.reshape(studies, -1).var(axis=1, ddof=1).mean()
    assert mean_variance == pytest.approx(1 / sp.pooled_variance_factor(raters, m, icc), rel=0.01)
    assert 1 / sp.pooled_variance_factor(raters, m, icc) == pytest.approx(58 / 64)


def test_rater_interval_matches_simulated_raters():
    # Gaussian raters with exactly the model's structure: answer = sqrt(icc) u_rater + sqrt(1 - icc) e_image,
    # (u, e) per method with sds (sd_a, sd_b) and correlation rho, so a rater's two mean scores
    # correlate rho and two answers of one rater to one method correlate icc.
    rng = np.random.default_rng(0)
    sd = np.array([1.37, 1.29])
    rho, icc, raters, m, studies = 0.5, 0.2, 36, 13, 4000
    cov = np.array([[sd[0] ** 2, rho * sd[0] * sd[1]], [rho * sd[0] * sd[1], sd[1] ** 2]])
    rater_level = rng.multivariate_normal([0, 0], cov, size=(studies, raters, 1))
    image_level = rng.multivariate_normal([0, 0], cov, size=(studies, raters, m))
    answers = np.sqrt(icc) * rater_level + np.sqrt(1 - icc) * image_level + np.array([0.3, 0.1])
    differences = answers[..., 0].mean(axis=(1, 2)) - answers[..., 1].mean(axis=(1, 2))
    result = sp.rater_interval(0.0, sd[0], raters, m, icc, sd_second=sd[1], rho=rho)
    assert differences.std() == pytest.approx(result["se"], rel=0.04)
    half = result["high"] - result["estimate"]
    coverage = np.mean(np.abs(differences - 0.2) < half)
    assert 0.945 < coverage < 0.97  # t quantile on 35 df with the sds known: 0.958


def test_largest_icc_excluding_zero_is_where_the_interval_reaches_zero():
    grid = np.linspace(0, 1, 2001)
    for rho, pooled in itertools.product((0.0, 0.25, 0.5, 0.75), (False, True)):
        bound = sp.largest_icc_excluding_zero(-0.1645, 1.3731, 36, 13, sd_second=1.2850, rho=rho, pooled_sds=pooled)
        excludes = np.array([
            sp.rater_interval(-0.1645, 1.3731, 36, 13, icc, 1.2850, rho, pooled_sds=pooled)["excludes_zero"]
            for icc in grid])
        assert (excludes == (grid < bound)).all()
    # a single method whose bound falls inside (0, 1) only with the pooled-sd correction
    assert (sp.largest_icc_excluding_zero(0.4359, 1.2850, 36, 13) > 1
            > sp.largest_icc_excluding_zero(0.4359, 1.2850, 36, 13, pooled_sds=True))
    assert sp.largest_icc_excluding_zero(0.0, 1.0, 36, 13) < 0  # a zero estimate is never shown non-zero


# ------------------------------------------------------------------------------------ power


def test_paired_difference_sd_closed_forms():
    assert sp.paired_difference_sd(1.0, 1.0, 0.0) == pytest.approx(np.sqrt(2))
    assert sp.paired_difference_sd(1.0, 1.0, 1.0) == pytest.approx(0.0)
    assert sp.paired_difference_sd(3.0, 4.0, 0.5) == pytest.approx(np.sqrt(9 + 16 - 12))
    # independent answers (icc = 0): averaging 4 images halves the sd of a rater's difference
    assert sp.paired_difference_sd(1.0, 1.0, 0.5, icc=0.0, images=4) == pytest.approx(1.0 / 2)
    # icc = 1: a rater's 13 answers are worth one
    one_image = sp.paired_difference_sd(1.3, 1.2, 0.4)
    assert sp.paired_difference_sd(1.3, 1.2, 0.4, icc=1.0, images=13) == pytest.approx(one_image)
    # icc = 0.25, 13 images: variance times (1 + 12 / 4) / 13
    assert sp.paired_difference_sd(1.0, 1.0, 0.0, icc=0.25, images=13) == pytest.approx(np.sqrt(2 * 4 / 13))
    with pytest.raises(ValueError):
        sp.paired_difference_sd(1.0, 1.0, 1.5)


def test_paired_t_power_matches_a_monte_carlo_t_test():
    rng = np.random.default_rng(0)
    differences = rng.normal(0.5, 1.0, size=(6000, 20))
    simulated = np.mean(stats.ttest_1samp(differences, 0.0, axis=1).pvalue < 0.05)
    assert sp.paired_t_power(20, 0.5, 1.0) == pytest.approx(simulated, abs=0.02)
    assert sp.paired_t_power(2000, 0.0, 1.0) == pytest.approx(0.05, abs=1e-9)  # size under the null


def test_raters_needed_is_the_smallest_sufficient_number():
    n = sp.raters_needed(0.27, 1.88)
    assert sp.paired_t_power(n, 0.27, 1.88) >= 0.8 > sp.paired_t_power(n - 1, 0.27, 1.88)
    normal = ((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * 1.88 / 0.27) ** 2
    assert normal <= n <= normal + 3
    curve = sp.power_curve([10, 50, 200], 0.27, 1.37, 1.29, rhos=[0.0, 0.5])
    assert curve.groupby("rho")["power"].apply(lambda p: p.is_monotonic_increasing).all()
    assert (curve[curve.rho == 0.5]["power"].to_numpy() > curve[curve.rho == 0.0]["power"].to_numpy()).all()


def test_tilted_distribution_has_the_requested_moments():
    base = trust_counts().query("method == 'Guided Backprop'")["count"].to_numpy()
    k = np.arange(-2, 3)
    p = sp.tilt_answer_distribution(base, 1.0, 1.285)
    assert p @ k == pytest.approx(1.0) and np.sqrt(p @ k**2 - (p @ k) ** 2) == pytest.approx(1.285)
    own = base / base.sum()
    own_mean, own_sd = own @ k, np.sqrt(own @ k**2 - (own @ k) ** 2)
    assert sp.tilt_answer_distribution(base, own_mean, own_sd) == pytest.approx(own, abs=1e-9)
    with pytest.raises(ValueError, match="no distribution"):
        sp.tilt_answer_distribution(base, 1.9, 1.3)  # mean near the top of the scale leaves no room for that sd


def test_simulated_wilcoxon_power_holds_its_size_and_grows_with_correlation():
    p = sp.tilt_answer_distribution([1, 1, 1, 1, 1], 0.5, 1.3)
    null = sp.simulate_wilcoxon_power(p, p, raters=40, rho=0.3, n_sims=3000, seed=0)
    assert null["power"] == pytest.approx(0.05, abs=0.02)
    hits = round(null["power"] * 3000)
    wilson = stats.binomtest(hits, 3000).proportion_ci(method="wilson")
    assert (null["power_low"], null["power_high"]) == pytest.approx((wilson.low, wilson.high))
    assert 0 < null["answer_correlation"] < 0.3  # coarse answers correlate less than their latent scores
    q = sp.tilt_answer_distribution([1, 1, 1, 1, 1], 1.0, 1.3)
    low, high = (sp.simulate_wilcoxon_power(q, p, raters=40, rho=rho, n_sims=1500, seed=1)["power"]
                 for rho in (0.0, 0.8))
    assert 0.1 < low < high


def test_power_stays_defined_far_in_the_tail():
    assert sp.paired_t_power(400, 0.27, 0.6) == pytest.approx(1.0)
    assert not np.isnan(sp.power_curve([10, 400, 2000], 0.27, 1.37, 1.29, rhos=[0.9])["power"]).any()


def test_build_study_says_when_no_image_qualifies(tmp_path):
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    never_right = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1000))
    with torch.no_grad():  # always predicts class 0 (tench), which no embedded photograph shows
        never_right[-1].weight.zero_()
        never_right[-1].bias.copy_(-torch.arange(1000.0))
    entry = ModelEntry("never_right", never_right.eval(), features, "0", ImageTransform(40, 32),
                       tuple(map(str, range(1000))))
    with pytest.raises(ValueError, match="no image of 'photos' is classified correctly by both"):
        kit.build_study(entry, entry, "photos", tmp_path)
    assert len(pd.read_csv(next(tmp_path.glob("never_right_top1_photos_*.csv")))) == 7
