"""Blind kernel recovery on noisy images: real runs of the default preset, small enough for CI.

A photograph with 2% camera noise and a 13 px camera-shake kernel, and a fluorescence-like
phantom at 300 photons blurred by a Gaussian PSF. Each is run from two noise draws: one lucky
draw proves nothing about a blind method. The full-size figures are in docs/benchmarks.md
(benchmarks/noise.py).
"""

import numpy as np
import pytest
import torch
from _scenes import shaken_camera

from napari_selfmsnet import deblur
from napari_selfmsnet.evaluation.metrics import kernel_similarity
from napari_selfmsnet.evaluation.synth import gaussian_psf, make_case, motion_kernel


@pytest.fixture(autouse=True)
def one_thread():
    # The outcome of a blind run depends on the order of float sums: the thread count is part
    # of what makes a run reproducible.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("draw", [0, 1])
def test_a_camera_shake_kernel_is_recovered_at_two_percent_noise(draw):
    kernel = motion_kernel(13, rng=5)
    blurred = shaken_camera(kernel, 112, 0.02, draw)
    photo = np.clip(np.rint(255 * blurred), 0, 255).astype(np.uint8)  # stored 8-bit, as a camera would

    result = deblur(photo, 15, seed=0)  # a support a little larger than the blur, as users give

    assert kernel_similarity(result.kernel, kernel) >= 0.8
    assert result.params["noise"]["sigma"] == pytest.approx(0.02 * 255, rel=0.25)
    assert not result.warnings
    assert result.params["smooth_psf"] is False  # a shake: deconvolved with the stronger prior


@pytest.mark.parametrize("draw", [1, 2])
def test_a_gaussian_psf_is_recovered_at_300_photons(draw):
    psf = gaussian_psf(13, 2.0)
    case = make_case((192, 192), np.random.default_rng(draw), kernel=psf, photons=300)

    result = deblur(case.blurred, psf.shape, seed=0)

    # The polish alone narrows a smooth PSF (about 0.6 here); the kernel as the scales found
    # it is kept because its misfit does not fit the noise.
    assert kernel_similarity(result.kernel, psf) >= 0.8
    assert result.params["smooth_psf"] is True
    assert result.params["noise"]["model"] == "poisson-gaussian"
    assert result.image.dtype == np.float32 and result.image.shape == case.blurred.shape
