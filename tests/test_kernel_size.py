"""``kernel_size="auto"``: the measure of a probe's kernel, and real probes on noisy images."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from _scenes import shaken_camera

from napari_selfmsnet.engine.config import PRESETS
from napari_selfmsnet.engine.intensity import IntensityMap
from napari_selfmsnet.engine.kernel_size import _PROBE_ITERATIONS, _extent, kernel_size_steps, size_from_extent
from napari_selfmsnet.engine.steps import drain
from napari_selfmsnet.evaluation.synth import gaussian_psf, motion_kernel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_extent_is_the_span_of_the_central_mass_not_of_a_faint_fringe():
    line = np.zeros((15, 15))
    line[7, 3:12] = 1.0
    assert _extent(line) == (1, 9)
    # A probe's kernel: the blur widened, over a faint floor that fills its support. A span
    # measured down to a small share of the peak would be the support (15), not the blur.
    fringed = line + 0.004
    assert _extent(fringed)[1] <= 10 and _extent(fringed)[0] <= 3
    assert 7 <= max(_extent(gaussian_psf(17, 2.5))) <= 11  # the central 90% of a sigma-2.5 Gaussian
    assert size_from_extent(10, 99) == 15 and size_from_extent(10, 13) == 13 and size_from_extent(1, 99) == 5


@pytest.mark.parametrize("draw", [0, 1])
def test_a_probe_measures_a_13_px_shake_within_a_sensible_range(draw):
    kernel = motion_kernel(13, rng=5)
    blurred = shaken_camera(kernel, 128, 0.01, draw)
    intensity = IntensityMap.fit(blurred)
    measured = drain(
        kernel_size_steps(
            intensity.to_unit(blurred), 0.01 / intensity.scale, PRESETS["fast"], torch.device("cpu"), limit=(41, 41)
        )
    )
    # Large enough to hold the blur. On a 128 px image the probe errs large (its half-resolution
    # kernel spills over a 22 px support from texture alone, here up to 35); it must still stop
    # short of the largest size the image allows (41).
    assert kernel.shape[0] <= measured.shape[0] <= 3 * kernel.shape[0]
    assert measured.factor == 2 and max(measured.extent) >= max(_extent(kernel))


def test_the_probes_keep_their_length_when_the_run_is_short():
    # A quick trial run (few iterations) must not shorten the probes: short probes measure far
    # too large.
    blurred = shaken_camera(motion_kernel(9, rng=2), 96, 0.01, 0)
    intensity = IntensityMap.fit(blurred)
    unit, sigma, cpu = intensity.to_unit(blurred), 0.01 / intensity.scale, torch.device("cpu")
    sizes = []
    for iterations in (PRESETS["fast"].iterations, 5):
        records = []
        config = replace(PRESETS["fast"], iterations=iterations)
        sizes.append(drain(kernel_size_steps(unit, sigma, config, cpu, limit=(31, 31)), records.append))
        assert records[-1].total % _PROBE_ITERATIONS == 0 and records[-1].step % _PROBE_ITERATIONS == 0
    assert sizes[0] == sizes[1]
