"""Files in and out: microscopy images with their axes and pixel sizes, and a run's results.

Reading (:func:`read_image_with_metadata`, :class:`Planes`) lives in
:mod:`napari_selfmsnet.core.io` and is re-exported here. Writing keeps the metadata the input
had: an ImageJ hyperstack stays ImageJ (``spacing``, ``unit``, resolution), anything else
becomes OME-TIFF (``PhysicalSizeX/Y/Z`` and resolution tags), and axes that OME cannot
describe fall back to tifffile's own shaped metadata. Outputs are float32. Large stacks can be
written as OME-Zarr (NGFF 0.4), which needs the ``zarr`` package.

Every writer here creates the file first and then fills it plane by plane through a
:class:`Planes` view, so a stack is never held in memory whole and several processes (Dask
workers) can fill different planes of one file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .core.io import (
    IMAGE_SUFFIXES,
    TIFF_SUFFIXES,
    UNIT_IN_UM,
    ImageMetadata,
    Planes,
    normalise_axes,
    output_metadata,
    read_image,
    read_image_with_metadata,
    read_metadata,
)

__all__ = [
    "ImageMetadata",
    "Planes",
    "read_image",
    "read_image_with_metadata",
    "read_metadata",
    "normalise_axes",
    "output_metadata",
    "create_image",
    "open_image",
    "write_image",
    "write_result",
    "write_json",
    "require_zarr",
    "output_paths",
    "kernel_metadata",
    "plane_count",
    "IMAGE_SUFFIXES",
    "TIFF_SUFFIXES",
]

_IMAGEJ_ORDER = "TZCYXS"
_OME_LETTERS = set("TZCYXSAPRHEQ")
_NGFF_UNITS = {
    "nm": "nanometer",
    "µm": "micrometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
    "in": "inch",
}


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
        return _create_ome_zarr(path, meta)
    import tifffile

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
        zarr = require_zarr()
        data = zarr.open_array(str(path / "0"), mode="r+")
        return Planes(data, _zarr_axes(meta)[0], stack_axes=_stack_axes(meta))
    import tifffile

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
    _flush(target)


def _flush(planes: Planes) -> None:
    flush = getattr(planes.data, "flush", None)
    if flush is not None:
        flush()


def _stack_axes(meta: ImageMetadata) -> str:
    sizes = dict(zip(meta.axes, meta.shape, strict=True))
    plane = "YXS" if sizes.get("S") == 3 else "YX"
    return "".join(a for a in meta.axes if a not in plane)


def require_zarr():
    """The zarr module, or an ImportError that says how to install it."""
    try:
        import zarr
    except ImportError as err:
        raise ImportError(
            "writing OME-Zarr needs the zarr package: pip install 'napari-selfmsnet[ome-zarr]' (or pip install zarr)"
        ) from err
    return zarr


def _zarr_axes(meta: ImageMetadata) -> tuple[str, list[dict[str, str]]]:
    """Axes of the OME-Zarr array in NGFF order (t, c, z, y, x; RGB samples as c)."""
    letters = set(meta.axes)
    unsupported = letters - set("TCZYXS")
    if unsupported or {"C", "S"} <= letters:
        raise ValueError(
            f"OME-Zarr (NGFF 0.4) holds axes T, C, Z, Y, X only (RGB samples count as C); "
            f"this image has axes {meta.axes!r}: write TIFF instead (leave out --ome-zarr)"
        )
    order = "".join(a for a in "TCSZYX" if a in letters)
    unit = _NGFF_UNITS.get(meta.unit) if meta.unit else None
    described = []
    for a in order:
        if a == "T":
            described.append({"name": "t", "type": "time", **({"unit": "second"} if meta.time_interval else {})})
        elif a in "CS":
            described.append({"name": "c", "type": "channel"})
        else:
            described.append({"name": a.lower(), "type": "space", **({"unit": unit} if unit else {})})
    return order, described


def _create_ome_zarr(path: Path, meta: ImageMetadata) -> Planes:
    zarr = require_zarr()
    order, described = _zarr_axes(meta)
    sizes = dict(zip(meta.axes, meta.shape, strict=True))
    shape = tuple(sizes[a] for a in order)
    scale = {a: 1.0 for a in order}
    if meta.pixel_size is not None:
        scale["Y"], scale["X"] = meta.pixel_size
    if meta.z_spacing is not None and "Z" in scale:
        scale["Z"] = meta.z_spacing
    if meta.time_interval is not None and "T" in scale:
        scale["T"] = meta.time_interval
    try:  # NGFF 0.4 is Zarr format 2; zarr 3 writes format 3 unless told
        group = zarr.open_group(str(path), mode="w", zarr_format=2)
    except TypeError:  # zarr 2 knows only format 2 (and no zarr_format argument)
        group = zarr.open_group(str(path), mode="w")
    # One chunk per plane, so workers writing different planes never share a chunk.
    chunks = tuple(sizes[a] if a in "YXS" else 1 for a in order)
    create = getattr(group, "create_array", None) or group.create_dataset
    data = create("0", shape=shape, chunks=chunks, dtype="float32", fill_value=0.0)
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": Path(meta.path).stem if meta.path else path.stem,
            "axes": described,
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [scale[a] for a in order]}]}
            ],
        }
    ]
    return Planes(data, order, stack_axes=_stack_axes(meta))


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


def kernel_metadata(
    meta: ImageMetadata, stack_axes: str, stack_shape: Sequence[int], kernel_shape: Sequence[int]
) -> ImageMetadata:
    """Metadata of a kernel file: the image's stack axes (per-plane kernels) and pixel size."""
    return output_metadata(meta, stack_axes + "YX", (*stack_shape, *kernel_shape))


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
    stack_axes = _stack_axes(meta) if kernel.ndim > 2 else ""
    kmeta = kernel_metadata(meta, stack_axes, kernel.shape[:-2], kernel.shape[-2:])
    write_image(paths["kernel"], kernel, kmeta)
    write_json(paths["report"], {**(report or {}), "outputs": {k: str(v) for k, v in paths.items()}})
    return paths


def output_paths(output_dir: str | Path, stem: str, *, ome_zarr: bool = False) -> dict[str, Path]:
    """Where the results of input ``stem`` go in ``output_dir``."""
    output_dir = Path(output_dir)
    image = output_dir / (f"{stem}_deblurred.ome.zarr" if ome_zarr else f"{stem}_deblurred.tif")
    return {"image": image, "kernel": output_dir / f"{stem}_kernel.tif", "report": output_dir / f"{stem}.json"}


def plane_count(meta: ImageMetadata) -> int:
    """How many planes the stack axes of ``meta`` hold."""
    sizes = dict(zip(meta.axes, meta.shape, strict=True))
    return math.prod(sizes[a] for a in _stack_axes(meta))
