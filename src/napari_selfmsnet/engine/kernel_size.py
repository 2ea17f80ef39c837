"""``kernel_size="auto"``: the blur's support measured from the image.

Users rarely know how many pixels their blur spans, and a support too small cannot hold the
blur while one far too large makes the problem harder. The size is measured by the method
itself: short blind runs on the image at half resolution (where the noise is halved and the
blind estimate is the most reliable, as the pyramid's coarse scales are), from a small support
growing by half while the kernel found spills onto the edge of its support (a blur larger than
its support fills it to the edge; a generous support from the start invites spurious parts on
sparse images, whose isolated spots look like copies of the kernel). The last kernel is then
measured: along each axis, the span holding the central 90% of its mass, back at full
resolution, with a margin. A short probe's kernel is a blurred, faint-fringed copy of the
blur, so a span measured down to a small share of its peak is the probe's support rather than
the blur (benchmarks/NOTEBOOK.md); the mass is not fooled by the fringe.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from .config import METHOD_SCALES, SolverConfig
from .convolution import downsample
from .inputs import largest_kernel, to_channels_first
from .optimizer import OptimizerState, optimize
from .records import Progress
from .steps import relay

__all__ = ["AUTO", "KernelSize", "kernel_size_steps", "size_from_extent"]

#: The value of ``kernel_size`` that asks for the size to be measured.
AUTO = "auto"
#: Supports of the probe runs, at their half resolution, smallest first (full-resolution blurs
#: up to about 110 px are measured); a probe ends the search when less than this share of its
#: kernel lies on the outer rings of its support (one ring per 8 pixels of support). A first
#: support of 7 (14 px) squeezed 15 px blurs without spilling onto its edge.
_LADDER = (11, 17, 25, 37, 55)
_EDGE_SHARE = 0.15
#: Iterations of every probe, whatever the run's own ``iterations``: a probe shortened with a
#: quick trial run measured far too large (15 px blur: 25 px at 20 iterations, 57 px at 5).
_PROBE_ITERATIONS = 80
#: Images whose shorter side is below this are probed at full resolution.
_HALVE_FROM = 96
#: The share of the probe kernel's mass whose span is measured (the central part, per axis).
_MASS_SHARE = 0.9
#: The size handed on: the measured extent times this margin, plus two pixels.
_MARGIN = 1.25
_SMALLEST = 5


@dataclass(frozen=True)
class KernelSize:
    """The outcome of the measurement: ``shape`` to use, the ``extent`` measured (full-resolution
    pixels), the probe's ``support`` and ``factor`` (its pixel size in full-resolution pixels)."""

    shape: tuple[int, int]
    extent: tuple[int, int]
    support: int
    factor: int

    def to_dict(self) -> dict:
        return {"extent": list(self.extent), "probe_support": self.support, "probe_factor": self.factor}


def _odd(n: float) -> int:
    k = int(np.ceil(n))
    return k if k % 2 else k + 1


def size_from_extent(extent: int, limit: int) -> int:
    """The odd support handed on for a blur ``extent`` pixels across, at most ``limit``."""
    return min(max(_odd(_MARGIN * extent + 2), _SMALLEST), limit if limit % 2 else limit - 1)


def _edge_share(kernel: np.ndarray) -> float:
    """The share of the kernel's mass on the outer rings of its support (one ring per 8 pixels)."""
    k = np.clip(kernel, 0, None)
    total = k.sum()
    ring = max(1, min(k.shape) // 8)
    return float((total - k[ring:-ring, ring:-ring].sum()) / total) if total > 0 else 1.0


def _extent(kernel: np.ndarray) -> tuple[int, int]:
    """Rows and columns spanned by the central :data:`_MASS_SHARE` of ``kernel``'s mass."""
    k = np.clip(np.asarray(kernel, dtype=np.float64), 0, None)
    k = k / k.sum()
    tail = (1 - _MASS_SHARE) / 2
    spans = []
    for profile in (k.sum(axis=1), k.sum(axis=0)):
        cumulative = np.cumsum(profile)
        spans.append(int(np.searchsorted(cumulative, 1 - tail) - np.searchsorted(cumulative, tail)) + 1)
    return spans[0], spans[1]


def kernel_size_steps(
    window: np.ndarray,
    noise_sigma: float,
    config: SolverConfig,
    device: torch.device,
    *,
    seed: int = 0,
    progress_every: int = 10,
    limit: tuple[int, int],
) -> Generator[Progress, Any, KernelSize]:
    """Measure the blur's support on ``window`` (normalised units, ``(H, W)`` or ``(H, W, 3)``).

    A stage generator (:mod:`.steps`) whose records are the probe run's, with stage
    ``"size"``. ``noise_sigma`` is the window's noise (normalised units); ``limit`` the
    largest support the image allows, ``(kh, kw)``. A stop request ends the probe with its
    kernel so far, which is then measured all the same.
    """
    h, w = window.shape[:2]
    factor = 2 if min(h, w) >= _HALVE_FROM else 1
    observation = torch.from_numpy(to_channels_first(np.asarray(window, dtype=np.float32)))[None].to(device)
    small = (h // factor, w // factor)
    if factor > 1:
        observation = downsample(observation, small)
    largest = largest_kernel(small, METHOD_SCALES["self-msnet"])[0]
    scales = METHOD_SCALES["self-msnet"]
    if largest < _LADDER[0]:
        largest, scales = largest_kernel(small)[0], METHOD_SCALES["self-msnet-s"]
    ladder = [k for k in _LADDER if k <= largest] or [max(largest, 3)]
    # The probes are the fast generator runs, short; their polish is not needed.
    probe = replace(config, scales=scales, width=16, iterations=_PROBE_ITERATIONS, retries=0)
    step = 0
    for support in ladder:
        first = step

        def record(state: OptimizerState) -> Progress:
            return Progress(
                stage="size", step=first + state.iteration, total=len(ladder) * probe.iterations, loss=state.loss,
                kernel=state.kernel.detach().cpu().numpy().astype(np.float32),
            )  # fmt: skip

        run = optimize(
            observation, (support, support), probe, seed=seed, progress_every=progress_every,
            noise_sigma=noise_sigma / factor,
        )  # fmt: skip
        state, stopped = yield from relay(run, record)
        step += probe.iterations
        kernel = state.kernel.detach().cpu().numpy()
        if stopped or _edge_share(kernel) < _EDGE_SHARE:
            break
    rows, cols = _extent(kernel)
    extent = (rows * factor, cols * factor)
    size = size_from_extent(max(extent), min(limit))
    return KernelSize(shape=(size, size), extent=extent, support=support, factor=factor)
