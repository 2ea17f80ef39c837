"""Writing OME-Zarr (NGFF 0.4) images, which needs the optional ``zarr`` package."""

from __future__ import annotations

from pathlib import Path

from .metadata import ImageMetadata, stack_axes_of
from .planes import Planes

__all__ = ["create_ome_zarr", "open_ome_zarr", "require_zarr"]

_NGFF_UNITS = {
    "nm": "nanometer",
    "µm": "micrometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
    "in": "inch",
}


def require_zarr():
    """The zarr module, or an ImportError that says how to install it."""
    # Imported here, not at the top: zarr is an optional dependency.
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


def create_ome_zarr(path: Path, meta: ImageMetadata) -> Planes:
    """Create an empty float32 OME-Zarr image described by ``meta``; a writable plane view."""
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
    return Planes(data, order, stack_axes=stack_axes_of(meta))


def open_ome_zarr(path: Path, meta: ImageMetadata) -> Planes:
    """Reopen an image made by :func:`create_ome_zarr` for writing (from another process)."""
    zarr = require_zarr()
    data = zarr.open_array(str(path / "0"), mode="r+")
    return Planes(data, _zarr_axes(meta)[0], stack_axes=stack_axes_of(meta))
