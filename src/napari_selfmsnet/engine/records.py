"""What a run reports: progress records while it runs, one result when it ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the records themselves need no torch
    from .optimizer import WarmStart

__all__ = ["STAGES", "Progress", "DeblurResult", "StackResult"]


#: The stages a run reports, in the order they run: the measure of the kernel's size
#: (``kernel_size="auto"``), the blind optimizer, the polish of the
#: kernel (``final="nonblind"``), the deconvolution of the frame with it, and, for a stack
#: in shared mode, the planes deconvolved with the shared kernel.
STAGES = ("size", "blind", "polish", "deconvolve", "planes")


@dataclass(frozen=True)
class Progress:
    """One progress record of a run (see :mod:`.steps` for how records are handed out).

    Attributes
    ----------
    stage : {"size", "blind", "polish", "deconvolve", "planes"}
        What is running (:data:`STAGES`).
    step, total : int
        How far the stage is: ``step`` of ``total`` iterations (size, blind), rounds (polish),
        solver iterations over all tiles (deconvolve) or planes (planes).
    loss : float or None
        The blind stage's training loss (for ``"planes"``, the blind run's final loss).
    elapsed_s : float
        Seconds since the run started.
    image : ndarray or None
        Blind stage: a preview of the current estimate, in the input's intensity units,
        ``(H, W)`` or ``(H, W, 3)``; a deconvolved plane for ``"planes"``.
    kernel : ndarray or None
        The current kernel ``(kh, kw)``.
    plane, planes : int or None
        For stacks: the plane being processed (0-based) and how many there are.
    region : list of int or None
        ``[top, left, height, width]`` when the stage works on a region of the frame only
        (the blind stage and the polish of a region run; ``image`` then covers that region);
        None for the whole frame.
    """

    stage: str
    step: int
    total: int
    loss: float | None = None
    elapsed_s: float = 0.0
    image: np.ndarray | None = None
    kernel: np.ndarray | None = None
    plane: int | None = None
    planes: int | None = None
    region: list[int] | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")


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
        True when the run was asked to stop (a callback returned True) before it ended; the
        image and kernel are then its estimate so far.
    warm_start : WarmStart or None
        The finished run's network, noise inputs and kernels, for ``deblur(...,
        warm_start=result)`` on a similar image (None for a cancelled run).
    warnings : list of str
        What the run's self-check found doubtful (empty when it trusts the result): each
        says what it measured and what to try. The measures are in ``params["self_check"]``,
        the noise the run measured in ``params["noise"]``, the final deconvolution's weight
        and misfit in ``params["deconvolution_weight"]`` and ``params["deconvolution_residual"]``,
        and whether the blur was taken for a smooth PSF (a Gaussian or defocus blur, found alike
        at two scales; it is then deconvolved at the weight a true kernel takes) in
        ``params["smooth_psf"]``.
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
    warnings: list[str] = field(default_factory=list)

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
        How the run went: ``mode``, ``planes``, ``kernel_size``, ``reference_plane``,
        ``nonblind_method``, ``warm_planes``, ``plane_params``, ``plane_final_losses``,
        ``unfinished_planes`` and ``interrupted_plane``
        (:class:`~napari_selfmsnet.engine.stack_plan.StackReport`).
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
    warnings : list of str
        What the run found doubtful or left out, each naming its plane: a plane passed
        through unchanged (blank, or holding NaN or infinite values), another reference plane
        chosen, and every plane run's own :attr:`DeblurResult.warnings`. Empty when all is
        well.
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
    warnings: list[str] = field(default_factory=list)
