"""Decoding on the device (:mod:`gradcam_lib.datasets.decode`) against the CPU (PIL) path: the same
boxes, the same pixels within a measured tolerance, the CPU path itself for every fallback item.

Tolerances. On the CPU, torchvision's libjpeg-turbo and Pillow's decode the shipped JPEGs and the
fixtures below to the same bytes (measured: max and mean abs difference 0 on the normalised
tensors); the bounds allow one 8-bit level at most and 0.05 level on average, a margin for another
libjpeg-turbo build. On CUDA (nvJPEG, and a float32 resize) nothing could be measured where these
tests were written (no GPU): the bounds are torchvision's own for nvJPEG (a mean of 2 levels) and
16 levels for the largest difference, and the failure message prints what was measured.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from gradcam_lib.datasets import (
    ILSVRCValDataset,
    ImageBatch,
    ImageTransform,
    PendingImage,
    build_sample,
    collate_samples,
    load_photos,
    load_raw_photos,
    read_encoded,
    read_image,
    read_photo_boxes,
)
from gradcam_lib.datasets import decode as decode_module

LEVEL = 1 / 255 / min(ImageTransform().std)  # one 8-bit level in normalised units (0.0175)
CPU_MAX, CPU_MEAN = 1 * LEVEL, 0.05 * LEVEL
CUDA_MAX, CUDA_MEAN = 16 * LEVEL, 2 * LEVEL
TRANSFORMS = [ImageTransform(), ImageTransform.whole_image()]
PLAIN = ImageTransform()
WNIDS = ("n01440764", "n02123045")  # classes 0 and 281


def _source_file(source: str) -> Path:
    """The file a photograph of ``photo_boxes.csv`` is decoded from."""
    package, _, name = source.partition(":")
    if package == "skimage":
        import skimage.data

        (path,) = Path(skimage.data.__file__).parent.glob(f"{name}.*")
        return path
    if package == "sklearn":
        import sklearn.datasets

        return Path(sklearn.datasets.__file__).parent / "images" / name
    from matplotlib import cbook

    return Path(cbook.get_sample_data(name, asfileobj=False))


def _photo_files() -> dict[str, Path]:
    return {row.image_id: _source_file(row.source) for row in read_photo_boxes()}


def _device_photos(transform: ImageTransform) -> list:
    files = _photo_files()
    return [build_sample(read_encoded(files[p.image_id]), p.boxes, p.box_labels, p.image_id, transform)
            for p in load_raw_photos()]


def _assert_close(expected: torch.Tensor, actual: torch.Tensor, largest: float, mean: float) -> None:
    difference = (expected - actual.cpu()).abs()
    measured = f"max {difference.max():.4f}, mean {difference.mean():.5f} (one level: {LEVEL:.4f})"
    print(measured)
    assert difference.max() <= largest and difference.mean() <= mean, measured


def _same_truth(expected, actual) -> None:
    assert actual.image_id == expected.image_id and actual.labels == expected.labels
    assert torch.equal(actual.boxes, expected.boxes) and torch.equal(actual.box_labels, expected.box_labels)


# --------------------------------------------------------------------------- fixtures


def _picture(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth colour gradient with noise and a sharp-edged square: chroma edges and texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 / width, y * 255 / height, (x + y) % 256], axis=-1)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = (250, 20, 30)
    return np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)


def _without_adobe_marker(data: bytes) -> bytes:
    """A JPEG with its APP14 (Adobe) segment cut out."""
    start = data.index(b"\xff\xee")
    return data[:start] + data[start + 2 + int.from_bytes(data[start + 2 : start + 4], "big") :]


def _write_files(folder: Path) -> dict[str, tuple[Path, bool]]:
    """One file per case: name -> (path, whether the device decodes it)."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(_picture(300, 200, 0))
    cases: dict[str, tuple[Path, bool]] = {}

    def save(name: str, image: Image.Image, device: bool, **options) -> None:
        buffer = io.BytesIO()
        image.save(buffer, "PNG" if name.endswith("png") else "JPEG", **options)
        (folder / name).write_bytes(buffer.getvalue())
        cases[name] = (folder / name, device)

    save("rgb.jpg", rgb, True, quality=90)
    save("progressive.jpg", Image.fromarray(_picture(180, 260, 1)), True, progressive=True)
    save("gray.jpg", Image.fromarray(_picture(240, 150, 2)[..., 0], "L"), True)
    save("cmyk.jpg", rgb.convert("CMYK"), False)
    save("adobe_rgb.jpg", rgb, False, keep_rgb=True)
    save("image.png", rgb, False)
    (folder / "rgb_ids.jpg").write_bytes(_without_adobe_marker((folder / "adobe_rgb.jpg").read_bytes()))
    cases["rgb_ids.jpg"] = (folder / "rgb_ids.jpg", False)
    (folder / "cmyk_bare.jpg").write_bytes(_without_adobe_marker((folder / "cmyk.jpg").read_bytes()))
    cases["cmyk_bare.jpg"] = (folder / "cmyk_bare.jpg", False)  # four components, no Adobe marker
    return cases


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, tuple[Path, bool]]:
    return _write_files(tmp_path / "files")


def _xml(stem: str, width: int, height: int, boxes: list[tuple[int, int, int, int]]) -> str:
    objects = "".join(
        f"<object><name>{WNIDS[i % 2]}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
        f"<ymax>{y1}</ymax></bndbox></object>"
        for i, (x0, y0, x1, y1) in enumerate(boxes)
    )
    return f"<annotation><size><width>{width}</width><height>{height}</height></size>{objects}</annotation>"


@pytest.fixture()
def ilsvrc_root(tmp_path: Path) -> Path:
    """Every case of :func:`_write_files` as an ILSVRC val image (the PNG too, renamed .JPEG)."""
    root = tmp_path / "ilsvrc"
    (root / "val").mkdir(parents=True)
    for number, (path, _) in enumerate(_write_files(tmp_path / "files").values(), start=1):
        stem = f"ILSVRC2012_val_{number:08d}"
        (root / "val" / f"{stem}.JPEG").write_bytes(path.read_bytes())
        width, height = Image.open(path).size
        boxes = [(10, 5, width // 2, height - 1), (width - 30, 0, width - 1, 20 + number)]
        (root / "val" / f"{stem}.xml").write_text(_xml(stem, width, height, boxes))
    return root


# --------------------------------------------------------------------------- CPU


@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda t: t.geometry)
def test_shipped_photographs_decode_as_the_pil_path(transform: ImageTransform) -> None:
    expected, actual = load_photos(transform), _device_photos(transform)
    pending = [isinstance(s.image, PendingImage) for s in actual]
    assert sum(pending) == 3  # china, grace_hopper, rocket; the PNGs fall back
    for old, new in zip(expected, actual, strict=True):
        _same_truth(old, new)
        assert new.image.shape == old.image.shape
    images, _ = collate_samples(actual)
    assert isinstance(images, ImageBatch)
    decoded = images.to("cpu")
    assert decoded.dtype == torch.float32 and decoded.shape == (len(expected), 3, transform.crop, transform.crop)
    for old, new, is_pending in zip(expected, decoded, pending, strict=True):
        if is_pending:
            _assert_close(old.image, new, CPU_MAX, CPU_MEAN)
        else:
            assert torch.equal(old.image, new)


@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda t: t.geometry)
def test_fixtures_decode_as_the_pil_path_and_fallbacks_are_it(files, transform: ImageTransform) -> None:
    """RGB, progressive and grey JPEGs go to the device decoder; CMYK (with or without an Adobe
    marker), RGB-coded (Adobe marker or component ids) and PNG files are the PIL path itself,
    decoded in the worker."""
    boxes, labels = torch.tensor([[0, 0, 99, 99], [150, 20, 170, 149]]), torch.tensor([0, 281])
    expected = [build_sample(read_image(path), boxes, labels, name, transform) for name, (path, _) in files.items()]
    actual = [build_sample(read_encoded(path), boxes, labels, name, transform) for name, (path, _) in files.items()]
    assert [isinstance(s.image, PendingImage) for s in actual] == [device for _, device in files.values()]
    images, samples = collate_samples(actual)
    assert samples == actual
    for old, new, (name, (_, device)) in zip(expected, images.to("cpu"), files.items(), strict=True):
        if device:
            _assert_close(old.image, new, CPU_MAX, CPU_MEAN)
        else:
            assert torch.equal(old.image, new), name
    for old, new in zip(expected, actual, strict=True):
        _same_truth(old, new)


def test_a_batch_without_pending_images_is_stacked_as_before(files) -> None:
    sample = build_sample(read_image(files["rgb.jpg"][0]), torch.zeros(0, 4), torch.zeros(0), "a", ImageTransform())
    images, _ = collate_samples([sample, sample])
    assert isinstance(images, torch.Tensor) and torch.equal(images, torch.stack([sample.image] * 2))


def test_refused_items_fall_back_to_the_pil_path_one_by_one(files, monkeypatch) -> None:
    """One JPEG the decoder refuses (and one it decodes to a wrong size) fails the batched call; the
    others are decoded one by one, those two by PIL, exactly as the CPU path."""
    transform = ImageTransform()
    names = ["rgb.jpg", "progressive.jpg", "gray.jpg"]
    refused, resized = files["progressive.jpg"][0].read_bytes(), files["gray.jpg"][0].read_bytes()
    real = decode_module.decode_jpeg
    calls = []

    def fake(data: list[torch.Tensor], **options) -> list[torch.Tensor]:
        calls.append(len(data))
        if any(d.numpy().tobytes() == refused for d in data):
            raise RuntimeError("unsupported")
        decoded = zip(data, real(data, **options), strict=True)
        return [p[:, :-1] if d.numpy().tobytes() == resized else p for d, p in decoded]

    monkeypatch.setattr(decode_module, "decode_jpeg", fake)
    samples = [build_sample(read_encoded(files[n][0]), torch.zeros(0, 4), torch.zeros(0), n, transform) for n in names]
    decoded = collate_samples(samples)[0].to("cpu")
    assert calls == [3, 1, 1, 1]
    expected = [build_sample(read_image(files[n][0]), torch.zeros(0, 4), torch.zeros(0), n, transform) for n in names]
    _assert_close(expected[0].image, decoded[0], CPU_MAX, CPU_MEAN)
    assert torch.equal(decoded[1], expected[1].image) and torch.equal(decoded[2], expected[2].image)


def test_undecodable_files_are_named(tmp_path: Path, files) -> None:
    """Bad headers raise in the worker; a truncated file, refused by both decoders, at ``.to``. A
    corrupt segment that libjpeg only warns about is decoded by both (as the CPU path)."""
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(OSError, match=r"cannot decode image .*garbage\.jpg"):
        read_encoded(garbage)
    with pytest.raises(FileNotFoundError, match=r"missing\.jpg"):
        read_encoded(tmp_path / "missing.jpg")
    data = files["rgb.jpg"][0].read_bytes()
    samples = []
    for name, broken in [("truncated.jpg", data[: len(data) // 2]), ("corrupt.jpg", data[:700] + b"\xff\xd9" * 50)]:
        (tmp_path / name).write_bytes(broken)
        samples.append(build_sample(read_encoded(tmp_path / name), torch.zeros(0, 4), torch.zeros(0), name, PLAIN))
        assert isinstance(samples[-1].image, PendingImage)  # the header is fine
    with pytest.raises(OSError, match=r"cannot decode image .*truncated\.jpg: image file is truncated"):
        collate_samples(samples)[0].to("cpu")
    expected = PLAIN(read_image(tmp_path / "corrupt.jpg"))[0]
    _assert_close(expected, collate_samples(samples[1:])[0].to("cpu")[0], CPU_MAX, CPU_MEAN)


def test_ilsvrc_device_mode_through_worker_processes(ilsvrc_root: Path) -> None:
    """Mixed batches through a DataLoader whose worker reads bytes: the PIL data set's batches."""
    transform = ImageTransform()
    pil = ILSVRCValDataset(ilsvrc_root, transform)
    device = ILSVRCValDataset(ilsvrc_root, transform, decode="device")
    loader = DataLoader(device, batch_size=4, collate_fn=collate_samples, num_workers=1)
    batches = [(images.to("cpu"), samples) for images, samples in loader]
    decoded = torch.cat([images for images, _ in batches])
    samples = [s for _, batch in batches for s in batch]
    assert len(samples) == len(pil) == 8
    for i, (new, sample) in enumerate(zip(decoded, samples, strict=True)):
        old = pil[i]
        _same_truth(old, sample)
        if isinstance(sample.image, PendingImage):
            _assert_close(old.image, new, CPU_MAX, CPU_MEAN)
        else:
            assert torch.equal(old.image, new)
    assert sum(isinstance(s.image, PendingImage) for s in samples) == 3


def test_run_resumable_takes_device_mode_unchanged(ilsvrc_root: Path, tmp_path: Path) -> None:
    """The resumable loop (collate, ``images.to(device)``) gives the batch step the PIL path's images."""
    from gradcam_lib.results import run_resumable

    def step(images: torch.Tensor, samples: list) -> list[dict]:
        pairs = zip(samples, images, strict=True)
        return [{"image_id": s.image_id, "total": float(x.double().sum())} for s, x in pairs]

    pil = run_resumable(ILSVRCValDataset(ilsvrc_root, PLAIN), step, tmp_path / "pil.csv", batch_size=3)
    device = ILSVRCValDataset(ilsvrc_root, PLAIN, decode="device")
    rows = run_resumable(device, step, tmp_path / "device.csv", batch_size=3)
    assert rows["image_id"].tolist() == pil["image_id"].tolist() and len(rows) == 8
    assert np.allclose(rows["total"], pil["total"], rtol=0, atol=CPU_MEAN * 3 * PLAIN.crop**2)


def test_ilsvrc_decode_option_is_checked_and_keys_the_records(ilsvrc_root: Path) -> None:
    with pytest.raises(ValueError, match="decode must be one of"):
        ILSVRCValDataset(ilsvrc_root, ImageTransform(), decode="gpu")
    pil = ILSVRCValDataset(ilsvrc_root, ImageTransform()).annotation_records()
    device = ILSVRCValDataset(ilsvrc_root, ImageTransform(), decode="device").annotation_records()
    assert "decode" not in pil[0] and device == [r | {"decode": "device"} for r in pil]


# --------------------------------------------------------------------------- CUDA


@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda t: t.geometry)
@pytest.mark.cuda  # skipped without CUDA (tests/conftest.py)
def test_cuda_decodes_the_shipped_photographs_as_the_cpu(transform: ImageTransform) -> None:
    expected, actual = load_photos(transform), _device_photos(transform)
    decoded = collate_samples(actual)[0].to("cuda", non_blocking=True)
    assert decoded.device.type == "cuda"
    for old, new, sample in zip(expected, decoded, actual, strict=True):
        _same_truth(old, sample)
        if isinstance(sample.image, PendingImage):
            _assert_close(old.image, new, CUDA_MAX, CUDA_MEAN)
        else:
            assert torch.equal(old.image, new.cpu())


@pytest.mark.cuda  # skipped without CUDA (tests/conftest.py)
def test_cuda_mixed_batches_with_pinned_memory(ilsvrc_root: Path, tmp_path: Path) -> None:
    transform = ImageTransform()
    pil = ILSVRCValDataset(ilsvrc_root, transform)
    device = ILSVRCValDataset(ilsvrc_root, transform, decode="device")
    loader = DataLoader(device, batch_size=8, collate_fn=collate_samples, num_workers=1, pin_memory=True)
    ((images, samples),) = list(loader)
    decoded = images.to("cuda", non_blocking=True).cpu()
    for i, (new, sample) in enumerate(zip(decoded, samples, strict=True)):
        _same_truth(pil[i], sample)
        if isinstance(sample.image, PendingImage):
            _assert_close(pil[i].image, new, CUDA_MAX, CUDA_MEAN)
        else:
            assert torch.equal(pil[i].image, new)
    broken = tmp_path / "broken.jpg"  # truncated: PIL refuses it, so must the device path
    data = device.image_paths[0].read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    sample = build_sample(read_encoded(broken), torch.zeros(0, 4), torch.zeros(0), "broken", transform)
    with pytest.raises(OSError, match=r"broken\.jpg"):
        collate_samples([samples[0], sample])[0].to("cuda")
