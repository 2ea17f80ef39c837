"""Levin et al.'s blind-deblurring data set (2009): 4 images x 8 kernels, with ground truth.

The kernel PNGs of that set are not all stored in one orientation; :func:`orient_kernel`
decides per case which orientation explains the blurred image, with the alignment of the
scoring protocol (:func:`.metrics.align_up_to_shift`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.signal import fftconvolve

from ..engine.convolution import valid_convolve
from ..io import read_image
from .metrics import align_up_to_shift, as_float_image

__all__ = ["LevinCase", "orient_kernel", "load_levin_case", "list_levin_cases", "synthetic_blur"]

_CASE_NAME = re.compile(r"^im(\d+)_kernel(\d+)_img\.png$")


@dataclass(frozen=True)
class LevinCase:
    """One image of Levin's set, as float64 in ``[0, 1]``, with its true kernel.

    ``kernel`` sums to 1 and is oriented for this project's convention (true convolution,
    centre at ``(kh // 2, kw // 2)``); ``rotated`` tells whether the stored PNG had to be
    turned by 180 degrees; ``residual_stored``/``residual_rotated`` are the RMS misfits
    (in [0, 1] units) of ``blurred`` against ``convolve(sharp, k)`` for both orientations.
    """

    name: str
    blurred: np.ndarray
    sharp: np.ndarray
    kernel: np.ndarray
    rotated: bool
    residual_stored: float
    residual_rotated: float


def orient_kernel(
    blurred: np.ndarray, sharp: np.ndarray, kernel: np.ndarray, *, max_shift: float = 8.0
) -> tuple[np.ndarray, bool, float, float]:
    """Choose between ``kernel`` and its 180-degree rotation by which explains ``blurred`` better.

    Each candidate blurs ``sharp`` (true convolution); the prediction is aligned to
    ``blurred`` up to a sub-pixel shift (recorded blur and photograph are not registered to
    each other), on the interior only, away from the zero-padded borders of the prediction.

    Returns
    -------
    kernel : ndarray of float64
        The better orientation, normalised to sum 1.
    rotated : bool
        True when that is the rotated one.
    residual_stored, residual_rotated : float
        RMS residuals of both candidates.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2 or kernel.sum() <= 0:
        raise ValueError(f"kernel must be 2-D with a positive sum, got shape {kernel.shape}")
    kernel = kernel / kernel.sum()
    blurred = as_float_image("blurred", blurred)
    sharp = as_float_image("sharp", sharp)
    crop = int(np.ceil(max_shift)) + max(kernel.shape) // 2 + 2
    residuals = []
    for candidate in (kernel, kernel[::-1, ::-1]):
        prediction = fftconvolve(sharp, candidate, mode="same")
        fit = align_up_to_shift(prediction, blurred, max_shift=max_shift, crop=crop)
        residuals.append(float(np.sqrt(fit.ssd / fit.sharp.size)))
    rotated = residuals[1] < residuals[0]
    chosen = np.ascontiguousarray(kernel[::-1, ::-1] if rotated else kernel)
    return chosen, rotated, residuals[0], residuals[1]


def _read_unit(path: Path) -> np.ndarray:
    image = read_image(path)
    if image.ndim == 3:  # some copies of the set store grey as RGB(A)
        image = image[..., :3].mean(axis=2) if image.shape[2] >= 3 else image[..., 0]
    return np.asarray(image, dtype=np.float64) / 255.0


def load_levin_case(root: str | Path, image_index: int, kernel_index: int) -> LevinCase:
    """Load ``imI_kernelJ_img.png``, ``gt/imI.png`` and ``gt/kernelJ.png`` from ``root``.

    The blurred and sharp images are returned in ``[0, 1]``; the kernel in the orientation
    chosen by :func:`orient_kernel`.
    """
    root = Path(root)
    name = f"im{image_index}_kernel{kernel_index}"
    paths = (root / f"{name}_img.png", root / "gt" / f"im{image_index}.png", root / "gt" / f"kernel{kernel_index}.png")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"Levin data set file missing: {path}")
    blurred, sharp, stored = (_read_unit(p) for p in paths)
    kernel, rotated, res_stored, res_rotated = orient_kernel(blurred, sharp, stored)
    return LevinCase(name, blurred, sharp, kernel, rotated, res_stored, res_rotated)


def list_levin_cases(root: str | Path, pattern: str = "im*_kernel*") -> list[tuple[int, int]]:
    """``(image_index, kernel_index)`` of every blurred image under ``root`` matching ``pattern``.

    ``pattern`` is a glob on the file stem without ``_img.png`` (``"im1_kernel*"``), sorted
    numerically by image, then kernel.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Levin data folder not found: {root}")
    stem = pattern[: -len("_img.png")] if pattern.endswith("_img.png") else pattern
    found = []
    for path in root.glob(f"{stem}_img.png"):
        match = _CASE_NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), int(match.group(2))))
    return sorted(found)


def synthetic_blur(case: LevinCase, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Lai et al.'s synthetic protocol on one of Levin's sharp images and true kernels.

    The sharp image blurred by the true kernel with a *valid* convolution (no boundary
    condition leaks in), Gaussian noise of standard deviation ``noise`` (a share of the
    [0, 1] range: 0.01 is 1%) added, and stored in 8 bits, as a camera would.

    Returns
    -------
    blurred : ndarray of uint8, shape (H - kh + 1, W - kw + 1)
    sharp : ndarray of float64 in [0, 1], the same shape
        The part of the sharp image under the blurred one (the ground truth to score against).
    """
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0 (a share of the intensity range), got {noise}")
    kh, kw = case.kernel.shape
    clean = valid_convolve(torch.from_numpy(case.sharp)[None, None], torch.from_numpy(case.kernel))[0, 0].numpy()
    rng = np.random.default_rng(seed)
    noisy = clean + rng.normal(0.0, noise, clean.shape) if noise > 0 else clean
    blurred = np.clip(np.rint(noisy * 255), 0, 255).astype(np.uint8)
    sharp = case.sharp[kh // 2 : kh // 2 + clean.shape[0], kw // 2 : kw // 2 + clean.shape[1]]
    return blurred, sharp
