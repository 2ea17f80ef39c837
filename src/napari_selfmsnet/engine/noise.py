"""The noise of an image, measured from the image itself.

Every weight of the engine that trades the data against a prior (the kernel step's Tikhonov
term, the polish's and the final deconvolution's sparse prior) follows the noise measured here,
so a clean photograph and a photon-limited fluorescence image need no hand tuning.

The model is Poisson-Gaussian, the standard one for camera counts (Foi et al. 2008): the
variance of a pixel grows linearly with its expected value, ``var(z) = gain * z + intercept``
(``gain`` is the camera's counts per photoelectron; ``intercept`` folds in the read noise and
the camera offset, which one image cannot tell apart: ``intercept = read_noise**2 - gain *
offset``). A signal-independent (Gaussian) noise is the special case ``gain = 0``.

How it is measured: a high-pass residual whose response to white noise has unit variance (a
separable second difference; a blurred image carries almost no signal at that frequency) is
taken where the image is flattest, binned by the local mean, and a robust (median absolute
deviation) variance per bin is fitted by a line. scikit-image's ``estimate_sigma`` does the
Gaussian part with wavelets; the engine imports only numpy, scipy and torch, so the measure is
written here (a test checks the two agree on Gaussian noise).

References
----------
1. A. Foi, M. Trimeche, V. Katkovnik, K. Egiazarian, "Practical Poissonian-Gaussian noise
   modeling and fitting for single-image raw-data", IEEE TIP 2008.
2. D. L. Donoho, I. M. Johnstone, "Ideal spatial adaptation by wavelet shrinkage",
   Biometrika 1994 (the median-absolute-deviation estimate of the noise level).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["NoiseModel", "estimate_noise", "relative_noise"]

# A separable second difference, normalised so that white noise of variance s^2 gives a
# residual of variance s^2; constant and linear ramps give zero.
_HIGH_PASS = np.outer([1.0, -2.0, 1.0], [1.0, -2.0, 1.0]) / 6.0
# The median absolute deviation of a normal variable times this is its standard deviation.
_MAD_TO_SIGMA = 1.4826
# Noise is measured on the flattest half of the image, where structure leaks least into the
# residual; the local mean is binned into this many levels for the variance-level fit.
_FLAT_SHARE = 0.5
_LEVELS = 16
_MIN_PER_LEVEL = 50


@dataclass(frozen=True)
class NoiseModel:
    """The noise of an image in its own intensity units: ``var(z) = gain * z + intercept``.

    Attributes
    ----------
    sigma : float
        The root-mean-square noise over the image (the square root of the mean variance),
        in the image's units.
    gain : float
        How the variance grows with the intensity (0 for signal-independent noise).
    intercept : float
        The variance extrapolated to intensity 0.
    model : {"gaussian", "poisson-gaussian"}
        Whether the variance was found to depend on the intensity.
    """

    sigma: float
    gain: float
    intercept: float
    model: str

    def to_dict(self) -> dict[str, float | str]:
        """JSON-friendly summary (for ``result.params["noise"]``)."""
        return {"model": self.model, "sigma": self.sigma, "gain": self.gain, "intercept": self.intercept}


def relative_noise(sigma: float, image: np.ndarray) -> float:
    """``sigma`` as a share of ``image``'s range (``sigma`` itself for a flat image).

    The non-blind solver maps its input to [0, 1], so its weights follow the noise in those
    units: a window of a frame has a smaller range than the frame, and each plane of a stack
    its own.
    """
    span = float(np.ptp(image))
    return sigma / span if span > 0 else sigma


def _samples(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """High-pass residual and local mean at the flattest pixels of one 2-D plane."""
    residual = ndimage.convolve(plane, _HIGH_PASS, mode="reflect")[1:-1, 1:-1]
    level = ndimage.uniform_filter(plane, 5, mode="reflect")[1:-1, 1:-1]
    smooth = ndimage.gaussian_filter(plane, 2.0)
    gy, gx = np.gradient(smooth)
    structure = np.hypot(gy, gx)[1:-1, 1:-1]
    flat = structure <= np.quantile(structure, _FLAT_SHARE)
    return residual[flat], level[flat]


def _robust_variance(values: np.ndarray) -> float:
    return float((_MAD_TO_SIGMA * np.median(np.abs(values - np.median(values)))) ** 2)


def estimate_noise(image: np.ndarray, *, quantised: bool = False) -> NoiseModel:
    """Measure the noise of ``image`` from the image itself.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        Any real dtype; channels are measured together (one model for all of them). Each side
        at least 8 pixels.
    quantised : bool
        The data were stored as integers: the rounding adds a variance of 1/12 (in the image's
        units), which is then a floor of the measured variance.

    Returns
    -------
    NoiseModel

    Notes
    -----
    The variance-level line is fitted by weighted least squares to the robust variance of
    each level; the noise is called signal-dependent when the fitted variance grows by more
    than half its smallest value across the levels seen, and Gaussian (one robust variance for
    the image) otherwise.
    """
    data = np.asarray(image, dtype=np.float64)
    if data.ndim not in (2, 3) or min(data.shape[:2]) < 8:
        raise ValueError(f"image must be (H, W) or (H, W, C) with sides of at least 8 pixels, got {data.shape}")
    planes = [data] if data.ndim == 2 else [data[..., c] for c in range(data.shape[2])]
    pairs = [_samples(p) for p in planes]
    residual = np.concatenate([r for r, _ in pairs])
    level = np.concatenate([m for _, m in pairs])
    floor = 1.0 / 12.0 if quantised else 0.0
    flat_variance = max(_robust_variance(residual), floor)

    gain, intercept, model = 0.0, flat_variance, "gaussian"
    edges = np.unique(np.quantile(level, np.linspace(0.0, 1.0, _LEVELS + 1)))
    levels, variances, counts = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        chosen = (level >= lo) & (level <= hi)
        if chosen.sum() >= _MIN_PER_LEVEL:
            levels.append(float(np.median(level[chosen])))
            variances.append(_robust_variance(residual[chosen]))
            counts.append(int(chosen.sum()))
    if len(levels) >= 4 and max(levels) > min(levels):
        lv, var, n = np.asarray(levels), np.asarray(variances), np.asarray(counts, dtype=np.float64)
        # The variance of a variance estimate grows with its square: weight by n / var^2 (a
        # level of flat, noise-free pixels measures 0, which must not take all the weight).
        safe = np.maximum(var, max(floor, 1e-6 * float(var.max()), 1e-300))
        weight = np.sqrt(n) / safe
        design = np.stack([lv, np.ones_like(lv)], axis=1)
        (slope, offset), *_ = np.linalg.lstsq(design * weight[:, None], var * weight, rcond=None)
        if np.isfinite(slope) and slope > 0 and slope * np.ptp(lv) > 0.5 * float(safe.min()):
            gain, intercept, model = float(slope), float(offset), "poisson-gaussian"

    tiny = max(floor, 1e-24 * max(float(np.ptp(data)), 1e-300) ** 2)
    local = np.concatenate([ndimage.uniform_filter(p, 5, mode="reflect").ravel() for p in planes])
    variance = np.maximum(gain * local + intercept, tiny) if gain > 0 else np.full(1, max(intercept, tiny))
    return NoiseModel(sigma=float(np.sqrt(np.mean(variance))), gain=gain, intercept=intercept, model=model)
