"""The bundled sample: a microscopy-like phantom (filaments and beads) blurred by a drift kernel.

Made on first use by :func:`.synth.make_case` with a fixed seed, so the ``demo`` command,
napari's File > Open Sample and the tests all see the same pixels. The arrays are cached and
returned read-only (copy them to modify).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .synth import make_case

__all__ = ["blurred_sample", "sharp_sample", "sample_kernel", "SAMPLE_SHAPE", "SAMPLE_KERNEL_SIZE", "SAMPLE_SEED", "SAMPLE_PHOTONS"]

#: Size of the blurred sample (H, W), the side of its drift kernel, the seed drawing both, and
#: the photon budget of its brightest pixels: bright enough that the default preset finds the
#: kernel (at a fifth of it the kernel is lost in the noise; docs/benchmarks.md).
SAMPLE_SHAPE = (128, 128)
SAMPLE_KERNEL_SIZE = 15
SAMPLE_SEED = 7
SAMPLE_PHOTONS = 5000.0


@lru_cache(maxsize=1)
def _case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    case = make_case(
        SAMPLE_SHAPE, SAMPLE_SEED, kernel="motion", kernel_size=SAMPLE_KERNEL_SIZE, photons=SAMPLE_PHOTONS
    )
    arrays = (case.blurred, case.sharp.astype(np.float32), case.kernel.astype(np.float32))
    for array in arrays:
        array.setflags(write=False)  # shared by every caller: nobody may change it
    return arrays


def blurred_sample() -> np.ndarray:
    """The blurred sample: uint16 camera counts (Poisson and read noise, offset 100), (128, 128)."""
    return _case()[0]


def sharp_sample() -> np.ndarray:
    """The sharp phantom under the blurred sample: float32 in [0, 1], same shape."""
    return _case()[1]


def sample_kernel() -> np.ndarray:
    """The drift kernel that blurred the sample: float32 (15, 15), sums to 1."""
    return _case()[2]
