"""Non-blind deconvolution: recovers a synthetic blur, no border ringing, units and dtypes kept."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import convolve2d

from napari_selfmsnet.core import synth
from napari_selfmsnet.core.nonblind import deconvolve

KERNEL = synth.motion_kernel(11, 3)


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2)))


@pytest.fixture(scope="module")
def case():
    """A 64 x 64 valid blur of a phantom (non-periodic borders, as in real captures)."""
    kh, kw = KERNEL.shape
    padded = synth.phantom((64 + kh - 1, 64 + kw - 1), 7)
    blurred = convolve2d(padded, KERNEL, mode="valid")
    blurred += np.random.default_rng(0).normal(0, 0.003, blurred.shape)
    sharp = padded[kh // 2 : kh // 2 + 64, kw // 2 : kw // 2 + 64]
    return blurred, sharp


def band_errors(result: np.ndarray, sharp: np.ndarray, width: int = 4) -> tuple[float, float]:
    """RMSE on the ``width``-pixel frame band and on the interior."""
    band = np.ones(sharp.shape, bool)
    band[width:-width, width:-width] = False
    error = (np.asarray(result, np.float64) - sharp) ** 2
    return float(np.sqrt(error[band].mean())), float(np.sqrt(error[~band].mean()))


@pytest.mark.parametrize("method", ["sparse", "wiener", "richardson-lucy"])
def test_recovers_better_than_input_without_border_ringing(case, method, device):
    blurred, sharp = case
    result = deconvolve(blurred, KERNEL, method=method, device=device)
    assert result.dtype == np.float32 and result.shape == blurred.shape
    assert rmse(result, sharp) < 0.6 * rmse(blurred, sharp)
    edge, interior = band_errors(result, sharp)
    # A periodic or zero boundary rings at the frame: the band error dwarfs the interior
    # error and exceeds the blurred input's. With the valid model the frame pixels are only
    # somewhat less determined than the interior (fewer observations see them).
    assert edge < 3.0 * interior
    assert edge < 0.7 * band_errors(blurred, sharp)[0]


def test_periodic_boundary_would_ring(case):
    # The check above has teeth: a plain FFT inverse (periodic boundary) fails it.
    blurred, sharp = case
    shape = blurred.shape
    otf = np.fft.rfft2(np.roll(np.pad(KERNEL, ((0, shape[0] - 11), (0, shape[1] - 11))), (-5, -5), (0, 1)))
    naive = np.fft.irfft2(np.fft.rfft2(blurred) * otf.conj() / (np.abs(otf) ** 2 + 1e-2), s=shape)
    edge, interior = band_errors(naive, sharp)
    assert edge > 4.0 * interior
    assert edge > band_errors(blurred, sharp)[0]


@pytest.mark.parametrize("method", ["sparse", "wiener"])
def test_intensity_units_are_preserved(case, method):
    blurred, _ = case
    unit = deconvolve(blurred, KERNEL, method=method, device="cpu")
    counts = deconvolve(1000 * blurred + 100, KERNEL, method=method, device="cpu")
    np.testing.assert_allclose(counts, 1000 * unit + 100, rtol=1e-3, atol=0.5)


def test_richardson_lucy_counts(device):
    blurred, sharp, kernel = synth.make_case((48, 48), 5, kernel="gaussian", kernel_size=9, photons=500)
    result = deconvolve(blurred, kernel, method="richardson-lucy", background=100, device=device)
    assert result.min() >= 100  # non-negative emission on top of the camera offset
    # Light is neither created nor lost: the mean stays (borders exchange light with the
    # outside, hence the tolerance).
    assert result.mean() == pytest.approx(blurred.mean(), rel=0.05)
    fitted = np.polyfit(result.ravel(), sharp.ravel(), 1)
    assert fitted[0] > 0


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_dtypes(case, dtype):
    blurred, _ = case
    scale = 200 if np.issubdtype(dtype, np.integer) else 1
    image = (blurred.clip(0, 1) * scale).astype(dtype)
    out = deconvolve(image, KERNEL, iterations=5, device="cpu")
    assert out.dtype == np.float32 and out.shape == image.shape


def test_rgb_is_per_channel(case):
    blurred, _ = case
    rgb = np.stack([blurred, 0.5 * blurred, blurred[::-1]], axis=-1)
    out = deconvolve(rgb, KERNEL, iterations=20, device="cpu")
    assert out.shape == rgb.shape
    grey = deconvolve(blurred[::-1], KERNEL, iterations=20, device="cpu")
    # Same range, same data: the same result up to float32 round-off (which the non-convex
    # shrinkage may amplify at a few pixels).
    assert rmse(out[..., 2], grey) < 5e-4


def test_flat_image_is_unchanged():
    flat = np.full((20, 20), 7.0)
    np.testing.assert_array_equal(deconvolve(flat, KERNEL, device="cpu"), flat.astype(np.float32))


def test_input_not_modified(case):
    blurred, _ = case
    copy = blurred.copy()
    deconvolve(blurred, KERNEL, iterations=3, device="cpu")
    np.testing.assert_array_equal(blurred, copy)


class TestValidation:
    def test_unknown_method(self, case):
        with pytest.raises(ValueError, match="unknown method 'lucy'"):
            deconvolve(case[0], KERNEL, method="lucy")

    def test_negative_data_for_richardson_lucy(self, case):
        with pytest.raises(ValueError, match="richardson-lucy needs non-negative data"):
            deconvolve(case[0] - 1, KERNEL, method="richardson-lucy", device="cpu")

    def test_kernel_larger_than_image(self):
        with pytest.raises(ValueError, match=r"kernel \(15, 15\) is larger than the image"):
            deconvolve(np.zeros((10, 10)), np.ones((15, 15)))

    def test_negative_kernel(self, case):
        with pytest.raises(ValueError, match="kernel must be finite, non-negative"):
            deconvolve(case[0], -KERNEL)

    def test_bad_iterations(self, case):
        with pytest.raises(ValueError, match="iterations must be a positive integer, got 0"):
            deconvolve(case[0], KERNEL, iterations=0)

    def test_not_an_array(self):
        with pytest.raises(TypeError, match="image must be a NumPy array, got list"):
            deconvolve([[1.0, 2.0]], KERNEL)

    def test_bad_shape(self):
        with pytest.raises(ValueError, match=r"image must have shape \(H, W\) or \(H, W, 3\)"):
            deconvolve(np.zeros((20, 20, 4)), KERNEL)
