"""The pipeline generator: its stages in order, stopping in each of them, and what a stop keeps."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_selfmsnet import PRESETS, deblur
from napari_selfmsnet.engine.config import METHOD_SCALES, resolve_config
from napari_selfmsnet.engine.nonblind import deconvolve, deconvolve_steps
from napari_selfmsnet.engine.pipeline import deblur_steps
from napari_selfmsnet.engine.steps import drain
from napari_selfmsnet.evaluation.synth import make_case

TINY = {"method": "self-msnet-s", "iterations": 12, "device": "cpu", "seed": 0, "progress_every": 10}


# Tiny runs are fastest on one torch thread, and immune to other processes on the cores.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def blurred() -> np.ndarray:
    return make_case((48, 48), 1, kernel="motion", kernel_size=7).blurred


def _run(steps, stop_at=None):
    """Drain ``steps``; True is sent at the record ``(stage, step)`` named by ``stop_at``."""
    records = []

    def callback(record):
        records.append(record)
        return (record.stage, record.step) == stop_at

    return drain(steps, callback), records


def test_stages_come_in_order_with_their_counts(blurred):
    result, records = _run(deblur_steps(blurred, 7, **TINY))
    stages = [r.stage for r in records]
    # One scale (self-msnet-s), so one start to polish; its check on the whole frame is the
    # frame's deconvolution, redone at a higher weight while the misfit is below the noise.
    solves = stages.count("deconvolve") // 10
    # Each polish round reports within its solve (every 25 of its 100 iterations) and at its end.
    assert stages == ["blind"] * 2 + ["polish"] * 50 + ["deconvolve"] * 10 * solves
    assert 1 <= solves <= 6
    assert result.params["deconvolution_weight"] == pytest.approx(
        PRESETS["fast"].deconvolution_weight_for(result.params["noise"]["sigma_normalised"]) * 2 ** (solves - 1)
    )
    # The blind stage reports every 10 iterations and after its last.
    assert [(r.step, r.total) for r in records if r.stage == "blind"] == [(10, 12), (12, 12)]
    assert [r.step for r in records if r.stage == "polish"] == [s for n in range(10) for s in [n] * 4 + [n + 1]]
    assert all(r.kernel.shape == (7, 7) for r in records if r.stage != "deconvolve")
    assert all(r.elapsed_s > 0 for r in records)
    assert not result.cancelled and result.warm_start is not None


def test_generator_output_is_only_checked_after_the_blind_stage(blurred):
    config = replace(PRESETS["quality"], width=8, scales=METHOD_SCALES["self-msnet-s"], retries=0, residual_floor=0.0)
    result, records = _run(deblur_steps(blurred, 7, preset=config, iterations=12, device="cpu", progress_every=10))
    # No polish; the self-check deconvolves once to measure the misfit; the image is the network's.
    assert [r.stage for r in records] == ["blind"] * 2 + ["deconvolve"] * 10
    preview = records[1].image
    assert result.image.shape == preview.shape and not np.array_equal(result.image, deconvolve(blurred, result.kernel))
    assert set(result.params["self_check"]) >= {"residual", "residual_correlation", "border_mass", "passed"}


def test_a_region_run_deconvolves_the_frame_after_the_blind_stage(blurred):
    config = replace(PRESETS["fast"], final="generator", scales=METHOD_SCALES["self-msnet-s"], residual_floor=0.0)
    _, records = _run(
        deblur_steps(blurred, 5, preset=config, iterations=12, device="cpu", region=(4, 4, 32, 36), progress_every=10)
    )
    # The kernel's check on the region, then the frame, numbered as one stage.
    assert [r.stage for r in records] == ["blind"] * 2 + ["deconvolve"] * 20
    assert [r.step for r in records[2:]] == list(range(10, 201, 10))
    assert records[0].region == [4, 4, 32, 36] and records[-1].region is None


def test_stop_in_the_polish_keeps_its_kernel_and_deconvolves_with_it(blurred):
    full = deblur(blurred, 7, **TINY)
    result, records = _run(deblur_steps(blurred, 7, **TINY), stop_at=("polish", 3))
    assert result.cancelled and result.warm_start is None
    # Stopped at the end of round 3 (its fifth record): rounds 1 to 3 stand.
    polish = [r for r in records if r.stage == "polish"]
    assert len(polish) == 3 * 5 and polish[-1].step == 3
    assert [r.stage for r in records].count("deconvolve") == 10
    assert result.iterations_run == full.iterations_run == 12
    # The same kernel (normalised once more to a unit sum: float32 rounding, no more).
    np.testing.assert_allclose(result.kernel, polish[-1].kernel, rtol=1e-6, atol=1e-9)
    assert not np.allclose(result.kernel, full.kernel)
    assert result.image.shape == blurred.shape and np.all(np.isfinite(result.image))


def test_stop_in_the_deconvolution_keeps_the_solver_iterate(blurred):
    full = deblur(blurred, 7, **TINY)
    result, records = _run(deblur_steps(blurred, 7, **TINY), stop_at=("deconvolve", 30))
    assert result.cancelled and result.warm_start is None
    assert [r.step for r in records if r.stage == "deconvolve"] == [10, 20, 30]
    # The kernel is the finished polish's; only the image stopped early.
    np.testing.assert_array_equal(result.kernel, full.kernel)
    assert not np.array_equal(result.image, full.image)
    assert result.image.shape == blurred.shape and np.all(np.isfinite(result.image))


def test_a_run_never_stopped_equals_deblur(blurred):
    result, _ = _run(deblur_steps(blurred, 7, **TINY))
    reference = deblur(blurred, 7, **TINY)
    np.testing.assert_array_equal(result.image, reference.image)
    np.testing.assert_array_equal(result.kernel, reference.kernel)


def test_bad_arguments_raise_when_the_generator_is_made(blurred):
    with pytest.raises(ValueError, match="progress_every must be a positive integer"):
        deblur_steps(blurred, 7, progress_every=0)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        deblur_steps(blurred, 6)


class TestDeconvolveSteps:
    def test_records_count_iterations_over_all_tiles(self, blurred):
        kernel = make_case((48, 48), 1, kernel="motion", kernel_size=7).kernel
        frame = np.tile(blurred, (2, 2)).astype(np.float32)
        out, records = _run(deconvolve_steps(frame, kernel, device="cpu", tile_size=72, iterations=20))
        # 96 x 96 in 72 px tiles with a 32 px overlap: 2 x 2 tiles of 20 iterations.
        assert [(r.step, r.total) for r in records] == [(n, 80) for n in range(10, 81, 10)]
        np.testing.assert_array_equal(out, deconvolve(frame, kernel, device="cpu", tile_size=72, iterations=20))

    def test_a_stop_leaves_the_tiles_not_reached_as_they_were(self, blurred):
        kernel = make_case((48, 48), 1, kernel="motion", kernel_size=7).kernel
        frame = np.tile(blurred, (2, 2)).astype(np.float32)
        out, records = _run(
            deconvolve_steps(frame, kernel, device="cpu", tile_size=72, iterations=20), ("deconvolve", 20)
        )
        assert len(records) == 2
        # Only the first tile (top-left, 72 x 72) was solved; the last tile's own part is the input.
        np.testing.assert_allclose(out[-24:, -24:], frame[-24:, -24:], rtol=1e-6)
        assert not np.allclose(out[:40, :40], frame[:40, :40])


class TestResolveConfig:
    def test_a_named_preset_takes_the_methods_scales(self):
        assert resolve_config("fast").scales == METHOD_SCALES["self-msnet"]
        assert resolve_config("fast", "self-msnet-s").scales == (1.0,)
        assert resolve_config("fast", "self-msnet-s", 7).iterations == 7

    def test_a_solver_config_keeps_its_own_scales(self):
        custom = replace(PRESETS["fast"], scales=(0.5, 1.0))
        assert resolve_config(custom).scales == (0.5, 1.0)
        assert resolve_config(replace(custom, scales=(1.0,)), "self-msnet-s").scales == (1.0,)

    def test_a_method_that_contradicts_the_solver_config_is_refused(self):
        with pytest.raises(ValueError, match=r"method='self-msnet-s' means scales \(1.0,\), but the SolverConfig"):
            resolve_config(PRESETS["fast"], "self-msnet-s")

    def test_the_run_records_the_method_the_scales_make(self, blurred):
        custom = replace(PRESETS["fast"], scales=(0.5, 1.0), polish_rounds=0)
        result = deblur(blurred, 7, preset=custom, iterations=2, device="cpu")
        assert result.params["method"] == "custom" and result.params["preset"] == "custom"
        assert result.params["config"]["scales"] == (0.5, 1.0)
        single = deblur(blurred, 7, preset=replace(custom, scales=(1.0,)), iterations=2, device="cpu")
        assert single.params["method"] == "self-msnet-s"


def test_kernels_the_starts_disagree_on_take_the_cautious_prior(blurred):
    # Two scales, so two starts whose agreement is measured; a threshold of 1 makes any
    # disagreement count, 0 none.
    config = replace(PRESETS["fast"], retries=0)
    usual, _ = _run(deblur_steps(blurred, 7, preset=config, iterations=12, device="cpu", progress_every=10))
    cautious, records = _run(
        deblur_steps(
            blurred, 7, preset=replace(config, cautious_agreement=1.0), iterations=12, device="cpu", progress_every=10
        )
    )
    assert usual.params["self_check"]["agreement"] < 1
    assert usual.params["cautious_prior"] is False and cautious.params["cautious_prior"] is True
    # A softened result is not a confident one: the user hears why it was softened.
    assert not any("stronger prior" in w for w in usual.warnings)
    assert any("stronger prior" in w for w in cautious.warnings)
    assert cautious.params["self_check"]["passed"] is False
    np.testing.assert_array_equal(cautious.kernel, usual.kernel)
    weight = cautious.params["deconvolution_weight"]
    assert weight == pytest.approx(config.cautious_factor * usual.params["deconvolution_weight"])
    assert np.abs(np.diff(cautious.image)).mean() < np.abs(np.diff(usual.image)).mean()
    # The re-solve comes last, at the end of the bar.
    last = [r for r in records if r.stage == "deconvolve"][-10:]
    assert all(r.step == r.total for r in last)


def test_a_stop_during_the_size_probes_says_the_size_was_not_measured(blurred):
    result, records = _run(deblur_steps(blurred, "auto", **TINY), stop_at=("size", 10))
    assert result.cancelled and records[-1].stage != "blind"
    assert result.params["kernel_size_source"] == "probe stopped"
    finished = deblur(blurred, "auto", **TINY)
    assert finished.params["kernel_size_source"] == "measured"


def _attempt(kernel: np.ndarray, correlation: float, agreement: float | None):
    """A blind run's outcome as the retry rule sees it (its state plays no part)."""
    from napari_selfmsnet.engine.polish import Finish

    finish = Finish(
        kernel=kernel, image=np.zeros((4, 4)), start=0, checked_residual=1.0, checked_correlation=correlation,
        residual=1.0, residual_correlation=correlation, agreement=agreement, weight=1e-3, stopped=False,
    )  # fmt: skip
    return None, finish


def test_a_retry_is_called_while_the_best_run_is_doubtful_on_both_counts():
    from napari_selfmsnet.engine.pipeline import _retry_called_for

    # Off by default (docs/parameters.md: it helps clean and lightly noisy photographs and costs
    # photon-limited drifts); as measured, with two retries.
    config = replace(PRESETS["fast"], doubt_agreement=0.65, doubt_correlation=-0.05, retries=2)
    noise = 0.01  # above the check's noise floor: correlations are judged as they are
    line = np.zeros((9, 9))
    line[4, 1:8] = 1 / 7
    other = line.T.copy()  # a kernel that shares next to nothing with ``line``
    doubtful = config.doubt_agreement - 0.05
    unsure = config.doubt_correlation + 0.02
    # Starts that barely agree and a misfit not clearly like noise: another seed is tried...
    assert _retry_called_for([_attempt(line, unsure, doubtful)], noise, config)
    # ...but not when either sign is clear.
    assert not _retry_called_for([_attempt(line, unsure, config.doubt_agreement + 0.05)], noise, config)
    assert not _retry_called_for([_attempt(line, config.doubt_correlation - 0.02, doubtful)], noise, config)
    # A second seed that finds the same kernel settles it, one that finds another does not.
    assert not _retry_called_for([_attempt(line, unsure, doubtful), _attempt(line, unsure, doubtful)], noise, config)
    assert _retry_called_for([_attempt(line, unsure, doubtful), _attempt(other, unsure, doubtful)], noise, config)
    # The stronger signs call a retry on their own: a misfit far from noise, or starts that disagree.
    assert _retry_called_for([_attempt(line, 0.2, 0.9)], noise, config)
    assert _retry_called_for([_attempt(line, -0.2, 0.1)], noise, config)
    assert not _retry_called_for([_attempt(line, -0.2, None)], noise, config)
    # The presets leave the milder doubts alone.
    assert not _retry_called_for([_attempt(line, unsure, doubtful)], noise, PRESETS["fast"])
