"""What a run reports: progress records while it runs, one result when it ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the records themselves need no torch
    from .optimizer import WarmStart

__all__ = ["Progress", "DeblurResult", "StackResult"]


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


@dataclass
class StackResult:
    """The outcome of :func:`deblur_stack`.

    Attributes
    ----------
    image : ndarray of float32, shape (P, H, W) or (P, H, W, 3)
        The deblurred planes, in the input's intensity units.
    kernels : ndarray of float32, shape (P, kh, kw)
        The kernel of every plane (true-convolution orientation, each sums to 1). Shared mode:
        the one kernel repeated. Per-plane mode: a plane that was never started holds a delta
        kernel, which is what its output (the input unchanged) corresponds to.
    params : dict
        ``mode``, ``planes``, ``kernel_size``, ``reference_plane`` (shared mode),
        ``plane_params`` (per plane in per-plane mode; the reference run's in shared mode),
        ``nonblind_method`` (shared mode), ``unfinished_planes`` and ``interrupted_plane``.
    device : str
        Where it ran.
    elapsed_s : float
        Wall time in seconds.
    cancelled : bool
        True when a callback asked the run to stop.
    final_loss : float
        Shared mode: the reference run's final loss; per-plane mode: the mean over the planes
        that ran (NaN when none did).
    kernel : ndarray of float32, shape (kh, kw), or None
        The shared kernel (shared mode only).
    histories : list of ndarray
        The loss history of every blind run (one in shared mode, one per plane run).
    """

    image: np.ndarray
    kernels: np.ndarray
    params: dict[str, Any]
    device: str
    elapsed_s: float
    cancelled: bool = False
    final_loss: float = float("nan")
    kernel: np.ndarray | None = None
    histories: list[np.ndarray] = field(default_factory=list)
