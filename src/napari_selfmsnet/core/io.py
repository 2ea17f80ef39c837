"""Reading microscopy images with their metadata, and the plane view stacks are processed in.

TIFF (OME-TIFF, ImageJ hyperstacks, plain) is read with tifffile, keeping the axes
(``series.axes``) and the pixel size; PNG and JPEG through imageio (RGB as axes ``"YXS"``).
Axis letters follow tifffile: ``Y``, ``X``; ``S`` samples (size 3 = RGB, deblurred as one
colour plane); ``C`` channels, ``Z``, ``T`` and any other letter are *stack axes*: every
combination of their indices is one plane of the ``(P, H, W[, 3])`` view that
:class:`Planes` gives, read one plane at a time. Writing is in :mod:`napari_selfmsnet.io`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ImageMetadata",
    "Planes",
    "read_image",
    "read_image_with_metadata",
    "read_metadata",
    "output_metadata",
    "normalise_axes",
    "TIFF_SUFFIXES",
    "IMAGE_SUFFIXES",
]

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, ".png", ".jpg", ".jpeg")

# Length units as written by ImageJ, OME and users, mapped to the OME spelling.
_UNITS = {
    "µm": "µm", "\\u00b5m": "µm", "um": "µm", "micron": "µm", "microns": "µm",
    "micrometer": "µm", "micrometre": "µm", "nm": "nm", "nanometer": "nm", "mm": "mm",
    "millimeter": "mm", "cm": "cm", "centimeter": "cm", "m": "m", "meter": "m",
    "in": "in", "inch": "in",
}  # fmt: skip
#: Size of one unit in micrometres, to convert TIFF resolution tags.
UNIT_IN_UM = {"nm": 1e-3, "µm": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6, "in": 25400.0}


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as stored (no rescaling, no dtype change)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    if path.suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        return tifffile.imread(path)
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (for the run report)."""
        return {
            "axes": self.axes, "shape": list(self.shape), "dtype": self.dtype,
            "pixel_size": list(self.pixel_size) if self.pixel_size else None,
            "z_spacing": self.z_spacing, "unit": self.unit,
            "time_interval": self.time_interval, "source": self.source,
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


class Planes:
    """A ``(P, H, W)`` or ``(P, H, W, 3)`` view of an N-D array, one plane per index.

    The plane axes are Y, X and S when S has size 3 (RGB); every other axis is a stack axis,
    and plane ``i`` is the ``i``-th combination of stack-axis indices in C order over
    ``stack_axes``. Reading and writing touch only that plane, so the array can be a NumPy
    array, a memory map, a Dask or a Zarr array.

    Parameters
    ----------
    data : array-like
        Anything with ``.shape`` and N-D indexing.
    axes : str
        One letter per dimension of ``data``.
    stack_axes : str, optional
        Enumeration order of the stack axes (default: their order in ``axes``); lets two
        arrays with the same axes in different orders share plane numbers.
    """

    def __init__(self, data: Any, axes: str, stack_axes: str | None = None) -> None:
        self.data = data
        self.axes = normalise_axes(axes, data.shape)
        sizes = dict(zip(self.axes, (int(s) for s in data.shape), strict=True))
        self.rgb = sizes.get("S") == 3
        self.plane_axes = "YXS" if self.rgb else "YX"
        default = "".join(a for a in self.axes if a not in self.plane_axes)
        if stack_axes is None:
            stack_axes = default
        elif sorted(stack_axes) != sorted(default):
            raise ValueError(f"stack_axes {stack_axes!r} must order the stack axes {default!r}")
        self.stack_axes = stack_axes
        self.stack_shape = tuple(sizes[a] for a in stack_axes)
        plane_shape = tuple(sizes[a] for a in self.plane_axes)
        self.shape = (math.prod(self.stack_shape), *plane_shape)
        self.dtype = getattr(data, "dtype", None)
        self.ndim = len(self.shape)
        # Order of the plane axes inside data[index], and the transpose to Y, X(, S).
        inner = [a for a in self.axes if a in self.plane_axes]
        self._to_plane = tuple(inner.index(a) for a in self.plane_axes)
        self._from_plane = tuple(self.plane_axes.index(a) for a in inner)

    def __len__(self) -> int:
        return self.shape[0]

    def index(self, i: int) -> tuple:
        """The N-D index into ``data`` of plane ``i``."""
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"Planes are indexed by one plane number, got {i!r}")
        if not -self.shape[0] <= i < self.shape[0]:
            raise IndexError(f"plane {i} out of range for {self.shape[0]} planes")
        coords = dict(zip(self.stack_axes, np.unravel_index(int(i) % self.shape[0], self.stack_shape), strict=True))
        return tuple(int(coords[a]) if a in coords else slice(None) for a in self.axes)

    def __getitem__(self, i: int) -> np.ndarray:
        plane = self.data[self.index(i)]
        if hasattr(plane, "compute"):
            # A lazy (Dask) plane: read it here, synchronously, even inside a Dask worker task.
            plane = plane.compute(scheduler="sync")
        return np.transpose(np.asarray(plane), self._to_plane)

    def __setitem__(self, i: int, plane: np.ndarray) -> None:
        self.data[self.index(i)] = np.transpose(np.asarray(plane), self._from_plane)

    def __array__(self, dtype=None, copy=None):
        out = np.stack([self[i] for i in range(len(self))])
        return out if dtype is None else out.astype(dtype)

    @property
    def output_axes(self) -> str:
        """Axes of the arrays written for this view: stack axes, then Y, X (and S)."""
        return self.stack_axes + self.plane_axes


def _unit(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return _UNITS.get(text.lower(), _UNITS.get(text, text or None))


def _resolution_size(page: Any) -> tuple[tuple[float, float] | None, str | None]:
    """Pixel size (Y, X) from the resolution tags, in µm when the tag unit is inch or cm."""
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None, None
    xres, yres = (tags[name].value for name in ("XResolution", "YResolution"))
    xres, yres = xres[0] / xres[1], yres[0] / yres[1]
    if xres <= 0 or yres <= 0:
        return None, None
    unit_code = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    scale = {2: UNIT_IN_UM["in"], 3: UNIT_IN_UM["cm"]}.get(unit_code)
    if scale is None:  # no unit: meaningful only with ImageJ's own unit
        return (1.0 / yres, 1.0 / xres), None
    return (scale / yres, scale / xres), "µm"


def _ome_metadata(tif: Any) -> dict[str, Any]:
    import tifffile

    pixels = tifffile.xml2dict(tif.ome_metadata).get("OME", {}).get("Image", {})
    if isinstance(pixels, list):
        pixels = pixels[0]
    pixels = pixels.get("Pixels", {})
    out: dict[str, Any] = {}
    if "PhysicalSizeX" in pixels and "PhysicalSizeY" in pixels:
        out["pixel_size"] = (float(pixels["PhysicalSizeY"]), float(pixels["PhysicalSizeX"]))
        out["unit"] = _unit(pixels.get("PhysicalSizeXUnit", "µm"))
    if "PhysicalSizeZ" in pixels:
        out["z_spacing"] = float(pixels["PhysicalSizeZ"])
    if "TimeIncrement" in pixels:
        out["time_interval"] = float(pixels["TimeIncrement"])
    return out


def _tiff_metadata(tif: Any) -> tuple[str, dict[str, Any]]:
    page = tif.series[0].keyframe
    size, unit = _resolution_size(page)
    if unit is None and size == (1.0, 1.0) and not tif.is_imagej:
        size = None  # tifffile's placeholder resolution, not a measurement
    out: dict[str, Any] = {"pixel_size": size, "unit": unit}
    if tif.is_ome:
        out.update(_ome_metadata(tif))
        return "ome-tiff", out
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        if unit is None:  # ImageJ stores pixels per `unit` with ResolutionUnit NONE
            out["unit"] = _unit(meta.get("unit")) if meta.get("unit") else None
            if out["unit"] is None and size == (1.0, 1.0):
                out["pixel_size"] = None
        if "spacing" in meta:
            out["z_spacing"] = float(meta["spacing"])
        if "finterval" in meta:
            out["time_interval"] = float(meta["finterval"])
        out["extra"] = {k: meta[k] for k in ("mode", "channels", "Ranges") if k in meta}
        return "imagej-tiff", out
    return "tiff", out


def _page_reader(path: Path, series: Any, axes: str) -> Any | None:
    """A Dask array of the series reading one TIFF page per plane, or None if pages ≠ planes."""
    page_shape = tuple(series.keyframe.shape)
    shape = tuple(series.shape)
    n_lead = len(shape) - len(page_shape)
    plane_axes = "YXS" if dict(zip(axes, shape, strict=True)).get("S") == 3 else "YX"
    if n_lead < 0 or shape[n_lead:] != page_shape or axes[n_lead:] != plane_axes:
        return None
    if len(series.pages) != math.prod(shape[:n_lead]):
        return None
    import dask
    import dask.array as da

    read = dask.delayed(_read_tiff_page, pure=True)
    planes = [
        da.from_delayed(read(str(path), i), shape=page_shape, dtype=series.dtype) for i in range(len(series.pages))
    ]
    return da.stack(planes).reshape(shape)


def _read_tiff_page(path: str, index: int) -> np.ndarray:
    import tifffile

    return tifffile.imread(path, series=0, key=index)


def read_metadata(path: str | Path, *, axes: str | None = None) -> ImageMetadata:
    """What :func:`read_image_with_metadata` would return as metadata, reading no pixels of a TIFF."""
    return _read(Path(path), axes, lazy=True, pixels=False)[1]


def read_image_with_metadata(
    path: str | Path, *, axes: str | None = None, lazy: bool = False
) -> tuple[Any, ImageMetadata]:
    """Read an image file and what it says about axes and pixel size.

    Parameters
    ----------
    path : str or Path
        TIFF / OME-TIFF (first series), PNG or JPEG.
    axes : str, optional
        Override the file's axes (one letter per dimension), for files whose metadata is
        missing or wrong.
    lazy : bool
        TIFF only: return a Dask array that reads one page per plane when computed (only
        when the file stores one plane per page in order; otherwise the file is read whole).

    Returns
    -------
    data : ndarray or dask array
        As stored (no rescaling, no dtype change).
    metadata : ImageMetadata
    """
    return _read(Path(path), axes, lazy=lazy, pixels=True)


def _read(path: Path, axes: str | None, *, lazy: bool, pixels: bool) -> tuple[Any, ImageMetadata]:
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    suffix = path.suffix.lower()
    data = None
    if suffix in TIFF_SUFFIXES:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ValueError(f"{path}: the TIFF file holds no image")
            series = tif.series[0]
            shape, dtype = tuple(series.shape), series.dtype
            file_axes = normalise_axes(axes or series.axes, shape)
            source, fields = _tiff_metadata(tif)
            if pixels:
                data = _page_reader(path, series, file_axes) if lazy else None
                if data is None:
                    data = series.asarray()
    elif suffix in IMAGE_SUFFIXES:
        import imageio.v3 as iio

        if pixels:
            data = np.asarray(iio.imread(path))
            shape, dtype = data.shape, data.dtype
        else:
            props = iio.improps(path)
            shape, dtype = tuple(props.shape), props.dtype
        default = {2: "YX", 3: "YXS"}.get(len(shape), "")
        file_axes = normalise_axes(axes or default, shape)
        source = "jpeg" if suffix in (".jpg", ".jpeg") else "png"
        fields = {}
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; expected one of {IMAGE_SUFFIXES}")
    meta = ImageMetadata(
        axes=file_axes, shape=tuple(int(s) for s in shape), dtype=np.dtype(dtype).str,
        source=source, path=str(path), **fields,
    )  # fmt: skip
    return data, meta


def output_metadata(meta: ImageMetadata, axes: str, shape: Sequence[int]) -> ImageMetadata:
    """``meta`` for an array written with ``axes``/``shape`` (float32), keeping pixel sizes."""
    return replace(meta, axes=axes, shape=tuple(int(s) for s in shape), dtype=np.dtype(np.float32).str)
