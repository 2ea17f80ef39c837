"""Does a blind estimate deserve trust? Measures a run takes of its own result.

A blind method can fail, and a failed run looks like a result. The run therefore measures, on
the data alone (no ground truth):

- ``structure``: how far the input's variance rises above its measured noise. An image of
  noise alone (``structure`` near 0) holds nothing a kernel could be estimated from.
- ``residual`` and ``residual_correlation``: the input re-blurred from the deconvolved estimate
  against the input itself. With the right kernel the misfit is noise: about the measured noise
  level and uncorrelated between neighbouring pixels. A wrong kernel leaves the edges it cannot
  explain in the misfit, whose neighbours then correlate (a positive lag-one correlation);
  this is also how the run chooses between the kernels polished from different starts.
  The check judges the correlation as if the input carried at least :data:`NOISE_FLOOR` of
  noise (``judged_correlation``): on nearly noise-free data (8-bit quantisation alone) even a
  good kernel's tiny error dominates the misfit and correlates, though it lies far below what
  can be seen in the result.
- ``border_mass``: the share of the kernel on the outermost ring of its support. A blur larger
  than the support it is given spills onto the ring.
- ``agreement``: how alike the kernels polished from different starts are (1: equal up to a
  shift).
- the kernel's size against the image it was estimated on: a kernel wider than a third of the
  image's shorter side is estimated from too few pixels to be trusted.

The limits below were set on the noisy benchmarks of ``benchmarks/noise.py``; the figures are
recorded in every result's ``params["self_check"]`` so that a user (and the benchmarks) can
see why a run was or was not trusted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.signal import fftconvolve

from .convolution import valid_convolve
from .inputs import to_channels_first

__all__ = [
    "SelfCheck",
    "border_mass",
    "judged_correlation",
    "kernel_similarity",
    "radial_symmetry",
    "residual_statistics",
    "structure_above_noise",
]

#: Below this ratio of the input's variance to its noise variance (minus one), nothing but
#: noise is there to estimate a kernel from.
MIN_STRUCTURE = 1.0
#: A residual whose neighbouring pixels correlate more than this is not noise.
MAX_RESIDUAL_CORRELATION = 0.1
#: The least noise (normalised units: a share of the input's range) the misfit is judged
#: against. Half a percent is below the noise of a camera photograph or of a 10000-photon
#: fluorescence image; a misfit smaller than that is invisible in the result.
NOISE_FLOOR = 0.005
#: More than this share of the kernel's mass on the ring of its support: the support is too small.
MAX_BORDER_MASS = 0.2
#: Kernels polished from different starts less alike than this found different blurs.
MIN_AGREEMENT = 0.3
#: A kernel wider than this share of the image's shorter side is judged from too few pixels: a
#: size probe that grew spurious parts ends there too (a 27 px blur at 1% noise measured at
#: 113 px on a 255 px image), while the benchmarks' blurs, measured, stay below a sixth.
MAX_KERNEL_SHARE = 1 / 3


@dataclass(frozen=True)
class SelfCheck:
    """The measures of one run and the warnings they raised (see the module docstring)."""

    structure: float
    residual: float
    residual_correlation: float
    judged_correlation: float
    border_mass: float
    agreement: float | None
    warnings: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.warnings

    @classmethod
    def judge(
        cls,
        *,
        structure: float,
        residual: float,
        residual_correlation: float,
        border_mass: float,
        agreement: float | None,
        kernel_shape: tuple[int, int],
        noise_sigma: float,
        image_shape: tuple[int, int],
        size_measured: bool = False,
        cautious: bool = False,
    ) -> SelfCheck:
        """The warnings the measures call for, each saying what it means and what to try.

        ``noise_sigma`` is the input's measured noise in normalised units (``residual`` is in
        its variance's units); ``image_shape`` the ``(H, W)`` of the image the kernel was
        estimated on, and ``size_measured`` whether ``kernel_shape`` was measured
        (``kernel_size="auto"``) rather than given; ``cautious`` whether the image was
        deconvolved under a stronger prior because the kernels of different starts disagree
        (``config.cautious_agreement``): that trades sharpness for safety, and does not always
        win the trade, so the user hears of it as of a disagreement below :data:`MIN_AGREEMENT`.
        """
        judged = judged_correlation(residual_correlation, residual, noise_sigma)
        warnings = []
        if structure < MIN_STRUCTURE:
            warnings.append(
                f"the image holds almost nothing above its noise (its variance is {1 + structure:.2f} times the "
                "measured noise variance), so no blur can be measured from it: the result is not trustworthy"
            )
        if border_mass > MAX_BORDER_MASS:
            warnings.append(
                f"{border_mass:.0%} of the estimated kernel lies on the edge of its {kernel_shape[0]}x{kernel_shape[1]} "
                "support: the blur is probably larger than the kernel size; rerun with a larger one"
            )
        side = min(image_shape)
        if max(kernel_shape) > MAX_KERNEL_SHARE * side:
            how = "measured" if size_measured else "given"
            todo = "give the blur's size if you know it" if size_measured else "check the size"
            warnings.append(
                f"the kernel size {how}, {kernel_shape[0]}x{kernel_shape[1]}, is more than a third of the shorter side "
                f"of the image it was estimated on ({side} px): too few pixels see the whole blur for it to be "
                f"estimated; the result is not trustworthy ({todo}, or deblur a larger image or region)"
            )
        if judged > MAX_RESIDUAL_CORRELATION:
            warnings.append(
                f"the estimate does not explain the image down to its noise (the misfit's neighbouring pixels "
                f"correlate at {judged:.2f}): the kernel is probably wrong; try another seed, a "
                "longer preset, or a region with strong edges"
            )
        if agreement is not None and (agreement < MIN_AGREEMENT or cautious):
            softened = (
                ", and was deconvolved under a stronger prior (softer, but it may still be worse than the input)"
                if cautious
                else ""
            )
            warnings.append(
                f"the kernels found from different starts disagree (similarity {agreement:.2f}): the blur is not "
                f"well determined by this image; the result is uncertain{softened}; try another seed, or a "
                "region with strong edges"
            )
        return cls(structure, residual, residual_correlation, judged, border_mass, agreement, tuple(warnings))

    def to_dict(self) -> dict:
        """JSON-friendly figures (for ``result.params["self_check"]``)."""
        out = asdict(self)
        out["warnings"] = list(self.warnings)
        out["passed"] = self.passed
        return out


def structure_above_noise(image: np.ndarray, noise_sigma: float) -> float:
    """``var(image) / noise_sigma**2 - 1``: the input's variance above its noise, in noise units."""
    variance = float(np.var(np.asarray(image, dtype=np.float64)))
    return variance / max(float(noise_sigma) ** 2, 1e-30) - 1.0


def residual_statistics(
    observation: np.ndarray, latent: np.ndarray, kernel: np.ndarray, noise_sigma: float
) -> tuple[float, float]:
    """``(residual, lag-one correlation)`` of ``kernel * latent`` against ``observation``.

    Shape: ``observation`` and ``latent`` ``(H, W)`` or ``(H, W, 3)`` (the latent lies over
    the observation, as the non-blind solver returns it); the comparison is on the pixels a
    valid convolution reaches. ``residual`` is the mean squared misfit over ``noise_sigma**2``.
    """
    x = torch.from_numpy(to_channels_first(np.asarray(latent, dtype=np.float32)))[None]
    k = torch.from_numpy(np.ascontiguousarray(kernel, dtype=np.float32))
    reblurred = valid_convolve(x, k)[0].numpy().astype(np.float64)
    kh, kw = k.shape
    y = to_channels_first(np.asarray(observation, dtype=np.float64))
    y = y[:, kh // 2 : kh // 2 + reblurred.shape[1], kw // 2 : kw // 2 + reblurred.shape[2]]
    r = reblurred - y
    power = float(np.mean(r**2))
    if power == 0:
        return 0.0, 0.0
    lag = (np.mean(r[:, :, 1:] * r[:, :, :-1]) + np.mean(r[:, 1:, :] * r[:, :-1, :])) / 2
    return power / max(float(noise_sigma) ** 2, 1e-30), float(lag / power)


def judged_correlation(correlation: float, residual: float, noise_sigma: float) -> float:
    """The misfit's lag-one ``correlation`` as it would be were the noise at least :data:`NOISE_FLOOR`.

    White noise added to the misfit leaves its lag-one covariance and adds to its power, so the
    correlation shrinks by ``power / (power + added)``. ``residual`` is the misfit's power over
    ``noise_sigma**2`` (as :func:`residual_statistics` returns it); at or above the floor the
    correlation is unchanged.
    """
    variance = max(float(noise_sigma) ** 2, 1e-30)
    power = residual * variance
    added = max(NOISE_FLOOR**2 - variance, 0.0)
    return correlation * power / (power + added) if power + added > 0 else correlation


def border_mass(kernel: np.ndarray) -> float:
    """The share of a kernel's mass on the outermost ring of pixels of its support."""
    k = np.clip(np.asarray(kernel, dtype=np.float64), 0, None)
    total = k.sum()
    if total <= 0:
        return 0.0
    inner = k[1:-1, 1:-1].sum() if min(k.shape) > 2 else 0.0
    return float((total - inner) / total)


def radial_symmetry(kernel: np.ndarray) -> float:
    """How round a kernel is: its normalised correlation with its own radial average, in ``[0, 1]``.

    The average is over half-pixel rings about the kernel's centre of mass. A Gaussian or
    defocus PSF scores about 1 (also as a blind run estimates it, somewhat widened); a motion
    trail, whose mass lies along a path, scores far less (Levin's kernels 0.3-0.8, 0.5-0.95
    widened by one pixel).
    """
    k = np.clip(np.asarray(kernel, dtype=np.float64), 0, None)
    total = k.sum()
    if total <= 0:
        return 0.0
    rows, cols = np.indices(k.shape)
    ring = np.floor(2 * np.hypot(rows - (k * rows).sum() / total, cols - (k * cols).sum() / total)).astype(int)
    sums = np.bincount(ring.ravel(), weights=k.ravel())
    counts = np.bincount(ring.ravel())
    average = (sums / np.maximum(counts, 1))[ring]
    return float((k * average).sum() / (np.linalg.norm(k) * np.linalg.norm(average)))


def kernel_similarity(estimate: np.ndarray, true: np.ndarray) -> float:
    """Maximum normalised cross-correlation of two kernels over all shifts, in ``[0, 1]``.

    The kernels may differ in size; 1 means equal up to a shift (and a positive scale).
    """
    estimate = np.asarray(estimate, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    for name, k in (("estimate", estimate), ("true", true)):
        if k.ndim != 2:
            raise ValueError(f"{name} kernel must be 2-D (kh, kw), got shape {k.shape}")
        if not np.any(k):
            raise ValueError(f"{name} kernel is all zeros")
    corr = fftconvolve(estimate, true[::-1, ::-1], mode="full")
    return float(np.max(corr) / (np.linalg.norm(estimate) * np.linalg.norm(true)))
