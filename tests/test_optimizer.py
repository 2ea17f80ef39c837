"""The alternating optimizer's machinery: divergence guard, warm starts and the speed switches."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_selfmsnet.engine import optimizer as optimizer_module
from napari_selfmsnet.engine.config import SolverConfig, resolve_config
from napari_selfmsnet.engine.convolution import kernel_offset, valid_convolve
from napari_selfmsnet.engine.steps import drain
from napari_selfmsnet.evaluation.synth import motion_kernel

KERNEL = (7, 7)


@pytest.fixture(scope="module")
def observation() -> torch.Tensor:
    rng = np.random.default_rng(3)
    sharp = np.kron(rng.random((10, 10)), np.ones((5, 5)))[:54, :54]
    blurred = valid_convolve(torch.from_numpy(sharp)[None, None], torch.from_numpy(motion_kernel(7, rng=2)))
    return blurred.float().clamp(0, 1)


def _config(**changes) -> SolverConfig:
    base = replace(resolve_config("fast", "self-msnet-s", 20), width=8, final="generator", polish_rounds=0)
    return replace(base, **changes)


def optimize(observation, kernel_shape, config, **kwargs):
    """The optimizer with a state every 5 iterations."""
    return optimizer_module.optimize(observation, kernel_shape, config, progress_every=5, **kwargs)


def _final(run):
    return drain(run)


def _states(run):
    """Every state yielded, and the final one returned."""
    states = []
    final = drain(run, states.append)
    return states, final


def test_divergence_guard_rolls_back_and_finishes_finite(observation, monkeypatch):
    calls = {"n": 0}
    real = optimizer_module.valid_convolve

    def poisoned(x, k):
        calls["n"] += 1
        out = real(x, k)
        # One non-finite loss on the 12th forward pass: the window 11-15 must be rolled back.
        return out * float("nan") if calls["n"] == 12 else out

    monkeypatch.setattr(optimizer_module, "valid_convolve", poisoned)
    monkeypatch.setattr(optimizer_module, "_CHECKPOINT_EVERY", 10)
    state = _final(optimize(observation, KERNEL, _config(), seed=0))
    assert state.recoveries == 1
    assert state.iteration == 20 and len(state.history) == 20
    assert np.all(np.isfinite(state.history))
    assert torch.isfinite(state.image).all() and torch.isfinite(state.kernel).all()
    # Rolled back to iteration 10 and redone: 20 + 5 forward passes in all.
    assert calls["n"] == 25


def test_loss_is_read_back_once_per_window(observation):
    states, final = _states(optimize(observation, KERNEL, _config(), seed=0))
    # A state every 5 iterations, the last one's too: a progress bar reaches its total.
    assert [s.iteration for s in states] == [5, 10, 15, 20] and final.iteration == 20
    assert final.finished and final.warm_start is not None


def test_a_true_value_sent_stops_the_run_at_that_state(observation):
    states = []

    def stop_at_ten(state):
        states.append(state)
        return state.iteration == 10

    final = drain(optimize(observation, KERNEL, _config(), seed=0), stop_at_ten)
    assert [s.iteration for s in states] == [5, 10]
    assert final is states[-1] and not final.finished and final.warm_start is None
    assert len(final.history) == 10


def test_states_hand_out_registered_images_and_centred_kernels(observation):
    states, final = _states(optimize(observation, KERNEL, _config(), seed=0))
    for state in [*states, final]:
        assert state.image.shape == observation.shape
        assert kernel_offset(state.kernel) == (0, 0)
        assert float(state.kernel.sum()) == pytest.approx(1, abs=1e-5)


def test_kernel_every_skips_kernel_steps(observation, monkeypatch):
    calls = {"n": 0}
    real = optimizer_module.estimate_kernel

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(optimizer_module, "estimate_kernel", counting)
    state = _final(optimize(observation, KERNEL, _config(kernel_every=4), seed=0))
    assert calls["n"] == 5  # iterations 0, 4, 8, 12, 16
    assert state.kernel.sum().item() == pytest.approx(1, abs=1e-5)


def test_warm_start_continues_where_the_previous_run_ended(observation):
    config = _config()
    first = _final(optimize(observation, KERNEL, config, seed=0))
    warm = _final(optimize(observation, KERNEL, replace(config, iterations=5), seed=1, warm_start=first.warm_start))
    cold = _final(optimize(observation, KERNEL, replace(config, iterations=5), seed=1))
    # A warm start begins near the previous run's final loss, far below a cold start.
    assert warm.history[0] < 0.5 * cold.history[0]
    assert warm.history[0] < 2 * first.history[-1]


def test_warm_start_from_another_geometry_is_refused(observation):
    first = _final(optimize(observation, KERNEL, _config(iterations=5), seed=0))
    with pytest.raises(ValueError, match="different image size, kernel size"):
        next(optimize(observation, (5, 5), _config(iterations=5), warm_start=first.warm_start))


@pytest.mark.parametrize(
    "changes",
    [{"amp": "bf16"}, {"memory_format": "channels_last"}],
    ids=["bf16-autocast", "channels-last"],
)
def test_speed_switches_keep_the_result(observation, changes):
    # The reference is the plain layout in float32 ("auto" already picks channels_last on CPU).
    reference = _final(optimize(observation, KERNEL, _config(amp="off", memory_format="contiguous"), seed=0))
    switched = _final(optimize(observation, KERNEL, _config(**changes), seed=0))
    assert np.all(np.isfinite(switched.history))
    assert switched.image.dtype == torch.float32
    # Same seed, same first forward pass up to rounding (bfloat16 keeps ~3 significant
    # digits); later iterations drift apart as any two float orderings do in a non-convex fit.
    tolerance = 2e-2 if "amp" in changes else 1e-5
    assert switched.history[0] == pytest.approx(reference.history[0], rel=tolerance)
    assert switched.history[-1] < 0.2 * switched.history[0]


def test_auto_switches_on_cpu():
    # Reduced precision stays opt-in on CPU (faster only with AMX, its effect on results there
    # unmeasured); channels_last is faster (docs/benchmarks.md).
    config = SolverConfig()
    cpu = torch.device("cpu")
    assert optimizer_module.autocast_dtype_for(config, cpu) is None
    assert optimizer_module.memory_format_for(config, cpu) == torch.channels_last
    assert optimizer_module.memory_format_for(replace(config, memory_format="contiguous"), cpu) == torch.contiguous_format
    assert optimizer_module.memory_format_for(config, torch.device("mps")) == torch.contiguous_format


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"amp": "fp8"}, "amp must be"),
        ({"memory_format": "nhwc"}, "memory_format must be"),
        ({"kernel_every": 0}, "kernel_every must be >= 1"),
    ],
)
def test_bad_speed_settings_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        SolverConfig(**changes)


def test_default_switches_on_each_device(observation, device):
    # On CUDA this runs bfloat16 autocast, channels_last and cuDNN autotuning; on CPU float32.
    state = _final(optimize(observation.to(device), KERNEL, _config(), seed=0))
    assert np.all(np.isfinite(state.history)) and state.history[-1] < state.history[0]
    assert state.image.device.type == torch.device(device).type and state.image.dtype == torch.float32
    assert torch.backends.cudnn.benchmark is False  # restored after the run


@pytest.mark.parametrize("iterations", [1, 3, 5])
def test_a_run_no_longer_than_progress_every_reports_its_last_iteration(observation, iterations):
    states, final = _states(optimize(observation, KERNEL, _config(iterations=iterations), seed=0))
    assert [(s.iteration, s.total) for s in states] == [(iterations, iterations)]
    assert final.finished and final.warm_start is not None


def test_a_stop_sent_at_the_last_state_still_returns_the_finished_run(observation):
    final = drain(optimize(observation, KERNEL, _config(iterations=10), seed=0), lambda state: state.iteration == 10)
    assert final.finished and final.iteration == 10 and final.warm_start is not None
