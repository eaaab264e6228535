"""VOC-format box files (ILSVRC's ``bbox_val`` and PASCAL VOC's ``Annotations`` share the format),
read safely (``defusedxml``): :func:`read_objects` is the one loop over ``<object>`` elements that
both readers use; boxes are inclusive pixel boxes clipped to ``<size>``, and those entirely outside
the image are dropped with one :class:`DroppedBoxWarning`."""

from __future__ import annotations

import math
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Container, Sequence
from dataclasses import dataclass
from pathlib import Path

import defusedxml
import defusedxml.ElementTree as SafeET

from gradcam_lib.datasets.boxes import Box

__all__ = ["MAX_COORDINATE", "DroppedBoxWarning", "XmlObject", "clip_box", "keep_inside", "read_objects", "read_xml",
           "xml_number"]

#: Coordinates and sizes of a box file must be below this in magnitude (a long tensor holds them).
MAX_COORDINATE = 2**31


class DroppedBoxWarning(UserWarning):
    """Boxes that lie entirely outside their image's stated size were dropped (the message says
    how many, and where)."""


def clip_box(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """Clamp an inclusive box into a ``width`` x ``height`` image (a size <= 0 means unknown)."""
    x0, y0, x1, y1 = box
    if width > 0:
        x0, x1 = (min(max(v, 0), width - 1) for v in (x0, x1))
    if height > 0:
        y0, y1 = (min(max(v, 0), height - 1) for v in (y0, y1))
    return x0, y0, x1, y1


def keep_inside(boxes: Sequence[tuple[int, int, int, int]], width: int, height: int, source: str) -> list[bool]:
    """Which inclusive boxes share at least one pixel with a ``width`` x ``height`` image (a size
    <= 0 means unknown: no limit on that axis). When some do not, one :class:`DroppedBoxWarning`
    counts them, naming ``source``; the caller drops them (clipping would turn each into a
    1-pixel box in a corner)."""
    keep = [
        (width <= 0 or (x1 >= 0 and x0 <= width - 1)) and (height <= 0 or (y1 >= 0 and y0 <= height - 1))
        for x0, y0, x1, y1 in boxes
    ]
    dropped = len(keep) - sum(keep)
    if dropped:
        warnings.warn(
            f"{source}: dropped {dropped} of {len(keep)} boxes that lie entirely outside the "
            f"{width} x {height} image",
            DroppedBoxWarning,
            stacklevel=3,
        )
    return keep


def read_xml(path: str | os.PathLike[str]) -> ET.Element:
    """The ``<annotation>`` root of a VOC-format XML (ILSVRC and PASCAL VOC share it), parsed with
    ``defusedxml`` (entity declarations and external references are refused).

    Raises:
        FileNotFoundError: no such file.
        ValueError: empty or malformed XML, a refused construct, or another root element (the
            message names the file).
    """
    path = Path(path)
    try:
        root = SafeET.parse(path).getroot()
    except FileNotFoundError:
        raise
    except ET.ParseError as error:
        raise ValueError(
            f"{path} is not well-formed XML ({error}); re-extract it from the data set's archive"
        ) from error
    except defusedxml.DefusedXmlException as error:
        raise ValueError(f"{path} was refused: {error!r} (annotation files need no DTD entities)") from error
    if root.tag != "annotation":
        raise ValueError(f"{path}: root element is <{root.tag}>, not <annotation>; is this a VOC/ILSVRC box file?")
    return root


def xml_number(node: ET.Element, tag: str, path: Path, where: str = "") -> int:
    """The integer in ``<tag>`` under ``node`` of a VOC-format XML (ILSVRC and PASCAL VOC share it),
    rounded from a decimal if need be; ``where`` names the element in messages (``"object 2"``).

    Raises:
        ValueError: the tag is missing or does not hold a finite number below ``MAX_COORDINATE``
            (the message names the file and ``where``).
    """
    place = f"{path}, {where}" if where else str(path)
    text = node.findtext(tag)
    if text is None:
        raise ValueError(f"{place}: <{tag}> missing")
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and abs(value) < MAX_COORDINATE):
        raise ValueError(f"{place}: <{tag}> is {text.strip()!r}, not a finite pixel coordinate")
    return round(value)


@dataclass(frozen=True)
class XmlObject:
    """One kept ``<object>``: its ``<name>``, inclusive box (clipped to the image) and ``<difficult>`` flag."""

    name: str
    box: Box
    difficult: bool


def read_objects(path: str | os.PathLike[str], one_based: bool = False, size_required: bool = False,
                 names: Container[str] | None = None) -> tuple[int, int, list[XmlObject]]:
    """``(width, height, objects)`` of one VOC-format XML.

    Args:
        path: the box file.
        one_based: coordinates are 1-based (PASCAL VOC's devkit) and are shifted to 0-based.
        size_required: a missing ``<size>`` is an error (otherwise the size is 0 x 0, unknown, and
            boxes are not clipped).
        names: the class names allowed (an unknown one is an error naming the object).

    Raises:
        ValueError: malformed XML (:func:`read_xml`), a missing or non-numeric field, an unknown
            class, a negative size or an inverted box; the message names the file and object.
    """
    path = Path(path)
    root = read_xml(path)
    size = root.find("size")
    if size is None and size_required:
        raise ValueError(f"{path}: <size> missing")
    width, height = (
        (xml_number(size, "width", path, "<size>"), xml_number(size, "height", path, "<size>"))
        if size is not None
        else (0, 0)
    )
    if width < 0 or height < 0:
        raise ValueError(f"{path}: negative image size {width} x {height}")
    shift = 1 if one_based else 0
    found: list[tuple[str, Box, bool]] = []
    for number, obj in enumerate(root.iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        if names is not None and name not in names:
            raise ValueError(f"{path}: unknown class {name!r} (object {number})")
        bndbox = obj.find("bndbox")
        if bndbox is None or not name:
            raise ValueError(f"{path}: <object> {number} lacks <name> or <bndbox>")
        where = f"object {number} ({name})"
        x0, y0, x1, y1 = (xml_number(bndbox, tag, path, where) - shift for tag in ("xmin", "ymin", "xmax", "ymax"))
        if x0 > x1 or y0 > y1:
            raise ValueError(f"{path}, {where}: inverted box {(x0, y0, x1, y1)} (xmin > xmax or ymin > ymax)")
        found.append((name, (x0, y0, x1, y1), obj.findtext("difficult", "0").strip() == "1"))
    keep = keep_inside([box for _, box, _ in found], width, height, str(path))
    objects = [XmlObject(name, clip_box(box, width, height), difficult)
               for (name, box, difficult), kept in zip(found, keep, strict=True) if kept]
    return width, height, objects
