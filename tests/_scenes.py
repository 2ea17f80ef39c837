"""Test scenes shared by the noise tests: a photograph shaken by a known kernel, with noise."""

import numpy as np
from skimage import data, transform

from napari_selfmsnet.evaluation.synth import blur_valid


def shaken_camera(kernel: np.ndarray, size: int, noise: float, draw: int) -> np.ndarray:
    """skimage's camera image at ``size`` x ``size`` after a valid blur by ``kernel``, with
    Gaussian noise of ``noise`` (a share of the range) from noise draw ``draw``; float, [0, 1]."""
    side = size + kernel.shape[0] - 1
    sharp = transform.resize(data.camera() / 255.0, (side, side), anti_aliasing=True)
    return blur_valid(sharp[None], kernel)[0] + np.random.default_rng(draw).normal(0, noise, (size, size))
