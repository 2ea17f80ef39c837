"""Sample data for napari (File > Open Sample > Self-MSNet).

The images come from :mod:`napari_selfmsnet.evaluation.sample` (a fixed-seed synthetic phantom of
filaments and beads, blurred by a drift kernel, with Poisson noise), so napari, the
documentation and the tests all see the same pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..evaluation.sample import SAMPLE_KERNEL_SIZE, blurred_sample, sample_kernel, sharp_sample
from .layers import kernel_display

__all__ = ["blurred_sample_data", "sharp_sample_data"]


def blurred_sample_data() -> list[tuple[Any, dict[str, Any], str]]:
    """The blurred, noisy uint16 sample: the image to deblur (kernel size ``SAMPLE_KERNEL_SIZE``)."""
    # evaluation.sample hands out one cached read-only array; the layer gets its own writable copy.
    return [
        (
            np.array(blurred_sample()),
            {
                "name": "blurred sample",
                "colormap": "gray",
                "metadata": {
                    "description": "synthetic filaments and beads, drift blur, Poisson noise (uint16)",
                    "suggested_kernel_size": SAMPLE_KERNEL_SIZE,
                },
            },
            "image",
        )
    ]


def sharp_sample_data() -> list[tuple[Any, dict[str, Any], str]]:
    """The sharp original of the blurred sample, and the kernel that blurred it (placed beside
    the image and enlarged, as the widget places the kernel it finds)."""
    sharp, kernel = np.array(sharp_sample()), np.array(sample_kernel())
    zoom, scale, translate = kernel_display(sharp.shape, kernel.shape)
    return [
        (
            sharp,
            {
                "name": "sharp sample",
                "colormap": "gray",
                "metadata": {"description": "the sharp phantom behind the blurred sample (float32, 0 to 1)"},
            },
            "image",
        ),
        (
            kernel,
            {
                "name": "true kernel",
                "colormap": "inferno",
                "interpolation2d": "nearest",
                "scale": scale,
                "translate": translate,
                "metadata": {
                    "description": "the drift kernel that blurred the sample (sums to 1)",
                    "kernel_pixel_size": [1.0, 1.0],
                    "kernel_display_zoom": zoom,
                },
            },
            "image",
        ),
    ]
