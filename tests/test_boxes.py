"""Box geometry (:mod:`gradcam_lib.datasets.boxes`) and the pixel / box conversions of
:mod:`gradcam_lib.datasets.transforms`: each test pins one rule and names its source. The IoU
reference is the ILSVRC devkit's ``eval_clsloc.m`` loop, transcribed; masks are counted pixel by pixel."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from gradcam_lib.datasets.boxes import box_fraction, box_mask, intersection, iobb, iou
from gradcam_lib.datasets.transforms import (
    ImageTransform,
    as_pil,
    continuous_to_inclusive,
    inclusive_to_continuous,
    resize_for_crop,
    to_rgb,
)


def _devkit_iou(bb, bbgt) -> float:
    """``eval_clsloc.m`` (ILSVRC 2012 devkit): bi = [max(x1) max(y1) min(x2) min(y2)];
    iw = bi(3) - bi(1) + 1; ih = bi(4) - bi(2) + 1; if iw > 0 & ih > 0: ov = iw * ih / ua."""
    bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
    iw, ih = bi[2] - bi[0] + 1, bi[3] - bi[1] + 1
    if iw > 0 and ih > 0:
        ua = (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih
        return iw * ih / ua
    return 0.0


def _pixel_iou(a, b, shape=(40, 40)) -> float:
    ma, mb = box_mask(a, shape), box_mask(b, shape)
    return (ma & mb).sum() / (ma | mb).sum()


BOXES = [(0, 0, 9, 9), (5, 5, 14, 14), (10, 10, 19, 19), (12, 0, 20, 4), (0, 12, 4, 30), (3, 3, 3, 3), (2, 8, 30, 9)]


@pytest.mark.parametrize("a, b", list(itertools.product(BOXES, repeat=2)))
def test_iou_is_the_devkits_and_the_pixel_count(a, b):
    assert iou(a, b) == pytest.approx(_devkit_iou(a, b))
    assert iou(a, b) == pytest.approx(_pixel_iou(a, b))


def test_disjoint_boxes_share_nothing_in_any_direction():
    """Diagonally disjoint boxes have negative width AND height of overlap: their product is
    positive, and only the guard ``iw > 0 & ih > 0`` keeps it out (the devkit's)."""
    a = (0, 0, 4, 4)
    for b in [(6, 6, 9, 9), (6, 0, 9, 4), (0, 6, 4, 9), (-9, -9, -6, -6), (5, 5, 5, 5)]:
        assert intersection(a, b) == 0
        assert iou(a, b) == 0.0
        assert iobb(a, b) == 0.0
    assert intersection(a, (4, 4, 9, 9)) == 1  # touching at one inclusive pixel


def test_iobb_is_over_the_predicted_box():
    """ChestX-ray8 (Wang et al. 2017, Sec. 4): IoBB = area(truth n predicted) / area(predicted)."""
    truth, predicted = (0, 0, 9, 9), (5, 0, 14, 9)  # 50 shared pixels, predicted 100, truth 100
    assert iobb(truth, predicted) == 0.5
    assert iobb((0, 0, 19, 9), predicted) == 1.0  # predicted inside the truth
    assert iobb(predicted, (0, 0, 19, 9)) == 0.5  # not symmetric


def test_box_mask_is_inclusive_and_clipped():
    mask = box_mask((1, 2, 3, 2), (4, 5))
    expected = np.zeros((4, 5), dtype=bool)
    expected[2, 1:4] = True
    np.testing.assert_array_equal(mask, expected)
    clipped = box_mask((-3, -2, 1, 8), (4, 5))  # reaches outside on three sides
    expected = np.zeros((4, 5), dtype=bool)
    expected[:, :2] = True
    np.testing.assert_array_equal(clipped, expected)
    assert box_fraction((0, 0, 4, 1), (4, 5)) == 0.5
    assert box_fraction((0, 0, 0, 0), (4, 5)) == 1 / 20


# ---------------------------------------------------------------- inclusive <-> continuous


def test_inclusive_boxes_round_trip_through_continuous_rectangles():
    boxes = torch.tensor([[0, 0, 0, 0], [2, 3, 7, 5], [0, 0, 9, 7]])
    rectangles = inclusive_to_continuous(boxes)
    assert rectangles.tolist() == [[0, 0, 1, 1], [2, 3, 8, 6], [0, 0, 10, 8]]
    back, keep = continuous_to_inclusive(rectangles, height=8, width=10)
    assert back.tolist() == boxes.tolist() and keep.tolist() == [True, True, True]


def test_pixels_whose_centres_are_inside_and_clipping_at_every_edge():
    """A pixel i belongs to a rectangle [x0, x1) when its centre i + 0.5 lies inside."""
    rectangles = torch.tensor(
        [
            [0.4, 0.6, 2.6, 2.4],  # centres 0.5..2.5 in x: 0..2; 0.5 < 0.6 so y starts at 1, y ends at 1
            [-5.0, -3.0, 3.0, 2.0],  # outside on the left and top: clipped to 0
            [7.0, 5.0, 20.0, 15.0],  # outside on the right and bottom: clipped to width - 1, height - 1
            [-5.0, 1.0, -1.0, 3.0],  # wholly left of the image: dropped
            [2.0, 9.0, 4.0, 12.0],  # wholly below: dropped
            [3.2, 1.0, 3.4, 3.0],  # covers no pixel centre: dropped
        ],
        dtype=torch.float64,
    )
    boxes, keep = continuous_to_inclusive(rectangles, height=8, width=10)
    assert keep.tolist() == [True, True, True, False, False, False]
    assert boxes.tolist() == [[0, 1, 2, 1], [0, 0, 2, 1], [7, 5, 9, 7]]
    assert boxes.dtype == torch.long


# ---------------------------------------------------------------- pixels in any layout


def _pixels(h: int = 3, w: int = 4) -> np.ndarray:
    return (np.arange(h * w * 3, dtype=np.uint8) * 7).reshape(h, w, 3)


@pytest.mark.parametrize(
    "layout",
    ["pil", "hwc-array", "chw-tensor", "hwc-tensor", "float-array", "float-chw-tensor"],
)
def test_as_pil_reads_every_layout_to_the_same_pixels(layout):
    pixels = _pixels()
    given = {
        "pil": Image.fromarray(pixels),
        "hwc-array": pixels,
        "chw-tensor": torch.from_numpy(pixels).permute(2, 0, 1),
        "hwc-tensor": torch.from_numpy(pixels),
        "float-array": pixels / 255.0,
        "float-chw-tensor": torch.from_numpy(pixels).permute(2, 0, 1) / 255.0,
    }[layout]
    image = as_pil(given)
    assert image.mode == "RGB" and image.size == (4, 3)
    np.testing.assert_array_equal(np.asarray(image), pixels)


def test_as_pil_reads_one_channel_images_as_grey():
    grey = np.array([[0, 128], [255, 7]], dtype=np.uint8)
    for given in (grey, grey[..., None], torch.from_numpy(grey)[None], torch.from_numpy(grey)[..., None]):
        image = as_pil(given)
        assert image.mode == "L"
        np.testing.assert_array_equal(np.asarray(image), grey)
    floats = np.array([[0.0, 0.5], [1.0, 0.499]])
    np.testing.assert_array_equal(np.asarray(as_pil(floats)), [[0, 128], [255, 127]])  # rounded, not truncated


@pytest.mark.parametrize(
    "given, error, words",
    [
        ("image.png", TypeError, "PIL image"),
        (np.zeros((2, 3, 4), dtype=np.uint8), ValueError, "shape"),
        (np.zeros((2, 3, 3, 1), dtype=np.uint8), ValueError, "shape"),
        (np.zeros(5, dtype=np.uint8), ValueError, "shape"),
        (np.full((2, 2), 1.5), ValueError, r"\[0, 1\]"),
        (np.full((2, 2), -0.1), ValueError, r"\[0, 1\]"),
        (np.array([[0.2, np.nan]]), ValueError, r"\[0, 1\]"),
        (np.zeros((2, 2), dtype=np.int32), TypeError, "uint8"),
    ],
    ids=["str", "4-channels", "4-d", "1-d", "above-1", "below-0", "nan", "int32"],
)
def test_as_pil_refuses_what_it_cannot_read(given, error, words):
    with pytest.raises(error, match=words):
        as_pil(given)


def test_sixteen_bit_images_are_scaled_by_their_peak():
    array = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    rgb = to_rgb(Image.fromarray(array))
    assert rgb.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(rgb)[..., 0], [[0, 64], [128, 255]])  # round(v / 4000 * 255)
    black = to_rgb(Image.fromarray(np.zeros((2, 2), dtype=np.uint16)))  # peak 0: stays black
    assert np.asarray(black).max() == 0


# ---------------------------------------------------------------- the transform


def test_normalise_and_to_display_are_inverse_by_hand():
    transform = ImageTransform(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    pixels = torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1).expand(3, 1, 2)
    normalised = transform.normalise(pixels)
    expected = torch.tensor([(0 / 255 - 0.5) / 0.5, (51 / 255 - 0.25) / 0.25, 255 / 255])
    torch.testing.assert_close(normalised[:, 0, 0], expected)
    np.testing.assert_allclose(transform.to_display(normalised)[0, 0], [0.0, 0.2, 1.0], atol=1e-6)
    grey = ImageTransform(mean=(0.5,), std=(0.25,))
    shown = grey.to_display(torch.tensor([[[4.0, -4.0, 1.0]]], dtype=torch.float64))  # 1.5 and -0.5: clipped
    assert shown.shape == (1, 3, 3) and shown.dtype == np.float32
    np.testing.assert_allclose(shown[0], [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.75, 0.75, 0.75]])


def test_whole_image_geometry_and_the_usual_resize():
    transform = ImageTransform.whole_image(32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert (transform.resize, transform.crop, transform.geometry) == (32, 32, "resize")
    assert transform.mean == (0.0, 0.0, 0.0) and transform.std == (1.0, 1.0, 1.0)
    assert ImageTransform.whole_image().crop == 224 and ImageTransform.whole_image().mean == ImageTransform().mean
    assert ImageTransform().with_geometry("resize") == ImageTransform(geometry="resize")
    with pytest.raises(ValueError, match="geometry"):
        ImageTransform(geometry="pad")
    assert resize_for_crop(224) == 256 and resize_for_crop(240) == 274 and resize_for_crop(100, ratio=0.5) == 200
    image = Image.fromarray(np.zeros((20, 40, 3), dtype=np.uint8))  # 40 wide, 20 high
    tensor, boxes, keep = transform(image, torch.tensor([[0, 0, 19, 9], [20, 10, 39, 19]]))
    assert tensor.shape == (3, 32, 32)  # the whole image, squashed: halves map to halves
    assert boxes.tolist() == [[0, 0, 15, 15], [16, 16, 31, 31]] and keep.tolist() == [True, True]


@pytest.mark.parametrize("call, name", [
    (lambda box: iou(box, (0, 0, 1, 1)), "box_a"),
    (lambda box: iou((0, 0, 1, 1), box), "box_b"),
    (lambda box: iobb(box, (0, 0, 1, 1)), "truth"),
    (lambda box: iobb((0, 0, 1, 1), box), "predicted"),
    (lambda box: box_fraction(box, (4, 4)), "box"),
])
def test_an_invalid_box_is_refused_naming_its_argument(call, name):
    for box in ((3, 0, 1, 1), (0, 0, float("nan"), 1), (0, 0, 1)):
        with pytest.raises(ValueError, match=rf"^{name}\b"):
            call(box)


# ---- mutation tests: 16-bit modes, boxes-free calls, antialiased resizing, exact box geometry, display


@pytest.mark.parametrize("mode, dtype", [("I;16", "<u2"), ("I;16B", ">u2"), ("I;16L", "<u2"), ("I", "<i4")])
def test_every_sixteen_and_thirty_two_bit_mode_is_scaled_by_its_peak(mode, dtype):
    """to_rgb's docstring: 16-bit images are converted to 8 bits; PIL's own convert("RGB") of these
    modes clips at 255 (1000 -> 255), so each mode must go through the peak scaling
    round(v / peak * 255), hand-computed here, whatever its byte order."""
    values = np.array([[0, 1000], [2000, 4000]])
    image = Image.frombytes(mode, (2, 2), values.astype(dtype).tobytes())
    assert image.mode == mode
    rgb = to_rgb(image)
    assert rgb.mode == "RGB"
    expected = [[0, 64], [128, 255]]
    for channel in range(3):
        np.testing.assert_array_equal(np.asarray(rgb)[..., channel], expected)


def test_a_call_without_boxes_maps_no_boxes():
    """ImageTransform.__call__'s docstring: boxes may be None; the result then holds (0, 4) long
    boxes and a (0,) bool keep -- no box is invented."""
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    for transform in (ImageTransform(resize=16, crop=16), ImageTransform.whole_image(16)):
        tensor, boxes, keep = transform(image)
        assert tensor.shape == (3, 16, 16) and tensor.dtype == torch.float32
        assert boxes.shape == (0, 4) and boxes.dtype == torch.long
        assert keep.shape == (0,) and keep.dtype == torch.bool


def _stripes() -> np.ndarray:
    """40 x 20 pixels with one-pixel stripes (the case where a resize without antialiasing aliases)."""
    rng = np.random.default_rng(0)
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    image[:, ::2, 0] = 255
    image[::2, :, 1] = 255
    image[..., 2] = rng.integers(0, 256, (20, 40))
    return image


@pytest.mark.parametrize("geometry", ["resize", "crop"])
def test_downscaling_is_antialiased_bilinear_as_pil(geometry):
    """torchvision's ImageNet evaluation transform resizes with bilinear interpolation and
    antialiasing, which is what PIL's Image.resize(BILINEAR) does (PIL is the reference; torchvision
    documents antialias=True as matching it). Without antialiasing one-pixel stripes alias to 0 or 255
    instead of averaging (off by up to 122 here)."""
    image = _stripes()
    identity = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    pil = Image.fromarray(image)
    if geometry == "resize":
        transform = ImageTransform.whole_image(8, **identity)
        reference = np.asarray(pil.resize((8, 8), Image.BILINEAR))
    else:  # shorter side 20 -> 8, so 40 -> 16; the centre 8 columns are 4..11
        transform = ImageTransform(resize=8, crop=8, **identity)
        reference = np.asarray(pil.resize((16, 8), Image.BILINEAR))[:, 4:12]
    tensor = transform(image)[0]
    got = (tensor * 255).round().permute(1, 2, 0).numpy().astype(int)
    assert np.abs(got - reference.astype(int)).max() <= 1


def test_halves_of_a_two_colour_image_map_to_the_pixels_of_their_colour():
    """Boxes go through the same resize and centre crop as the pixels (module docstring): 40 x 20,
    left half red, right half blue, resize 16 (-> 32 x 16), crop 16 (columns 8..23 of the resized
    image). By hand: left half [0, 20) -> [0, 16) -> [-8, 8): columns 0..7; right half -> 8..15.
    Each box must hold exactly the pixels that are mostly its colour."""
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    image[:, :20, 0] = 255
    image[:, 20:, 2] = 255
    transform = ImageTransform(resize=16, crop=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    tensor, boxes, keep = transform(image, torch.tensor([[0, 0, 19, 19], [20, 0, 39, 19]]))
    assert boxes.tolist() == [[0, 0, 7, 15], [8, 0, 15, 15]] and keep.tolist() == [True, True]
    red = (tensor[0] > tensor[2]).numpy()
    np.testing.assert_array_equal(box_mask(boxes[0].tolist(), (16, 16)), red)
    np.testing.assert_array_equal(box_mask(boxes[1].tolist(), (16, 16)), ~red)


def test_a_box_edge_on_a_pixel_centre_maps_as_exact_arithmetic_says():
    """The commonest ImageNet size, 500 x 375: resize 256 gives 341 x 256 (torchvision:
    int(256 * 500 / 375)), the centre crop starts at column round((341 - 224) / 2) = 58. The halves'
    edge 250 maps to 250 * 341 / 500 - 58 = 112.5 exactly: the centre of column 112, which therefore
    belongs to both halves (continuous_to_inclusive keeps a pixel whose centre lies on the edge:
    floor(112.5 - 0.5) = ceil(112.5 - 0.5) = 112). Rows: 375 -> 256, crop top 16, so 0..223."""
    transform = ImageTransform()
    image = np.zeros((375, 500, 3), dtype=np.uint8)
    _, boxes, keep = transform(image, torch.tensor([[0, 0, 249, 374], [250, 0, 499, 374]]))
    assert boxes.tolist() == [[0, 0, 112, 223], [112, 0, 223, 223]] and keep.tolist() == [True, True]


def test_rectangle_edges_are_exact_for_any_size_float32_holds():
    """continuous_to_inclusive: pixel i is kept when its centre i + 0.5 lies in the rectangle. The
    float32 rectangle [0, 8388610) x [0, 1) (8388610 = 2 ** 23 + 2, exact in float32) holds the
    centres of columns 0..8388609 -- computing 8388610 - 0.5 in float32 would round to 8388610."""
    rectangles = torch.tensor([[0.0, 0.0, 8388610.0, 1.0]], dtype=torch.float32)
    boxes, keep = continuous_to_inclusive(rectangles, height=1, width=10**7)
    assert boxes.tolist() == [[0, 0, 8388609, 0]] and keep.tolist() == [True]


def test_to_display_of_a_taller_image_keeps_every_row_and_clips_to_one():
    """to_display's docstring: (C, H, W) normalised -> (H, W, 3) in [0, 1], a one-channel image
    repeated to grey; pixel by pixel x * std + mean, clipped (hand-computed)."""
    grey = ImageTransform(mean=(0.5,), std=(0.25,))
    tensor = torch.tensor([[[4.0, 0.0], [-4.0, 1.0], [2.0, 1.9]]])  # (1, 3, 2): 1.5, 0.5 / -0.5, 0.75 / 1.0, 0.975
    shown = grey.to_display(tensor)
    assert shown.shape == (3, 2, 3)
    expected = np.array([[1.0, 0.5], [0.0, 0.75], [1.0, 0.975]])
    for channel in range(3):
        np.testing.assert_allclose(shown[..., channel], expected, atol=1e-6)
    colour = ImageTransform(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    shown = colour.to_display(torch.tensor([3.0, 0.25, -1.0]).view(3, 1, 1).expand(3, 2, 2))
    assert shown.shape == (2, 2, 3)
    np.testing.assert_allclose(shown, np.broadcast_to([1.0, 0.25, 0.0], (2, 2, 3)))
