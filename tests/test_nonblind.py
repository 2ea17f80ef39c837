"""Non-blind deconvolution: recovers a synthetic blur, no border ringing, units and dtypes kept."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import convolve2d

from napari_selfmsnet.engine import tiling
from napari_selfmsnet.engine.nonblind import deconvolve
from napari_selfmsnet.evaluation import synth

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


# --- Tiles: frames solved piece by piece must match the frame solved whole. ---

TILE_KERNEL = synth.motion_kernel(9, 3)
TILE_SIDE = 128


def psnr(a: np.ndarray, reference: np.ndarray) -> float:
    span = float(reference.max() - reference.min())
    return float(10 * np.log10(span**2 / np.mean((np.asarray(a, np.float64) - reference) ** 2)))


@pytest.fixture(scope="module")
def large_case():
    """A 300 x 300 valid blur of a phantom: 3 x 3 tiles of 128 px with a 9 x 9 kernel."""
    padded = synth.phantom((308, 308), 7)
    blurred = convolve2d(padded, TILE_KERNEL, mode="valid")
    return blurred + np.random.default_rng(0).normal(0, 0.003, blurred.shape)


@pytest.fixture(scope="module")
def sparse_whole_and_tiled(large_case):
    whole = deconvolve(large_case, TILE_KERNEL, device="cpu", tile_size=None)
    tiled = deconvolve(large_case, TILE_KERNEL, device="cpu", tile_size=TILE_SIDE)
    return whole, tiled


class TestTiles:
    def test_tiled_sparse_matches_untiled(self, sparse_whole_and_tiled):
        whole, tiled = sparse_whole_and_tiled
        assert tiled.dtype == np.float32 and tiled.shape == whole.shape
        # Measured: 60.5 dB, largest difference 1.9 % of the range (at a few pixels of
        # strong edges, where the non-convex prior amplifies small differences).
        assert psnr(tiled, whole) > 50
        assert np.abs(tiled - whole).max() < 0.05 * np.ptp(whole)

    def test_no_seams(self, large_case, sparse_whole_and_tiled):
        whole, tiled = sparse_whole_and_tiled

        # A seam is a jump of the tiled-minus-untiled difference all along a row or column
        # (single pixels may differ more: the non-convex prior amplifies tiny differences
        # at a few edge pixels). Mean jump between neighbouring lines, measured: at most
        # 0.25 % of the range with the default overlap; butting tiles (overlap 0): 6 %.
        def largest_jump(result):
            difference = result.astype(np.float64) - whole
            jumps = [np.abs(np.diff(difference, axis=axis)).mean(axis=1 - axis).max() for axis in (0, 1)]
            return max(jumps) / np.ptp(whole)

        assert largest_jump(tiled) < 0.01
        butted = deconvolve(large_case, TILE_KERNEL, device="cpu", tile_size=TILE_SIDE, tile_overlap=0)
        assert largest_jump(butted) > 0.03

    def test_richardson_lucy_tiled(self, large_case, device):
        image = 1000 * large_case.clip(0) + 100
        kwargs = {"method": "richardson-lucy", "background": 100, "device": device}
        whole = deconvolve(image, TILE_KERNEL, tile_size=None, **kwargs)
        tiled = deconvolve(image, TILE_KERNEL, tile_size=TILE_SIDE, **kwargs)
        assert tiled.min() >= 100
        assert psnr(tiled, whole) > 55  # measured 74.3 dB

    def test_rgb_and_non_square(self, large_case):
        rgb = np.stack([large_case, 0.5 * large_case, large_case[::-1]], axis=-1)[:, :200]
        whole = deconvolve(rgb, TILE_KERNEL, device="cpu", iterations=30, tile_size=None)
        tiled = deconvolve(rgb, TILE_KERNEL, device="cpu", iterations=30, tile_size=TILE_SIDE)
        assert tiled.shape == rgb.shape
        assert psnr(tiled, whole) > 50  # measured 67.1 dB

    def test_a_tile_covering_the_frame_is_the_untiled_solve(self, case):
        blurred, _ = case
        untiled = deconvolve(blurred, KERNEL, iterations=10, device="cpu", tile_size=None)
        for tile_size in ("auto", 0, 64, 1000):
            out = deconvolve(blurred, KERNEL, iterations=10, device="cpu", tile_size=tile_size)
            assert out.tobytes() == untiled.tobytes()

    def test_auto_tiles_when_the_budget_is_small(self, large_case, monkeypatch):
        budget = tiling.solver_peak_bytes((TILE_SIDE, TILE_SIDE), TILE_KERNEL.shape)
        monkeypatch.setattr(tiling, "memory_budget", lambda device: budget)
        auto = deconvolve(large_case, TILE_KERNEL, device="cpu", iterations=20, tile_size="auto")
        explicit = deconvolve(large_case, TILE_KERNEL, device="cpu", iterations=20, tile_size=73)
        # The smallest tile (2 x 32 + 9 px): no multiple of 256 fits this budget.
        assert auto.tobytes() == explicit.tobytes()


class TestTilePlan:
    @pytest.mark.parametrize("length", [129, 200, 300, 301, 1000])
    @pytest.mark.parametrize("overlap", [0, 1, 32])
    def test_blend_weights_sum_to_one(self, length, overlap):
        spans = tiling._tile_spans(length, TILE_SIDE, overlap)
        assert spans[0][0] == 0 and spans[-1][1] == length
        total = np.zeros(length)
        for (start, stop), weight in zip(spans, tiling._blend_weights(spans, overlap)):
            assert stop - start == TILE_SIDE and weight.min() >= 0
            total[start:stop] += weight
        np.testing.assert_allclose(total, 1.0, atol=1e-12)

    def test_small_frames_are_not_tiled(self):
        budget = tiling.memory_budget("cpu")
        assert budget >= 2**28  # a quarter of RAM: at least 256 MiB anywhere these tests run
        assert tiling.auto_tile_size((300, 300), (9, 9), budget) is None
        assert tiling.auto_tile_size((2048, 2048), (31, 31), budget, channels=3) is None

    def test_large_frames_get_the_largest_tile_that_fits(self):
        shape, kernel = (8000, 6000), (25, 25)
        budget = tiling.solver_peak_bytes((1000, 1000), kernel)
        tile = tiling.auto_tile_size(shape, kernel, budget)
        assert tile == 768
        assert tiling.solver_peak_bytes((tile, tile), kernel) <= budget
        assert tiling.solver_peak_bytes((tile + 256, tile + 256), kernel) > budget
        assert tiling.auto_tile_size(shape, kernel, 1000) == 2 * 50 + 25  # nothing fits: the smallest

    def test_peak_bytes_estimate(self):
        # 4 bytes x the 140 x 140 FFT domain (next_fast_len(128 + 9)) x (3 shared + 27 per
        # channel) float32 buffers.
        assert tiling.solver_peak_bytes((128, 128), (9, 9)) == 4 * 140 * 140 * 30
        grey = tiling.solver_peak_bytes((500, 400), (9, 9))
        assert tiling.solver_peak_bytes((500, 400), (9, 9), channels=3) > 2.5 * grey
        assert tiling.solver_peak_bytes((500, 400), (9, 9), method="richardson-lucy") < 0.6 * grey

    def test_default_overlap(self):
        assert tiling.default_tile_overlap((9, 9)) == 32
        assert tiling.default_tile_overlap((21, 41)) == 82


class TestTileValidation:
    def test_unknown_string(self, case):
        with pytest.raises(ValueError, match=r"unknown tile_size 'big'; use 'auto', None \(never tile\) or an int"):
            deconvolve(case[0], KERNEL, tile_size="big")

    @pytest.mark.parametrize("tile_size", [12.5, True, [64]])
    def test_tile_size_type(self, case, tile_size):
        with pytest.raises(TypeError, match="tile_size must be 'auto', None or an int"):
            deconvolve(case[0], KERNEL, tile_size=tile_size)

    def test_negative_tile_size(self, case):
        with pytest.raises(ValueError, match=r"tile_size must be >= 0 pixels \(0 never tiles\), got -64"):
            deconvolve(case[0], KERNEL, tile_size=-64)

    def test_tile_too_small_for_overlap_and_kernel(self, case):
        with pytest.raises(ValueError, match=r"tile_size 40 is too small .* at least 2 x overlap \+ kernel side = 75"):
            deconvolve(case[0], KERNEL, tile_size=40)
        with pytest.raises(ValueError, match=r"overlap of 20 px and a 11x11 kernel: .* = 51 px"):
            deconvolve(case[0], KERNEL, tile_size=50, tile_overlap=20)

    def test_overlap(self, case):
        with pytest.raises(ValueError, match="tile_overlap must be >= 0 pixels, got -1"):
            deconvolve(case[0], KERNEL, tile_overlap=-1)
        with pytest.raises(TypeError, match=r"tile_overlap must be an int \(pixels\) or None, got 'wide'"):
            deconvolve(case[0], KERNEL, tile_overlap="wide")
