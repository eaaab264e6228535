"""The README's "Using the library" section runs as written, on the shipped photographs and the
shipped EfficientNet-Lite0 weights (offline), and its numbers are what the text says they are."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def _section_code(title: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : None if end < 0 else end]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> tuple[dict, Path]:
    blocks = _section_code("Using the library")
    assert len(blocks) >= 3
    folder = tmp_path_factory.mktemp("readme")
    namespace: dict = {"__name__": "readme"}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        for number, block in enumerate(blocks):
            exec(compile(block, f"README.md python block {number + 1}", "exec"), namespace)  # noqa: S102
    return namespace, folder


def test_readme_blocks_run_and_write_the_overlay(readme_run):
    namespace, folder = readme_run
    png = folder / "gradcam_overlay.png"
    with Image.open(png) as figure:
        assert figure.format == "PNG" and figure.width > 2 * figure.height
        pixels = np.asarray(figure.convert("RGB"))
    assert pixels.std() > 10  # a picture, not a blank canvas


def test_readme_shapes_and_predictions_are_as_described(readme_run):
    """Lite0 on chelsea (centre crop): tiger cat 0.379, Egyptian cat 0.376, tabby 0.168."""
    ns, _ = readme_run
    entry = ns["entry"]
    assert ns["images"].shape == (1, 3, 224, 224)
    assert set(ns["classes"][0, :3].tolist()) == {282, 285, 281}
    assert ns["classes"][0].tolist() == ns["logits"][0].topk(5).indices.tolist()
    assert ns["two"].shape == (1, 2, 224, 224)
    assert ns["maps"].shape == (2, 160, 120) and ns["cat"].shape == (1, 300, 451)
    assert ns["coarse"].shape == (1, 7, 7)
    # the top-5 maps and the two-class call agree with a separate call per class
    from gradcam_lib.methods import grad_cam

    torch.testing.assert_close(ns["two"][:, 0], grad_cam(entry.model, entry.layer, ns["images"], [285]))
    where = ns["classes"][0].tolist().index(285)
    torch.testing.assert_close(ns["top5"][:, where], ns["two"][:, 0])


def test_readme_box_and_iou_match_a_hand_computation(readme_run):
    ns = readme_run[0]
    box, truth = ns["box"], ns["boxes"][0].tolist()
    heat = ns["two"][0, 1].numpy()
    xmin, ymin, xmax, ymax = box
    assert heat[ymin : ymax + 1, xmin : xmax + 1].max() == heat.max()  # the box holds the peak
    inside = max(0, min(box[2], truth[2]) - max(box[0], truth[0]) + 1) * max(
        0, min(box[3], truth[3]) - max(box[1], truth[1]) + 1
    )
    area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1) + (truth[2] - truth[0] + 1) * (truth[3] - truth[1] + 1)
    from gradcam_lib import iou

    assert iou(box, truth) == pytest.approx(inside / (area - inside))


def test_transform_takes_arrays_and_tensors_as_the_readme_says():
    """The same photo as PIL, numpy (H, W, 3) uint8, torch (3, H, W) uint8 and floats in [0, 1]
    gives the same tensor; a normalised tensor is refused."""
    from gradcam_lib.datasets.samples import load_raw_photos
    from gradcam_lib.datasets.transforms import ImageTransform

    transform = ImageTransform()
    photo = load_raw_photos()[0].image
    array = np.array(photo)
    reference = transform(photo)[0]
    for form in (array, torch.from_numpy(array).permute(2, 0, 1), array / 255.0):
        torch.testing.assert_close(transform(form)[0], reference, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"float image must hold pixels in \[0, 1\]"):
        transform(reference)
    with pytest.raises(TypeError, match="pixels must be uint8 or floats"):
        transform(array.astype(np.int32))
