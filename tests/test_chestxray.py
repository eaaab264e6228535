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

from gradcam_lib.chestxray import (
    CHEXNET_CLASSES,
    STANDIN_FINDINGS,
    AttributionSettings,
    StandinXrayDataset,
    box_fraction,
    chexnet_state_dict,
    evaluate_boxes_batch,
    finding_index,
    iobb,
    iobb_table,
    kth_box_share,
    kth_table,
    load_chexnet,
    load_standin,
    load_xray_model,
    map_to_boxes,
    to_grey,
    wrap_xrv_model,
)
from gradcam_lib.datasets import ImageTransform
from gradcam_lib.datasets.chestxray import FINDINGS, ChestXray14BoxDataset, read_bbox_list
from gradcam_lib.explain import grad_cam
from gradcam_lib.published.chestxray import chestxray8_localization, kth_box_shares

PLAIN_224 = ImageTransform(224, 224, (0.0,) * 3, (1.0,) * 3)
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
    with pytest.raises(FileNotFoundError, match="00000002_001.png"):
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
        load_xray_model("chexnet")
    with pytest.raises(ValueError, match="unknown"):
        load_xray_model("resnet")


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
    rows = pd.DataFrame(evaluate_boxes_batch(entry, images, samples, ["gradcam", "ig"],
                                             AttributionSettings(ig_steps=4)))
    assert len(rows) == 2 * sum(len(s.boxes) for s in samples)
    assert all(rows["output"] == [STANDIN_FINDINGS.index(f) for f in rows["finding"]])
    first = samples[0]
    label = int(first.box_labels[0])
    cam = grad_cam(entry.model, entry.layer, first.image[None], torch.tensor([STANDIN_FINDINGS.index(FINDINGS[label])]))[0]
    row = rows[(rows.image_id == first.image_id) & (rows.method == "gradcam")].iloc[0]
    assert row["kth_share"] == pytest.approx(kth_box_share(cam, first.boxes[0].tolist())[0])
