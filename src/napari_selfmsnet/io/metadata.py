"""What a file says about its image besides the pixels: axes, shape, pixel sizes, units.

Axis letters follow tifffile: ``Y``, ``X``; ``S`` samples (size 3 = RGB, deblurred as one
colour plane); ``C`` channels, ``Z``, ``T`` and any other letter are *stack axes* (see
:class:`.planes.Planes`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = [
    "IMAGE_SUFFIXES",
    "TIFF_SUFFIXES",
    "UNIT_IN_UM",
    "ImageMetadata",
    "kernel_metadata",
    "normalise_axes",
    "output_metadata",
    "plane_count",
    "stack_axes_of",
]

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, ".png", ".jpg", ".jpeg")

#: Size of one unit in micrometres, to convert TIFF resolution tags.
UNIT_IN_UM = {"nm": 1e-3, "µm": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6, "in": 25400.0}


@dataclass(frozen=True)
class ImageMetadata:
    """What a file says about its image, beyond the pixels.

    Attributes
    ----------
    axes : str
        One letter per dimension of the stored array (tifffile's codes), for example ``"ZYX"``,
        ``"TCZYX"``, ``"YXS"`` (RGB).
    shape : tuple of int
        Shape of the stored array.
    dtype : str
        NumPy dtype of the stored array.
    pixel_size : (float, float) or None
        Physical size of a pixel along Y and X, in ``unit``.
    z_spacing : float or None
        Distance between Z planes, in ``unit``.
    unit : str or None
        Length unit in OME spelling (``"µm"``, ``"nm"``, ...), None when the file has none.
    time_interval : float or None
        Seconds between T points (ImageJ ``finterval``, OME ``TimeIncrement``).
    source : str
        ``"ome-tiff"``, ``"imagej-tiff"``, ``"tiff"``, ``"png"``, ``"jpeg"`` or ``"image"``.
    path : str
        The file it came from.
    notes : tuple of str
        What reading changed about the stored image, to be reported (an alpha channel left
        out: ``axes`` and ``shape`` then describe the image as read).
    """

    axes: str
    shape: tuple[int, ...]
    dtype: str
    pixel_size: tuple[float, float] | None = None
    z_spacing: float | None = None
    unit: str | None = None
    time_interval: float | None = None
    source: str = "image"
    path: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (for the run report)."""
        return {
            "axes": self.axes, "shape": list(self.shape), "dtype": self.dtype,
            "pixel_size": list(self.pixel_size) if self.pixel_size else None,
            "z_spacing": self.z_spacing, "unit": self.unit,
            "time_interval": self.time_interval, "source": self.source, "notes": list(self.notes),
        }  # fmt: skip


def normalise_axes(axes: str, shape: Sequence[int]) -> str:
    """Check ``axes`` against ``shape`` and return it upper-case.

    Raises
    ------
    ValueError
        When the length differs from the number of dimensions, a letter repeats, or Y or X is
        missing.
    """
    if not isinstance(axes, str):
        raise TypeError(f"axes must be a string such as 'ZYX', got {axes!r}")
    axes = axes.strip().upper()
    if len(axes) != len(shape):
        raise ValueError(
            f"axes {axes!r} name {len(axes)} dimensions but the image has {len(shape)} (shape {tuple(shape)})"
        )
    if len(set(axes)) != len(axes):
        raise ValueError(f"axes {axes!r} repeat a letter; give every dimension its own letter")
    if "Y" not in axes or "X" not in axes:
        raise ValueError(f"axes {axes!r} must contain Y and X")
    if not all(a.isalpha() for a in axes):
        raise ValueError(f"axes {axes!r} must be letters only")
    return axes


def output_metadata(meta: ImageMetadata, axes: str, shape: Sequence[int]) -> ImageMetadata:
    """``meta`` for an array written with ``axes``/``shape`` (float32), keeping pixel sizes."""
    return replace(meta, axes=axes, shape=tuple(int(s) for s in shape), dtype=np.dtype(np.float32).str)


def kernel_metadata(
    meta: ImageMetadata, stack_axes: str, stack_shape: Sequence[int], kernel_shape: Sequence[int]
) -> ImageMetadata:
    """Metadata of a kernel file: the image's stack axes (per-plane kernels) and pixel size."""
    return output_metadata(meta, stack_axes + "YX", (*stack_shape, *kernel_shape))


def stack_axes_of(meta: ImageMetadata) -> str:
    """The stack axes of ``meta``: every axis but Y, X (and S when it holds RGB)."""
    sizes = dict(zip(meta.axes, meta.shape, strict=True))
    plane = "YXS" if sizes.get("S") == 3 else "YX"
    return "".join(a for a in meta.axes if a not in plane)


def plane_count(meta: ImageMetadata) -> int:
    """How many planes the stack axes of ``meta`` hold."""
    sizes = dict(zip(meta.axes, meta.shape, strict=True))
    return math.prod(sizes[a] for a in stack_axes_of(meta))
