"""Synthetic blurred data with ground truth: kernels, a fluorescence-like phantom, camera noise.

Shared by the tests, the benchmarks and the napari sample data, so all of them simulate the
same microscope. Every function that draws random numbers takes ``rng``: a
:class:`numpy.random.Generator` or an integer seed (the same seed gives the same data).

The blur is a *valid* convolution (:func:`napari_selfmsnet.engine.convolution.valid_convolve`):
the sharp image is larger than the blurred one by the kernel support, so no boundary
condition (wrap-around, mirroring) leaks into the data.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from ..engine.convolution import valid_convolve

__all__ = [
    "SynthCase",
    "make_rng",
    "motion_kernel",
    "gaussian_psf",
    "defocus_psf",
    "phantom",
    "blur_valid",
    "add_noise",
    "make_case",
]

_KERNEL_KINDS = ("motion", "gaussian", "defocus")


class SynthCase(NamedTuple):
    """One synthetic case: ``blurred`` uint16 counts, ``sharp`` in ``[0, 1]`` (same shape,
    the part of the phantom under the observation), and the ``kernel`` (sums to 1)."""

    blurred: np.ndarray
    sharp: np.ndarray
    kernel: np.ndarray


def make_rng(rng: int | np.random.Generator) -> np.random.Generator:
    """A NumPy generator from a seed, or ``rng`` itself."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be an integer seed or a numpy.random.Generator, got {type(rng).__name__}")


def _odd_size(size: int, name: str = "size") -> int:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 3 or size % 2 == 0:
        raise ValueError(f"{name} must be an odd integer >= 3, got {size!r}")
    return int(size)


def motion_kernel(
    size: int,
    rng: int | np.random.Generator,
    *,
    length: float | None = None,
    inertia: float = 0.8,
    jitter: float = 0.6,
    jerk_probability: float = 0.03,
    steps: int = 300,
) -> np.ndarray:
    """A random camera-shake kernel: a rasterised trajectory with inertia and sudden jerks.

    In the spirit of Boracchi & Foi (2012): the camera's direction follows a random walk with
    momentum (``inertia``, ``jitter``) and turns abruptly with probability
    ``jerk_probability`` per step; its speed drifts slowly (slow parts are brighter). The path is scaled to ``length`` pixels (by
    default 50-100 % of the kernel width), centred on its centroid, splatted bilinearly and
    smoothed by a 0.5 px Gaussian (the lens).

    Parameters
    ----------
    size : int
        Odd side of the square kernel.
    rng : int or numpy.random.Generator
        Seed or generator.

    Returns
    -------
    ndarray of float64, shape (size, size)
        Non-negative, sums to 1, centroid within one pixel of ``(size // 2, size // 2)``.
    """
    size = _odd_size(size)
    gen = make_rng(rng)
    if length is not None and length <= 0:
        raise ValueError(f"length must be > 0, got {length}")
    heading = gen.uniform(0, 2 * np.pi)
    turn = 0.0
    log_speed = 0.0
    path = np.zeros((steps + 1, 2))
    for t in range(steps):
        turn = inertia * turn + jitter * gen.normal()
        if gen.random() < jerk_probability:
            turn += gen.normal(0, np.pi / 2)
        heading += turn / np.sqrt(steps)
        # The speed drifts too: where the hand slows down, the kernel is brighter.
        log_speed = 0.95 * log_speed + 0.15 * gen.normal()
        path[t + 1] = path[t] + np.exp(log_speed) * np.array((np.sin(heading), np.cos(heading)))
    path -= path.mean(axis=0)
    # Keep a margin of 1.5 px for the splatting and the smoothing.
    half = (size - 1) / 2 - 1.5
    reach = max(np.abs(path).max(), 1e-12)
    if length is None:
        # The path spans 60-100 % of the kernel window, as recorded shake kernels do.
        scale = gen.uniform(0.6, 1.0) * half / reach
    else:
        travelled = np.sum(np.linalg.norm(np.diff(path, axis=0), axis=1))
        scale = min(length / travelled, half / reach)
    points = path * scale + size // 2
    kernel = np.zeros((size, size))
    base = np.floor(points).astype(int)
    frac = points - base
    for dy in (0, 1):
        for dx in (0, 1):
            weight = (frac[:, 0] if dy else 1 - frac[:, 0]) * (frac[:, 1] if dx else 1 - frac[:, 1])
            np.add.at(kernel, (base[:, 0] + dy, base[:, 1] + dx), weight)
    kernel = gaussian_filter(kernel, 0.5, mode="constant")
    return kernel / kernel.sum()


def gaussian_psf(size: int, sigma: float) -> np.ndarray:
    """A centred isotropic Gaussian PSF of standard deviation ``sigma`` pixels, summing to 1."""
    size = _odd_size(size)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = np.arange(size) - size // 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    psf = np.outer(g, g)
    return psf / psf.sum()


def defocus_psf(size: int, radius: float, *, supersample: int = 8) -> np.ndarray:
    """A centred uniform disc (geometric defocus) of ``radius`` pixels, anti-aliased, sum 1."""
    size = _odd_size(size)
    if not 0 < radius <= size / 2:
        raise ValueError(f"radius must lie in (0, size / 2 = {size / 2}], got {radius}")
    # Area coverage by supersampling each pixel on a sub-grid.
    sub = (np.arange(size * supersample) + 0.5) / supersample - 0.5 - size // 2
    inside = (sub[:, None] ** 2 + sub[None, :] ** 2) <= radius**2
    psf = inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    return psf / psf.sum()


def phantom(
    shape: tuple[int, int],
    rng: int | np.random.Generator,
    *,
    filaments: int | None = None,
    beads: int | None = None,
    background: float = 0.03,
) -> np.ndarray:
    """A fluorescence-like test object: curved filaments and round beads on a dim background.

    Filaments are persistent random walks drawn with a Gaussian profile (width 0.7-1.2 px);
    beads are Gaussian spots (sigma 1-2.5 px); intensities vary per object. Overlaps saturate
    smoothly (``1 - exp(-density)``), so the result lies in ``[background, 1)``.

    Parameters
    ----------
    shape : (int, int)
        ``(H, W)``, each at least 16.
    rng : int or numpy.random.Generator
        Seed or generator.
    filaments, beads : int, optional
        Object counts; by default proportional to the area (about 12 filaments and 40 beads
        per 128 x 128).

    Returns
    -------
    ndarray of float64, shape (H, W)
    """
    if len(shape) != 2 or min(shape) < 16:
        raise ValueError(f"shape must be (H, W) with both at least 16, got {shape}")
    if not 0 <= background < 1:
        raise ValueError(f"background must lie in [0, 1), got {background}")
    gen = make_rng(rng)
    h, w = (int(s) for s in shape)
    area = h * w / 128**2
    filaments = int(round(12 * area)) if filaments is None else filaments
    beads = int(round(40 * area)) if beads is None else beads
    density = np.zeros((h, w))
    for _ in range(filaments):
        layer = np.zeros((h, w))
        position = gen.uniform((0, 0), (h, w))
        heading = gen.uniform(0, 2 * np.pi)
        for _ in range(int(gen.uniform(0.5, 1.5) * 4 * max(h, w))):
            heading += gen.normal(0, 0.05)
            position = position + 0.5 * np.array((np.sin(heading), np.cos(heading)))
            r, c = int(position[0]), int(position[1])
            if not (0 <= r < h and 0 <= c < w):
                break
            layer[r, c] = 1.0
        width = gen.uniform(0.7, 1.2)
        # Peak-normalised line profile, then a per-filament brightness.
        density += gen.uniform(0.6, 2.0) * gaussian_filter(layer, width) * (2 * np.pi * width**2) ** 0.5 / 2
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(beads):
        cy, cx = gen.uniform((0, 0), (h, w))
        sigma = gen.uniform(1.0, 2.5)
        density += gen.uniform(0.8, 3.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return background + (1 - background) * (1 - np.exp(-density))


def blur_valid(sharp_padded: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Blur by ``kernel`` with the project's valid true convolution (no wrap-around).

    Parameters
    ----------
    sharp_padded : ndarray, shape (H + kh - 1, W + kw - 1) or (N, H + kh - 1, W + kw - 1)
        The sharp object, larger than the result by the kernel support.
    kernel : ndarray, shape (kh, kw)

    Returns
    -------
    ndarray of float64, shape (H, W) or (N, H, W)
    """
    sharp_padded = np.asarray(sharp_padded, dtype=np.float64)
    if sharp_padded.ndim not in (2, 3):
        raise ValueError(f"sharp_padded must be (H, W) or (N, H, W), got shape {sharp_padded.shape}")
    stack = sharp_padded if sharp_padded.ndim == 3 else sharp_padded[None]
    blurred = valid_convolve(torch.from_numpy(stack)[:, None], torch.as_tensor(kernel, dtype=torch.float64))
    out = blurred[:, 0].numpy()
    return out if sharp_padded.ndim == 3 else out[0]


def add_noise(
    blurred: np.ndarray,
    rng: int | np.random.Generator,
    *,
    photons: float = 1000.0,
    read_noise: float = 2.0,
    offset: float = 100.0,
) -> np.ndarray:
    """Camera counts from an intensity image in ``[0, 1]``: Poisson, read noise, offset, uint16.

    ``counts = Poisson(photons * blurred) + Normal(0, read_noise) + offset``, rounded and
    limited to the uint16 range as a camera's converter would be.
    """
    blurred = np.asarray(blurred, dtype=np.float64)
    if blurred.size and blurred.min() < 0:
        raise ValueError(f"blurred must be non-negative intensities, got a minimum of {blurred.min():.4g}")
    if not photons > 0 or read_noise < 0 or offset < 0:
        raise ValueError(
            f"need photons > 0, read_noise >= 0 and offset >= 0, got {photons}, {read_noise}, {offset}"
        )
    gen = make_rng(rng)
    counts = gen.poisson(photons * blurred) + gen.normal(0.0, read_noise, blurred.shape) + offset
    return np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def make_case(
    shape: tuple[int, int] = (128, 128),
    rng: int | np.random.Generator = 0,
    *,
    kernel: str | np.ndarray = "motion",
    kernel_size: int = 21,
    planes: int | None = None,
    photons: float = 1000.0,
    read_noise: float = 2.0,
    offset: float = 100.0,
) -> SynthCase:
    """A phantom blurred by one kernel with camera noise, ready for deblurring.

    Parameters
    ----------
    shape : (int, int)
        Size of the blurred image.
    rng : int or numpy.random.Generator
        Seed or generator; everything (object, kernel, noise) is drawn from it.
    kernel : {"motion", "gaussian", "defocus"} or ndarray
        The kind of kernel (Gaussian sigma drawn in 1.5-3 px, defocus radius in 3-6 px,
        capped by ``kernel_size``), or the kernel itself.
    kernel_size : int
        Odd side of a generated kernel.
    planes : int, optional
        If given, a stack ``(planes, H, W)`` of independent objects blurred by the same kernel.

    Returns
    -------
    SynthCase
        ``(blurred uint16, sharp float64 in [0, 1], kernel float64 summing to 1)``.
    """
    gen = make_rng(rng)
    k = _make_kernel(kernel, kernel_size, gen)
    kh, kw = k.shape
    if planes is not None and (not isinstance(planes, (int, np.integer)) or planes < 1):
        raise ValueError(f"planes must be a positive integer or None, got {planes!r}")
    padded_shape = (shape[0] + kh - 1, shape[1] + kw - 1)
    count = 1 if planes is None else int(planes)
    padded = np.stack([phantom(padded_shape, gen) for _ in range(count)])
    blurred = add_noise(blur_valid(padded, k), gen, photons=photons, read_noise=read_noise, offset=offset)
    sharp = padded[:, kh // 2 : kh // 2 + shape[0], kw // 2 : kw // 2 + shape[1]]
    if planes is None:
        blurred, sharp = blurred[0], sharp[0]
    return SynthCase(blurred, sharp, k)


def _make_kernel(kernel: str | np.ndarray, size: int, gen: np.random.Generator) -> np.ndarray:
    if isinstance(kernel, np.ndarray):
        k = np.asarray(kernel, dtype=np.float64)
        if k.ndim != 2 or k.min() < 0 or k.sum() <= 0:
            raise ValueError(f"kernel must be a non-negative 2-D array with a positive sum, got shape {k.shape}")
        return k / k.sum()
    if kernel == "motion":
        return motion_kernel(size, gen)
    if kernel == "gaussian":
        return gaussian_psf(size, min(gen.uniform(1.5, 3.0), size / 6))
    if kernel == "defocus":
        return defocus_psf(size, min(gen.uniform(3.0, 6.0), size / 2 - 0.5))
    raise ValueError(f"unknown kernel kind {kernel!r}; choose one of {_KERNEL_KINDS} or pass an array")
