"""The public pipeline end to end: real optimizer, small images, few iterations."""

from dataclasses import FrozenInstanceError

import numpy as np
import pytest
import torch

import napari_selfmsnet
from napari_selfmsnet import Progress, deblur
from napari_selfmsnet.engine.convolution import center_crop, valid_convolve
from napari_selfmsnet.evaluation.metrics import align_up_to_shift, kernel_similarity, psnr
from napari_selfmsnet.evaluation.synth import motion_kernel


def _camera(size: int) -> np.ndarray:
    from skimage import data
    from skimage.transform import resize

    return resize(data.camera().astype(np.float64) / 255, (size, size), anti_aliasing=True)


@pytest.fixture(scope="module")
def blurred_case():
    """A 64 x 64 crop blurred by a 9 x 9 motion kernel (valid convolution, light noise)."""
    kernel = motion_kernel(9, rng=11)
    padded = _camera(128)[20 : 20 + 72, 30 : 30 + 72]
    sharp = center_crop(torch.from_numpy(padded)[None, None], kernel.shape)[0, 0].numpy()
    blurred = valid_convolve(torch.from_numpy(padded)[None, None], torch.from_numpy(kernel))[0, 0].numpy()
    blurred = blurred + np.random.default_rng(0).normal(0, 0.005, blurred.shape)
    return blurred.astype(np.float32), sharp, kernel


def _psnr_up_to_shift(image: np.ndarray, sharp: np.ndarray) -> float:
    # A blind method may return image and kernel shifted against each other (Levin protocol).
    aligned = align_up_to_shift(np.clip(image, 0, 1), sharp, max_shift=3, crop=6)
    return psnr(aligned.aligned, aligned.sharp)


def test_short_run_raises_psnr_and_recovers_kernel(blurred_case):
    blurred, sharp, kernel = blurred_case
    result = deblur(blurred, 9, method="self-msnet", iterations=150, preset="fast", seed=0)
    assert result.image.shape == blurred.shape and result.image.dtype == np.float32
    gain = _psnr_up_to_shift(result.image, sharp) - _psnr_up_to_shift(blurred, sharp)
    similarity = kernel_similarity(result.kernel, kernel)
    # Measured on this case: +0.56 dB and similarity 0.81 after 150 iterations (the true
    # kernel's non-blind deconvolution reaches +6.6 dB: the gap is the kernel error).
    assert gain > 0.3, f"PSNR gain {gain:.2f} dB"
    assert similarity > 0.75, f"kernel similarity {similarity:.3f}"


class TestResult:
    def test_fields(self, blurred_case):
        blurred = blurred_case[0]
        result = deblur(blurred, 7, method="self-msnet-s", iterations=3)
        assert result.kernel.shape == (7, 7) and result.kernel.dtype == np.float32
        assert result.kernel.min() >= 0 and result.kernel.sum() == pytest.approx(1, abs=1e-5)
        assert len(result.history) == 3 and np.all(np.isfinite(result.history))
        assert result.params["kernel_size"] == [7, 7] and result.params["config"]["iterations"] == 3
        assert result.device == "cpu" and result.elapsed_s > 0 and not result.cancelled

    def test_uint16_counts_in_float32_counts_out(self, blurred_case):
        counts = (blurred_case[0] * 3000 + 100).astype(np.uint16)
        before = counts.copy()
        result = deblur(counts, 7, method="self-msnet-s", iterations=3)
        np.testing.assert_array_equal(counts, before)  # input untouched
        assert result.image.dtype == np.float32
        # Same units: counts, not [0, 1] (deconvolution may overshoot the range; never clipped).
        assert counts.min() <= np.median(result.image) <= counts.max()
        assert result.image.mean() == pytest.approx(counts.mean(), rel=0.25)

    def test_rgb(self, blurred_case):
        rgb = np.stack([blurred_case[0]] * 3, axis=-1)
        result = deblur(rgb, 5, iterations=2)
        assert result.image.shape == rgb.shape and result.image.dtype == np.float32

    def test_multiscale_on_odd_non_square_image(self, rng):
        image = rng.random((61, 70)).astype(np.float32)
        result = deblur(image, (7, 5), method="self-msnet", iterations=2)
        assert result.image.shape == (61, 70) and result.kernel.shape == (7, 5)


def test_seed_reproduces_run(blurred_case):
    a = deblur(blurred_case[0], 7, method="self-msnet", iterations=4, seed=5)
    b = deblur(blurred_case[0], 7, method="self-msnet", iterations=4, seed=5)
    c = deblur(blurred_case[0], 7, method="self-msnet", iterations=4, seed=6)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.kernel, b.kernel)
    assert not np.array_equal(a.image, c.image)


def test_callback_progress_and_cancel(blurred_case):
    seen: list[Progress] = []

    def callback(progress: Progress) -> bool:
        seen.append(progress)
        return progress.stage == "blind" and progress.step >= 20

    result = deblur(blurred_case[0], 7, method="self-msnet-s", iterations=500, callback=callback, progress_every=10)
    assert result.cancelled and result.iterations_run == 20
    assert [p.step for p in seen if p.stage == "blind"] == [10, 20]
    assert seen[0].image.shape == blurred_case[0].shape and seen[0].kernel.shape == (7, 7)
    assert result.kernel.sum() == pytest.approx(1, abs=1e-5)
    # A stop ends the blind stage only: the polish and the deconvolution still run and report
    # (the deconvolution once, and again at a higher weight while the misfit is below the noise).
    # The polish reports within each round's solve too: five records a round.
    later = [p.stage for p in seen][2:]
    assert later[:50] == ["polish"] * 50 and set(later[50:]) == {"deconvolve"} and len(later[50:]) % 10 == 0


def test_records_are_frozen_and_a_true_return_stops_every_stage(blurred_case):
    seen: list[Progress] = []

    def callback(progress: Progress) -> bool:
        seen.append(progress)
        return True

    result = deblur(blurred_case[0], 7, method="self-msnet-s", iterations=500, callback=callback, progress_every=10)
    assert result.cancelled and result.iterations_run == 10
    # Each later stage stopped at its first record (the polish within its first round's solve).
    assert [(p.stage, p.step) for p in seen] == [("blind", 10), ("polish", 0), ("deconvolve", 10)]
    assert result.image.shape == blurred_case[0].shape and np.all(np.isfinite(result.image))
    with pytest.raises(FrozenInstanceError):
        seen[0].step = 3


class TestBadInput:
    @pytest.mark.parametrize(
        ("image", "kernel_size", "error", "match"),
        [
            (np.full((32, 32), np.nan, np.float32), 5, ValueError, "NaN"),
            (np.ones((32, 32), np.float32), 5, ValueError, "constant"),
            (np.zeros((0, 32), np.float32), 5, ValueError, "empty"),
            (np.random.rand(32, 32).astype(np.float32), 6, ValueError, "odd"),
            (np.random.rand(32, 32).astype(np.float32), 31, ValueError, "too large"),
            (np.random.rand(2, 3, 32, 32).astype(np.float32), 5, ValueError, "2-D"),
            (np.random.rand(32, 32) > 0.5, 5, TypeError, "dtype"),
            ([[1, 2], [3, 4]], 3, TypeError, "NumPy array"),
            (np.random.rand(32, 32).astype(np.float32), 5.0, TypeError, "kernel_size"),
        ],
    )
    def test_rejected_with_message(self, image, kernel_size, error, match):
        with pytest.raises(error, match=match):
            deblur(image, kernel_size, iterations=1)

    def test_unknown_preset_method_device(self, blurred_case):
        with pytest.raises(ValueError, match="unknown preset"):
            deblur(blurred_case[0], 5, preset="turbo")
        with pytest.raises(ValueError, match="unknown method"):
            deblur(blurred_case[0], 5, method="selfdeblur")
        with pytest.raises(ValueError, match="unknown device|no CUDA"):
            deblur(blurred_case[0], 5, device="cuda:7" if not torch.cuda.is_available() else "tpu")

    def test_too_small_for_multiscale_suggests_single_scale(self):
        with pytest.raises(ValueError, match="self-msnet-s"):
            deblur(np.random.rand(20, 20).astype(np.float32), 7, iterations=1)
        # Refused before the size is measured, not after the probe.
        with pytest.raises(ValueError, match="self-msnet-s"):
            deblur(np.random.rand(20, 20).astype(np.float32), "auto", iterations=1)

    def test_seed_beyond_torch_range_names_the_range(self, blurred_case):
        with pytest.raises(ValueError, match="seed must be an int from 0"):
            deblur(blurred_case[0], 5, iterations=1, seed=2**70)


def test_rgba_is_deblurred_as_rgb_with_a_warning(blurred_case):
    grey = blurred_case[0]
    rgba = np.stack([grey, grey, grey, np.ones_like(grey)], axis=-1)
    result = deblur(rgba, 5, iterations=2)
    assert result.image.shape == grey.shape + (3,)
    assert result.warnings[0].startswith("the image is RGBA")


def test_public_api_surface():
    assert callable(napari_selfmsnet.deblur)
    assert {"fast", "quality"} <= set(napari_selfmsnet.PRESETS)


@pytest.fixture(scope="module")
def frame():
    """128 x 144, textured in its lower-right quadrant only, blurred by a 5 x 5 kernel."""
    # Texture only in the lower-right quadrant; the rest is flat with light noise.
    rng = np.random.default_rng(4)
    frame = 0.5 + rng.normal(0, 0.01, (128, 144))
    texture = np.kron(rng.random((12, 12)), np.ones((6, 6)))[:64, :64]
    frame[64:, 80:] += texture - 0.5
    kernel = motion_kernel(5, rng=1)
    blurred = valid_convolve(torch.from_numpy(np.pad(frame, 2, mode="reflect"))[None, None], torch.from_numpy(kernel))
    return blurred[0, 0].numpy().astype(np.float32)


class TestRegion:
    """The kernel estimated on a window, the whole frame deconvolved with it."""

    def test_explicit_region(self, frame):
        seen: list[Progress] = []
        result = deblur(frame, 5, method="self-msnet-s", iterations=20, region=(60, 70, 64, 70), callback=seen.append)
        assert result.params["region"] == [60, 70, 64, 70]
        assert result.image.shape == frame.shape and np.all(np.isfinite(result.image))
        assert result.kernel.sum() == pytest.approx(1, abs=1e-5)
        # Previews show the region being fitted, and say where it lies.
        assert seen[0].image.shape == (64, 70) and seen[0].region == [60, 70, 64, 70]

    def test_auto_region_on_a_large_frame_picks_the_textured_window(self, frame, monkeypatch):
        from napari_selfmsnet.engine import regions

        # Scaled-down thresholds so a small frame counts as "large" here.
        monkeypatch.setattr(regions, "AUTO_REGION_THRESHOLD", 100)
        monkeypatch.setattr(regions, "AUTO_REGION_SIZE", 48)
        result = deblur(frame, 5, method="self-msnet-s", iterations=3)
        top, left, h, w = result.params["region"]
        assert (h, w) == (48, 48) and top >= 56 and left >= 72
        assert result.image.shape == frame.shape

    def test_small_frames_and_full_use_the_whole_image(self, frame):
        for region in ("auto", "full"):
            result = deblur(frame, 5, method="self-msnet-s", iterations=1, region=region)
            assert result.params["region"] == [0, 0, 128, 144]

    @pytest.mark.parametrize(
        ("region", "error", "match"),
        [
            ("somewhere", ValueError, "region must be 'auto', 'full'"),
            ((100, 100, 64, 64), ValueError, "inside"),
            ((0, 0, 8, 8), ValueError, "twice"),
        ],
    )
    def test_bad_region(self, frame, region, error, match):
        with pytest.raises(error, match=match):
            deblur(frame, 5, iterations=1, region=region)


class TestWarmStart:
    def test_second_run_starts_from_the_first(self, blurred_case):
        blurred = blurred_case[0]
        first = deblur(blurred, 7, method="self-msnet-s", iterations=20, region=(0, 0, 60, 64))
        assert first.warm_start is not None
        second = deblur(blurred, 7, method="self-msnet-s", iterations=5, warm_start=first, seed=3)
        assert second.params["warm_started"] and second.params["region"] == [0, 0, 60, 64]
        cold = deblur(blurred, 7, method="self-msnet-s", iterations=5, region=(0, 0, 60, 64), seed=3)
        assert second.history[0] < cold.history[-1]

    def test_refused_when_not_a_result_or_incompatible(self, blurred_case):
        blurred = blurred_case[0]
        with pytest.raises(TypeError, match="warm_start must be a DeblurResult"):
            deblur(blurred, 7, iterations=1, warm_start={"network": {}})
        first = deblur(blurred, 7, method="self-msnet-s", iterations=2)
        with pytest.raises(ValueError, match="different image size, kernel size"):
            deblur(blurred, 5, method="self-msnet-s", iterations=1, warm_start=first)

    def test_cancelled_run_hands_nothing_on(self, blurred_case):
        result = deblur(blurred_case[0], 7, method="self-msnet-s", iterations=50, callback=lambda p: True)
        assert result.cancelled and result.warm_start is None


def test_tiny_image_runs(rng):
    # A 24 x 24 image's canvas would make the deepest level a single pixel, which BatchNorm
    # cannot normalise; the canvas has a floor so such images still run.
    image = rng.random((24, 24)).astype(np.float32)
    result = deblur(image, 5, method="self-msnet-s", iterations=2)
    assert result.image.shape == (24, 24) and np.all(np.isfinite(result.image))


class TestCallback:
    @pytest.mark.parametrize("iterations", [3, 10, 12])
    def test_called_on_the_last_blind_iteration_even_when_runs_are_short(self, blurred_case, iterations):
        seen: list[Progress] = []
        deblur(
            blurred_case[0], 7, method="self-msnet-s", iterations=iterations, callback=seen.append, progress_every=10
        )
        blind = [(p.step, p.total) for p in seen if p.stage == "blind"]
        assert blind[-1] == (iterations, iterations)
        assert [step for step, _ in blind] == sorted({*range(10, iterations + 1, 10), iterations})

    def test_a_numpy_true_stops_like_true(self, blurred_case):
        seen: list[Progress] = []

        def callback(progress: Progress) -> np.bool_:
            seen.append(progress)
            return np.True_

        result = deblur(blurred_case[0], 7, method="self-msnet-s", iterations=500, callback=callback, progress_every=10)
        assert result.cancelled and result.iterations_run == 10
        assert [(p.stage, p.step) for p in seen] == [("blind", 10), ("polish", 0), ("deconvolve", 10)]

    def test_on_the_cpu_every_blind_iteration_reports_by_default(self, blurred_case):
        # A stop is seen at the next record: on the CPU that is the next iteration.
        seen: list[Progress] = []
        deblur(blurred_case[0], 7, method="self-msnet-s", iterations=4, device="cpu", callback=seen.append)
        steps = [p.step for p in seen if p.stage == "blind"]
        # Every iteration of every blind run (a retry, if the self-check calls one, starts again).
        assert steps and steps == [1, 2, 3, 4] * (len(steps) // 4)


class TestIterations:
    @pytest.mark.parametrize("iterations", [np.int64(3), np.uint8(3), 3])
    def test_any_integer_type(self, blurred_case, iterations):
        result = deblur(blurred_case[0], 5, method="self-msnet-s", iterations=iterations)
        assert result.iterations_run == 3 and type(result.params["config"]["iterations"]) is int

    @pytest.mark.parametrize("iterations", [True, False, np.True_, 2.0, 0, -1, "3"])
    def test_refused(self, blurred_case, iterations):
        with pytest.raises(ValueError, match="iterations must be a positive integer"):
            deblur(blurred_case[0], 5, method="self-msnet-s", iterations=iterations)


def test_docstring_says_the_thread_count_is_part_of_reproducibility():
    doc = " ".join(deblur.__doc__.split())
    assert "the same seed, device and torch thread count" in doc and "torch.set_num_threads" in doc
