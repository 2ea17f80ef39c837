"""Stacks: shared and per-plane kernels, plane-by-plane reading, stopping part-way."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, signal

from napari_selfmsnet.engine.kernel_step import delta_kernel
from napari_selfmsnet.engine.pipeline import deblur
from napari_selfmsnet.engine.records import DeblurResult, Progress, StackResult
from napari_selfmsnet.engine.stack import deblur_stack
from napari_selfmsnet.engine.stack_plan import deconvolve_plane, plane_weight, select_reference_plane

KSIZE = 5
TINY = {"method": "self-msnet-s", "iterations": 3, "device": "cpu", "seed": 0}
# Wiener is the quickest non-blind method; the default ("sparse") is the nonblind module's to test.
NONBLIND = "wiener"


# Tiny runs are fastest on one torch thread, and immune to other processes on the cores.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sharp(rng: np.random.Generator, size: int = 40 + KSIZE - 1) -> np.ndarray:
    """Blobs and a bar on a dark background, values in [0, 1]."""
    image = np.zeros((size, size))
    for y, x in rng.integers(4, size - 4, size=(8, 2)):
        image[y, x] = 1.0
    image = ndimage.gaussian_filter(image, 1.0) * 6
    image[size // 3 : size // 3 + 2, 5:-5] += 0.6
    return image


def _motion_kernel() -> np.ndarray:
    kernel = np.zeros((KSIZE, KSIZE))
    kernel[1, 0:3] = 1.0
    kernel[2, 2:5] = 1.0
    return kernel / kernel.sum()


def _blurred_stack(planes: int = 3, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kernel = _motion_kernel()
    out = [signal.convolve2d(_sharp(rng), kernel, mode="valid") for _ in range(planes)]
    return (np.stack(out) * 1000 + 100).astype(np.uint16)


class PlaneReader:
    """An array-like that hands out planes one at a time and refuses to be read whole."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.reads: list[int] = []

    def __getitem__(self, index):
        if not isinstance(index, int):
            raise AssertionError(f"read with a non-plane index {index!r}")
        self.reads.append(index)
        return self.data[index]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole stack was read at once")


def _fake_deblur_steps(calls: list):
    """A stand-in for the engine's deblur_steps: 4 blind records, a stop request honoured."""

    def fake(image, kernel_size, **kwargs):
        calls.append(kwargs)
        image = np.asarray(image)
        kernel = delta_kernel(tuple(kernel_size)).numpy()

        def steps():
            for it in range(1, 5):
                if (yield Progress(stage="blind", step=it, total=4, loss=1.0 / it)):
                    return DeblurResult(
                        image.astype(np.float32) + 0.5,
                        kernel,
                        np.ones(it, np.float32),
                        {"it": it},
                        "cpu",
                        0.0,
                        cancelled=True,
                        iterations_run=it,
                    )
            return DeblurResult(
                image.astype(np.float32) + 1.0,
                kernel,
                np.full(4, 0.25, np.float32),
                {"it": 4},
                "cpu",
                0.0,
                iterations_run=4,
            )

        return steps()

    return fake


class TestSelectReferencePlane:
    def test_picks_the_sharpest_plane(self):
        rng = np.random.default_rng(0)
        sharp = _sharp(rng)
        stack = np.stack(
            [np.zeros_like(sharp), ndimage.gaussian_filter(sharp, 3), sharp, ndimage.gaussian_filter(sharp, 1.5)]
        )
        assert select_reference_plane(stack) == 2

    def test_reads_one_plane_at_a_time(self):
        reader = PlaneReader(_blurred_stack(3))
        select_reference_plane(reader)
        assert reader.reads == [0, 1, 2]

    def test_rgb_planes(self):
        rng = np.random.default_rng(0)
        sharp = _sharp(rng)
        rgb = np.stack([sharp] * 3, axis=-1)
        stack = np.stack([ndimage.gaussian_filter(rgb, (2, 2, 0)), rgb])
        assert select_reference_plane(stack) == 1

    def test_rejects_a_single_image(self):
        with pytest.raises(ValueError, match=r"\(P, H, W\) or \(P, H, W, 3\).*got shape \(40, 40\)"):
            select_reference_plane(np.zeros((40, 40)))

    def test_rejects_objects_without_shape(self):
        with pytest.raises(TypeError, match="array-like with a .shape.*got list"):
            select_reference_plane([np.zeros((4, 4))])


class TestDeblurStackValidation:
    def test_unknown_mode(self):
        with pytest.raises(ValueError, match=r"mode must be one of \('shared', 'per-plane'\), got 'all'"):
            deblur_stack(_blurred_stack(2), KSIZE, mode="all")

    @pytest.mark.parametrize("ref", [-1, 2, 1.0])
    def test_reference_plane_out_of_range(self, ref):
        with pytest.raises(ValueError, match=r"reference_plane must be an int in \[0, 1\]"):
            deblur_stack(_blurred_stack(2), KSIZE, reference_plane=ref)

    def test_even_kernel(self):
        with pytest.raises(ValueError, match="kernel_size must be odd"):
            deblur_stack(_blurred_stack(2), 4)

    def test_wrong_out_shape(self):
        with pytest.raises(ValueError, match=r"out must have shape \(2, 40, 40\)"):
            deblur_stack(_blurred_stack(2), KSIZE, out=np.zeros((2, 40, 41), np.float32))


class TestStopRequests:
    def test_per_plane_stop_keeps_done_planes_and_leaves_the_rest(self, monkeypatch):
        calls: list = []
        monkeypatch.setattr("napari_selfmsnet.engine.stack.deblur_steps", _fake_deblur_steps(calls))
        stack = _blurred_stack(4)
        seen: list[tuple[int, int]] = []

        def callback(progress):
            seen.append((progress.plane, progress.planes))
            return progress.plane == 1 and progress.step == 2

        result = deblur_stack(stack, KSIZE, mode="per-plane", callback=callback, seed=7)
        assert result.cancelled
        assert result.params["interrupted_plane"] == 1
        assert result.params["unfinished_planes"] == [2, 3]
        np.testing.assert_array_equal(result.image[0], stack[0] + 1.0)  # finished
        np.testing.assert_array_equal(result.image[1], stack[1] + 0.5)  # best so far
        np.testing.assert_array_equal(result.image[2:], stack[2:].astype(np.float32))
        np.testing.assert_array_equal(result.kernels[3], delta_kernel((KSIZE, KSIZE)).numpy())
        assert result.image.dtype == np.float32
        assert set(seen) == {(0, 4), (1, 4)}
        assert [c["seed"] for c in calls] == [7, 7]  # the same seed for every plane

    def test_shared_stop_during_estimation(self, monkeypatch):
        monkeypatch.setattr("napari_selfmsnet.engine.stack.deblur_steps", _fake_deblur_steps([]))
        stack = _blurred_stack(3)
        result = deblur_stack(
            stack, KSIZE, mode="shared", reference_plane=1, callback=lambda p: True
        )
        assert result.cancelled
        assert result.params["interrupted_plane"] == 1
        assert result.params["unfinished_planes"] == [0, 2]
        np.testing.assert_array_equal(result.image[0], stack[0].astype(np.float32))

    def test_no_stop_is_not_cancelled(self, monkeypatch):
        monkeypatch.setattr("napari_selfmsnet.engine.stack.deblur_steps", _fake_deblur_steps([]))
        result = deblur_stack(_blurred_stack(2), KSIZE, mode="per-plane")
        assert not result.cancelled
        assert result.params["unfinished_planes"] == []
        assert result.final_loss == pytest.approx(0.25)


class TestDeblurStackEngine:
    """The real engine on 3 tiny planes (3 iterations each)."""

    def test_shared_mode(self):
        stack = _blurred_stack(3)
        reader = PlaneReader(stack)
        records: list[Progress] = []
        result = deblur_stack(
            reader, KSIZE, mode="shared", reference_plane=2, callback=records.append, nonblind_method=NONBLIND, **TINY
        )
        assert isinstance(result, StackResult)
        assert result.image.shape == stack.shape and result.image.dtype == np.float32
        assert result.kernels.shape == (3, KSIZE, KSIZE)
        assert result.kernel.sum() == pytest.approx(1.0, abs=1e-4)
        for k in result.kernels:
            np.testing.assert_array_equal(k, result.kernel)
        assert result.params["reference_plane"] == 2
        assert result.params["mode"] == "shared" and result.params["nonblind_method"] == NONBLIND
        assert not result.cancelled and np.isfinite(result.final_loss)
        # Every plane read one at a time, the reference read once more for the estimate.
        assert sorted(reader.reads) == [0, 1, 2, 2]
        assert {r.plane for r in records} == {0, 1, 2} and {r.planes for r in records} == {3}
        # The reference plane is deblurred with the shared kernel, like the others.
        np.testing.assert_allclose(
            result.image[2], deconvolve_plane(stack[2], result.kernel, device="cpu", method=NONBLIND), rtol=1e-5, atol=1e-3
        )

    def test_a_stop_within_a_shared_plane_leaves_it_and_the_rest_as_input(self):
        stack = _blurred_stack(3)

        def stop_in_plane_1(record: Progress) -> bool:
            # A record within plane 1's solve: its step counts the planes done before it.
            return record.stage == "planes" and record.plane == 1 and record.step == 1

        result = deblur_stack(
            stack, KSIZE, mode="shared", reference_plane=0, callback=stop_in_plane_1, nonblind_method="sparse", **TINY
        )
        assert result.cancelled and result.params["unfinished_planes"] == [1, 2]
        np.testing.assert_array_equal(result.image[1:], stack[1:].astype(np.float32))
        assert not np.array_equal(result.image[0], stack[0].astype(np.float32))

    def test_shared_mode_picks_the_reference(self):
        stack = _blurred_stack(2).astype(np.float32)
        stack[0] = stack[0].mean()  # a blank plane can't be the reference
        result = deblur_stack(stack, KSIZE, mode="shared", nonblind_method=NONBLIND, **TINY)
        assert result.params["reference_plane"] == 1

    def test_per_plane_mode_rgb(self):
        grey = _blurred_stack(2)
        stack = np.stack([grey, grey // 2, grey // 3], axis=-1)
        result = deblur_stack(stack, (KSIZE, 3), mode="per-plane", **TINY)
        assert result.image.shape == stack.shape
        assert result.kernels.shape == (2, KSIZE, 3)
        np.testing.assert_allclose(result.kernels.sum(axis=(1, 2)), 1.0, atol=1e-4)
        assert len(result.params["plane_params"]) == 2 and result.kernel is None

    def test_per_plane_without_warm_start_equals_single_runs(self):
        from napari_selfmsnet import deblur

        stack = _blurred_stack(2)
        result = deblur_stack(stack, KSIZE, mode="per-plane", warm_planes=False, **TINY)
        single = deblur(stack[1], KSIZE, **TINY)
        np.testing.assert_array_equal(result.image[1], single.image)
        np.testing.assert_array_equal(result.kernels[1], single.kernel)
        assert not result.params["plane_params"][1]["warm_started"]

    def test_per_plane_warm_starts_each_plane_from_the_previous(self):
        from napari_selfmsnet import deblur

        stack = _blurred_stack(3)
        kwargs = {**TINY, "iterations": 20}
        result = deblur_stack(stack, KSIZE, mode="per-plane", **kwargs)
        # Default: half the cold run's iterations for every plane after the first.
        assert [len(h) for h in result.histories] == [20, 10, 10]
        assert [p["warm_started"] for p in result.params["plane_params"]] == [False, True, True]
        first = deblur(stack[0], KSIZE, **kwargs)
        second = deblur(stack[1], KSIZE, warm_start=first, **{**kwargs, "iterations": 10})
        np.testing.assert_array_equal(result.image[1], second.image)
        explicit = deblur_stack(stack[:2], KSIZE, mode="per-plane", warm_iterations=3, **kwargs)
        assert [len(h) for h in explicit.histories] == [20, 3]

    def test_bad_warm_iterations(self):
        with pytest.raises(ValueError, match="warm_iterations must be a positive integer, got 0"):
            deblur_stack(_blurred_stack(2), KSIZE, mode="per-plane", warm_iterations=0)

    def test_writes_into_out(self):
        out = np.full((2, 40, 40), np.nan, dtype=np.float32)
        result = deblur_stack(_blurred_stack(2), KSIZE, mode="per-plane", out=out, **TINY)
        assert result.image is out and np.isfinite(out).all()


def _with_bad_planes(planes: int = 4) -> np.ndarray:
    """Plane 1 blank (all 100), plane 2 holding NaNs, the others fine (float32)."""
    stack = _blurred_stack(planes).astype(np.float32)
    stack[1] = 100.0
    stack[2, 5:9, 5:9] = np.nan
    return stack


class TestBadPlanes:
    """A blank or NaN plane is passed through, named in a warning; the other planes finish."""

    def test_per_plane(self):
        stack = _with_bad_planes()
        result = deblur_stack(stack, KSIZE, mode="per-plane", **TINY)
        np.testing.assert_array_equal(result.image[1], stack[1])
        np.testing.assert_array_equal(result.image[2], stack[2])  # NaNs and all
        for i in (0, 3):
            assert np.isfinite(result.image[i]).all() and not np.array_equal(result.image[i], stack[i])
        assert result.params["passed_through_planes"] == [1, 2] and not result.cancelled
        assert result.params["plane_params"][1] is None and result.params["plane_params"][3]["warm_started"]
        np.testing.assert_array_equal(result.kernels[2], delta_kernel((KSIZE, KSIZE)).numpy())
        bad = [w for w in result.warnings if "passed through unchanged" in w]
        assert bad[0].startswith("plane 1: image is constant") and bad[1].startswith("plane 2: image contains NaN")

    def test_shared_checks_the_reference_first_and_never_aborts_after(self):
        stack = _with_bad_planes()
        result = deblur_stack(stack, KSIZE, mode="shared", reference_plane=2, nonblind_method=NONBLIND, **TINY)
        # The plane asked for holds NaNs: another one is chosen, before the blind run.
        assert result.params["reference_plane"] in (0, 3)
        assert result.warnings[0].startswith("plane 2, the reference plane asked for, cannot be deblurred (image contains NaN")
        assert result.params["passed_through_planes"] == [1, 2] and not result.cancelled
        np.testing.assert_array_equal(result.image[1], stack[1])
        np.testing.assert_array_equal(result.image[2], stack[2])
        assert np.isfinite(result.image[[0, 3]]).all()
        np.testing.assert_array_equal(result.kernels[1], delta_kernel((KSIZE, KSIZE)).numpy())
        np.testing.assert_array_equal(result.kernels[0], result.kernel)

    def test_the_reference_is_never_a_bad_plane(self):
        stack = _with_bad_planes()
        stack[2] = np.nan  # scores NaN, which np.argmax would take for the largest
        assert select_reference_plane(stack) in (0, 3)
        result = deblur_stack(stack, KSIZE, mode="shared", nonblind_method=NONBLIND, **TINY)
        assert result.params["reference_plane"] in (0, 3) and result.params["passed_through_planes"] == [1, 2]

    @pytest.mark.parametrize("mode", ["shared", "per-plane"])
    def test_no_usable_plane_is_an_error_naming_each(self, mode):
        stack = np.zeros((3, 40, 40), np.float32)
        stack[1] = np.inf
        expected = r"no plane of the stack can be deblurred: plane 0: image is constant .*; plane 1: image contains NaN"
        with pytest.raises(ValueError, match=expected):
            deblur_stack(stack, KSIZE, mode=mode, **TINY)

    def test_plane_warnings_are_collected_with_their_plane(self, monkeypatch):
        fake = _fake_deblur_steps([])

        def warning_steps(image, kernel_size, **kwargs):
            steps = fake(image, kernel_size, **kwargs)
            result = yield from steps
            result.warnings.append("the kernel is doubtful")
            return result

        monkeypatch.setattr("napari_selfmsnet.engine.stack.deblur_steps", warning_steps)
        stack = _with_bad_planes(3)
        result = deblur_stack(stack, KSIZE, mode="per-plane")
        assert result.warnings == [
            "plane 0: the kernel is doubtful",
            result.warnings[1],
            result.warnings[2],
        ] and result.warnings[1].startswith("plane 1: image is constant")
        assert result.warnings[2].startswith("plane 2: image contains NaN")
        shared = deblur_stack(stack, KSIZE, mode="shared", reference_plane=0, nonblind_method=NONBLIND)
        assert shared.warnings[0] == "plane 0: the kernel is doubtful"


class TestAlphaAndAuto:
    def test_rgba_and_grey_alpha_stacks_lose_the_alpha_channel(self):
        grey = _blurred_stack(2)
        rgba = np.stack([grey, grey // 2, grey // 3, np.full_like(grey, 255)], axis=-1)
        result = deblur_stack(rgba, KSIZE, mode="per-plane", **TINY)
        assert result.image.shape == (2, 40, 40, 3)
        assert result.warnings[0] == "the stack's planes are RGBA: their alpha channel was left out"
        grey_alpha = deblur_stack(rgba[..., [0, 3]], KSIZE, mode="shared", nonblind_method=NONBLIND, **TINY)
        assert grey_alpha.image.shape == (2, 40, 40) and "grey and alpha" in grey_alpha.warnings[0]

    def test_auto_measures_once_and_every_plane_uses_that_size(self):
        stack = _blurred_stack(4).astype(np.float32)
        stack[0] = 100.0  # blank: the first usable plane, plane 1, measures the size
        stack[2, 5:9, 5:9] = np.nan
        result = deblur_stack(stack, mode="per-plane", warm_planes=False, **TINY)
        sources = [p and p["kernel_size_source"] for p in result.params["plane_params"]]
        assert sources == [None, "measured", None, "given"]
        measured = result.params["plane_params"][1]["kernel_size"]
        assert result.params["kernel_size"] == measured == result.params["plane_params"][3]["kernel_size"]
        assert result.kernels.shape == (4, *measured)
        shared = deblur_stack(stack, mode="shared", nonblind_method=NONBLIND, **TINY)
        assert shared.params["kernel_size"] == shared.params["plane_params"][0]["kernel_size"]
        assert shared.params["plane_params"][0]["kernel_size_source"] == "measured"

    def test_a_given_size_is_checked_at_every_scale_before_any_work(self):
        with pytest.raises(ValueError, match="self-msnet-s"):
            deblur_stack(np.random.default_rng(0).random((2, 20, 20)), 7, method="self-msnet", iterations=1)

    def test_a_seed_torch_cannot_take_is_refused_before_any_work(self):
        with pytest.raises(ValueError, match=r"seed must be an int from 0 to 2\*\*63 - 1"):
            deblur_stack(_blurred_stack(2), KSIZE, seed=2**70)


class TestDeconvolvePlane:
    def test_delta_kernel_keeps_the_image(self):
        plane = _blurred_stack(1)[0]
        out = deconvolve_plane(plane, delta_kernel((KSIZE, KSIZE)).numpy(), device="cpu", method=NONBLIND)
        assert out.dtype == np.float32 and out.shape == plane.shape
        # A delta kernel has nothing to undo: the output stays close to the input.
        assert np.abs(out - plane).mean() < 0.05 * plane.mean()

    def test_rejects_a_3d_kernel(self):
        with pytest.raises(ValueError, match=r"kernel must be 2-D \(kh, kw\), got shape \(1, 5, 5\)"):
            deconvolve_plane(np.zeros((40, 40)), np.ones((1, 5, 5)))

    def test_rejects_a_stack(self):
        with pytest.raises(ValueError, match=r"plane must have shape \(H, W\) or \(H, W, 3\), got \(2, 40, 40\)"):
            deconvolve_plane(np.zeros((2, 40, 40)), np.ones((5, 5)))


class TestSharedWeights:
    """Shared mode deconvolves every plane at the weight the blind run chose, moved to each
    plane's own noise (a plane deconvolved at the noise-free default keeps its noise)."""

    @staticmethod
    def _noisy_stack() -> np.ndarray:
        rng = np.random.default_rng(2)
        clean = _blurred_stack(2, seed=3).astype(np.float64)
        # Plane 1 bleached to a third of plane 0's signal, at the same camera noise.
        clean[1] = 100 + (clean[1] - 100) / 3
        return np.clip(clean + rng.normal(0, 20, clean.shape), 0, None).astype(np.uint16)

    def test_the_reference_plane_is_the_blind_runs_own_result_and_noisier_planes_get_more_prior(self):
        stack = self._noisy_stack()
        result = deblur_stack(stack, KSIZE, mode="shared", reference_plane=0, nonblind_method="sparse", **TINY)
        single = deblur(stack[0], KSIZE, **TINY)
        np.testing.assert_allclose(result.image[0], single.image, rtol=0, atol=1e-3 * float(np.ptp(stack[0])))
        run = single.params
        assert plane_weight(stack[0], run) == pytest.approx(run["deconvolution_weight"])
        # Same noise on a third of the signal: three times the relative noise, a stronger prior.
        assert plane_weight(stack[1], run) > 2 * run["deconvolution_weight"]
        assert plane_weight(stack[1], run, method="wiener") is None and plane_weight(stack[1], {}) is None
