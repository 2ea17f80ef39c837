"""Regions of a frame: where to estimate the blur kernel of a large image.

The blind optimizer's time and memory grow with the number of pixels, but the kernel is one
small array shared by the whole frame (the blur is assumed uniform). A window that holds enough
strong edges pins the kernel down as well as the whole frame does; the sharp image of the whole
frame then comes from a fast non-blind deconvolution with that kernel
(:func:`napari_selfmsnet.engine.nonblind.deconvolve`).

Why edges: a blurred edge shows the kernel's profile across it, and only across it. Flat areas
and fine texture say little about the kernel, noise says nothing; strong edges that are well
separated (each blurred edge seen without its neighbours' blur on top) and run in several
directions constrain every direction of the kernel. :func:`auto_region` therefore looks for the
window with the most energy in the strongest gradients, which is the same score
:func:`napari_selfmsnet.engine.stack.select_reference_plane` uses to pick a plane of a stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "AUTO_REGION_SIZE",
    "AUTO_REGION_THRESHOLD",
    "Region",
    "auto_region",
    "check_region",
    "edge_energy_map",
    "resolve_region",
]

# The blind optimizer's cost scales with the pixel count; a 256 to 512 px window holds enough
# strong edges for kernels up to about 75 px (the window must be at least twice the kernel
# anyway), so larger frames estimate the kernel on a 384 px window and only frames with both
# sides up to 512 px are used whole.
#: Side of the window :func:`auto_region` is asked for on a large frame.
AUTO_REGION_SIZE = 384
#: A frame with both sides at most this many pixels is used whole for the kernel estimate.
AUTO_REGION_THRESHOLD = 512

# Share of pixels whose gradient counts as a strong edge (the top 10 %).
_EDGE_PERCENTILE = 90.0


@dataclass(frozen=True)
class Region:
    """A rectangle of a frame, in pixels: rows ``top .. top + height - 1``, columns likewise.

    Attributes
    ----------
    top, left : int
        The first row and column (0-based).
    height, width : int
        The size in rows and columns.
    """

    top: int
    left: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, columns)`` to index a ``(H, W)`` or ``(H, W, 3)`` array with."""
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)

    def to_list(self) -> list[int]:
        """``[top, left, height, width]`` (for JSON parameters and the command line)."""
        return [self.top, self.left, self.height, self.width]


def check_region(
    region: Region | Sequence[int], image_shape: tuple[int, ...], kernel_shape: int | tuple[int, int]
) -> Region:
    """Validate a region of an image for a kernel estimate.

    Parameters
    ----------
    region : Region or sequence of 4 ints
        ``(top, left, height, width)`` in pixels.
    image_shape : tuple of int, (H, W) or (H, W, 3)
        The shape of the image the region is taken from; only ``(H, W)`` is used.
    kernel_shape : int or (int, int)
        ``(kh, kw)`` of the kernel to estimate on the region (an int for a square one).

    Returns
    -------
    Region

    Raises
    ------
    TypeError
        If ``region`` is not a Region or a sequence, or an entry is not an int.
    ValueError
        If it does not have 4 entries, does not lie inside the image, or is smaller than
        twice the kernel in a direction (the rule :func:`~.validation.check_kernel_size`
        applies to a whole image).
    """
    if isinstance(region, Region):
        values = astuple(region)
    elif isinstance(region, Sequence) and not isinstance(region, (str, bytes)):
        values = tuple(region)
        if len(values) != 4:
            raise ValueError(f"region must have 4 entries (top, left, height, width), got {len(values)}: {region!r}")
    else:
        raise TypeError(f"region must be a Region or a sequence (top, left, height, width) of ints, got {region!r}")
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise TypeError(f"region entries (top, left, height, width) must be ints, got {values!r}")
    top, left, height, width = (int(v) for v in values)
    h, w = (int(s) for s in image_shape[:2])
    if height < 1 or width < 1:
        raise ValueError(f"region height and width must be positive, got {height}x{width}")
    if top < 0 or left < 0 or top + height > h or left + width > w:
        raise ValueError(
            f"region (top={top}, left={left}, height={height}, width={width}) does not lie inside the "
            f"{h}x{w} image: it needs top >= 0, left >= 0, top + height <= {h} and left + width <= {w}"
        )
    kh, kw = _pair(kernel_shape)
    if kh * 2 > height or kw * 2 > width:
        raise ValueError(
            f"region {height}x{width} is too small for a {kh}x{kw} kernel: the region must be at least "
            "twice the kernel size in each direction; use a larger region or a smaller kernel_size"
        )
    return Region(top, left, height, width)


def edge_energy_map(image: np.ndarray) -> np.ndarray:
    """Per-pixel energy of the strongest edges of an image.

    Parameters
    ----------
    image : array-like, shape (H, W) or (H, W, 3)
        Any real dtype; RGB is averaged to grey. H and W at least 2.

    Returns
    -------
    ndarray of float64, shape (H, W)
        The squared gradient magnitude where the magnitude is in the top 10 % of the image
        (at or above its 90th percentile), 0 elsewhere.

    Notes
    -----
    The image is first smoothed with a Gaussian of sigma 1 pixel, so that Poisson or read
    noise (strong but unstructured pixel-to-pixel differences) does not outrank real
    structure. The energy is not normalised by brightness: a bright, sharp area wins over a
    dim one.
    """
    grey = np.asarray(image, dtype=np.float64)
    if not (grey.ndim == 2 or (grey.ndim == 3 and grey.shape[-1] == 3)):
        raise ValueError(f"image must have shape (H, W) or (H, W, 3), got {grey.shape}")
    if min(grey.shape[:2]) < 2:
        raise ValueError(f"image must be at least 2x2 pixels to have a gradient, got {grey.shape[:2]}")
    if grey.ndim == 3:
        grey = grey.mean(axis=-1)
    smooth = ndimage.gaussian_filter(grey, sigma=1.0)
    gy, gx = np.gradient(smooth)
    magnitude = np.hypot(gx, gy)
    threshold = np.percentile(magnitude, _EDGE_PERCENTILE)
    return np.where(magnitude >= threshold, magnitude**2, 0.0)


def auto_region(image: np.ndarray, size: int, kernel_shape: int | tuple[int, int]) -> Region:
    """The window of an image with the most strong-edge energy: where to estimate a kernel.

    Parameters
    ----------
    image : array-like, shape (H, W) or (H, W, 3)
        The blurred frame.
    size : int
        Side of the window; an axis shorter than ``size`` is taken whole (the window is then
        not square). :data:`AUTO_REGION_SIZE` is the project's default.
    kernel_shape : int or (int, int)
        ``(kh, kw)`` of the kernel to estimate (an int for a square one); the window must be at least twice as large.

    Returns
    -------
    Region
        The ``min(size, H)`` by ``min(size, W)`` window, at any position, whose sum of
        :func:`edge_energy_map` is largest; the first in row-major order (top-most, then
        left-most) on ties. Deterministic.

    Notes
    -----
    The window sums of every position come from one summed-area table of the energy map,
    so the search costs a few passes over the image whatever ``size`` is. See the module
    docstring for why strong edges are what the kernel estimate needs.
    """
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
        raise TypeError(f"size must be an int (the window side in pixels), got {size!r}")
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    energy = edge_energy_map(image)
    h, w = energy.shape
    rh, rw = min(int(size), h), min(int(size), w)
    kh, kw = _pair(kernel_shape)
    if kh * 2 > rh or kw * 2 > rw:
        raise ValueError(
            f"an automatic region of {rh}x{rw} (size {size} in a {h}x{w} image) is too small for a "
            f"{kh}x{kw} kernel: the region must be at least twice the kernel size in each direction; "
            "use a larger size or a smaller kernel_size"
        )
    table = np.zeros((h + 1, w + 1))
    table[1:, 1:] = energy.cumsum(axis=0).cumsum(axis=1)
    sums = table[rh:, rw:] - table[:-rh, rw:] - table[rh:, :-rw] + table[:-rh, :-rw]
    # Windows of equal energy may differ by the table's round-off; count them as ties.
    tolerance = 1e-10 * max(float(table[-1, -1]), np.finfo(np.float64).tiny)
    first = int(np.flatnonzero(sums >= sums.max() - tolerance)[0])
    top, left = divmod(first, sums.shape[1])
    return Region(top, left, rh, rw)


def _pair(kernel_shape: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(kernel_shape, (int, np.integer)) and not isinstance(kernel_shape, bool):
        return int(kernel_shape), int(kernel_shape)
    if isinstance(kernel_shape, (tuple, list)) and len(kernel_shape) == 2:
        return int(kernel_shape[0]), int(kernel_shape[1])
    raise TypeError(f"kernel_shape must be an int or a pair (kh, kw) of ints, got {kernel_shape!r}")


def resolve_region(region: object, array: np.ndarray, kernel_shape: tuple[int, int]) -> Region:
    """The window the blind optimizer runs on: ``region`` as :func:`napari_selfmsnet.deblur`
    takes it (``"auto"``, ``"full"``, a :class:`Region` or ``(top, left, height, width)``)."""
    h, w = array.shape[:2]
    if isinstance(region, str):
        if region == "full" or (region == "auto" and max(h, w) <= AUTO_REGION_THRESHOLD):
            return Region(0, 0, h, w)
        if region == "auto":
            return auto_region(array, AUTO_REGION_SIZE, kernel_shape)
        raise ValueError(f"region must be 'auto', 'full' or (top, left, height, width), got {region!r}")
    return check_region(region, (h, w), kernel_shape)
