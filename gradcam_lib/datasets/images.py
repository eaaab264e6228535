"""Reading an image file for the book: any mode PIL decodes (grayscale, CMYK, 16-bit, float) comes
back as 8-bit RGB, with clear errors for files that are missing, undecodable, decompression bombs or
of an absurd aspect ratio (the message names the file). :func:`open_image` applies the same checks
to the header alone (the device decoder of :mod:`~gradcam_lib.datasets.decode` uses it)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image

__all__ = ["MAX_ASPECT_RATIO", "open_image", "read_image"]

#: read_image refuses images whose long side is more than this many times their short side.
MAX_ASPECT_RATIO = 50


@contextmanager
def _named(path: str | os.PathLike[str]) -> Iterator[None]:
    """PIL's errors while opening or decoding ``path`` as ``OSError`` naming it (a missing file
    stays a ``FileNotFoundError``)."""
    try:
        yield
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as error:
        raise OSError(
            f"image {path} was refused as a possible decompression bomb ({error}); if it is genuine, "
            f"raise PIL.Image.MAX_IMAGE_PIXELS before reading it"
        ) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise OSError(f"cannot decode image {path}: {error}") from error


def open_image(path: str | os.PathLike[str], data: bytes | None = None) -> Image.Image:
    """Open an image file and read its header only (size, mode and format are known, the pixels are
    not decoded), with the checks of :func:`read_image` on its size.

    Args:
        path: the file; with ``data``, only the name in error messages.
        data: the file's bytes, when they are already read.

    Raises:
        The errors of :func:`read_image`, but for undecodable pixels.
    """
    with _named(path):
        image = Image.open(path if data is None else io.BytesIO(data))
    width, height = image.size
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        image.close()
        raise OSError(
            f"image {path} is {width} x {height} pixels: an aspect ratio above {MAX_ASPECT_RATIO}:1 is refused "
            f"(resizing its shorter side for a model would allocate an enormous image); crop it first"
        )
    return image


def read_image(path: str | os.PathLike[str], data: bytes | None = None) -> Image.Image:
    """Decode an image file fully (any mode; the transform converts to RGB). 32-bit integer
    (``I``) and float (``F``) images are converted to 8-bit grey by range: ``[min(0, lowest),
    highest]`` -> ``[0, 255]`` (for non-negative values, the division by the peak that
    :func:`~gradcam_lib.datasets.transforms.to_rgb` applies to 16-bit images).

    Args:
        path: the file; with ``data``, only the name in error messages.
        data: the file's bytes, when they are already read.

    Raises:
        FileNotFoundError: no such file.
        OSError: the file is not a decodable image, is refused as a decompression bomb (more than
            twice ``PIL.Image.MAX_IMAGE_PIXELS`` pixels), has an aspect ratio above
            ``MAX_ASPECT_RATIO`` : 1, or holds NaN / infinite pixels; the message names it.
    """
    image = open_image(path, data)
    with _named(path):
        image.load()
    return _eight_bit_by_range(image, path) if image.mode in ("I", "F") else image


def _eight_bit_by_range(image: Image.Image, path: str | os.PathLike[str]) -> Image.Image:
    """A 32-bit integer or float image as 8-bit grey, ``[min(0, lowest), highest]`` -> ``[0, 255]``."""
    pixels = np.asarray(image, dtype=np.float64)
    if not np.isfinite(pixels).all():
        raise OSError(f"image {path} holds NaN or infinite pixels; replace them before reading it")
    low = min(float(pixels.min(initial=0.0)), 0.0)
    span = float(pixels.max(initial=0.0)) - low
    return Image.fromarray(np.round((pixels - low) / (span or 1.0) * 255).astype(np.uint8), "L")
