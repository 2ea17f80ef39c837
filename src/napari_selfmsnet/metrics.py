"""Scoring deblurred images: the Levin et al. protocol (see :mod:`napari_selfmsnet.core.metrics`).

>>> from napari_selfmsnet.metrics import levin_scores, load_levin_case
"""

from .core.metrics import (
    Alignment,
    LevinCase,
    affine_fit,
    align_up_to_shift,
    error_ratio,
    kernel_similarity,
    levin_scores,
    list_levin_cases,
    load_levin_case,
    orient_kernel,
    psnr,
    ssim,
)

__all__ = [
    "Alignment",
    "LevinCase",
    "affine_fit",
    "align_up_to_shift",
    "error_ratio",
    "kernel_similarity",
    "levin_scores",
    "list_levin_cases",
    "load_levin_case",
    "orient_kernel",
    "psnr",
    "ssim",
]
