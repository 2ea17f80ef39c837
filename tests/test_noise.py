"""The noise model measured from the image itself (engine/noise.py)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_selfmsnet.engine.noise import NoiseModel, estimate_noise
from napari_selfmsnet.evaluation.synth import blur_valid, gaussian_psf, make_case, motion_kernel, phantom


@pytest.fixture(scope="module")
def blurred_phantom() -> np.ndarray:
    """A noise-free blurred phantom in [0, 1], 160 x 160."""
    return blur_valid(phantom((180, 180), 4), motion_kernel(21, 5))


@pytest.mark.parametrize("sigma", [0.005, 0.01, 0.02, 0.05])
def test_gaussian_noise_is_measured_within_ten_percent(blurred_phantom, sigma):
    rng = np.random.default_rng(int(sigma * 1000))
    noisy = blurred_phantom + rng.normal(0, sigma, blurred_phantom.shape)
    model = estimate_noise(noisy)
    assert model.model == "gaussian"
    assert model.gain == 0.0
    assert model.sigma == pytest.approx(sigma, rel=0.1)


def test_gaussian_estimate_agrees_with_scikit_image(blurred_phantom):
    restoration = pytest.importorskip("skimage.restoration")
    pytest.importorskip("pywt")
    noisy = blurred_phantom + np.random.default_rng(1).normal(0, 0.02, blurred_phantom.shape)
    ours = estimate_noise(noisy).sigma
    theirs = float(restoration.estimate_sigma(noisy))
    assert ours == pytest.approx(theirs, rel=0.1)


@pytest.mark.parametrize("photons", [100, 1000, 10000])
def test_camera_counts_give_the_poisson_gaussian_line(photons):
    # make_case: counts = Poisson(photons * intensity) + Normal(0, 2) + 100, so var = (z - 100) + 4.
    case = make_case((192, 192), 3, kernel=gaussian_psf(11, 2.0), photons=photons)
    model = estimate_noise(case.blurred, quantised=True)
    assert model.model == "poisson-gaussian"
    assert model.gain == pytest.approx(1.0, rel=0.15)
    counts = case.blurred.astype(np.float64)
    true_rms = np.sqrt(np.mean(np.maximum(counts - 100, 0) + 4))
    assert model.sigma == pytest.approx(true_rms, rel=0.1)


def test_quantisation_is_a_floor_for_integer_data():
    flat = np.full((64, 64), 7, dtype=np.uint8)
    assert estimate_noise(flat, quantised=True).sigma == pytest.approx(np.sqrt(1 / 12))
    assert estimate_noise(flat.astype(np.float64)).sigma == 0.0


def test_rgb_channels_are_measured_together(blurred_phantom):
    rng = np.random.default_rng(2)
    rgb = np.stack([blurred_phantom * f for f in (1.0, 0.8, 0.6)], axis=-1) + rng.normal(0, 0.01, (160, 160, 3))
    assert estimate_noise(rgb).sigma == pytest.approx(0.01, rel=0.1)


def test_input_is_not_modified_and_bad_shapes_are_refused(blurred_phantom):
    before = blurred_phantom.copy()
    estimate_noise(blurred_phantom)
    np.testing.assert_array_equal(before, blurred_phantom)
    with pytest.raises(ValueError, match=r"sides of at least 8 pixels, got \(4, 40\)"):
        estimate_noise(np.zeros((4, 40)))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\)"):
        estimate_noise(np.zeros((3, 20, 20, 2)))


def test_model_reports_itself():
    model = NoiseModel(sigma=2.0, gain=1.0, intercept=-96.0, model="poisson-gaussian")
    assert model.to_dict() == {"model": "poisson-gaussian", "sigma": 2.0, "gain": 1.0, "intercept": -96.0}
