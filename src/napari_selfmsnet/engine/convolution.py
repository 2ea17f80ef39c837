"""The one blur convention of the project, and the per-scale geometry built on it.

Convention: *true* convolution (the kernel is flipped, as in ``scipy.signal.convolve2d``),
``mode="valid"``. A latent image of size ``(H + kh - 1, W + kw - 1)`` blurred by a
``(kh, kw)`` kernel gives exactly the ``(H, W)`` observation, so no boundary condition is
assumed. ``kernel[kh // 2, kw // 2]`` is the kernel's centre: a delta there maps
``x[kh // 2 : kh // 2 + H, kw // 2 : kw // 2 + W]`` onto the observation. Every module that
blurs, deblurs or estimates a kernel goes through this file, so kernels never end up flipped
between the image step and the kernel step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "ScaleGeometry",
    "scale_geometry",
    "valid_convolve",
    "center_crop",
    "kernel_offset",
    "center_kernel",
    "register_to_observation",
    "downsample",
    "resample_kernel",
]


def valid_convolve(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Blur ``image`` by ``kernel`` with a valid true convolution, channel by channel.

    Shape:
        image: ``(N, C, H + kh - 1, W + kw - 1)``; kernel: ``(kh, kw)``;
        output: ``(N, C, H, W)``.
    """
    if kernel.ndim != 2:
        raise ValueError(f"kernel must be 2-D (kh, kw), got shape {tuple(kernel.shape)}")
    n, c, h, w = image.shape
    kh, kw = kernel.shape
    if h < kh or w < kw:
        raise ValueError(f"image {h}x{w} is smaller than the kernel {kh}x{kw}")
    # conv2d is a cross-correlation: flipping the kernel makes it a true convolution.
    weight = torch.flip(kernel, dims=(0, 1)).to(image.dtype)[None, None]
    out = F.conv2d(image.reshape(n * c, 1, h, w), weight)
    return out.reshape(n, c, h - kh + 1, w - kw + 1)


def center_crop(padded: torch.Tensor, kernel_shape: tuple[int, int]) -> torch.Tensor:
    """The part of a padded latent image that lies under the observation.

    The inverse of the padding in :func:`valid_convolve`: removes ``kh // 2`` rows above,
    ``(kh - 1) - kh // 2`` below (likewise for columns), so a delta kernel at the centre maps
    the crop onto the observation pixel for pixel.
    """
    kh, kw = kernel_shape
    h, w = padded.shape[-2:]
    top, left = kh // 2, kw // 2
    return padded[..., top : h - (kh - 1 - top), left : w - (kw - 1 - left)]


def kernel_offset(kernel: torch.Tensor) -> tuple[int, int]:
    """Whole-pixel offset ``(rows, cols)`` of the kernel's centre of mass from its centre pixel."""
    kh, kw = kernel.shape
    # A kernel is small: one read-back, and float64 (which MPS lacks) for the centre of mass.
    k = kernel.detach().to("cpu", torch.float64)
    total = k.sum()
    cy = float((k.sum(1) * torch.arange(kh, dtype=torch.float64)).sum() / total)
    cx = float((k.sum(0) * torch.arange(kw, dtype=torch.float64)).sum() / total)
    return round(cy - kh // 2), round(cx - kw // 2)


def center_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """Shift ``kernel`` by whole pixels so its centre of mass sits at its centre pixel.

    A blind estimate is defined only up to a shift traded between image and kernel; with the
    kernel's mass centred, the deblurred image lies over the blurred one (what a user
    overlaying the two expects, and what Levin's comparison up to +-5 pixels of shift assumes)
    instead of drifting by the kernel's offset. Mass shifted out of the support is dropped and
    the rest renormalised; an already centred kernel is returned as it is.
    """
    return _moved_to_centre(kernel, kernel_offset(kernel))


def _moved_to_centre(kernel: torch.Tensor, offset: tuple[int, int]) -> torch.Tensor:
    dy, dx = offset
    if dy == 0 and dx == 0:
        return kernel
    h, w = kernel.shape
    shifted = torch.zeros_like(kernel)
    shifted[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)] = kernel[
        max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)
    ]
    return shifted / shifted.sum()


def register_to_observation(padded: torch.Tensor, kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent image under the observation and the kernel, both as a user reads them.

    :func:`center_crop` assumes the kernel is centred. A kernel whose mass sits ``d`` pixels
    off centre maps ``padded[kh // 2 - d :]`` onto the observation instead, so the crop is
    taken there and the kernel returned centred by :func:`center_kernel`: the image lies over
    the observation pixel for pixel and the pair blurs as ``(padded, kernel)`` did (exactly,
    unless centring dropped mass off the kernel's edge).

    Shape: ``padded`` ``(..., H + kh - 1, W + kw - 1)``, odd ``(kh, kw)`` kernel; returns
    ``(..., H, W)`` and ``(kh, kw)``.
    """
    kh, kw = kernel.shape
    dy, dx = kernel_offset(kernel)
    h, w = padded.shape[-2:]
    top, left = kh // 2 - dy, kw // 2 - dx
    image = padded[..., top : top + h - kh + 1, left : left + w - kw + 1]
    return image, _moved_to_centre(kernel, (dy, dx))


def resample_kernel(kernel: torch.Tensor, shape: tuple[int, int], factor: float) -> torch.Tensor:
    """A coarser scale's kernel drawn on a ``factor`` times finer pixel grid of ``shape``.

    The centres stay on each other (``(kh // 2, kw // 2)`` of both), values are sampled
    bilinearly, and the result is non-negative and sums to 1 (the delta kernel of ``shape``
    if nothing of ``kernel`` lands on it). Used to start the full-scale polish from a coarser
    scale of the pyramid, whose kernel the noise disturbs less.
    """
    kh, kw = kernel.shape
    th, tw = shape
    rows = (torch.arange(th, dtype=kernel.dtype, device=kernel.device) - th // 2) / factor + kh // 2
    cols = (torch.arange(tw, dtype=kernel.dtype, device=kernel.device) - tw // 2) / factor + kw // 2
    # grid_sample's coordinates run from -1 to 1 over the input's pixel centres (align_corners).
    gy = 2 * rows / max(kh - 1, 1) - 1
    gx = 2 * cols / max(kw - 1, 1) - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]
    out = F.grid_sample(kernel[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0, 0]
    out = out.clamp_min(0)
    total = out.sum()
    if not bool(total > 0):
        out = torch.zeros_like(out)
        out[th // 2, tw // 2] = 1
        return out
    return out / total


def downsample(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pyramid level of the observation: area averaging (anti-aliased) to ``size``."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="area")


@dataclass(frozen=True)
class ScaleGeometry:
    """Sizes at one scale of the pyramid.

    ``image``: observation size ``(H_s, W_s)``; ``kernel``: odd kernel size ``(k_s, k_s')``;
    ``padded``: network output size ``(H_s + kh_s - 1, W_s + kw_s - 1)``.
    """

    scale: float
    image: tuple[int, int]
    kernel: tuple[int, int]

    @property
    def padded(self) -> tuple[int, int]:
        return (self.image[0] + self.kernel[0] - 1, self.image[1] + self.kernel[1] - 1)


def _odd_at_least_3(n: float) -> int:
    k = max(3, int(math.floor(n)))
    return k if k % 2 == 1 else k + 1


def scale_geometry(
    image_shape: tuple[int, int], kernel_shape: tuple[int, int], scales: tuple[float, ...]
) -> list[ScaleGeometry]:
    """Per-scale image and kernel sizes, coarse to fine.

    ``H_s = floor(s H)``; ``k_s = floor(s k)`` made odd and at least 3, except at scale 1,
    where the user's kernel size is kept exactly.
    """
    h, w = image_shape
    kh, kw = kernel_shape
    out = []
    for s in scales:
        if s == 1:
            out.append(ScaleGeometry(1.0, (h, w), (kh, kw)))
            continue
        hs, ws = int(math.floor(s * h)), int(math.floor(s * w))
        ks = (_odd_at_least_3(s * kh), _odd_at_least_3(s * kw))
        if hs < ks[0] or ws < ks[1]:
            raise ValueError(
                f"at scale {s} the image ({hs}x{ws}) is smaller than the kernel {ks}; "
                "use fewer scales (the single-scale method, self-msnet-s) or a larger image"
            )
        out.append(ScaleGeometry(float(s), (hs, ws), ks))
    return out
