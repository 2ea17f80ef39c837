"""The kernel step: a closed-form, per-scale kernel estimate from the current latent image.

Given the latent image ``x`` (grey, the observation's size) and the observation ``y``, solve in
the gradient domain

    min_k || (M . grad x) * k - grad y ||^2 + lam ||k||^2 + g (u.k)^2 + g (v.k)^2

where ``M`` keeps only strong edges and ``u``, ``v`` are the kernel's centred coordinate grids
(the last two terms stop the kernel from drifting off-centre). Without the centring terms the
solution ``Z`` is one division in the Fourier domain (circular model, cropped to the kernel's
support). With them, the normal equations become ``(I + a u^T + b v^T) k = Z`` with
``a = g P^-1 u``, ``b = g P^-1 v`` and ``P`` the (circulant) Fourier-domain operator; by the
Sherman-Morrison-Woodbury identity that is a 2 x 2 solve: ``O(k^2)``, never a dense
``k^2 x k^2`` system. The estimate is then cleaned: negatives to zero, support thresholded at
the first large gap of the sorted values, dilated, weak connected parts pruned, renormalised.

The result is in the convention of :mod:`.convolution` (true convolution, centre at
``(kh // 2, kw // 2)``), so it is used by the image step as it is, never flipped.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = [
    "edge_mask",
    "solve_kernel",
    "woodbury_centering",
    "clean_kernel",
    "estimate_kernel",
    "to_gray",
    "delta_kernel",
    "noise_term",
    "gray_noise_factor",
    "LatentPrior",
    "posterior_variance_term",
]

_SOBEL = torch.tensor(
    [
        [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],  # horizontal edges
        [[-2, -1, 0], [-1, 0, 1], [0, 1, 2]],  # 45 degrees
        [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],  # vertical edges
        [[0, 1, 2], [-1, 0, 1], [-2, -1, 0]],  # 135 degrees
    ],
    dtype=torch.float32,
)
_CROSS = torch.tensor([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.float32)
_LUMA = (0.299, 0.587, 0.114)


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, 1, H, W)``: luminance for RGB, unchanged for grey."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def gray_noise_factor(channels: int) -> float:
    """How much of a channel's noise (standard deviation) :func:`to_gray` keeps, for noise
    independent between channels: 1 for grey, the norm of the luminance weights for RGB."""
    return 1.0 if channels == 1 else float(sum(w * w for w in _LUMA) ** 0.5)


def delta_kernel(shape: tuple[int, int], *, device=None, dtype=torch.float32) -> torch.Tensor:
    """The identity blur of ``shape``: a 1 at the centre."""
    k = torch.zeros(shape, device=device, dtype=dtype)
    k[shape[0] // 2, shape[1] // 2] = 1
    return k


def _gaussian5(x: torch.Tensor) -> torch.Tensor:
    # OpenCV's sigma for a 5-tap window, as in the reference edge detector.
    sigma = 0.3 * ((5 - 1) * 0.5 - 1) + 0.8
    t = torch.arange(5, dtype=x.dtype, device=x.device) - 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="reflect"), g.view(1, 1, 1, 5))
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="reflect"), g.view(1, 1, 5, 1))


def _dilate(mask: torch.Tensor) -> torch.Tensor:
    """Binary dilation by the 3 x 3 disk (a cross), for ``(..., H, W)`` 0/1 tensors."""
    shape = mask.shape
    m = mask.reshape(-1, 1, *shape[-2:]).to(torch.float32)
    out = F.conv2d(m, _CROSS.to(m.device).view(1, 1, 3, 3), padding=1) > 0
    return out.reshape(shape).to(mask.dtype)


def _percentile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q``-th percentile (nearest rank), for tensors of any size."""
    flat = values.reshape(-1)
    k = 1 + round(0.01 * q * (flat.numel() - 1))
    return flat.kthvalue(min(max(k, 1), flat.numel())).values


def edge_mask(x: torch.Tensor, percentile: float) -> torch.Tensor:
    """Pixels whose directional edge response is above ``percentile`` in any of 4 directions.

    Shape: ``x`` ``(1, 1, H, W)`` -> mask ``(1, 1, H, W)`` of 0/1 in ``x``'s dtype.
    """
    smooth = _gaussian5(x)
    responses = F.conv2d(F.pad(smooth, (1, 1, 1, 1), mode="reflect"), _SOBEL.to(x).unsqueeze(1)) ** 2
    mask = torch.zeros_like(x, dtype=torch.bool)
    for d in range(responses.shape[1]):
        r = responses[:, d : d + 1]
        mask |= r > _percentile(r, percentile)
    return _dilate(mask.to(x.dtype))


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences, zero in the last column / row (``(..., H, W)``)."""
    gx = torch.zeros_like(x)
    gy = torch.zeros_like(x)
    gx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    gy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    return gx, gy


def _crop_centered(full: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Kernel of ``shape`` from a circular (origin at index 0) array: centre at ``shape // 2``."""
    kh, kw = shape
    rolled = torch.roll(full, shifts=(kh // 2, kw // 2), dims=(-2, -1))
    return rolled[..., :kh, :kw]


def solve_kernel(
    x: torch.Tensor,
    y: torch.Tensor,
    shape: tuple[int, int],
    *,
    lam: float,
    gamma: float,
    mask: torch.Tensor | None = None,
    noise_lambda: float = 0.0,
) -> torch.Tensor:
    """Least-squares kernel from gradients, with Tikhonov and centring terms (before clean-up).

    Parameters
    ----------
    x, y : Tensor, shape (H, W)
        Latent image and observation, same size, grey.
    shape : (kh, kw)
        Kernel size, odd.
    lam : float
        Tikhonov weight relative to the masked gradient energy of ``x``.
    gamma : float
        Centring weight, relative to the same energy; 0 disables the centring terms.
    mask : Tensor, shape (H, W), optional
        Edge-selection mask applied to the gradients of ``x``.
    noise_lambda : float
        An absolute Tikhonov weight added to ``lam``'s: the noise power of ``y``'s gradients
        over the kernel's expected power (see :func:`noise_term`). Without it, the
        frequencies where ``x`` carries little energy are filled by ``y``'s noise, which the
        clean-up then keeps as a scatter of specks.

    Returns
    -------
    Tensor, shape (kh, kw)
        Real, not yet non-negative or normalised.
    """
    gxx, gxy = _gradients(x)
    if mask is not None:
        gxx, gxy = gxx * mask, gxy * mask
    gyx, gyy = _gradients(y)
    fxx, fxy = torch.fft.rfft2(gxx), torch.fft.rfft2(gxy)
    numerator = fxx.conj() * torch.fft.rfft2(gyx) + fxy.conj() * torch.fft.rfft2(gyy)
    energy = fxx.real**2 + fxx.imag**2 + fxy.real**2 + fxy.imag**2
    # Parseval: the mean of |F g|^2 over frequencies is the spatial gradient energy.
    scale = (gxx.square().sum() + gxy.square().sum()).clamp_min(1e-12)
    denominator = energy + lam * scale + noise_lambda
    size = x.shape[-2:]
    z = _crop_centered(torch.fft.irfft2(numerator / denominator, s=size), shape)
    if gamma <= 0:
        return z
    return woodbury_centering(z, denominator, size, gamma * scale)


def _coordinate_grids(shape: tuple[int, int], *, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred coordinate grids ``u`` (rows) and ``v`` (columns), in units of the kernel size."""
    kh, kw = shape
    rows = (torch.arange(kh, device=device, dtype=dtype) - kh // 2) / kh
    cols = (torch.arange(kw, device=device, dtype=dtype) - kw // 2) / kw
    return rows[:, None].expand(kh, kw), cols[None, :].expand(kh, kw)


def woodbury_centering(
    z: torch.Tensor, denominator: torch.Tensor, size: tuple[int, int], gamma: float | torch.Tensor
) -> torch.Tensor:
    """Solve ``(I + a u^T + b v^T) k = z`` by Sherman-Morrison-Woodbury (a 2 x 2 solve).

    ``a = gamma P^-1 u`` and ``b = gamma P^-1 v`` with ``P`` the circulant operator whose
    (half-spectrum) Fourier symbol is ``denominator`` over an image of ``size``.
    """
    shape = tuple(z.shape[-2:])
    u, v = _coordinate_grids(shape, device=z.device, dtype=z.dtype)

    def apply_p_inverse(t: torch.Tensor) -> torch.Tensor:
        # P is circulant, so where the kernel sits in the domain does not matter, as long as the
        # vector is embedded and read back at the same place.
        spectrum = torch.fft.rfft2(t, s=size) / denominator
        return torch.fft.irfft2(spectrum, s=size)[: shape[0], : shape[1]]

    a = gamma * apply_p_inverse(u)
    b = gamma * apply_p_inverse(v)
    big_u = torch.stack([a.reshape(-1), b.reshape(-1)], dim=1)  # (n, 2)
    big_v = torch.stack([u.reshape(-1), v.reshape(-1)], dim=1)  # (n, 2)
    small = torch.eye(2, dtype=z.dtype, device=z.device) + big_v.T @ big_u
    correction = big_u @ torch.linalg.solve(small, big_v.T @ z.reshape(-1))
    return (z.reshape(-1) - correction).reshape(shape)


def _support_threshold(k: torch.Tensor, factor: float) -> torch.Tensor:
    """The first value above which sorted kernel values jump by more than max / (2 c sqrt(n))."""
    values, _ = torch.sort(k.reshape(-1))
    gap = values[-1] / (2 * factor * math.sqrt(values.numel()))
    jumps = torch.diff(values) > gap
    # argmax finds the first jump without reading anything back to the host (no GPU sync).
    first = values[torch.argmax(jumps.to(torch.uint8))]
    return torch.where(jumps.any(), first, values.new_zeros(()))


def _normalised_or_delta(k: torch.Tensor) -> torch.Tensor:
    """``k / k.sum()``, or the delta kernel where that sum is not a positive finite number."""
    total = k.sum()
    valid = torch.isfinite(total) & (total > 0)
    delta = delta_kernel(tuple(k.shape), device=k.device, dtype=k.dtype)
    return torch.where(valid, k / torch.where(valid, total, torch.ones_like(total)), delta)


def _estimate_noise_level(k: torch.Tensor) -> torch.Tensor:
    """The noise of a raw kernel estimate, read from its negative values.

    A blur kernel is non-negative, so the negative values of a least-squares estimate are its
    noise; their root mean square measures it without knowing where the true support lies.
    """
    negative = k.clamp_max(0)
    count = (k < 0).sum().clamp_min(1)
    return torch.sqrt(negative.square().sum() / count)


def clean_kernel(
    k: torch.Tensor, *, support_factor: float, prune_fraction: float, noise_threshold: float = 0.0
) -> torch.Tensor:
    """Non-negative, thresholded, dilated, pruned and normalised kernel (same shape).

    The support keeps the values above the first large gap of the sorted values
    (``support_factor``) and, with ``noise_threshold > 0``, above that many times the
    estimate's own noise level (:func:`_estimate_noise_level`): on noisy data the sorted
    values have no gap, and the gap rule alone keeps the noise.
    """
    noise = _estimate_noise_level(k) if noise_threshold > 0 else None
    k = k.clamp_min(0)
    threshold = _support_threshold(k, support_factor)
    if noise is not None:
        threshold = torch.maximum(threshold, noise_threshold * noise)
    support = _dilate((k >= threshold).to(k.dtype))
    k = _normalised_or_delta(k * support)
    if prune_fraction > 0:
        # Connected components of a kernel-sized mask: the one host round-trip of the step.
        labels, count = ndimage.label(support.cpu().numpy() > 0, structure=np.ones((3, 3)))
        if count > 1:
            mass = ndimage.sum_labels(k.detach().cpu().numpy(), labels, index=np.arange(1, count + 1))
            weak = np.flatnonzero(mass < prune_fraction) + 1
            if weak.size:
                keep = torch.from_numpy(~np.isin(labels, weak)).to(device=k.device, dtype=k.dtype)
                k = _normalised_or_delta(k * keep)
    return k


def estimate_kernel(
    x: torch.Tensor,
    y: torch.Tensor,
    shape: tuple[int, int],
    *,
    lam: float,
    gamma: float,
    support_factor: float,
    prune_fraction: float,
    edge_percentile: float | None,
    noise_sigma: float = 0.0,
    noise_weight: float = 0.0,
    noise_threshold: float = 0.0,
    latent_prior: LatentPrior | None = None,
) -> torch.Tensor:
    """The whole kernel step for one scale.

    Shape: ``x`` and ``y`` ``(1, C, H, W)`` (made grey here); output ``(kh, kw)``, sums to 1.
    ``edge_percentile=None`` uses every pixel (no edge selection). ``noise_sigma`` is the
    noise of ``y`` (standard deviation, in ``y``'s units); with ``noise_weight`` it sets the
    noise term of the solve, and ``noise_threshold`` the clean-up's noise threshold
    (:func:`clean_kernel`). The noise term is :func:`noise_term` for a latent image of no
    known uncertainty (the generator's), and :func:`posterior_variance_term` for one that is a
    sparse deconvolution, described by ``latent_prior``.
    """
    xg = to_gray(x.detach())
    yg = to_gray(y)
    mask = None if edge_percentile is None else edge_mask(xg, edge_percentile)[0, 0]
    if latent_prior is None:
        extra = noise_term(tuple(yg.shape[-2:]), noise_sigma, noise_weight)
    else:
        extra = noise_weight * posterior_variance_term(xg[0, 0], mask, latent_prior, noise_sigma)
    z = solve_kernel(xg[0, 0], yg[0, 0], shape, lam=lam, gamma=gamma, mask=mask, noise_lambda=extra)
    return clean_kernel(
        z, support_factor=support_factor, prune_fraction=prune_fraction, noise_threshold=noise_threshold
    )


class LatentPrior(NamedTuple):
    """How a latent image was deconvolved: ``kernel`` ``(kh, kw)`` (summing to 1), the sparse
    prior's ``weight`` and exponent ``alpha``, on the observation divided by ``scale`` (the
    unit range the weight is set for, :class:`.intensity.IntensityMap`)."""

    kernel: torch.Tensor
    weight: float
    alpha: float
    scale: float


def posterior_variance_term(
    x: torch.Tensor, mask: torch.Tensor | None, prior: LatentPrior, noise_sigma: float
) -> torch.Tensor:
    """The kernel solve's noise term for a latent image ``x`` that is a sparse deconvolution.

    Solving the kernel from a deconvolution as if it were exact (alternating MAP) favours
    kernels that pass the frequencies the deconvolution is unsure of: on noisy data the kernel
    concentrates on the brightest part of the blur. The marginal-likelihood view (Levin et
    al., "Efficient marginal likelihood optimization in blind deconvolution", CVPR 2011)
    solves it from the expected misfit over the latent image's posterior instead: for a
    diagonal posterior covariance, ``||y - k * mean||^2 + ||k||^2 sum_i var_i``, a Tikhonov
    term weighted by the summed variance of the gradients the solve uses. Under the sparse
    prior's quadratic majoriser at ``x`` a gradient ``g`` has the variance
    ``2 sigma^2 / (||k||^2 + weight alpha |g / scale|^(alpha - 2))``: the data alone pin it
    at an edge (there it is ``2 sigma^2 / ||k||^2``, large for a long blur), the prior on
    flat ground. So the term grows with the noise and with the blur's spread, where the
    concentrating pull is strongest.

    ``x`` ``(H, W)``, grey, in the observation's units; ``mask`` the edge mask the solve uses
    (None: every pixel); ``noise_sigma`` the observation's noise, in its units. Returns a
    0-dim tensor on ``x``'s device (a spatial Tikhonov weight is the same per frequency).
    """
    k2 = prior.kernel.to(x).square().sum()
    total = x.new_zeros(())
    for g in _gradients(x):
        # Below a thousandth of the range a gradient is flat ground, which the prior pins
        # (variance ~0): the floor only keeps its curvature finite.
        magnitude = (g.abs() / prior.scale).clamp_min(1e-3)
        variance = 2 * noise_sigma**2 / (k2 + prior.weight * prior.alpha * magnitude ** (prior.alpha - 2))
        total = total + (variance if mask is None else variance * mask).sum()
    return total


def noise_term(image_shape: tuple[int, int], noise_sigma: float, weight: float) -> float:
    """The kernel solve's noise term for an ``image_shape`` observation with noise ``noise_sigma``.

    In the Fourier domain of :func:`solve_kernel` the noise of ``y``'s two gradients has the
    power ``2 sigma^2`` per pixel, ``2 sigma^2 H W`` per frequency; a Wiener solve divides by
    that over the kernel's own power. ``weight`` stands in for the inverse of the kernel's
    power and the share of the gradients the edge mask keeps.
    """
    h, w = image_shape
    return float(weight) * 2.0 * float(noise_sigma) ** 2 * h * w
