"""What a run reports: progress records while it runs, one result when it ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the records themselves need no torch
    from .optimizer import WarmStart

__all__ = ["Progress", "DeblurResult"]


@dataclass
class Progress:
    """One progress record, handed to ``callback`` every few iterations.

    ``image`` and ``kernel`` are NumPy previews of the current estimate at full resolution
    (``image`` in the input's intensity units, ``(H, W)`` or ``(H, W, 3)``); set
    ``stop = True`` (or return ``True`` from the callback) to ask the run to end early, and
    ``deblur`` then returns the best estimate so far, marked ``cancelled``. When the kernel is
    estimated on a region of the frame, ``image`` covers that region only and ``region`` is
    its ``[top, left, height, width]`` (None when it is the whole frame).
    """

    iteration: int
    total: int
    loss: float
    image: np.ndarray | None = None
    kernel: np.ndarray | None = None
    elapsed_s: float = 0.0
    stop: bool = False
    #: For stacks: the plane being processed (0-based) and how many there are.
    plane: int | None = None
    planes: int | None = None
    region: list[int] | None = None


@dataclass
class DeblurResult:
    """The outcome of :func:`napari_selfmsnet.deblur`.

    Attributes
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, 3)
        The deblurred image, the same height and width as the input, in the input's units.
    kernel : ndarray of float32, shape (kh, kw)
        The estimated blur kernel (true-convolution orientation, centre at ``(kh//2, kw//2)``),
        non-negative, summing to 1.
    history : ndarray of float32, shape (iterations run,)
        Training loss per iteration.
    params : dict
        Everything needed to reproduce the run (method, kernel size, seed, the full solver
        configuration, torch version).
    device : str
        Where it ran, with the GPU's name for CUDA.
    elapsed_s : float
        Wall time of the run in seconds.
    cancelled : bool
        True when a callback asked the run to stop before its last iteration.
    warm_start : WarmStart or None
        The finished run's network, noise inputs and kernels, for ``deblur(...,
        warm_start=result)`` on a similar image (None for a cancelled run).
    """

    image: np.ndarray
    kernel: np.ndarray
    history: np.ndarray
    params: dict[str, Any]
    device: str
    elapsed_s: float
    cancelled: bool = False
    iterations_run: int = 0
    extras: dict[str, Any] = field(default_factory=dict)
    warm_start: WarmStart | None = field(default=None, repr=False)

    @property
    def final_loss(self) -> float:
        return float(self.history[-1]) if len(self.history) else float("nan")
