"""The iterations of the non-blind solvers, on the unknown-boundary (valid) model.

ADMM for a sparse or quadratic gradient prior, and Richardson-Lucy with an optional total
variation term, each a stage generator (:mod:`.steps`): it yields how many iterations it has
done every ``progress_every`` iterations and at the end, and returns the latent image cropped
to the observed frame; a true value sent at a yield stops it there with its current iterate.
The yields do not touch the arithmetic: a solver that is never stopped computes what its
plain loop computes. :mod:`.nonblind` describes the model and chooses the parameters.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import torch
from scipy.fft import next_fast_len

__all__ = ["admm_steps", "richardson_lucy_steps"]

# ADMM penalties relative to the data term (unit-range images): ``_RHO_DATA`` for the blur
# split ``u = k * x``, ``_RHO_PRIOR`` for the gradient split ``v = grad x``. Chosen with the
# default weights on the same images, where the result hardly depends on the iteration count
# (docs/benchmarks.md).
_RHO_DATA = 1.0
_RHO_PRIOR = 0.2


class _Domain:
    """The periodic latent domain: observation at ``(kh // 2, kw // 2)``, FFT-friendly size.

    A latent pixel ``x[r, c]`` blurred periodically gives observed pixel ``(i, j)`` at
    ``(i + kh // 2, j + kw // 2)``, drawing on rows ``i .. i + kh - 1`` only: no wrap-around
    reaches the observed frame, so on the frame the periodic blur equals the valid blur.
    """

    def __init__(self, shape: tuple[int, int], kernel: torch.Tensor) -> None:
        h, w = shape
        kh, kw = kernel.shape
        self.top, self.left = kh // 2, kw // 2
        self.shape = (next_fast_len(h + kh), next_fast_len(w + kw))
        self.frame = (slice(self.top, self.top + h), slice(self.left, self.left + w))
        padded = torch.zeros(self.shape, dtype=kernel.dtype, device=kernel.device)
        padded[:kh, :kw] = kernel
        # Centre of the kernel at (0, 0): the optical transfer function of a true convolution.
        padded = torch.roll(padded, shifts=(-self.top, -self.left), dims=(0, 1))
        self.otf = torch.fft.rfft2(padded)
        self.mask = torch.zeros(self.shape, dtype=kernel.dtype, device=kernel.device)
        self.mask[self.frame] = 1.0

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(x) * self.otf, s=self.shape)

    def blur_adjoint(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(x) * self.otf.conj(), s=self.shape)

    def embed(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` on the domain, extended by replicating its borders (a start value only)."""
        h, w = y.shape[-2:]
        pad = (self.left, self.shape[1] - w - self.left, self.top, self.shape[0] - h - self.top)
        return torch.nn.functional.pad(y[:, None], pad, mode="replicate")[:, 0]

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        return x[(..., *self.frame)]


def _grad(x: torch.Tensor) -> torch.Tensor:
    """Periodic forward differences, stacked ``(..., 2, H, W)`` (vertical, horizontal)."""
    return torch.stack((torch.roll(x, -1, -2) - x, torch.roll(x, -1, -1) - x), dim=-3)


def _grad_adjoint(g: torch.Tensor) -> torch.Tensor:
    gy, gx = g.unbind(-3)
    return (torch.roll(gy, 1, -2) - gy) + (torch.roll(gx, 1, -1) - gx)


def _grad_symbol(shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    """Fourier symbol of ``grad^T grad`` on the rfft grid (the periodic Laplacian)."""
    fy = torch.fft.fftfreq(shape[0], device=device)[:, None]
    fx = torch.fft.rfftfreq(shape[1], device=device)[None, :]
    return 4 * torch.sin(torch.pi * fy) ** 2 + 4 * torch.sin(torch.pi * fx) ** 2


def _shrink(z: torch.Tensor, threshold_weight: float, alpha: float) -> torch.Tensor:
    """``argmin_v 1/2 (v - z)^2 + t |v|^alpha`` elementwise (generalized shrinkage, Zuo 2013)."""
    t = threshold_weight
    if alpha == 2.0:
        return z / (1 + 2 * t)
    if alpha == 1.0:
        return torch.sign(z) * torch.clamp(z.abs() - t, min=0)
    base = 2 * t * (1 - alpha)
    tau = base ** (1 / (2 - alpha)) + t * alpha * base ** ((alpha - 1) / (2 - alpha))
    mag = z.abs()
    s = mag.clone()
    for _ in range(3):  # fixed-point iterations; converge fast above the threshold
        s = mag - t * alpha * torch.clamp(s, min=1e-12) ** (alpha - 1)
    return torch.where(mag > tau, torch.sign(z) * s, torch.zeros_like(z))


def admm_steps(
    y: torch.Tensor, kernel: torch.Tensor, alpha: float, weight: float, iterations: int, progress_every: int
) -> Generator[int, Any, torch.Tensor]:
    """ADMM for ``1/2 ||M k*x - y||^2 + weight sum |grad x|^alpha`` with unknown boundaries.

    Splits ``u = k * x`` (its masked data term has an elementwise solution) and
    ``v = grad x`` (elementwise shrinkage); the ``x`` update is one FFT division.
    """
    domain = _Domain(tuple(y.shape[-2:]), kernel)
    mask = domain.mask
    observed = torch.zeros((y.shape[0], *domain.shape), dtype=y.dtype, device=y.device)
    observed[(..., *domain.frame)] = y
    x = domain.embed(y)
    u = domain.blur(x)
    v = _grad(x)
    du = torch.zeros_like(u)
    dv = torch.zeros_like(v)
    rho_u, rho_v = _RHO_DATA, _RHO_PRIOR
    denominator = rho_u * domain.otf.abs() ** 2 + rho_v * _grad_symbol(domain.shape, y.device)
    for done in range(1, iterations + 1):
        rhs = rho_u * torch.fft.rfft2(u - du) * domain.otf.conj() + rho_v * torch.fft.rfft2(_grad_adjoint(v - dv))
        x_hat = rhs / denominator
        x = torch.fft.irfft2(x_hat, s=domain.shape)
        kx = torch.fft.irfft2(x_hat * domain.otf, s=domain.shape)
        gx = _grad(x)
        u = (observed + rho_u * (kx + du)) / (mask + rho_u)
        v = _shrink(gx + dv, weight / rho_v, alpha)
        du = du + kx - u
        dv = dv + gx - v
        if done % progress_every == 0 or done == iterations:
            if (yield done):
                break
    return domain.crop(x)


def richardson_lucy_steps(
    y: torch.Tensor, kernel: torch.Tensor, background: float, tv_weight: float, iterations: int, progress_every: int
) -> Generator[int, Any, torch.Tensor]:
    """Richardson-Lucy with the masked (unknown-boundary) update and an optional TV term."""
    domain = _Domain(tuple(y.shape[-2:]), kernel)
    observed = torch.zeros((y.shape[0], *domain.shape), dtype=y.dtype, device=y.device)
    observed[(..., *domain.frame)] = y
    # Sensitivity: how much of each latent pixel's light reaches the observed frame.
    sensitivity = domain.blur_adjoint(domain.mask.expand_as(observed))
    reached = sensitivity > 1e-3
    x = torch.clamp(domain.embed(y) - background, min=0) + 1e-6
    eps = 1e-12
    for done in range(1, iterations + 1):
        ratio = domain.mask * observed / (domain.blur(x) + background + eps)
        correction = domain.blur_adjoint(ratio)
        denominator = sensitivity
        if tv_weight > 0:
            g = _grad(x)
            g = g / torch.sqrt((g**2).sum(dim=-3, keepdim=True) + 1e-6)
            # div(grad x / |grad x|) = -grad^T(...); Dey et al. keep the factor positive.
            denominator = torch.clamp(sensitivity + tv_weight * _grad_adjoint(g), min=1e-3)
        x = torch.where(reached, x * torch.clamp(correction, min=0) / denominator, torch.zeros_like(x))
        if done % progress_every == 0 or done == iterations:
            if (yield done):
                break
    return domain.crop(x)
