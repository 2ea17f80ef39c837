"""The stages after the blind one: the polish of the kernel, and the frame deconvolved with it.

The generator's output after a short run is still smooth, and a kernel solved from a smooth
image comes out too wide. A sparse-prior non-blind deconvolution of the observation with the
current kernel has sharp edges; re-solving the kernel from it (the same closed-form kernel step)
and deconvolving again is the classical alternating-MAP polish, a few rounds of which sharpen
the kernel and the image at little cost. The prior starts strong and weakens round by round
(continuation): the first rounds' piecewise-flat images keep only salient edges, from which
many poor starting kernels are re-solved much closer to the true one (measured in
benchmarks/NOTEBOOK.md). After the polish (``final="nonblind"``), or straight after the blind
stage when it saw only a region of the frame, the whole frame is deconvolved with the kernel
by the sparse solver: :func:`nonblind_steps`.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import torch

from .config import SolverConfig
from .convolution import center_kernel
from .inputs import to_channels_first
from .kernel_step import estimate_kernel
from .nonblind import deconvolve, deconvolve_steps
from .records import Progress
from .steps import drain

__all__ = ["nonblind_steps", "polish_kernel", "polish_steps", "round_support_factor", "round_weights"]


def _as_batch(image: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(to_channels_first(image.astype(np.float32, copy=False)))[None].to(device)


def round_weights(config: SolverConfig) -> np.ndarray:
    """The sparse prior's weight in each polish round: ``config.polish_weights`` decayed
    geometrically over ``config.polish_rounds`` (continuation, as in classical alternating MAP)."""
    first, last = config.polish_weights
    return np.geomspace(first, last, config.polish_rounds)


def round_support_factor(config: SolverConfig) -> float:
    """The support-threshold factor of the polish rounds: ``config.polish_support_factor``,
    or the finest scale's factor when that is ``None``."""
    if config.polish_support_factor is not None:
        return config.polish_support_factor
    return config.support_factor(len(config.scales) - 1)


def polish_steps(
    observation: np.ndarray, kernel: np.ndarray, config: SolverConfig, device: torch.device
) -> Generator[Progress, Any, np.ndarray]:
    """``config.polish_rounds`` rounds of (sparse deconvolution with the weights of
    :func:`round_weights`, kernel step) on ``observation``: a stage generator (:mod:`.steps`).

    Shape: ``observation`` ``(H, W)`` or ``(H, W, 3)`` in normalised units; ``kernel``
    ``(kh, kw)``. Yields a ``"polish"`` :class:`~.records.Progress` after every round (with
    the kernel so far); returns the polished kernel, centred by
    :func:`.convolution.center_kernel`, summing to 1 (with ``polish_rounds=0`` just the
    centred input kernel). A true value sent at a record ends the polish with that kernel.
    """
    y = _as_batch(observation, device)
    percentile = config.final_edge_percentile
    kernel = center_kernel(torch.from_numpy(np.ascontiguousarray(kernel))).numpy()
    weights = round_weights(config)
    for done, weight in enumerate(weights, start=1):
        sharp = deconvolve(observation, kernel, method="sparse", weight=weight, device=device)
        k = estimate_kernel(
            _as_batch(sharp, device),
            y,
            tuple(kernel.shape),
            lam=config.kernel_lambda,
            gamma=config.centroid_weight,
            support_factor=round_support_factor(config),
            prune_fraction=config.prune_fraction,
            edge_percentile=percentile,
        )
        if not torch.isfinite(k).all():
            break
        kernel = center_kernel(k.cpu().float()).numpy()
        preview = (kernel / kernel.sum()).astype(np.float32)
        if (yield Progress(stage="polish", step=done, total=len(weights), kernel=preview)):
            break
    return (kernel / kernel.sum()).astype(np.float32)


def polish_kernel(
    observation: np.ndarray, kernel: np.ndarray, config: SolverConfig, device: torch.device
) -> np.ndarray:
    """The polished kernel of :func:`polish_steps`, without progress."""
    return drain(polish_steps(observation, kernel, config, device))


def nonblind_steps(
    window: np.ndarray, frame: np.ndarray, kernel: np.ndarray, config: SolverConfig, device: torch.device
) -> Generator[Progress, Any, tuple[np.ndarray, np.ndarray]]:
    """What a run does after the blind stage: the polish of ``kernel`` on ``window`` (with
    ``final="nonblind"``), then the whole ``frame`` deconvolved with it by the sparse solver.

    A stage generator (:mod:`.steps`) that yields the records of :func:`polish_steps` and
    :func:`~.nonblind.deconvolve_steps`. ``window`` and ``frame`` are in normalised units
    (``window`` is the part of ``frame`` the blind fit saw, or all of it). Returns
    ``(kernel, deblurred frame)``, both float32. A stop request ends the stage it reaches; a
    stopped polish is still followed by the deconvolution, so the frame is always deblurred.
    """
    if config.final == "nonblind":
        kernel = yield from polish_steps(window, kernel, config, device)
    image = yield from deconvolve_steps(frame, kernel, method="sparse", device=device)
    return kernel, image
