"""What every format shares: the request as the formats see it, the error type, and name checks.

A :class:`RequestItem` box is the region's in-image part ``(y0, x0, y1, x1)``, end exclusive, in
full-image pixels: the size and place of the mask to hand in. Crops (CVAT, Label Studio) carry the
region with a context margin; ``crop_box`` is that crop in image pixels and :meth:`RequestItem.in_crop`
the region inside it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

REQUEST_CLASS = "activeseg request"
"""The classification of the locked rectangle that marks a requested region (QuPath)."""

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_FILE_BYTES = 256 * 1024 * 1024


class FormatError(ValueError):
    """A tool's export cannot be read as this round's labels; the message names the file, the item and
    the problem."""


@dataclass(frozen=True)
class RequestItem:
    """One requested region: ``box`` its in-image part and ``crop_box`` its crop with context, both
    ``(y0, x0, y1, x1)`` in image pixels; ``rank`` 1 for the first region of the request."""

    id: str
    stem: str
    box: tuple[int, int, int, int]
    crop_box: tuple[int, int, int, int]
    score: float | None
    rank: int

    @property
    def shape(self) -> tuple[int, int]:
        """(h, w) of the mask to hand in."""
        return self.box[2] - self.box[0], self.box[3] - self.box[1]

    @property
    def in_crop(self) -> tuple[int, int, int, int]:
        """The region inside its crop: ``(y0, x0, y1, x1)`` in crop pixels."""
        cy, cx = self.crop_box[0], self.crop_box[1]
        return self.box[0] - cy, self.box[1] - cx, self.box[2] - cy, self.box[3] - cx


@dataclass(frozen=True)
class Request:
    """A round's request as the formats see it. ``class_names[i]`` names class id ``i`` (0: background);
    ``elsewhere`` maps region ids requested in other rounds to their round, to name a different
    round's export. ``downsample`` maps each whole-slide image to its level-0 pixels per region pixel
    (absent: 1), the factor between region boxes and QuPath's coordinates."""

    round: int
    class_names: tuple[str, ...]
    items: tuple[RequestItem, ...]
    elsewhere: Mapping[str, int] = field(default_factory=dict)
    downsample: Mapping[str, float] = field(default_factory=dict)

    def by_id(self) -> dict[str, RequestItem]:
        return {item.id: item for item in self.items}

    def class_id(self, name: object, where: str) -> int:
        """The class id of a class name; an unknown or missing name is a :class:`FormatError`."""
        if not isinstance(name, str) or name not in self.class_names:
            raise FormatError(f"{where}: unknown class name {name!r}; the classes are "
                              f"{', '.join(repr(n) for n in self.class_names)}")
        return self.class_names.index(name)

    def item(self, region_id: object, where: str) -> RequestItem:
        """The requested region of that id; an id of another round's request or of none is named."""
        found = self.by_id().get(region_id) if isinstance(region_id, str) else None
        if found is not None:
            return found
        if isinstance(region_id, str) and region_id in self.elsewhere:
            raise FormatError(f"{where}: region {region_id} belongs to round {self.elsewhere[region_id]}'s request, "
                              f"not round {self.round}'s: this is a different round's export")
        raise FormatError(f"{where}: region {region_id!r} is not in round {self.round}'s request")

    def check_complete(self, found: set[str], where: str) -> None:
        """Every requested region must be answered."""
        missing = [item.id for item in self.items if item.id not in found]
        if missing:
            raise FormatError(f"{where}: regions missing ({len(missing)} of {len(self.items)}): "
                              + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))


@dataclass(frozen=True)
class Labels:
    """What a tool's export gives: ``masks`` one (h, w) uint8 class-id mask per requested region, and
    ``clipped`` the shapes cut at each region's edge, by region id (a region without any is absent;
    always empty for a tool whose paint outside a region is refused)."""

    masks: dict[str, np.ndarray]
    clipped: dict[str, list[str]] = field(default_factory=dict)


def check_name(name: object, where: str) -> str:
    """A plain file name (no folder, no ``..``, no leading dot or odd characters), else a
    :class:`FormatError` about the path trick."""
    if not isinstance(name, str) or not SAFE_NAME.match(name) or ".." in name:
        raise FormatError(f"{where}: file name {name!r} is not a plain file name (no folders, '..', leading dots "
                          "or special characters): refused")
    return name


def region_of_name(name: object, suffix: str, request: Request, where: str) -> RequestItem:
    """The requested region of a file name ``<region id><suffix>`` (path tricks refused)."""
    plain = check_name(name, where)
    if not plain.endswith(suffix):
        raise FormatError(f"{where}: file name {plain!r} does not end in {suffix!r}")
    return request.item(plain[: -len(suffix)], where)


def check_mask(mask: np.ndarray, item: RequestItem, classes: int) -> np.ndarray:
    """A prediction for ``item``: (h, w) of the region's in-image part with class ids below ``classes``."""
    if mask.shape != item.shape:
        raise ValueError(f"region {item.id}: prediction of shape {mask.shape}, expected {item.shape}")
    if mask.size and int(mask.max()) >= classes:
        raise ValueError(f"region {item.id}: prediction has class {int(mask.max())}, only {classes} classes")
    return mask.astype(np.uint8)


USER_KEYS = ("annotator", "author", "user", "username", "email")
"""Keys under which a tool's export may name a person (checked in this order)."""


def user_name(value: object, tool: str) -> str | None:
    """A person named in an export: a name, a user object (email, username, name or id) or a numeric id
    (``<tool> user <id>``); None when it names nobody."""
    if isinstance(value, dict):
        first = next((value[k] for k in (*USER_KEYS, "first_name") if isinstance(value.get(k), str) and value[k]), None)
        return first or (user_name(value.get("id"), tool) if value.get("id") is not None else None)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{tool} user {value}"
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None
