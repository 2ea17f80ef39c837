"""The Levin scoring protocol: alignment up to shift, PSNR/SSIM, error ratio, kernel similarity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.ndimage import shift as nd_shift
from scipy.signal import fftconvolve

from napari_selfmsnet.evaluation import levin, metrics
from napari_selfmsnet.evaluation.levin import orient_kernel
from napari_selfmsnet.evaluation.metrics import (
    affine_fit,
    align_up_to_shift,
    error_ratio,
    kernel_similarity,
    levin_scores,
    psnr,
    ssim,
)

LEVIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "levin"


def smooth_image(rng: np.random.Generator, shape=(96, 96)) -> np.ndarray:
    """Band-limited texture in [0, 1], so sub-pixel shifts are well defined."""
    image = gaussian_filter(rng.random(shape), 2.0)
    return (image - image.min()) / np.ptp(image)


class TestPsnrSsim:
    def test_identical_images(self, rng):
        image = smooth_image(rng)
        assert psnr(image, image) == np.inf
        assert ssim(image, image) == pytest.approx(1.0)

    def test_known_psnr(self):
        sharp = np.full((40, 40), 0.5)
        assert psnr(sharp + 0.01, sharp) == pytest.approx(40.0)

    def test_rejects_integer_images(self):
        with pytest.raises(TypeError, match="divide 8-bit data by 255"):
            psnr(np.zeros((8, 8), np.uint8), np.zeros((8, 8)))

    def test_rejects_shape_mismatch(self):
        with pytest.raises(ValueError, match="same shape"):
            ssim(np.zeros((8, 8)), np.zeros((8, 9)))


class TestAlignUpToShift:
    def test_integer_shift_aligns_exactly(self, rng):
        sharp = smooth_image(rng)
        moved = np.roll(sharp, (2, -3), axis=(0, 1))
        aligned = align_up_to_shift(moved, sharp)
        assert aligned.shift == (2.0, -3.0)
        assert aligned.ssd < 1e-20
        assert aligned.aligned.shape == aligned.sharp.shape == (66, 66)

    def test_sub_pixel_shift_found(self, rng):
        sharp = smooth_image(rng)
        moved = nd_shift(sharp, (1.25, -0.5), order=3, mode="nearest")
        aligned = align_up_to_shift(moved, sharp)
        assert aligned.shift == pytest.approx((1.25, -0.5), abs=0.25)
        assert psnr(aligned.aligned, aligned.sharp) > 40
        assert psnr(moved[15:-15, 15:-15], sharp[15:-15, 15:-15]) < 30

    def test_exhaustive_search_matches_direct_evaluation(self, rng):
        # Every shift's SSD from the FFT/integral-image search equals the direct bilinear SSD.
        sharp, result = smooth_image(rng, (40, 44)), smooth_image(rng, (40, 44))
        shifts = np.arange(-2, 2.01, 0.25)
        fast = metrics._ssd_all_shifts(result[..., None], sharp[..., None], 3, shifts)
        target = sharp[3:-3, 3:-3]
        for i, sy in enumerate(shifts):
            for j, sx in enumerate(shifts):
                sampled = metrics._bilinear_sample(result[..., None], (3 + sy, 34), (3 + sx, 38))[..., 0]
                assert fast[i, j] == pytest.approx(np.sum((sampled - target) ** 2), rel=1e-9, abs=1e-9)

    def test_rgb(self, rng):
        sharp = np.stack([smooth_image(rng) for _ in range(3)], axis=-1)
        aligned = align_up_to_shift(np.roll(sharp, (1, 1), axis=(0, 1)), sharp)
        assert aligned.shift == (1.0, 1.0)
        assert aligned.aligned.shape == (66, 66, 3)

    def test_crop_must_exceed_shift(self, rng):
        image = smooth_image(rng)
        with pytest.raises(ValueError, match=r"crop \(4\) must be at least max_shift \+ 1"):
            align_up_to_shift(image, image, max_shift=5, crop=4)


class TestKernelSimilarity:
    def test_shifted_copy_is_one(self, rng):
        kernel = rng.random((7, 7))
        shifted = np.zeros((13, 11))
        shifted[3:10, 1:8] = kernel
        assert kernel_similarity(shifted, kernel) == pytest.approx(1.0)

    def test_different_kernels_score_lower(self):
        line = np.zeros((9, 9))
        line[4, :] = 1
        assert kernel_similarity(line, line.T) < 0.5

    def test_rejects_empty_kernel(self):
        with pytest.raises(ValueError, match="estimate kernel is all zeros"):
            kernel_similarity(np.zeros((3, 3)), np.ones((3, 3)))


def test_error_ratio_is_ssd_ratio(rng):
    # Constant offsets (white noise would not do: sub-pixel interpolation averages it down).
    sharp = smooth_image(rng)
    assert error_ratio(sharp + 0.002, sharp + 0.001, sharp) == pytest.approx(4.0)


def test_affine_fit_recovers_units(rng):
    truth = smooth_image(rng)
    counts = 300 * truth + 100
    np.testing.assert_allclose(affine_fit(counts, truth), truth, atol=1e-9)


class TestLevinScores:
    def test_all_keys(self, rng):
        sharp = smooth_image(rng)
        kernel = rng.random((5, 5))
        scores = levin_scores(sharp + 0.01, sharp, reference=sharp + 0.02, kernel=kernel, true_kernel=kernel)
        assert set(scores) == {"psnr", "ssim", "ssd", "shift_y", "shift_x", "error_ratio", "kernel_similarity"}
        assert scores["psnr"] == pytest.approx(40.0)
        assert scores["error_ratio"] == pytest.approx(0.25)
        assert scores["kernel_similarity"] == pytest.approx(1.0)

    def test_fit_intensity_scores_counts(self, rng):
        sharp = smooth_image(rng)
        counts = np.roll(500 * sharp + 100, (1, 0), axis=(0, 1)).astype(np.uint16)
        scores = levin_scores(counts, sharp, fit_intensity=True)
        assert scores["shift_y"] == 1.0
        assert scores["psnr"] > 45  # only the uint16 rounding remains


class TestKernelOrientation:
    def test_rotated_kernel_is_detected(self, rng):
        sharp = smooth_image(rng, (120, 120))
        kernel = np.zeros((9, 9))
        kernel[4, 4:] = 1.0
        kernel[2:5, 8] = 1.0  # an asymmetric hook
        blurred = np.roll(fftconvolve(sharp, kernel / kernel.sum(), mode="same"), (2, -1), axis=(0, 1))
        chosen, rotated, res_stored, res_rotated = orient_kernel(blurred, sharp, kernel[::-1, ::-1])
        assert rotated
        np.testing.assert_allclose(chosen, kernel / kernel.sum())
        assert res_rotated < 1e-6 < res_stored

    @pytest.mark.skipif(not LEVIN.is_dir(), reason="Levin data set not present")
    @pytest.mark.parametrize("kernel_index", range(1, 9))
    def test_levin_orientation_is_clear(self, kernel_index):
        case = levin.load_levin_case(LEVIN, 1, kernel_index)
        chosen, other = sorted((case.residual_stored, case.residual_rotated))
        # The true orientation explains the capture to about 1 % RMS, clearly better than
        # the other one.
        assert chosen < 2.5 / 255
        assert chosen < 0.75 * other
        # As found on the full set: kernels 4 and 8 are stored in our orientation.
        assert case.rotated == (kernel_index not in (4, 8))
        assert case.kernel.sum() == pytest.approx(1.0)
        assert case.blurred.shape == case.sharp.shape == (255, 255)

    @pytest.mark.skipif(not LEVIN.is_dir(), reason="Levin data set not present")
    def test_list_cases(self):
        assert len(levin.list_levin_cases(LEVIN)) == 32
        assert levin.list_levin_cases(LEVIN, "im1_kernel*") == [(1, j) for j in range(1, 9)]

    def test_missing_folder(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="Levin data folder not found"):
            levin.list_levin_cases(tmp_path / "nowhere")
