"""Tiling for the non-blind solvers: when a frame would not fit, solve it tile by tile.

The frame is normalised once (by the caller), so every tile is regularised alike; tiles
overlap and are blended with raised-cosine weights that sum to 1, and each tile is solved with
the unknown-boundary (valid) model of :mod:`.nonblind`, so tile borders neither ring nor seam.
``tile_size="auto"`` tiles only when :func:`solver_peak_bytes` of the frame exceeds
:func:`memory_budget` of the device.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch
from scipy.fft import next_fast_len

from .devices import resolve_device
from .records import Progress
from .steps import relay

__all__ = [
    "auto_tile_size",
    "default_tile_overlap",
    "memory_budget",
    "resolve_tiling",
    "solve_tiled",
    "solver_peak_bytes",
]

# Peak memory of one solve, in float32 buffers the size of the periodic domain (``Hp x Wp``,
# the frame plus the kernel support; a complex half spectrum counts as one). ADMM keeps 8
# per channel across iterations (observed, x, u, du, and v, dv with 2 gradient components) and
# within one holds rhs and x_hat (spectra), kx, grad x (2) and the temporaries of the
# shrinkage of the 2-component gradient (z, |z|, s, each 2); shared by the channels: the OTF,
# the mask and the denominator (half a spectrum). Measured on CPU (peak resident memory with
# every allocation mmap-ed, so a free returns it), 2048 x 2048, 3 iterations: 2.5 + 25.5 per
# channel, the same for a 75 px kernel. Richardson-Lucy: 0.5 + 10.75 per channel, 13.75
# with the TV term. Rounded up, the input tile on the device counted in.
_FRAMES_PER_CHANNEL = {"admm": 27, "richardson-lucy": 15}
_FRAMES_SHARED = {"admm": 3, "richardson-lucy": 1}

# Auto tiles are squares of a multiple of this side (FFT-friendly, few tiles).
_TILE_STEP = 256

# Physical memory assumed where the system does not tell (os.sysconf is POSIX only).
_FALLBACK_RAM = 4 * 2**30


def default_tile_overlap(kernel_shape: tuple[int, int]) -> int:
    """Default overlap of neighbouring tiles: ``max(2 * max(kh, kw), 32)`` pixels.

    A tile's solution is least determined within about a kernel of its border (fewer
    observations see those pixels); twice the kernel lets the blend weight those pixels
    down and take them from the neighbour, whose solution there is a kernel or more inside.
    The floor of 32 keeps the ramp smooth for small kernels, where the prior's reach (a few
    pixels beyond the kernel) dominates.
    """
    return max(2 * max(int(kernel_shape[0]), int(kernel_shape[1])), 32)


def solver_peak_bytes(
    frame_shape: tuple[int, int], kernel_shape: tuple[int, int], channels: int = 1, method: str = "sparse"
) -> int:
    """Estimated peak device memory of one solve of a frame, in bytes.

    Parameters
    ----------
    frame_shape : (int, int)
        ``(H, W)`` of the frame (or tile) solved at once.
    kernel_shape : (int, int)
        ``(kh, kw)``.
    channels : int
        1 for grey, 3 for RGB (solved together).
    method : {"sparse", "wiener", "richardson-lucy"}

    Returns
    -------
    int
        ``4 * Hp * Wp * (shared + channels * per_channel)`` with ``Hp x Wp`` the FFT-friendly
        periodic domain, ``(shared, per_channel)`` = (3, 27) float32 domain-sized buffers for
        ADMM (``"sparse"``, ``"wiener"``) and (1, 15) for Richardson-Lucy; counted in the
        code and measured on CPU (see the comment at ``_FRAMES_PER_CHANNEL``). Excludes the
        FFT library's workspace and allocator slack, which the budget's margin absorbs.
    """
    h, w = (int(s) for s in frame_shape)
    kh, kw = (int(s) for s in kernel_shape)
    solver = "richardson-lucy" if method == "richardson-lucy" else "admm"
    buffers = _FRAMES_SHARED[solver] + channels * _FRAMES_PER_CHANNEL[solver]
    return 4 * next_fast_len(h + kh) * next_fast_len(w + kw) * buffers


def memory_budget(device: str | torch.device = "auto") -> int:
    """Bytes one solve may use on ``device``: what ``tile_size="auto"`` plans against.

    CUDA: half of the memory free now (``torch.cuda.mem_get_info``), leaving room for the
    FFT workspace, the caching allocator's slack and other work on the GPU. CPU and MPS
    (unified memory): a quarter of the physical RAM (4 GiB where it cannot be read), since
    the frame itself, its normalised copy and the result also sit in host memory.
    """
    dev = resolve_device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free) // 2
    try:
        ram = int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # not POSIX, or the names are unknown
        ram = 0
    return (ram if ram > 0 else _FALLBACK_RAM) // 4


def auto_tile_size(
    frame_shape: tuple[int, int],
    kernel_shape: tuple[int, int],
    budget: int,
    *,
    channels: int = 1,
    method: str = "sparse",
    overlap: int | None = None,
) -> int | None:
    """The tile side ``tile_size="auto"`` uses: None when the whole frame fits the budget.

    Parameters
    ----------
    frame_shape : (int, int)
        ``(H, W)``.
    kernel_shape : (int, int)
        ``(kh, kw)``.
    budget : int
        Bytes one solve may use (:func:`memory_budget`).
    channels : int
        1 for grey, 3 for RGB.
    method : str
        As for :func:`deconvolve`.
    overlap : int, optional
        The tile overlap (:func:`default_tile_overlap` when None).

    Returns
    -------
    int or None
        None when :func:`solver_peak_bytes` of the frame is within ``budget``; otherwise
        the largest multiple of 256 (at least ``2 * overlap + max(kh, kw)``) whose square
        tile fits, or that minimum when none does (the smallest tile there can be).
    """
    if solver_peak_bytes(frame_shape, kernel_shape, channels, method) <= budget:
        return None
    overlap = default_tile_overlap(kernel_shape) if overlap is None else overlap
    smallest = 2 * overlap + max(kernel_shape)
    first = -(-smallest // _TILE_STEP) * _TILE_STEP
    sides = [smallest, *range(first, max(frame_shape), _TILE_STEP)]
    fitting = [t for t in sides if solver_peak_bytes((t, t), kernel_shape, channels, method) <= budget]
    return max(fitting) if fitting else smallest


def resolve_tiling(
    tile_size: object,
    tile_overlap: object,
    chw_shape: tuple[int, int, int],
    kernel_shape: tuple[int, int],
    method: str,
    device: torch.device,
) -> tuple[int, int] | None:
    """Check the tiling options; ``(tile, overlap)``, or None for one solve of the frame."""
    if tile_overlap is None:
        overlap = default_tile_overlap(kernel_shape)
    elif isinstance(tile_overlap, (int, np.integer)) and not isinstance(tile_overlap, bool):
        if tile_overlap < 0:
            raise ValueError(f"tile_overlap must be >= 0 pixels, got {tile_overlap}")
        overlap = int(tile_overlap)
    else:
        raise TypeError(f"tile_overlap must be an int (pixels) or None, got {tile_overlap!r}")
    channels, h, w = chw_shape
    if isinstance(tile_size, str):
        if tile_size != "auto":
            raise ValueError(f"unknown tile_size {tile_size!r}; use 'auto', None (never tile) or an int (pixels)")
        tile = auto_tile_size(
            (h, w), kernel_shape, memory_budget(device), channels=channels, method=method, overlap=overlap
        )
    elif tile_size is None:
        tile = None
    elif isinstance(tile_size, (int, np.integer)) and not isinstance(tile_size, bool):
        if tile_size < 0:
            raise ValueError(f"tile_size must be >= 0 pixels (0 never tiles), got {tile_size}")
        tile = int(tile_size) or None
    else:
        raise TypeError(f"tile_size must be 'auto', None or an int (pixels), got {tile_size!r}")
    if tile is None or (tile >= h and tile >= w):
        return None
    smallest = 2 * overlap + max(kernel_shape)
    if tile < smallest:
        raise ValueError(
            f"tile_size {tile} is too small for an overlap of {overlap} px and a {kernel_shape[0]}x{kernel_shape[1]} "
            f"kernel: a tile must be at least 2 x overlap + kernel side = {smallest} px; use a larger tile_size or "
            "a smaller tile_overlap"
        )
    return tile, overlap


def _tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the tiles along one axis: a stride of ``tile - overlap``, the last
    tile flush with the end (so it overlaps its neighbour by ``overlap`` or more)."""
    if length <= tile:
        return [(0, length)]
    starts = [*range(0, length - tile, tile - overlap), length - tile]
    return [(start, start + tile) for start in starts]


def _blend_weights(spans: list[tuple[int, int]], overlap: int) -> list[np.ndarray]:
    """Per tile along one axis, weights that sum to 1 over the tiles at every pixel.

    Between tiles ``i`` and ``i + 1`` the weight passes from one to the other along a
    raised cosine (``sin^2`` up, ``cos^2`` down) over the last ``overlap`` pixels of tile
    ``i``; tile ``i + 1`` has weight 0 on any extra overlap before that. Smooth, so no seam.
    """
    ramp = np.sin(np.pi / 2 * (np.arange(overlap) + 0.5) / max(overlap, 1)) ** 2
    weights = []
    for i, (start, stop) in enumerate(spans):
        weight = np.ones(stop - start)
        if i > 0:
            previous_stop = spans[i - 1][1] - start
            weight[: previous_stop - overlap] = 0.0
            weight[previous_stop - overlap : previous_stop] = ramp
        if i < len(spans) - 1:
            weight[weight.size - overlap :] *= ramp[::-1]
        weights.append(weight)
    return weights


def solve_tiled(
    unit: np.ndarray,
    solve: Callable[[torch.Tensor], Generator[int, Any, torch.Tensor]],
    tile: int,
    overlap: int,
    device: torch.device,
    iterations: int,
) -> Generator[Progress, Any, np.ndarray]:
    """``solve`` tile by tile on ``unit`` ``(C, H, W)``; returns the blended result, float32 ``(C, H, W)``.

    A stage generator (:mod:`.steps`): ``solve(tile)`` is a solver's generator of
    ``iterations`` iterations (:mod:`.solvers`), whose records are passed on as
    ``"deconvolve"`` records counting the iterations of all tiles. A stop request ends the
    tile being solved at its current iterate; the tiles not reached yet keep ``unit``.
    """
    _, h, w = unit.shape
    rows, cols = _tile_spans(h, tile, overlap), _tile_spans(w, tile, overlap)
    row_weights, col_weights = _blend_weights(rows, overlap), _blend_weights(cols, overlap)
    total = iterations * len(rows) * len(cols)
    out = np.zeros(unit.shape, dtype=np.float32)
    stopped = False
    solved = 0
    for (top, bottom), row_weight in zip(rows, row_weights):
        for (left, right), col_weight in zip(cols, col_weights):
            part = np.ascontiguousarray(unit[:, top:bottom, left:right])
            if stopped:
                x = part
            else:
                before = solved * iterations
                y = torch.as_tensor(part, dtype=torch.float32, device=device)
                x, stopped = yield from relay(
                    solve(y), lambda done: Progress(stage="deconvolve", step=before + done, total=total)
                )
                x = x.cpu().numpy()
                del y  # one tile on the device at a time
                solved += 1
            out[:, top:bottom, left:right] += x * (row_weight[:, None] * col_weight[None, :]).astype(np.float32)
    return out
