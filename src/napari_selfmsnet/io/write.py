"""Writing a run's results: the deblurred image, its kernel(s) and a JSON report.

Writing keeps the metadata the input had: an ImageJ hyperstack stays ImageJ (``spacing``,
``unit``, resolution), anything else becomes OME-TIFF (``PhysicalSizeX/Y/Z`` and resolution
tags), and axes that OME cannot describe fall back to tifffile's own shaped metadata. Outputs
are float32. Large stacks can be written as OME-Zarr (:mod:`.ome_zarr`).

Every writer here creates the file first and then fills it plane by plane through a
:class:`.planes.Planes` view, so a stack is never held in memory whole and several processes
(Dask workers) can fill different planes of one file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import tifffile

from .metadata import UNIT_IN_UM, ImageMetadata, kernel_metadata, output_metadata, stack_axes_of
from .ome_zarr import create_ome_zarr, open_ome_zarr
from .planes import Planes

__all__ = ["create_image", "open_image", "output_paths", "write_image", "write_json", "write_picture", "write_result"]

_IMAGEJ_ORDER = "TZCYXS"
_OME_LETTERS = set("TZCYXSAPRHEQ")


def _imagej_ok(meta: ImageMetadata) -> bool:
    axes = meta.axes
    order = [_IMAGEJ_ORDER.find(a) for a in axes]
    # ImageJ has no float RGB: colour results go to OME-TIFF.
    return meta.source == "imagej-tiff" and -1 not in order and order == sorted(order) and "S" not in axes


def _tiff_options(meta: ImageMetadata, kind: str) -> dict[str, Any]:
    """tifffile.imwrite keyword arguments for ``kind`` in ("imagej", "ome", "shaped")."""
    rgb = dict(zip(meta.axes, meta.shape, strict=True)).get("S") == 3 and meta.axes.endswith("S")
    options: dict[str, Any] = {"photometric": "rgb" if rgb else "minisblack"}
    if kind == "imagej":
        metadata: dict[str, Any] = {"axes": meta.axes}
        if meta.z_spacing is not None:
            metadata["spacing"] = meta.z_spacing
        if meta.time_interval is not None:
            metadata["finterval"] = meta.time_interval
        if meta.unit is not None:
            metadata["unit"] = "micron" if meta.unit == "µm" else meta.unit
        options.update(imagej=True, metadata=metadata)
        if meta.pixel_size is not None:
            options["resolution"] = (1.0 / meta.pixel_size[1], 1.0 / meta.pixel_size[0])
        return options
    metadata = {"axes": meta.axes}
    # Metric units also go into the resolution tags (pixels per cm), which every reader knows.
    if meta.pixel_size is not None and meta.unit in UNIT_IN_UM:
        um = UNIT_IN_UM[meta.unit]
        options["resolution"] = (1e4 / (meta.pixel_size[1] * um), 1e4 / (meta.pixel_size[0] * um))
        options["resolutionunit"] = "CENTIMETER"
    if kind == "ome":
        if meta.pixel_size is not None and meta.unit is not None:
            metadata.update(
                PhysicalSizeY=meta.pixel_size[0], PhysicalSizeYUnit=meta.unit,
                PhysicalSizeX=meta.pixel_size[1], PhysicalSizeXUnit=meta.unit,
            )  # fmt: skip
            if meta.z_spacing is not None and "Z" in meta.axes:
                metadata.update(PhysicalSizeZ=meta.z_spacing, PhysicalSizeZUnit=meta.unit)
        if meta.time_interval is not None and "T" in meta.axes:
            metadata.update(TimeIncrement=meta.time_interval, TimeIncrementUnit="s")
        options["ome"] = True
    else:
        options["ome"] = False
        metadata.update(
            {k: v for k, v in meta.to_dict().items() if k in ("pixel_size", "z_spacing", "unit", "time_interval")}
        )
    options["metadata"] = metadata
    return options


def _tiff_kinds(meta: ImageMetadata) -> list[str]:
    kinds = ["imagej"] if _imagej_ok(meta) else []
    if set(meta.axes) <= _OME_LETTERS and meta.axes.endswith(("YX", "YXS")):
        kinds.append("ome")
    return [*kinds, "shaped"]


def create_image(path: str | Path, meta: ImageMetadata) -> Planes:
    """Create an empty float32 image file described by ``meta`` and return a writable view.

    Parameters
    ----------
    path : str or Path
        ``.tif``/``.tiff`` (a memory-mapped, uncompressed TIFF) or ``.zarr`` (OME-Zarr).
    meta : ImageMetadata
        Axes and shape of the array to write (Y, X, optional S last for TIFF), pixel sizes.

    Returns
    -------
    Planes
        ``(P, H, W[, 3])`` view; assigning ``view[i] = plane`` writes plane ``i`` to disk.
    """
    path = Path(path)
    if path.suffix.lower() == ".zarr":
        return create_ome_zarr(path, meta)
    errors = []
    for kind in _tiff_kinds(meta):
        try:
            data = tifffile.memmap(path, shape=meta.shape, dtype=np.float32, **_tiff_options(meta, kind))
        except Exception as err:  # tifffile raises ValueError or OmeXmlError for a bad layout
            errors.append(f"{kind}: {err}")
            continue
        return Planes(data, meta.axes)
    raise ValueError(f"cannot write {path} with axes {meta.axes!r}: " + "; ".join(errors))


def open_image(path: str | Path, meta: ImageMetadata) -> Planes:
    """Reopen a file made by :func:`create_image` for writing (from another process)."""
    path = Path(path)
    if path.suffix.lower() == ".zarr":
        return open_ome_zarr(path, meta)
    # ImageJ and OME readers drop axes of size 1; the stored bytes are the same.
    data = tifffile.memmap(path, mode="r+").reshape(meta.shape)
    return Planes(data, meta.axes)


def write_image(path: str | Path, data: Any, meta: ImageMetadata) -> None:
    """Write ``data`` (axes and shape as in ``meta``) as float32 with ``meta``'s pixel sizes."""
    if tuple(data.shape) != tuple(meta.shape):
        raise ValueError(f"data shape {tuple(data.shape)} does not match the metadata's {meta.shape}")
    source = Planes(data, meta.axes)
    target = create_image(path, meta)
    for i in range(len(source)):
        target[i] = source[i].astype(np.float32)
    target.flush()


def write_json(path: str | Path, report: dict[str, Any]) -> None:
    """Write a run report as JSON (NumPy scalars and arrays converted)."""

    def default(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, Path):
            return str(value)
        return repr(value)

    text = json.dumps(report, indent=2, default=default, allow_nan=True)
    tmp = Path(f"{path}.partial")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_result(
    output_dir: str | Path,
    stem: str,
    image: np.ndarray,
    kernel: np.ndarray,
    meta: ImageMetadata,
    report: dict[str, Any] | None = None,
    *,
    ome_zarr: bool = False,
) -> dict[str, Path]:
    """Write one result: ``<stem>_deblurred.tif`` (or ``.ome.zarr``), ``<stem>_kernel.tif``, ``<stem>.json``.

    Parameters
    ----------
    output_dir : str or Path
        Created if missing.
    stem : str
        File name stem.
    image : ndarray, axes and shape as ``meta``
        The deblurred image (any float dtype; written as float32).
    kernel : ndarray, shape (kh, kw) or (..., kh, kw)
        One kernel, or one per plane with the image's stack axes in front.
    meta : ImageMetadata
        Axes, shape and pixel size of ``image`` (from :func:`read_image_with_metadata`, or
        :func:`output_metadata` of it).
    report : dict, optional
        Written as the JSON file (the output paths are added).
    ome_zarr : bool
        Write the image as OME-Zarr instead of TIFF.

    Returns
    -------
    dict
        ``{"image": path, "kernel": path, "report": path}``.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = output_paths(output_dir, stem, ome_zarr=ome_zarr)
    write_image(paths["image"], image, output_metadata(meta, meta.axes, image.shape))
    kernel = np.asarray(kernel, dtype=np.float32)
    axes = stack_axes_of(meta) if kernel.ndim > 2 else ""
    kmeta = kernel_metadata(meta, axes, kernel.shape[:-2], kernel.shape[-2:])
    write_image(paths["kernel"], kernel, kmeta)
    write_json(paths["report"], {**(report or {}), "outputs": {k: str(v) for k, v in paths.items()}})
    return paths


def output_paths(output_dir: str | Path, stem: str, *, ome_zarr: bool = False) -> dict[str, Path]:
    """Where the results of input ``stem`` go in ``output_dir``."""
    output_dir = Path(output_dir)
    image = output_dir / (f"{stem}_deblurred.ome.zarr" if ome_zarr else f"{stem}_deblurred.tif")
    return {"image": image, "kernel": output_dir / f"{stem}_kernel.tif", "report": output_dir / f"{stem}.json"}


def write_picture(path: str | Path, picture: np.ndarray) -> None:
    """Write a uint8 picture for viewing, ``(H, W)`` or ``(H, W, 3)``, as PNG or JPEG (by suffix)."""
    picture = np.asarray(picture)
    if picture.dtype != np.uint8:
        raise TypeError(f"a picture for viewing must be uint8, got {picture.dtype}; stretch it to 0-255 first")
    iio.imwrite(path, picture)
