"""Synthetic data: seeds reproduce, kernels are normalised, valid blur shapes, uint16 counts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import convolve2d

from napari_selfmsnet.evaluation import synth


class TestKernels:
    @pytest.mark.parametrize("size", [9, 15, 31])
    def test_motion_kernel_normalised_and_centred(self, size):
        kernel = synth.motion_kernel(size, 0)
        assert kernel.shape == (size, size)
        assert kernel.min() >= 0
        assert kernel.sum() == pytest.approx(1.0)
        yy, xx = np.mgrid[0:size, 0:size]
        centroid = (np.sum(yy * kernel), np.sum(xx * kernel))
        assert centroid == pytest.approx((size // 2, size // 2), abs=1.0)
        # A trajectory, not a blob: most of the window is empty.
        assert np.mean(kernel > 1e-3 * kernel.max()) < 0.5

    def test_motion_kernel_seeds(self):
        np.testing.assert_array_equal(synth.motion_kernel(15, 4), synth.motion_kernel(15, 4))
        assert not np.array_equal(synth.motion_kernel(15, 4), synth.motion_kernel(15, 5))
        gen_a, gen_b = np.random.default_rng(9), np.random.default_rng(9)
        np.testing.assert_array_equal(synth.motion_kernel(15, gen_a), synth.motion_kernel(15, gen_b))

    def test_motion_kernel_length(self):
        short = synth.motion_kernel(31, 1, length=6)
        assert np.count_nonzero(short > 0.01 * short.max()) < np.count_nonzero(
            synth.motion_kernel(31, 1, length=25) > 0.01 * short.max()
        )

    def test_gaussian_psf(self):
        psf = synth.gaussian_psf(15, 2.0)
        assert psf.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(psf, psf.T)
        np.testing.assert_allclose(psf, psf[::-1, ::-1])
        assert np.unravel_index(psf.argmax(), psf.shape) == (7, 7)

    def test_defocus_psf(self):
        psf = synth.defocus_psf(15, 4.0)
        assert psf.sum() == pytest.approx(1.0)
        assert psf[7, 7] == pytest.approx(psf.max())
        assert psf[7, 7 + 5] == 0.0  # outside the disc
        # Full pixels inside, partial coverage on the rim: the covered area is pi r^2.
        assert np.sum(psf / psf.max()) == pytest.approx(np.pi * 16, rel=0.02)

    @pytest.mark.parametrize("size", [4, 1, 7.0])
    def test_size_must_be_odd_integer(self, size):
        with pytest.raises(ValueError, match="size must be an odd integer >= 3"):
            synth.gaussian_psf(size, 1.0)

    def test_rng_type(self):
        with pytest.raises(TypeError, match="rng must be an integer seed or a numpy.random.Generator"):
            synth.motion_kernel(9, None)


class TestPhantom:
    def test_range_and_reproducibility(self):
        a = synth.phantom((64, 80), 3)
        assert a.shape == (64, 80)
        assert 0 <= a.min() and a.max() < 1
        np.testing.assert_array_equal(a, synth.phantom((64, 80), 3))
        assert not np.array_equal(a, synth.phantom((64, 80), 4))

    def test_has_structure(self):
        a = synth.phantom((96, 96), 0)
        # A dim background with bright sparse objects.
        assert np.median(a) < 0.2 and a.max() > 0.6

    def test_shape_check(self):
        with pytest.raises(ValueError, match=r"shape must be \(H, W\) with both at least 16"):
            synth.phantom((8, 64), 0)


class TestBlurAndNoise:
    def test_blur_valid_matches_scipy(self, rng):
        padded = rng.random((30, 34))
        kernel = synth.motion_kernel(7, 2)
        out = synth.blur_valid(padded, kernel)
        assert out.shape == (24, 28)
        np.testing.assert_allclose(out, convolve2d(padded, kernel, mode="valid"), atol=1e-12)

    def test_blur_valid_stack(self, rng):
        stack = rng.random((3, 20, 20))
        out = synth.blur_valid(stack, synth.gaussian_psf(5, 1.0))
        assert out.shape == (3, 16, 16)

    def test_add_noise_counts(self):
        counts = synth.add_noise(np.full((50, 50), 0.5), 0, photons=400, read_noise=2.0, offset=100)
        assert counts.dtype == np.uint16
        assert counts.mean() == pytest.approx(300, rel=0.02)
        # Poisson (200) plus read noise (4) variance.
        assert counts.var() == pytest.approx(204, rel=0.15)

    def test_add_noise_saturates(self):
        counts = synth.add_noise(np.ones((4, 4)), 0, photons=1e6, offset=0)
        assert counts.max() == 65535

    def test_add_noise_rejects_negative(self):
        with pytest.raises(ValueError, match="blurred must be non-negative"):
            synth.add_noise(-np.ones((4, 4)), 0)


class TestMakeCase:
    @pytest.mark.parametrize("kind", ["motion", "gaussian", "defocus"])
    def test_shapes_and_types(self, kind):
        blurred, sharp, kernel = synth.make_case((40, 48), 1, kernel=kind, kernel_size=11)
        assert blurred.dtype == np.uint16 and blurred.shape == (40, 48)
        assert sharp.shape == (40, 48) and 0 <= sharp.min() and sharp.max() <= 1
        assert kernel.shape == (11, 11) and kernel.sum() == pytest.approx(1.0)

    def test_reproducible(self):
        a, b = synth.make_case((32, 32), 5), synth.make_case((32, 32), 5)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)

    def test_stack_shares_one_kernel(self):
        case = synth.make_case((32, 32), 2, planes=3, kernel_size=9)
        assert case.blurred.shape == case.sharp.shape == (3, 32, 32)
        assert case.kernel.shape == (9, 9)
        assert not np.array_equal(case.sharp[0], case.sharp[1])

    def test_sharp_lies_under_the_observation(self):
        # Noise-free counts equal the blurred phantom: the sharp crop must sit under the
        # blurred pixels, which the flux near a bright spot shows.
        kernel = np.zeros((5, 5))
        kernel[2, 2] = 1.0  # identity blur: blurred is the (scaled) sharp crop itself
        blurred, sharp, _ = synth.make_case((32, 32), 3, kernel=kernel, photons=1e4, read_noise=0, offset=0)
        assert np.corrcoef(blurred.ravel(), sharp.ravel())[0, 1] > 0.99

    def test_unknown_kind(self):
        with pytest.raises(ValueError, match="unknown kernel kind 'airy'"):
            synth.make_case((32, 32), 0, kernel="airy")
