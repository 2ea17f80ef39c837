"""Differentiable image losses of the image step (SSIM with a Gaussian window, TV).

The scores that judge a result (:func:`napari_selfmsnet.evaluation.metrics.ssim`) are NumPy
and never differentiated; these run inside the optimizer on torch tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["differentiable_ssim", "total_variation"]

_C1 = 0.01**2
_C2 = 0.03**2


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    t = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def differentiable_ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of two ``(N, C, H, W)`` images with data range 1 (Gaussian window, valid part).

    The usual constants (K1 = 0.01, K2 = 0.03) and a population covariance, as in
    ``skimage.metrics.structural_similarity(gaussian_weights=True, use_sample_covariance=False)``;
    a test checks the two agree. Images smaller than the window use a window of their size.
    """
    c = a.shape[1]
    size = min(window, a.shape[-2], a.shape[-1])
    size = size if size % 2 else size - 1
    w = _gaussian_window(size, sigma, c, a)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + _C1) * (2 * cov + _C2)
    den = (mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2)
    return (num / den).mean()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation per pixel of a ``(N, C, H, W)`` image."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    return dh + dw
