"""Reading microscopy images with their metadata.

TIFF (OME-TIFF, ImageJ hyperstacks, plain) is read with tifffile, keeping the axes
(``series.axes``) and the pixel size; PNG and JPEG through imageio (RGB as axes ``"YXS"``).
A TIFF stack can be read lazily, one page per plane, as a Dask array.

Samples (``S``) of size 4 (RGBA) or 2 (grey and alpha) hold an alpha channel, a mask rather
than an image of the scene: it is left out on reading (RGB, or grey without ``S``), and the
metadata's ``notes`` say so, for the run's report. A file that is empty or cannot be decoded
raises a ValueError that says so.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import imageio.v3 as iio
import numpy as np
import tifffile

from .metadata import IMAGE_SUFFIXES, TIFF_SUFFIXES, UNIT_IN_UM, ImageMetadata, normalise_axes

__all__ = ["read_image", "read_image_with_metadata", "read_metadata"]

# Length units as written by ImageJ, OME and users, mapped to the OME spelling.
_UNITS = {
    "µm": "µm", "\\u00b5m": "µm", "um": "µm", "micron": "µm", "microns": "µm",
    "micrometer": "µm", "micrometre": "µm", "nm": "nm", "nanometer": "nm", "mm": "mm",
    "millimeter": "mm", "cm": "cm", "centimeter": "cm", "m": "m", "meter": "m",
    "in": "in", "inch": "in",
}  # fmt: skip
#: Size of one unit in micrometres, to convert TIFF resolution tags.


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as stored (no rescaling, no dtype change)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    _check_not_empty(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        with _open_tiff(path) as tif:
            return tif.asarray()
    return np.asarray(_decode(iio.imread, path))


def _check_not_empty(path: Path) -> None:
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes); it holds no image")


def _decode(read: Any, path: Path) -> Any:
    """``read(path)`` (imageio), with its failures said as what they mean: a corrupt file."""
    try:
        return read(path)
    except Exception as err:  # imageio raises OSError, ValueError, SyntaxError... by plugin
        kind = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else path.suffix.lstrip(".").upper()
        # imageio's own message may suggest installing plugins, which would not help here.
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        why = "" if "plugin" in str(err) or "backend" in first or len(first) > 120 else f" ({first})"
        raise ValueError(
            f"{path}: cannot decode it as a {kind} image: the file is corrupt or not a {kind}{why}"
        ) from err


#: Signatures of the formats a file named ``.tif`` most often holds instead, and their suffix.
_SIGNATURES = {b"\x89PNG": ("PNG", ".png"), b"\xff\xd8\xff": ("JPEG", ".jpg")}
_TIFF_HEADERS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _open_tiff(path: Path) -> tifffile.TiffFile:
    """``tifffile.TiffFile(path)``, with a file it cannot parse said as what that means (tifffile
    says ``not a TIFF file: header=b'hell'``)."""
    try:
        return tifffile.TiffFile(path)
    except (tifffile.TiffFileError, struct.error) as err:  # struct.error: the file ends too soon
        with path.open("rb") as file:
            head = file.read(4)
        other = next((found for magic, found in _SIGNATURES.items() if head.startswith(magic)), None)
        if other is not None:
            why, todo = f"the file holds a {other[0]} image, not a TIFF", f"rename it to {path.stem}{other[1]}"
        elif head in _TIFF_HEADERS:
            damage = "is cut short" if isinstance(err, struct.error) else f"is damaged ({err})"
            why, todo = f"the file starts as a TIFF but {damage}", "save or export the image again as TIFF"
        else:
            why = "the file is not a TIFF file (it does not start with a TIFF header)"
            todo = "check that it is an image"
        raise ValueError(f"{path}: cannot read it as a TIFF image: {why}; {todo}") from err


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
    plane_axes = "YXS" if dict(zip(axes, shape, strict=True)).get("S") in (2, 3, 4) else "YX"
    if n_lead < 0 or shape[n_lead:] != page_shape or axes[n_lead:] != plane_axes:
        return None
    if len(series.pages) != math.prod(shape[:n_lead]):
        return None
    read = dask.delayed(_read_tiff_page, pure=True)
    planes = [
        da.from_delayed(read(str(path), i), shape=page_shape, dtype=series.dtype) for i in range(len(series.pages))
    ]
    return da.stack(planes).reshape(shape)


def _read_tiff_page(path: str, index: int) -> np.ndarray:
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
    _check_not_empty(path)
    suffix = path.suffix.lower()
    data = None
    if suffix in TIFF_SUFFIXES:
        with _open_tiff(path) as tif:
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
        if pixels:
            data = np.asarray(_decode(iio.imread, path))
            shape, dtype = data.shape, data.dtype
        else:
            props = _decode(iio.improps, path)
            shape, dtype = tuple(props.shape), props.dtype
        default = {2: "YX", 3: "YXS"}.get(len(shape), "")
        file_axes = normalise_axes(axes or default, shape)
        source = "jpeg" if suffix in (".jpg", ".jpeg") else "png"
        fields = {}
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; expected one of {IMAGE_SUFFIXES}")
    data, file_axes, shape, notes = _without_alpha(data, file_axes, tuple(int(s) for s in shape))
    meta = ImageMetadata(
        axes=file_axes, shape=shape, dtype=np.dtype(dtype).str, source=source, path=str(path), notes=notes, **fields,
    )  # fmt: skip
    return data, meta


def _without_alpha(
    data: Any, axes: str, shape: tuple[int, ...]
) -> tuple[Any, str, tuple[int, ...], tuple[str, ...]]:
    """Leave out the alpha channel of RGBA (``S`` = 4) or grey-and-alpha (``S`` = 2) samples."""
    samples = dict(zip(axes, shape, strict=True)).get("S")
    if samples not in (2, 4):
        return data, axes, shape, ()
    at = axes.index("S")
    keep = slice(0, 3) if samples == 4 else 0
    if data is not None:
        data = data[(slice(None),) * at + (keep,)]
    if samples == 4:
        axes, shape = axes, (*shape[:at], 3, *shape[at + 1 :])
        note = "the file is RGBA: its alpha channel was left out (only the RGB channels were read)"
    else:
        axes, shape = axes[:at] + axes[at + 1 :], shape[:at] + shape[at + 1 :]
        note = "the file is grey and alpha: its alpha channel was left out (only the grey channel was read)"
    return data, axes, shape, (note,)
