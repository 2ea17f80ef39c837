"""Scoring deblurred images the way the literature does (Levin et al. 2009).

The protocol (Levin et al. 2009, as used by SelfDeblur and its successors): crop 15 pixels from every border of the sharp image,
shift the result by the best sub-pixel offset in ``[-5, 5]`` (step 0.25, bilinear
interpolation) -- a blind method may return image and kernel shifted against each other --
then report PSNR and SSIM of the aligned pair, the error ratio against a non-blind
deconvolution with the true kernel, and the kernel's normalised cross-correlation with the
true kernel. Everything works on float images in ``[0, 1]`` (peak 1).
Levin's data set itself is loaded by :mod:`.levin`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.signal import fftconvolve
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

# The engine measures kernels against each other with the same similarity (its self-check).
from ..engine.selfcheck import kernel_similarity

__all__ = [
    "Alignment",
    "psnr",
    "ssim",
    "align_up_to_shift",
    "kernel_similarity",
    "error_ratio",
    "levin_scores",
    "affine_fit",
]


class Alignment(NamedTuple):
    """The outcome of :func:`align_up_to_shift`.

    ``aligned`` is the result sampled at ``(crop + y + shift[0], crop + x + shift[1])``,
    ``sharp`` the cropped sharp image (same shape), ``ssd`` their sum of squared differences.
    """

    aligned: np.ndarray
    sharp: np.ndarray
    shift: tuple[float, float]
    ssd: float


def as_float_image(name: str, image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(
            f"{name} must be a float image scaled to [0, 1], got dtype {image.dtype}; "
            "divide 8-bit data by 255 first"
        )
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise ValueError(f"{name} must have shape (H, W) or (H, W, 3), got {image.shape}")
    return image.astype(np.float64, copy=False)


def _same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {a.shape} and {b.shape}")


def psnr(result: np.ndarray, sharp: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, peak 1 (images in ``[0, 1]``)."""
    result, sharp = as_float_image("result", result), as_float_image("sharp", sharp)
    _same_shape(result, sharp, "result and sharp")
    return float(peak_signal_noise_ratio(sharp, result, data_range=1.0))


def ssim(result: np.ndarray, sharp: np.ndarray) -> float:
    """SSIM with the usual settings (Wang et al. 2004): Gaussian window sigma 1.5, K1 0.01, K2 0.03.

    Population covariances and data range 1, as in Wang's reference ``ssim_index.m``.
    """
    result, sharp = as_float_image("result", result), as_float_image("sharp", sharp)
    _same_shape(result, sharp, "result and sharp")
    return float(
        structural_similarity(
            sharp,
            result,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            channel_axis=-1 if sharp.ndim == 3 else None,
        )
    )


def _shift_grid(max_shift: float, step: float) -> np.ndarray:
    count = int(round(2 * max_shift / step))
    return -max_shift + step * np.arange(count + 1)


def _bilinear_sample(image: np.ndarray, top: np.ndarray, left: np.ndarray) -> np.ndarray:
    """``image`` at rows ``top + y`` and columns ``left + x`` (sub-pixel, bilinear), 3-D input."""
    y0, x0 = int(np.floor(top[0])), int(np.floor(left[0]))
    fy, fx = top[0] - y0, left[0] - x0
    h, w = top[1], left[1]
    # The fractional weights are exact on the 0.25 grid, as in MATLAB's interp2.
    a = image[y0 : y0 + h + 1, x0 : x0 + w + 1]
    rows = (1 - fy) * a[:-1] + fy * a[1:]
    return (1 - fx) * rows[:, :-1] + fx * rows[:, 1:]


def _ssd_all_shifts(
    moving: np.ndarray, fixed: np.ndarray, crop: int, shifts: np.ndarray
) -> np.ndarray:
    """SSD between ``fixed`` cropped and ``moving`` shifted, for every pair of ``shifts``.

    Exhaustive and vectorised: the shifts are split into an integer and a fractional part;
    for each fractional pair the bilinearly interpolated image is built once, and the SSD of
    all its integer offsets comes from one FFT cross-correlation and an integral image
    (``|a - b|^2 = |a|^2 - 2 a.b + |b|^2``). Inputs are 3-D ``(H, W, C)``.
    """
    height, width = fixed.shape[:2]
    target = fixed[crop : height - crop, crop : width - crop]
    h, w = target.shape[:2]
    whole = np.floor(shifts + 1e-9).astype(int)
    frac = np.round(shifts - whole, 9)
    ssd = np.empty((len(shifts), len(shifts)))
    target_energy = float(np.sum(target**2))
    for fy in np.unique(frac):
        rows_y = np.flatnonzero(frac == fy)
        for fx in np.unique(frac):
            rows_x = np.flatnonzero(frac == fx)
            # moving sampled at (y + fy, x + fx) for every y < H - 1, x < W - 1.
            interp = (1 - fy) * moving[:-1] + fy * moving[1:]
            interp = (1 - fx) * interp[:, :-1] + fx * interp[:, 1:]
            cross = sum(
                fftconvolve(interp[..., c], target[::-1, ::-1, c], mode="valid")
                for c in range(target.shape[2])
            )
            squares = np.pad(np.sum(interp**2, axis=2), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
            top = crop + whole[rows_y][:, None]
            left = crop + whole[rows_x][None, :]
            window = (
                squares[top + h, left + w]
                - squares[top, left + w]
                - squares[top + h, left]
                + squares[top, left]
            )
            ssd[np.ix_(rows_y, rows_x)] = window - 2 * cross[top, left] + target_energy
    return ssd


def align_up_to_shift(
    result: np.ndarray,
    sharp: np.ndarray,
    *,
    max_shift: float = 5.0,
    step: float = 0.25,
    crop: int = 15,
) -> Alignment:
    """Align ``result`` to ``sharp`` by the best sub-pixel shift (Levin's ``comp_upto_shift``).

    Parameters
    ----------
    result, sharp : ndarray of float, shape (H, W) or (H, W, 3)
        The image to score and the ground truth, both in ``[0, 1]``.
    max_shift : float
        Shifts are searched in ``[-max_shift, max_shift]`` along each axis.
    step : float
        Grid step of the search (0.25 in the protocol).
    crop : int
        Pixels removed from every border of ``sharp``; must exceed ``max_shift`` so the
        shifted result never leaves the image.

    Returns
    -------
    Alignment
        ``(aligned, sharp_crop, (shift_y, shift_x), ssd)``.

    Notes
    -----
    Every shift on the grid is evaluated exactly (41 x 41 = 1681 shifts for the defaults); the
    winner's SSD is recomputed directly so the returned figures carry no FFT round-off.
    Ties go to the smallest ``|shift|``.
    """
    result, sharp = as_float_image("result", result), as_float_image("sharp", sharp)
    _same_shape(result, sharp, "result and sharp")
    if not (step > 0 and max_shift >= 0):
        raise ValueError(f"need step > 0 and max_shift >= 0, got step={step}, max_shift={max_shift}")
    if crop < int(np.ceil(max_shift)) + 1:
        raise ValueError(f"crop ({crop}) must be at least max_shift + 1 ({int(np.ceil(max_shift)) + 1})")
    if min(sharp.shape[:2]) <= 2 * crop:
        raise ValueError(f"images of shape {sharp.shape[:2]} are too small for crop={crop}")
    squeeze = result.ndim == 2
    moving = result[..., None] if squeeze else result
    fixed = sharp[..., None] if squeeze else sharp
    shifts = _shift_grid(max_shift, step)
    ssd = _ssd_all_shifts(moving, fixed, crop, shifts)
    # Prefer the smallest shift among (numerically) equal SSDs so a perfect match gives 0.
    norm = shifts[:, None] ** 2 + shifts[None, :] ** 2
    tolerance = 1e-9 * max(1.0, float(np.min(ssd)))
    candidates = np.argwhere(ssd <= np.min(ssd) + tolerance)
    iy, ix = min(candidates, key=lambda c: norm[c[0], c[1]])
    sy, sx = float(shifts[iy]), float(shifts[ix])
    h, w = sharp.shape[0] - 2 * crop, sharp.shape[1] - 2 * crop
    aligned = _bilinear_sample(moving, (crop + sy, h), (crop + sx, w))
    target = fixed[crop : crop + h, crop : crop + w]
    exact = float(np.sum((aligned - target) ** 2))
    if squeeze:
        aligned, target = aligned[..., 0], target[..., 0]
    return Alignment(aligned, target, (sy, sx), exact)


def error_ratio(result: np.ndarray, reference: np.ndarray, sharp: np.ndarray) -> float:
    """``SSD(result, sharp) / SSD(reference, sharp)``, each aligned up to shift first.

    ``reference`` is the non-blind deconvolution with the true kernel (Levin et al. 2009).
    """
    ssd_result = align_up_to_shift(result, sharp).ssd
    ssd_reference = align_up_to_shift(reference, sharp).ssd
    if ssd_reference == 0:
        raise ValueError("the reference equals the sharp image exactly; the error ratio is undefined")
    return ssd_result / ssd_reference


def affine_fit(result: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``gain * result + offset`` with the least-squares gain and offset against ``truth``.

    For data in other units than the ground truth (microscopy counts against a ``[0, 1]``
    phantom): the fit removes the camera offset and the photon scale before PSNR/SSIM, and
    nothing else.
    """
    result = np.asarray(result, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    _same_shape(result, truth, "result and truth")
    gain, offset = _affine_coefficients(result, truth)
    return gain * result + offset


def _affine_coefficients(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    a = np.stack([x.ravel(), np.ones(x.size)], axis=1)
    (gain, offset), *_ = np.linalg.lstsq(a, y.ravel(), rcond=None)
    return float(gain), float(offset)


def levin_scores(
    result: np.ndarray,
    sharp: np.ndarray,
    reference: np.ndarray | None = None,
    kernel: np.ndarray | None = None,
    true_kernel: np.ndarray | None = None,
    *,
    fit_intensity: bool = False,
) -> dict[str, float]:
    """All figures of the Levin protocol for one image.

    Parameters
    ----------
    result, sharp : ndarray of float, shape (H, W) or (H, W, 3)
        The deblurred image and the ground truth in ``[0, 1]``.
    reference : ndarray of float, optional
        Non-blind deconvolution with the true kernel; adds ``error_ratio``.
    kernel, true_kernel : ndarray, optional
        Estimated and true kernels; add ``kernel_similarity`` when both are given.
    fit_intensity : bool
        Fit gain and offset of ``result`` (and ``reference``) to ``sharp`` by least squares
        before scoring, refitted on the aligned crop (for data in counts).

    Returns
    -------
    dict
        ``psnr``, ``ssim``, ``ssd``, ``shift_y``, ``shift_x`` and, when the inputs allow,
        ``error_ratio`` and ``kernel_similarity`` (Python floats).
    """
    aligned = _aligned(result, sharp, fit_intensity)
    scores = {
        "psnr": psnr(aligned.aligned, aligned.sharp),
        "ssim": ssim(aligned.aligned, aligned.sharp),
        "ssd": aligned.ssd,
        "shift_y": aligned.shift[0],
        "shift_x": aligned.shift[1],
    }
    if reference is not None:
        ref = _aligned(reference, sharp, fit_intensity)
        scores["error_ratio"] = aligned.ssd / ref.ssd if ref.ssd > 0 else float("nan")
    if kernel is not None and true_kernel is not None:
        scores["kernel_similarity"] = kernel_similarity(kernel, true_kernel)
    return scores


def _aligned(result: np.ndarray, sharp: np.ndarray, fit_intensity: bool) -> Alignment:
    if not fit_intensity:
        return align_up_to_shift(result, sharp)
    sharp = as_float_image("sharp", sharp)
    fitted = affine_fit(result, sharp)
    first = align_up_to_shift(fitted, sharp)
    # The first fit saw the two images unregistered; refit on the aligned crop (bilinear
    # sampling commutes with an affine intensity map) and align once more.
    gain, offset = _affine_coefficients(first.aligned, first.sharp)
    return align_up_to_shift(gain * fitted + offset, sharp)
