"""Layer adapters: what the engine needs from a napari Image layer, and layer arguments for
its results.

Nothing here imports napari or Qt: the functions take the layer's public attributes (duck
typing), so they are tested without a viewer and the widget stays a thin shell around them.
Data is never loaded whole: a plane is read with ``np.asarray(data[index])`` only when the
engine asks for it, so Dask- and Zarr-backed layers stay lazy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.stack_plan import plane_problem

__all__ = [
    "KERNEL_DISPLAY_SHARE",
    "LayerSource",
    "PhysicalPixel",
    "PlaneStack",
    "deblurred_layer_kwargs",
    "describe_layer",
    "kernel_display",
    "kernel_layer_kwargs",
    "physical_pixel",
    "pixels_for_extent",
    "preview_layer_kwargs",
    "shapes_region",
    "suggested_kernel_size",
]


@dataclass(frozen=True)
class LayerSource:
    """What the widget needs to know about an Image layer, without reading its pixels.

    Attributes
    ----------
    name : str
        The layer's name (results are called ``"<name> deblurred"`` and ``"<name> kernel"``).
    data : array-like
        The full-resolution data (level 0 of a multiscale layer); numpy, dask or zarr.
    rgb : bool
        True when the last axis holds colour channels.
    channels : int
        Size of the colour axis (3 or 4) for RGB(A) layers, 0 for grey ones.
    scale, translate : tuple of float
        One entry per non-colour axis, as napari stores them.
    axis_labels, units : tuple of str or None
        One entry per non-colour axis (None when the napari version has no such attribute);
        ``units`` as napari names them (``"micrometer"``, ``"pixel"``).
    unit_symbols : tuple of str or None
        The same units as short symbols for labels (``"µm"``, ``"pixel"``).
    contrast_limits : tuple of float
        The input's display range, given to the result so both look alike.
    colormap : str or None
        The input's colormap name (grey layers only).
    multiscale : bool
        True when the layer is multiscale (``data`` is then its level 0).
    """

    name: str
    data: Any
    rgb: bool
    channels: int
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    axis_labels: tuple[str, ...] | None
    units: tuple[str, ...] | None
    unit_symbols: tuple[str, ...] | None
    contrast_limits: tuple[float, float]
    colormap: str | None
    multiscale: bool

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def spatial_shape(self) -> tuple[int, int]:
        """``(H, W)`` of one plane."""
        dims = self.shape[:-1] if self.rgb else self.shape
        return dims[-2], dims[-1]

    @property
    def leading_shape(self) -> tuple[int, ...]:
        """The non-spatial, non-colour axes (``()`` for a single 2-D image)."""
        dims = self.shape[:-1] if self.rgb else self.shape
        return dims[:-2]

    @property
    def is_stack(self) -> bool:
        """True when the layer has more than two non-colour axes."""
        return len(self.leading_shape) > 0

    @property
    def planes(self) -> int:
        return math.prod(self.leading_shape)


def describe_layer(layer: Any) -> LayerSource:
    """Collect the public attributes of an Image ``layer`` that the widget uses.

    Parameters
    ----------
    layer : napari.layers.Image
        Any object with napari's Image layer attributes (``data``, ``rgb``, ``multiscale``,
        ``scale``, ``translate``, ``contrast_limits``...).

    Returns
    -------
    LayerSource
        Level 0 of a multiscale layer, the data itself otherwise; nothing is read.
    """
    multiscale = bool(getattr(layer, "multiscale", False))
    data = layer.data[0] if multiscale else layer.data
    rgb = bool(getattr(layer, "rgb", False))
    colormap = None if rgb else getattr(getattr(layer, "colormap", None), "name", None)
    labels = getattr(layer, "axis_labels", None)
    units = getattr(layer, "units", None)
    return LayerSource(
        name=str(layer.name),
        data=data,
        rgb=rgb,
        channels=int(data.shape[-1]) if rgb else 0,
        scale=tuple(float(s) for s in layer.scale),
        translate=tuple(float(t) for t in layer.translate),
        axis_labels=None if labels is None else tuple(str(a) for a in labels),
        units=None if units is None else tuple(str(u) for u in units),
        unit_symbols=None if units is None else tuple(_symbol(u) for u in units),
        contrast_limits=tuple(float(c) for c in layer.contrast_limits),
        colormap=colormap,
        multiscale=multiscale,
    )


def _symbol(unit: Any) -> str:
    """A unit's short symbol (pint's ``~P`` format: ``micrometer`` -> ``µm``), else its name."""
    try:
        return format(unit, "~P") or str(unit)
    except (TypeError, ValueError):  # a plain string, or an object without pint's formats
        return str(unit)


@dataclass(frozen=True)
class PhysicalPixel:
    """The size of one pixel of a layer in its world units, for sizes given in those units.

    ``size`` is the smaller of the Y and X pixel sizes (a square kernel of ``n`` pixels then
    spans at least ``n * size`` in both directions); ``unit`` is the unit's symbol, or
    ``"scale units"`` when the layer has a scale but names no unit.
    """

    size: float
    unit: str


def physical_pixel(source: LayerSource) -> PhysicalPixel | None:
    """The pixel size of ``source``'s Y and X axes, or None when the layer is in plain pixels.

    A layer is in physical units when its last two axes have a scale other than 1 or a unit
    other than napari's default ``"pixel"``.
    """
    sy, sx = source.scale[-2:]
    symbols = source.unit_symbols[-2:] if source.unit_symbols else ("pixel", "pixel")
    named = [u for u in symbols if u not in ("pixel", "px", "")]
    if not named and sy == 1 and sx == 1:
        return None
    if not (sy > 0 and sx > 0):
        return None
    unit = named[-1] if named and len(set(named)) == 1 else "scale units"
    return PhysicalPixel(size=float(min(sy, sx)), unit=unit)


def pixels_for_extent(extent: float, pixel: PhysicalPixel) -> int:
    """The odd kernel size in pixels (at least 3) that spans ``extent`` world units.

    The extent is divided by the pixel size and rounded up to the next odd number, so the
    kernel holds the whole extent (a hair of float error is not rounded up).
    """
    if not extent > 0:
        raise ValueError(f"a kernel size in {pixel.unit} must be positive, got {extent!r}")
    pixels = max(3, math.ceil(extent / pixel.size - 1e-6))
    return pixels if pixels % 2 else pixels + 1


def suggested_kernel_size(layer: Any) -> int | None:
    """The odd kernel size a layer's ``metadata["suggested_kernel_size"]`` holds (the bundled
    sample has one), or None when it has none or not an odd int of at least 3."""
    value = (getattr(layer, "metadata", None) or {}).get("suggested_kernel_size")
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 3 and value % 2:
        return int(value)
    return None


def shapes_region(shapes: Any, image: Any, spatial_shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The rectangle of ``image``'s pixels under the first shape of a Shapes layer.

    Parameters
    ----------
    shapes : napari.layers.Shapes
        Any object with the Shapes layer's ``name``, ``data`` (a list of ``(N, D)`` vertex
        arrays) and ``data_to_world``.
    image : napari.layers.Image
        Any object with ``world_to_data``: the layer the region is for.
    spatial_shape : (int, int)
        ``(H, W)`` of one plane of ``image`` (level 0 of a multiscale layer).

    Returns
    -------
    (top, left, height, width) : tuple of int
        The axis-aligned bounding box of the first shape in ``image``'s data coordinates (Y and
        X only: the same rectangle serves every plane of a stack), each edge rounded to the
        nearest pixel boundary and the box clipped to the image.

    Raises
    ------
    ValueError
        If the layer holds no shape, or the shape lies outside the image.

    Notes
    -----
    Each vertex goes from ``shapes``' data coordinates to world coordinates and from there to
    ``image``'s data coordinates, so both layers' scale, translate (and any other transform
    napari composes) are honoured. Pixel ``i`` covers data coordinates ``i - 0.5`` to
    ``i + 0.5``, so an edge at ``e`` rounds to the boundary before pixel ``floor(e + 0.5)``.
    """
    if len(shapes.data) == 0:
        raise ValueError(
            f"Shapes layer {shapes.name!r} holds no shape: draw a rectangle over the part of the image "
            "to estimate the kernel on, or choose region 'auto' or 'full frame'"
        )
    vertices = np.asarray(shapes.data[0], dtype=float)
    # world_to_data takes the trailing axes of a longer position and pads a shorter one, so
    # only Y and X of the world position are handed over: a rectangle drawn on any plane of a
    # stack (or in a 2-D Shapes layer over a 3-D image) maps the same way.
    corners = np.array([image.world_to_data(np.asarray(shapes.data_to_world(v))[-2:])[-2:] for v in vertices])
    h, w = spatial_shape
    first = np.floor(corners.min(axis=0) + 0.5).astype(int)
    last = np.floor(corners.max(axis=0) + 0.5).astype(int)
    top, left = max(int(first[0]), 0), max(int(first[1]), 0)
    bottom, right = min(int(last[0]), h), min(int(last[1]), w)
    if bottom <= top or right <= left:
        raise ValueError(
            f"the first shape of Shapes layer {shapes.name!r} does not overlap the {h}x{w} image "
            "(after converting its coordinates through the layers' scale and translate); draw it over the image"
        )
    return top, left, bottom - top, right - left


class PlaneStack:
    """The planes of a layer as a lazy ``(P, H, W)`` or ``(P, H, W, 3)`` array-like.

    :func:`napari_selfmsnet.deblur_stack` reads planes one at a time with
    ``np.asarray(stack[i])``; this maps ``i`` onto the layer's leading axes (a 4-D
    ``(T, Z, Y, X)`` layer gives ``T * Z`` planes, T-major), so no reshape of the (possibly
    lazy) data is needed. Each plane read is also checked: an RGBA plane loses its alpha
    channel, and (with ``check_values``) a plane whose values the engine would refuse (NaN or
    infinity, a constant plane, values a float32 result cannot hold: the engine's own
    :func:`~napari_selfmsnet.engine.stack_plan.plane_problem`) raises a ``ValueError`` naming
    the plane, before the engine sees it. Dtypes are the engine's to check
    (:func:`~napari_selfmsnet.engine.inputs.check_image` takes every integer and float dtype).

    Parameters
    ----------
    source : LayerSource
        The layer to read.
    indices : sequence of tuple of int, optional
        The leading-axis indices of the planes to expose, in order; by default all of them.
    check_values : bool
        Refuse planes whose values the engine cannot deblur. The stack modes leave that to the
        engine, which passes such a plane through unchanged, names it in a warning and deblurs
        the others.
    """

    def __init__(
        self, source: LayerSource, indices: list[tuple[int, ...]] | None = None, *, check_values: bool = True
    ) -> None:
        self.source = source
        self.check_values = check_values
        if indices is None:
            indices = [tuple(int(i) for i in ix) for ix in np.ndindex(*source.leading_shape)]
        if not indices:
            raise ValueError(f"layer {source.name!r} has no planes (shape {source.shape})")
        self.indices = list(indices)
        plane = source.spatial_shape + ((3,) if source.rgb else ())
        self.shape = (len(self.indices), *plane)
        self.ndim = len(self.shape)
        self.dtype = source.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"PlaneStack is read one plane at a time with an int index, got {index!r}")
        position = self.indices[int(index)]
        plane = np.asarray(self.source.data[position])
        if self.source.rgb:
            plane = plane[..., :3]
        if self.check_values:
            problem = plane_problem(plane)
            if problem is not None:
                where = f"plane {position} of " if position else ""
                raise ValueError(f"{where}layer {self.source.name!r}: {problem}")
        return plane


def _spatial(values: tuple[Any, ...] | None, keep_leading: bool) -> tuple[Any, ...] | None:
    if values is None:
        return None
    return tuple(values) if keep_leading else tuple(values[-2:])


def _display_kwargs(source: LayerSource, keep_leading: bool) -> dict[str, Any]:
    """Scale, translate, axis labels and units of the result (all axes, or the last two)."""
    kwargs: dict[str, Any] = {
        "scale": _spatial(source.scale, keep_leading),
        "translate": _spatial(source.translate, keep_leading),
    }
    if source.axis_labels is not None:
        kwargs["axis_labels"] = _spatial(source.axis_labels, keep_leading)
    if source.units is not None:
        kwargs["units"] = _spatial(source.units, keep_leading)
    return kwargs


def deblurred_layer_kwargs(source: LayerSource, metadata: dict[str, Any], *, stack: bool) -> dict[str, Any]:
    """Keyword arguments of ``viewer.add_image`` for the deblurred image.

    Parameters
    ----------
    source : LayerSource
        The input layer.
    metadata : dict
        The run's parameters, device, time and final loss.
    stack : bool
        True when the result has the input's leading axes (all planes); False for one plane
        (the result then carries the scale and translate of the last two axes only).
    """
    kwargs = _display_kwargs(source, keep_leading=stack)
    kwargs.update(
        name=f"{source.name} deblurred",
        rgb=source.rgb,
        contrast_limits=source.contrast_limits,
        metadata=metadata,
    )
    if source.colormap is not None:
        kwargs["colormap"] = source.colormap
    return kwargs


#: The kernel layer is drawn beside the image, enlarged (by a whole factor) until its height is
#: about this share of the image's: a kernel shown at the image's pixel size is a speck.
KERNEL_DISPLAY_SHARE = 1 / 3


def kernel_display(
    image_shape: tuple[int, int],
    kernel_shape: tuple[int, ...],
    scale: tuple[float, ...] = (1.0, 1.0),
    translate: tuple[float, ...] = (0.0, 0.0),
) -> tuple[int, tuple[float, float], tuple[float, float]]:
    """Where a kernel's layer goes beside its image: ``(zoom, scale, translate)`` of its last two axes.

    ``image_shape`` is ``(H, W)`` of the image, ``scale`` and ``translate`` its layer's (the
    last two entries count). The kernel is enlarged by the whole factor ``zoom`` that makes
    its height closest to :data:`KERNEL_DISPLAY_SHARE` of the image's (never shrunk), drawn
    with the image's pixel size times ``zoom``, its top edge level with the image's and its
    left edge a small gap (3 % of the image's width) right of the image's right edge, in
    world coordinates.
    """
    h, w = image_shape
    kh = int(kernel_shape[-2])
    sy, sx = (float(v) for v in scale[-2:])
    ty, tx = (float(v) for v in translate[-2:])
    zoom = max(1, round(KERNEL_DISPLAY_SHARE * h / kh))
    # napari puts pixel i's centre at translate + i * scale: edges are half a pixel out.
    top = ty - sy / 2 + zoom * sy / 2
    left = tx + (w - 0.5) * sx + 0.03 * w * sx + zoom * sx / 2
    return zoom, (sy * zoom, sx * zoom), (top, left)


def kernel_layer_kwargs(
    source: LayerSource, kernel: np.ndarray, metadata: dict[str, Any], *, stack: bool
) -> dict[str, Any]:
    """Keyword arguments of ``viewer.add_image`` for the kernel (or the stack of kernels).

    The kernel is placed beside the image, enlarged to a readable size
    (:func:`kernel_display`); its metadata keeps what one pixel of it really is:
    ``kernel_pixel_size`` (the image's pixel size, Y and X), ``kernel_units`` and
    ``kernel_display_zoom``. A per-plane stack of kernels keeps the leading axes' scale and
    translate, so it follows the same sliders as the image.
    """
    kwargs = _display_kwargs(source, keep_leading=stack)
    zoom, scale, translate = kernel_display(source.spatial_shape, kernel.shape, source.scale, source.translate)
    kwargs["scale"] = tuple(kwargs["scale"][:-2]) + scale
    kwargs["translate"] = tuple(kwargs["translate"][:-2]) + translate
    peak = float(np.max(kernel)) if kernel.size else 1.0
    kwargs.update(
        name=f"{source.name} kernel",
        colormap="inferno",
        contrast_limits=(0.0, peak if peak > 0 else 1.0),
        interpolation2d="nearest",
        metadata={
            **metadata,
            "kernel_pixel_size": list(source.scale[-2:]),
            "kernel_units": None if source.units is None else list(source.units[-2:]),
            "kernel_display_zoom": zoom,
        },
    )
    return kwargs


def preview_layer_kwargs(source: LayerSource, region: list[int] | None = None) -> dict[str, Any]:
    """Keyword arguments of ``viewer.add_image`` for the live preview of the current plane.

    ``region`` is ``Progress.region``: ``[top, left, height, width]`` when the preview covers
    only that part of the plane (None: the whole plane). The preview is then moved by the
    region's offset, in the image's world units, so it lies over the pixels it shows.
    """
    kwargs = _display_kwargs(source, keep_leading=False)
    if region is not None:
        offset = np.asarray(region[:2], dtype=float) * np.asarray(kwargs["scale"], dtype=float)
        kwargs["translate"] = tuple(float(t) for t in np.asarray(kwargs["translate"], dtype=float) + offset)
    kwargs.update(name=f"{source.name} preview", rgb=source.rgb, contrast_limits=source.contrast_limits)
    if source.colormap is not None:
        kwargs["colormap"] = source.colormap
    return kwargs
