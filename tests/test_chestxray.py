"""Chapter 5: the NIH ChestX-ray14 reader on fixtures in the real formats, CheXNet's key remapping,
the model-owned finding -> output map, the two localisation metrics against hand-computed cases and
scikit-image, and the stand-in's data and model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage.measure import label, regionprops
from torch import nn
from torchvision import models as tv_models

from gradcam_lib.datasets import ImageTransform
from gradcam_lib.datasets.boxes import box_fraction, iobb
from gradcam_lib.datasets.chestxray import FINDINGS, ChestXray14BoxDataset, read_bbox_list
from gradcam_lib.datasets.xray_standin import STANDIN_FINDINGS, StandinXrayDataset, standin_transform
from gradcam_lib.experiments.chest_xray import (
    IG_METHODS,
    XRAY_METHODS,
    AttributionSettings,
    ChestXrayExperiment,
    ChestXraySettings,
    ig_baseline,
    method_maps,
)
from gradcam_lib.methods import grad_cam
from gradcam_lib.methods.attributions import converged_ig
from gradcam_lib.metrics.chestxray import kth_box_share, map_to_boxes, score_boxes, to_grey
from gradcam_lib.models import load_model
from gradcam_lib.models.xray import (
    CHEXNET_CLASSES,
    chexnet_state_dict,
    finding_index,
    load_chexnet,
    load_standin,
    wrap_xrv_model,
)
from gradcam_lib.report.chest_xray import (
    headline_table,
    ig_convergence_table,
    iobb_table,
    kth_table,
    paired_afp,
    paired_hits,
    paired_share,
)
from gradcam_lib.report.published.chestxray import chestxray8_localization, kth_box_shares

PLAIN_224 = ImageTransform(224, 224, (0.0,) * 3, (1.0,) * 3)


def evaluate_boxes_batch(entry, images, samples, methods, settings):
    """One batch of the chapter's experiment (:meth:`ChestXrayExperiment.batch`)."""
    experiment = ChestXrayExperiment(entry, samples, "standin", ChestXraySettings(tuple(methods), settings))
    return experiment.batch(images, samples)
HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"


# --------------------------------------------------------------------------- NIH reader


def _write_xray(path, size: int, rect: tuple[int, int, int, int], mode: str = "L") -> None:
    """A dark image with a white rectangle [x0, x1) x [y0, y1) given at 1024 px, scaled to ``size``."""
    pixels = np.full((size, size), 20, dtype=np.uint8)
    x0, y0, x1, y1 = (int(v * size / 1024) for v in rect)
    pixels[y0:y1, x0:x1] = 255
    image = Image.fromarray(pixels, mode="L").convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


@pytest.fixture()
def nih_root(tmp_path):
    """Kaggle's layout: images_001/images/*.png and images_002/images/*.png, the box list at the root,
    with NIH's header, float boxes, trailing empty fields and 'Infiltrate'."""
    _write_xray(tmp_path / "images_001/images/00000001_000.png", 1024, (256, 128, 768, 384))
    _write_xray(tmp_path / "images_002/images/00000002_001.png", 512, (256, 128, 768, 384), mode="RGBA")
    (tmp_path / "BBox_List_2017.csv").write_text(
        HEADER
        + "00000002_001.png,Infiltrate,256.0,128.0,512.0,256.0,,,\n"
        + "00000001_000.png,Mass,256,128,512,256,,,\n"
        + "00000001_000.png,Nodule,102.4,204.8,409.6,204.8,,,\n"
    )
    return tmp_path


def test_bbox_list_is_read_by_position_and_infiltrate_is_canonical(nih_root):
    records = read_bbox_list(nih_root / "BBox_List_2017.csv")
    assert [(r.image, r.finding) for r in records] == [
        ("00000002_001.png", "Infiltration"), ("00000001_000.png", "Mass"), ("00000001_000.png", "Nodule")]
    assert (records[2].x, records[2].y, records[2].w, records[2].h) == (102.4, 204.8, 409.6, 204.8)


@pytest.mark.parametrize("text, message", [
    ("Image,Label\n", "header"),
    (HEADER + "a.png,Mass,1,2,x,4,,,\n", "not numeric"),
    (HEADER + "a.png,Fracture,1,2,3,4,,,\n", "unknown finding"),
    (HEADER + "a.png,Mass,1,2,0,4,,,\n", "size"),
])
def test_bad_box_lists_fail_clearly(tmp_path, text, message):
    (tmp_path / "b.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_bbox_list(tmp_path / "b.csv")


def test_reader_maps_boxes_from_1024_px_through_the_transform(nih_root):
    dataset = ChestXray14BoxDataset(nih_root, PLAIN_224)
    assert len(dataset) == 2
    first, second = dataset[0], dataset[1]  # sorted by file name
    assert first.image_id == "00000001_000" and first.image.shape == (3, 224, 224)
    assert first.box_labels.tolist() == [FINDINGS.index("Mass"), FINDINGS.index("Nodule")]
    # hand-computed: [102.4, 512) x [204.8, 409.6) at 1024 -> [22.4, 112) x [44.8, 89.6) at 224 -> pixel centres inside
    assert first.boxes[1].tolist() == [22, 45, 111, 89]
    # the mapped Mass box is where the white rectangle of the pixels went (within a pixel of antialiasing)
    bright = np.argwhere(first.image[0].numpy() > 0.5)
    (y0, x0), (y1, x1) = bright.min(0), bright.max(0)
    assert np.abs(np.array([x0, y0, x1, y1]) - first.boxes[0].numpy()).max() <= 1
    # a copy resized to 512 px (an RGBA PNG, as some of NIH's are) gives the same box and pixels
    assert second.boxes.tolist() == first.boxes[:1].tolist()
    assert second.labels == (FINDINGS.index("Infiltration"),)
    torch.testing.assert_close(second.image, first.image, atol=0.02, rtol=0)


def test_reader_errors_name_what_is_missing(nih_root, tmp_path_factory):
    (nih_root / "images_002/images/00000002_001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"00000002_001\.png"):
        ChestXray14BoxDataset(nih_root, PLAIN_224)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ChestXray14BoxDataset(tmp_path_factory.mktemp("x") / "absent", PLAIN_224)
    assert len(ChestXray14BoxDataset(nih_root, PLAIN_224, limit=1)) == 1


# --------------------------------------------------------------------------- models


def _chexnet_style(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision names -> CheXNet's saved names: DataParallel + .densenet121 + old 'norm.1' names."""
    out = {}
    for key, value in state.items():
        for new, old in (("norm1", "norm.1"), ("norm2", "norm.2"), ("conv1", "conv.1"), ("conv2", "conv.2")):
            if ".denselayer" in key:
                key = key.replace(f".{new}.", f".{old}.")
        key = key.replace("classifier.", "classifier.0.")
        out[f"module.densenet121.{key}"] = value
    return out


@pytest.mark.parametrize("old_torch", [True, False])
def test_chexnet_checkpoint_loads_into_torchvision_densenet121(tmp_path, old_torch):
    """CheXNet was saved by torch 0.3 (no num_batches_tracked); a re-saved copy may have them."""
    torch.manual_seed(0)
    reference = tv_models.densenet121(weights=None, num_classes=14).eval()
    saved = _chexnet_style({k: v for k, v in reference.state_dict().items()
                            if not (old_torch and k.endswith("num_batches_tracked"))})
    assert "module.densenet121.features.denseblock1.denselayer1.norm.1.weight" in saved
    assert "module.densenet121.classifier.0.weight" in saved
    torch.save({"epoch": 7, "state_dict": saved, "best_loss": 0.15}, tmp_path / "model.pth.tar")
    entry = load_chexnet(tmp_path / "model.pth.tar")
    loaded = entry.model.state_dict()
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded[key], value), key
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(entry.model(x), reference(x))
    assert entry.class_names == CHEXNET_CLASSES and entry.layer is entry.model.features
    assert set(chexnet_state_dict({"state_dict": saved})) <= set(reference.state_dict())


def test_finding_index_comes_from_the_models_class_list():
    assert [finding_index(CHEXNET_CLASSES, f) for f in FINDINGS] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert finding_index(CHEXNET_CLASSES, "Infiltrate") == 3
    xrv_like = ["Atelectasis", "Consolidation", "", "Infiltration", "Effusion", "Cardiomegaly", ""]
    assert finding_index(xrv_like, "Effusion") == 4 and finding_index(xrv_like, "Cardiomegaly") == 5
    with pytest.raises(KeyError, match="Nodule"):
        finding_index(xrv_like, "Nodule")
    with pytest.raises(KeyError):
        finding_index(xrv_like, "")


class _FakeXrv(nn.Module):
    """torchxrayvision's DenseNet interface: 1-channel input, .features, .pathologies, and a
    forward that applies a sigmoid and op_norm when op_threshs is set."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.classifier = nn.Linear(4, 3)
        self.pathologies = ["Atelectasis", "", "Effusion"]
        self.op_threshs = torch.tensor([0.3, 0.3, 0.3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == 1
        out = self.classifier(torch.relu(self.features(x)).mean(dim=(2, 3)))
        if self.op_threshs is not None:
            out = torch.sigmoid(out) * 0.5 / self.op_threshs
        return out


def test_xrv_wrapper_gives_logits_class_list_and_xrv_scaling():
    torch.manual_seed(0)
    raw = _FakeXrv()
    entry = wrap_xrv_model(raw, "xrv:fake")
    assert entry.class_names == ("Atelectasis", "", "Effusion")
    assert finding_index(entry.class_names, "Effusion") == 2
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        logits = raw.classifier(torch.relu(raw.features(x[:, :1])).mean(dim=(2, 3)))
        torch.testing.assert_close(entry.model(x), logits)
    # xrv.datasets.normalize(img, 255): 0 -> -1024, 255 -> 1024
    pixels = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 2).expand(3, 1, 2)
    torch.testing.assert_close(entry.transform.normalise(pixels)[0, 0], torch.tensor([-1024.0, 1024.0]))
    assert grad_cam(entry.model, entry.layer, x, torch.tensor([0, 2])).shape == (2, 8, 8)


def test_model_loading_errors():
    with pytest.raises(FileNotFoundError):
        load_chexnet("/nonexistent/model.pth.tar")
    with pytest.raises(ValueError, match="checkpoint"):
        load_model("chexnet")
    with pytest.raises(KeyError, match="unknown"):  # the one model registry's error for an unknown name
        load_model("resnet")


# --------------------------------------------------------------------------- metrics


def test_iobb_hand_computed_and_against_pixel_masks():
    truth = (10, 10, 29, 29)  # 20 x 20
    assert iobb(truth, (12, 12, 15, 15)) == 1.0  # a small box inside scores 1: IoBB's known bias
    assert iobb(truth, (0, 0, 39, 39)) == 400 / 1600
    assert iobb(truth, (30, 30, 40, 40)) == 0.0
    assert iobb(truth, (20, 20, 39, 29)) == (10 * 10) / (20 * 10)
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b = (np.sort(rng.integers(0, 32, (2, 2)), axis=0).T.reshape(-1)[[0, 2, 1, 3]] for _ in range(2))
        mask = lambda box: np.pad(np.ones((box[3] - box[1] + 1, box[2] - box[0] + 1), bool),  # noqa: E731
                                  ((box[1], 40 - box[3]), (box[0], 40 - box[2])))
        assert iobb(a, b) == pytest.approx((mask(a) & mask(b)).sum() / mask(b).sum())


def test_kth_share_hand_computed():
    heat = np.zeros((10, 10))
    heat[2:4, 2:4] = 1.0  # 4 pixels inside the box
    heat[8, 8] = heat[8, 9] = 0.9  # 2 outside, above 0.85 after min-max
    heat[0, 0] = 0.8  # below 0.85: not kept
    heat[5, 5] = -7.0  # negative: removed before min-max (else it would stretch the range)
    assert kth_box_share(heat, (0, 0, 4, 4)) == (pytest.approx(4 / 6), 6)
    assert kth_box_share(torch.tensor(heat), (8, 8, 9, 9)) == (pytest.approx(2 / 6), 6)
    assert kth_box_share(np.zeros((5, 5)), (0, 0, 1, 1)) == (0.0, 0)
    assert kth_box_share(-np.ones((5, 5)), (0, 0, 1, 1)) == (0.0, 0)
    with pytest.raises(ValueError, match="NaN"):
        kth_box_share(np.full((3, 3), np.nan), (0, 0, 1, 1))
    assert box_fraction((0, 0, 4, 4), (10, 10)) == 0.25


def test_map_to_boxes_matches_scikit_image_regions():
    rng = np.random.default_rng(3)
    from scipy.ndimage import gaussian_filter

    heat = gaussian_filter(rng.normal(size=(48, 48)), 2.0)
    boxes = map_to_boxes(heat)
    positive = np.clip(heat, 0, None)
    scaled = (positive - positive.min()) / (positive.max() - positive.min()) * 255
    expected = []
    for level in (60, 180):
        for region in regionprops(label(scaled >= level, connectivity=2)):
            y0, x0, y1, x1 = region.bbox
            expected.append((x0, y0, x1 - 1, y1 - 1))
    assert sorted(boxes) == sorted(set(expected)) and len(boxes) == len(set(expected)) > 2
    assert map_to_boxes(np.zeros((4, 4))) == []


def test_scored_rows_carry_box_areas_hand_computed():

    heat = torch.zeros(20, 20)
    heat[5:8, 3:9] = 1.0  # one flat blob: the same box (3, 5, 8, 7) at both levels
    heat[15, 15] = 0.1  # below level 60 of 255 after min-max: no box
    (row,) = score_boxes(heat, [(2, 4, 9, 9)], (0.5, 0.9))
    assert row["pred_boxes"] == 1 and row["smallest_pred_area"] == 6 * 3 and row["box_area"] == 8 * 6
    assert row["hit@0.9"] and row["fp@0.9"] == 0  # the box lies inside the truth: IoBB = 1
    (empty,) = score_boxes(torch.zeros(20, 20), [(2, 4, 9, 9)], (0.5,))
    assert empty["pred_boxes"] == 0 and np.isnan(empty["smallest_pred_area"]) and not empty["hit@0.5"]


def test_to_grey_sums_channels():
    maps = torch.arange(24.0).view(1, 2, 3, 2, 2)
    torch.testing.assert_close(to_grey(maps), maps[:, :, 0] + maps[:, :, 1] + maps[:, :, 2])


def _rows() -> pd.DataFrame:
    """Three boxes, two maps of one method: hand-made hits and false positives."""
    base = {"method": "gradcam", "chance": 0.1}
    rows = [
        {"image_id": "a", "finding": "Mass", "kth_share": 0.5, "hit@0.5": True, "fp@0.5": 2},
        {"image_id": "a", "finding": "Mass", "kth_share": 0.0, "hit@0.5": False, "fp@0.5": 2},
        {"image_id": "b", "finding": "Nodule", "kth_share": 1.0, "hit@0.5": True, "fp@0.5": 0},
    ]
    return pd.DataFrame([{**base, **r} for r in rows])


def test_tables_average_over_boxes_and_afp_over_maps():
    kth = kth_table(_rows()).set_index("finding")
    assert kth.loc["Mass", "kth_share"] == 0.25 and kth.loc["overall", "kth_share"] == pytest.approx(0.5)
    assert kth.loc["overall", "boxes"] == 3
    table = iobb_table(_rows(), thresholds=(0.5,)).set_index("finding")
    assert table.loc["Mass", "acc"] == 0.5 and table.loc["overall", "acc"] == pytest.approx(2 / 3)
    assert table.loc["Mass", "afp"] == 2 and table.loc["overall", "afp"] == 1.0  # maps a/Mass (2), b/Nodule (0)


def test_published_tables():
    cx8 = chestxray8_localization()
    assert len(cx8) == 40 and cx8.query("T == 0.5 and finding == 'Cardiomegaly'")["acc"].item() == 0.8767
    assert len(kth_box_shares()) == 8
    # KTH's rows use this chapter's labels (IG / GradientShap with KTH's zero = mean-colour baseline)
    assert set(kth_box_shares()["method"]) <= set(XRAY_METHODS.values())


# --------------------------------------------------------------------------- stand-in


def test_standin_is_deterministic_and_well_formed():
    dataset = StandinXrayDataset(6, seed=0)
    again = StandinXrayDataset(6, seed=0)
    for i in range(len(dataset)):
        a, b = dataset[i], again[i]
        assert torch.equal(a.image, b.image) and torch.equal(a.boxes, b.boxes)
        assert len(a.boxes) >= 1 and {FINDINGS[k] for k in a.box_labels.tolist()} <= set(STANDIN_FINDINGS)
        assert (a.boxes[:, :2] >= 0).all() and (a.boxes[:, 2:] < 96).all()
    assert not torch.equal(StandinXrayDataset(1, seed=1)[0].image, dataset[0].image)


def test_standin_nodules_are_bright_spots_in_their_boxes():
    dataset = StandinXrayDataset(40, seed=5)
    contrasts = []
    for i in range(len(dataset)):
        pixels, boxes = dataset.render(i)
        for finding, (x0, y0, x1, y1) in boxes:
            if finding == "Nodule":
                ring = pixels[max(y0 - 4, 0) : y1 + 5, max(x0 - 4, 0) : x1 + 5].astype(float)
                contrasts.append(pixels[y0 : y1 + 1, x0 : x1 + 1].mean() - ring.mean())
    assert len(contrasts) > 5 and min(contrasts) > 0


def test_shipped_standin_model_and_one_evaluated_batch():
    entry = load_standin()
    assert entry.class_names == STANDIN_FINDINGS  # from the checkpoint
    dataset = StandinXrayDataset(3, entry.transform, seed=0)
    samples = [dataset[i] for i in range(3)]
    images = torch.stack([s.image for s in samples])
    rows = pd.DataFrame(evaluate_boxes_batch(entry, images, samples, ["gradcam", "ig_mean_colour"],
                                             AttributionSettings(ig_steps=(4,))))
    assert len(rows) == 2 * sum(len(s.boxes) for s in samples)
    assert all(rows["output"] == [STANDIN_FINDINGS.index(f) for f in rows["finding"]])
    first = samples[0]
    label = int(first.box_labels[0])
    output = torch.tensor([STANDIN_FINDINGS.index(FINDINGS[label])])
    cam = grad_cam(entry.model, entry.layer, first.image[None], output)[0]
    row = rows[(rows.image_id == first.image_id) & (rows.method == "gradcam")].iloc[0]
    assert row["kth_share"] == pytest.approx(kth_box_share(cam, first.boxes[0].tolist())[0])


# --------------------------------------------------------------------------- IG convergence and baselines


def _tanh_cnn() -> nn.Module:
    """A small smooth non-linear classifier (IG's quadrature error is not zero on it)."""
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Conv2d(4, 4, 3), nn.Softplus(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3)).eval()


def _gap_by_hand(model: nn.Module, x: torch.Tensor, target: int, attribution: torch.Tensor,
                 baseline: torch.Tensor) -> float:
    """|sum(attr) - (f(x) - f(x'))| / |f(x) - f(x')| for one image, written out."""
    with torch.no_grad():
        difference = float(model(x[None])[0, target] - model(baseline[None])[0, target])
    return abs(float(attribution.double().sum()) - difference) / abs(difference)


def test_converged_ig_picks_per_image_the_first_step_count_under_the_tolerance():
    from captum.attr import IntegratedGradients

    model = _tanh_cnn()
    x = 2 * torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    targets = torch.tensor([0, 1, 2, 0])
    baseline = torch.full_like(x, -1.0)
    schedule = (1, 2, 4, 8, 16, 64)
    attributions, gaps, used = converged_ig(model, x, targets, baseline, schedule, tolerance=0.05)
    assert used.tolist() != [used[0].item()] * 4  # the images need different counts: the choice is per image
    for i in range(4):
        assert gaps[i] < 0.05
        # brute force: captum on this image alone, every count of the schedule in turn
        for count in schedule:
            alone = IntegratedGradients(model).attribute(x[i : i + 1], baselines=baseline[i : i + 1],
                                                         target=int(targets[i]), n_steps=count)[0]
            gap = _gap_by_hand(model, x[i], int(targets[i]), alone, baseline[i])
            if count < used[i]:
                assert gap >= 0.05, (i, count)  # a smaller budget really failed the check
            elif count == used[i]:
                assert gap < 0.05 and gap == pytest.approx(float(gaps[i]), rel=1e-2, abs=1e-4)
                torch.testing.assert_close(attributions[i], alone, rtol=1e-4, atol=1e-6)


def test_converged_ig_reports_the_gap_where_the_schedule_is_too_short():
    model = _tanh_cnn()
    x = 3 * torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    targets = torch.tensor([0, 1, 2])
    zero = torch.zeros_like(x)
    attributions, gaps, used = converged_ig(model, x, targets, zero, (1,), tolerance=1e-9)
    assert used.tolist() == [1, 1, 1]
    for i in range(3):
        assert float(gaps[i]) == pytest.approx(_gap_by_hand(model, x[i], int(targets[i]), attributions[i], zero[i]),
                                               rel=1e-4)
    assert (gaps > 1e-9).all()  # not converged, and said so
    with pytest.raises(ValueError, match="step"):
        converged_ig(model, x, targets, zero, ())


def test_ig_baselines_are_named_by_their_pixels():
    transform = standin_transform()
    like = torch.empty(2, 3, 5, 5)
    black = ig_baseline("black", transform, like)
    zero_pixels = torch.zeros(3, 5, 5, dtype=torch.uint8)
    torch.testing.assert_close(black, transform.normalise(zero_pixels).expand(2, -1, -1, -1))
    mean_colour = ig_baseline("mean_colour", transform, like)
    assert torch.equal(mean_colour, torch.zeros_like(like))
    # the zero tensor is the mean colour (0.485, 0.456, 0.406) of ImageNet, a grey -- not black
    np.testing.assert_allclose(transform.to_display(mean_colour[0])[0, 0], (0.485, 0.456, 0.406), atol=1e-6)
    assert IG_METHODS == {"ig_mean_colour": "mean_colour", "ig_black": "black"}
    assert all("baseline" in XRAY_METHODS[m] for m in (*IG_METHODS, "gradient_shap"))
    with pytest.raises(ValueError, match="baseline"):
        ig_baseline("grey", transform, like)


def test_gradient_shap_maps_are_reproducible_and_leave_numpys_rng_alone():
    """captum's GradientShap draws from numpy's global RNG: the chapter seeds it and restores it."""
    entry = load_standin()
    images = torch.stack([StandinXrayDataset(2, entry.transform, seed=2)[i].image for i in range(2)])
    targets = torch.tensor([0, 3])
    settings = AttributionSettings(gradient_shap_samples=4, seed=3)
    np.random.seed(11)
    expected_next = np.random.random(3)
    np.random.seed(11)
    first = method_maps("gradient_shap", entry, images, targets, settings)[0]
    np.testing.assert_array_equal(np.random.random(3), expected_next)  # the caller's numpy RNG untouched
    second = method_maps("gradient_shap", entry, images, targets, settings)[0]
    assert torch.equal(first, second)
    reseeded = AttributionSettings(gradient_shap_samples=4, seed=4)
    other = method_maps("gradient_shap", entry, images, targets, reseeded)[0]
    assert not torch.equal(first, other)  # the seed is what fixes the draws


def test_in_memory_rows_repeat_the_resumable_run_and_redraw_with_another_seed(tmp_path):
    entry = load_standin()
    dataset = StandinXrayDataset(3, entry.transform, seed=4)
    settings = AttributionSettings(gradient_shap_samples=3, seed=5)
    experiment = ChestXrayExperiment(entry, dataset, "standin", ChestXraySettings(("gradient_shap",), settings))
    stored = experiment.run(tmp_path / "first", batch_size=2)
    again = experiment.run(tmp_path / "second", batch_size=2)  # computed again, not read back
    np.testing.assert_allclose(again["kth_share"], stored["kth_share"], rtol=0, atol=1e-12)
    assert list(again["image_id"]) == list(stored["image_id"])
    redrawn = experiment.with_seed(6).run(tmp_path / "first", batch_size=2)
    assert experiment.with_seed(6).settings.attribution == AttributionSettings(gradient_shap_samples=3, seed=6)
    assert experiment.with_seed(6).path(tmp_path) != experiment.path(tmp_path)
    assert not np.array_equal(redrawn["kth_pixels"], stored["kth_pixels"])


def test_every_ig_row_carries_its_gap_and_steps():
    entry = load_standin()
    dataset = StandinXrayDataset(2, entry.transform, seed=1)
    samples = [dataset[i] for i in range(2)]
    images = torch.stack([s.image for s in samples])
    settings = AttributionSettings(ig_steps=(8, 32, 128), ig_tolerance=0.05)
    rows = pd.DataFrame(evaluate_boxes_batch(entry, images, samples, ["gradcam", "ig_mean_colour", "ig_black"],
                                             settings))
    ig = rows[rows["method"].isin(list(IG_METHODS))]
    assert len(ig) == 2 * sum(len(s.boxes) for s in samples)
    assert ig["ig_gap"].notna().all() and set(ig["ig_steps"].astype(int)) <= {8, 32, 128}
    assert rows.loc[rows["method"] == "gradcam", ["ig_gap", "ig_steps"]].isna().all().all()
    # a map above the tolerance used the whole schedule; one below it stopped at the first count that passed
    assert ((ig["ig_gap"] < 0.05) | (ig["ig_steps"] == 128)).all()
    # the reported gap is the completeness gap of that map, recomputed by hand from its steps
    first = ig.iloc[0]
    index = next(i for i, s in enumerate(samples) if s.image_id == first["image_id"])
    target = STANDIN_FINDINGS.index(first["finding"])
    baseline = ig_baseline(IG_METHODS[first["method"]], entry.transform, images[index : index + 1])[0]
    from captum.attr import IntegratedGradients

    attribution = IntegratedGradients(entry.model).attribute(images[index : index + 1], baselines=baseline[None],
                                                             target=target, n_steps=int(first["ig_steps"]))[0]
    assert first["ig_gap"] == pytest.approx(_gap_by_hand(entry.model, images[index], target, attribution.detach(),
                                                         baseline), rel=1e-3, abs=1e-5)
    table = ig_convergence_table(rows.assign(method=rows["method"].map(XRAY_METHODS)))
    assert list(table["maps"]) == [sum(len(set(s.box_labels.tolist())) for s in samples)] * 2
    assert table["max gap"].tolist() == pytest.approx(
        [ig.loc[ig["method"] == m, "ig_gap"].max() for m in IG_METHODS], rel=1e-6)


# --------------------------------------------------------------------------- intervals and paired tests


def _two_methods() -> pd.DataFrame:
    """Six images, one box each, plus a second Mass box on image 0 (same map): methods A and B."""
    rows = []
    a_share = [0.9, 0.8, 0.7, 0.6, 0.9, 0.5, 0.4]
    b_share = [0.1, 0.3, 0.2, 0.6, 0.5, 0.2, 0.0]
    a_hit = [1, 1, 1, 0, 1, 1, 0]
    b_hit = [0, 0, 1, 0, 0, 1, 0]
    units = [(f"im{i}", "Mass", 0) for i in range(6)] + [("im0", "Mass", 1)]
    for k, (image, finding, box) in enumerate(units):
        for method, share, hit, fp in (("A", a_share[k], a_hit[k], 3), ("B", b_share[k], b_hit[k], 1)):
            rows.append({"image_id": image, "finding": finding, "box": box, "method": method, "kth_share": share,
                         "chance": 0.25, "hit@0.5": bool(hit), "fp@0.5": fp + (image == "im0"),
                         "ig_gap": float("nan"), "ig_steps": float("nan")})
    return pd.DataFrame(rows)


def test_paired_tests_pair_the_same_boxes_and_resample_images():
    from scipy import stats

    from gradcam_lib.stats import cluster_bootstrap_ci

    rows = _two_methods().sample(frac=1.0, random_state=0)  # order must not matter: units are matched by key
    diff = paired_share(rows, "A", "B")
    a = np.array([0.9, 0.8, 0.7, 0.6, 0.9, 0.5, 0.4])
    b = np.array([0.1, 0.3, 0.2, 0.6, 0.5, 0.2, 0.0])
    assert diff.n == 7 and diff.mean == pytest.approx((a - b).mean())
    # the interval is the one that resamples whole images (the two boxes of im0 together)
    images = np.array([f"im{i}" for i in range(6)] + ["im0"])
    ordered = pd.DataFrame({"i": images, "box": [0] * 6 + [1], "d": a - b}).sort_values(["i", "box"])
    _, low, high = cluster_bootstrap_ci(ordered["d"].to_numpy(), ordered["i"].to_numpy())
    assert (diff.low, diff.high) == pytest.approx((low, high))
    chance = paired_share(rows, "A")
    assert chance.mean == pytest.approx(a.mean() - 0.25) and chance.excludes_zero
    # McNemar by hand: A alone hits im0/0, im1, im4; both hit im2, im5; neither im3, im0/1
    test = paired_hits(rows, "A", "B")
    assert (test.only_a, test.only_b, test.n) == (3, 0, 7)
    assert test.p_value == pytest.approx(stats.binomtest(3, 3, 0.5).pvalue)
    # AFP pairs maps, not boxes: im0's two boxes share one map with 4 vs 2 false boxes
    afp = paired_afp(rows, "A", "B")
    assert afp.n == 6 and afp.mean == pytest.approx(2.0) and (afp.low, afp.high) == (2.0, 2.0)
    with pytest.raises(KeyError, match="C"):
        paired_share(rows, "A", "C")


def test_headline_table_intervals_are_over_images():
    from gradcam_lib.stats import cluster_bootstrap_ci

    rows = _two_methods()
    table = headline_table(rows).set_index("method")
    a = rows[rows["method"] == "A"]
    assert table.loc["A", "box share"] == pytest.approx(a["kth_share"].mean())
    assert table.loc["A", "acc@0.5"] == pytest.approx(5 / 7) and table.loc["B", "acc@0.5"] == pytest.approx(2 / 7)
    assert (table.loc["A", "boxes"], table.loc["A", "maps"], table.loc["A", "images"]) == (7, 6, 6)
    _, low, high = cluster_bootstrap_ci(a["kth_share"].to_numpy(), a["image_id"].to_numpy())
    assert (table.loc["A", "share low"], table.loc["A", "share high"]) == pytest.approx((low, high))
    assert table.loc["A", "share low"] <= table.loc["A", "box share"] <= table.loc["A", "share high"]
    assert table.loc["A", "afp@0.5"] == pytest.approx((4 + 3 * 5) / 6)  # per map: im0 counted once
    # one image holding every box: no independent units to resample, no interval
    single = headline_table(rows.assign(image_id="im0")).set_index("method")
    assert np.isnan(single.loc["A", "share low"]) and np.isnan(single.loc["A", "acc low"])


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_non_finite_maps_are_refused_by_the_box_metrics(value):
    # before: +inf made the min-max 0 / inf = NaN, so the share was NaN and map_to_boxes drew no box
    heat = np.zeros((10, 10))
    heat[2:4, 2:4] = 1.0
    heat[7, 7] = value
    with pytest.raises(ValueError, match="heatmap holds NaN or infinity"):
        kth_box_share(heat, (0, 0, 4, 4))
    with pytest.raises(ValueError, match="heatmap holds NaN or infinity"):
        map_to_boxes(torch.tensor(heat))


def test_invalid_boxes_are_refused_by_the_box_metrics():
    heat = np.zeros((10, 10))
    heat[2:4, 2:4] = 1.0
    with pytest.raises(ValueError, match=r"box holds an inverted box \[4.0, 0.0, 0.0, 4.0\]"):
        kth_box_share(heat, (4, 0, 0, 4))  # before: an empty mask, a share of 0 without a word
    with pytest.raises(ValueError, match="box holds an inverted box"):
        box_fraction((0, 4, 4, 0), (10, 10))
    with pytest.raises(ValueError, match="truth holds an inverted box"):
        iobb((9, 9, 0, 0), (0, 0, 4, 4))
    with pytest.raises(ValueError, match="predicted holds NaN or infinity"):
        iobb((0, 0, 4, 4), (0, 0, np.inf, 4))
    assert iobb((0, 0, 4, 4), (2, 2, 2, 2)) == 1.0  # a one-pixel box is valid


@pytest.mark.parametrize("box", ["inf,2,3,4", "1,NaN,3,4", "1,2,inf,4", "1,2,3,-inf"])
def test_non_finite_nih_boxes_are_refused_with_file_and_line(tmp_path, box):
    path = tmp_path / "b.csv"
    path.write_text(HEADER + "a.png,Mass,1,2,3,4,,,\n" + f"b.png,Mass,{box},,,\n")
    with pytest.raises(ValueError, match=r"b.csv:3: box \[.*\] holds a non-finite number") as info:
        read_bbox_list(path)
    assert str(info.value).startswith(f"{path}:3: ")


def test_nih_box_list_errors_name_the_file(nih_root):
    (nih_root / "latin1.csv").write_bytes(HEADER.encode() + b"caf\xe9.png,Mass,1,2,3,4,,,\n")
    with pytest.raises(ValueError, match=r"latin1.csv is not UTF-8 text"):
        read_bbox_list(nih_root / "latin1.csv")
    with pytest.raises(ValueError, match=r"limit must be at least 1 .*got 0"):
        ChestXray14BoxDataset(nih_root, PLAIN_224, limit=0)
    (nih_root / "BBox_List_2017.csv").write_text(HEADER + "00000001_000.png,Mass,1500,10,20,20,,,\n")
    with pytest.raises(ValueError, match=r"00000001_000.png: boxes of the box list lie outside the 1024 x 1024 image"):
        ChestXray14BoxDataset(nih_root, PLAIN_224)[0]
