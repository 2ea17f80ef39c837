"""Checks at the public boundary, and the channel layout torch works in.

What the engine accepts (:func:`check_image`, :func:`check_kernel_size`) and how an accepted
``(H, W)`` or ``(H, W, 3)`` image is laid out for torch (channels first). The intensity policy
is :mod:`.intensity`.
"""

from __future__ import annotations

import numpy as np

from .intensity import float32_problem

__all__ = [
    "check_image",
    "check_kernel_size",
    "check_seed",
    "drop_alpha",
    "from_channels_first",
    "image_array",
    "image_problem",
    "largest_kernel",
    "to_channels_first",
]


def to_channels_first(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` -> ``(1, H, W)``; ``(H, W, 3)`` -> ``(3, H, W)`` (contiguous), for torch."""
    return np.ascontiguousarray(image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0))


def from_channels_first(chw: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_channels_first`: one channel is grey ``(H, W)``, three RGB."""
    return chw[0] if chw.shape[0] == 1 else np.moveaxis(chw, 0, -1)


def check_image(image: object) -> np.ndarray:
    """Validate a 2-D grey or ``(H, W, 3)`` RGB image; returns it as an ndarray.

    Any integer dtype (8 to 64 bits, signed or not) or float dtype is accepted, in either byte
    order; the array is returned as it is, or as a copy in native byte order. Its values must
    be finite, not all the same, and such that a float32 result in its units can hold them
    (:func:`.intensity.float32_problem`).
    """
    array = image_array(image)
    problem = image_problem(array)
    if problem is not None:
        raise ValueError(problem)
    return array


def image_array(image: object) -> np.ndarray:
    """The checks of :func:`check_image` that do not look at the values: type, dtype (native
    byte order), shape and size. Returns the array (a native-order copy where needed)."""
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        raise TypeError(f"image must be a NumPy array (or array-like with shape and dtype), got {type(image).__name__}")
    array = np.asarray(image)
    if array.dtype.kind not in "iuf":
        what = {"b": "boolean", "c": "complex", "O": "object", "U": "string", "S": "bytes"}.get(
            array.dtype.kind, str(array.dtype)
        )
        raise TypeError(
            f"image dtype {array.dtype} ({what}) is not supported; pass integer (uint8 to int64) or floating-point "
            "(float16 to float64) intensities, for example image.astype(np.float32)"
        )
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if array.ndim == 3 and array.shape[-1] in (2, 4):
        raise ValueError(
            f"image has shape {array.shape}: {'RGBA' if array.shape[-1] == 4 else 'grey and alpha'} channels last; "
            f"drop the alpha channel first ({'image[..., :3]' if array.shape[-1] == 4 else 'image[..., 0]'})"
        )
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
        raise ValueError(
            f"image must be 2-D (H, W) grey or (H, W, 3) RGB, got shape {array.shape}; "
            "for a stack, deblur one plane at a time or use napari_selfmsnet.deblur_stack"
        )
    if array.size == 0 or min(array.shape[:2]) == 0:
        raise ValueError(f"image is empty (shape {array.shape})")
    return array


def image_problem(array: np.ndarray) -> str | None:
    """What makes the values of an image that passed :func:`image_array` unusable (NaN or
    infinite values, a constant image, values a float32 result cannot hold), or None."""
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        return (
            f"image contains NaN or infinite values ({bad} of {array.size}); replace them with numbers "
            "(for example with 0) before deblurring"
        )
    if np.max(array) == np.min(array):
        return (
            f"image is constant (every value is {np.min(array)}): there is no structure from which to estimate "
            "a blur kernel"
        )
    return float32_problem(array)


def drop_alpha(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An ``(..., H, W, 4)`` RGBA or ``(..., H, W, 2)`` grey-and-alpha image without its alpha
    channel (RGB, or grey ``(..., H, W)``), with the warning that says so; anything else as
    it is, with None. The alpha channel is a mask, not an image of the blurred scene."""
    if image.ndim < 3 or image.shape[-1] not in (2, 4):
        return image, None
    kept = image[..., :3] if image.shape[-1] == 4 else image[..., 0]
    what, kept_what = ("RGBA", "RGB channels") if image.shape[-1] == 4 else ("grey and alpha", "grey channel")
    return kept, f"the image is {what}: its alpha channel was left out (deblurred: the {kept_what} only)"


def check_seed(seed: object) -> int:
    """A seed torch accepts for every attempt of a run: an int from 0 to 2**63 - 1."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if not 0 <= int(seed) < 2**63:
        raise ValueError(f"seed must be an int from 0 to 2**63 - 1, got {seed!r}; for example seed % 2**63")
    return int(seed)


def check_kernel_size(
    kernel_size: object, image_shape: tuple[int, int], scales: tuple[float, ...] = (1.0,), *, measuring: bool = False
) -> tuple[int, int]:
    """An odd ``int`` or ``(kh, kw)`` pair that fits the image; returns ``(kh, kw)``.

    It fits when the image is at least twice the kernel in each direction and, at every scale
    of the method's pyramid (``scales``), the scaled image still holds the scaled kernel.
    ``measuring``: the size is still to be measured (``kernel_size`` is then the smallest one
    a measure can give), so a refusal blames the image, not a size the user never gave.
    """
    if isinstance(kernel_size, (int, np.integer)) and not isinstance(kernel_size, bool):
        size = (int(kernel_size), int(kernel_size))
    elif (
        isinstance(kernel_size, (tuple, list))
        and len(kernel_size) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in kernel_size)
    ):
        size = (int(kernel_size[0]), int(kernel_size[1]))
    else:
        raise TypeError(
            f"kernel_size must be 'auto', an odd int or a pair (kh, kw) of odd ints, got {kernel_size!r}"
        )
    if min(size) < 3 or size[0] % 2 == 0 or size[1] % 2 == 0:
        raise ValueError(
            f"kernel_size must be odd and at least 3 (the kernel needs a centre pixel), got {size}; "
            f"try {tuple(max(3, s + 1 - s % 2) for s in size)}"
        )
    h, w = image_shape
    if not _fits(size, (h, w), scales):
        largest = largest_kernel((h, w), scales)[0]
        single = largest_kernel((h, w))[0]
        remedies = [f"a kernel size of {largest} or smaller"] if largest >= 3 else []
        if single > max(largest, 1) and tuple(scales) != (1.0,):
            remedies.append(f"the single-scale method, self-msnet-s (kernels up to {single})")
        problem = f"kernel {size[0]}x{size[1]} is too large for a {h}x{w} image"
        if largest < 3:
            # Not even the smallest kernel fits: no size is to blame.
            side = 2 * 3
            while not _fits((3, 3), (side, side), scales):
                side += 1
            remedies.append(f"an image of at least {side}x{side}")
            if measuring:
                problem = f"a {h}x{w} image is too small to measure a blur in, even with the smallest kernel, 3x3"
            else:
                problem += ", and so is even the smallest kernel, 3x3"
        raise ValueError(
            f"{problem}: the image must be at least twice the kernel in each direction, and hold it at every scale "
            f"of the method ({', '.join(f'{s:g}' for s in scales)}); use {' or '.join(remedies)}"
        )
    return size


def _fits(size: tuple[int, int], shape: tuple[int, int], scales: tuple[float, ...]) -> bool:
    h, w = shape
    if size[0] * 2 > h or size[1] * 2 > w:
        return False
    for s in scales:
        hs, ws = int(np.floor(s * h)), int(np.floor(s * w))
        ks = [max(3, int(np.floor(s * k))) for k in size]
        ks = [k if k % 2 else k + 1 for k in ks]
        if s < 1 and (hs < ks[0] or ws < ks[1]):
            return False
    return True


def largest_kernel(image_shape: tuple[int, int] | list[int], scales: tuple[float, ...] = (1.0,)) -> tuple[int, int]:
    """The largest odd square kernel that fits an image of ``image_shape`` (see
    :func:`check_kernel_size`); ``(1, 1)`` when none of at least 3 does."""
    h, w = (int(v) for v in image_shape)
    k = min(h, w) // 2
    k -= 1 - k % 2
    while k >= 3 and not _fits((k, k), (h, w), scales):
        k -= 2
    return (k, k) if k >= 3 else (1, 1)
