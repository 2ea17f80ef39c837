"""The plan of a stack run: its modes and the steps both runners execute.

A stack (z-stack, time series) is deblurred in one of two modes (:data:`STACK_MODES`):

``"shared"``     a blind run (:func:`napari_selfmsnet.deblur`) on the reference plane
                 (:func:`select_reference_plane`) estimates one kernel; every plane, the
                 reference too, is then deconvolved with it (:func:`deconvolve_plane`).
``"per-plane"``  a blind run on every plane, each with its own kernel.

The command line and the widget also offer ``"current"`` (:data:`STACK_CHOICES`): one plane
only, a plain blind run on it. The local runner (:func:`napari_selfmsnet.deblur_stack`) and
the Dask tasks of :mod:`napari_selfmsnet.batch` execute the same steps, so the two paths
cannot drift apart, and both describe the run with :func:`stack_report`. Planes are read one
at a time (:func:`read_plane`), so NumPy, Dask and Zarr arrays and TIFF memory maps all work
and a stack larger than memory is never loaded whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .kernel_step import delta_kernel
from .nonblind import deconvolve
from .records import DeblurResult
from .regions import edge_energy_map

__all__ = [
    "STACK_CHOICES",
    "STACK_MODES",
    "WARM_FRACTION",
    "BlindRun",
    "StackReport",
    "deconvolve_plane",
    "read_plane",
    "select_reference_plane",
    "stack_geometry",
    "stack_report",
    "warm_iteration_count",
]

#: The modes of :func:`napari_selfmsnet.deblur_stack`.
STACK_MODES: tuple[str, ...] = ("shared", "per-plane")
#: What the command line and the widget offer for a stack: ``"current"`` deblurs one plane
#: (the one asked for, else the reference plane) by a plain blind run, or a stack mode.
STACK_CHOICES: tuple[str, ...] = ("current", *STACK_MODES)

#: Share of a cold run's iterations that a warm-started plane runs by default: on a drifting
#: phantom stack (benchmarks/warm_start.py) half keeps the cold runs' quality at half their
#: generator work, while a quarter loses it (docs/benchmarks.md).
WARM_FRACTION = 0.5


def stack_geometry(stack: Any) -> tuple[int, tuple[int, ...]]:
    """Number of planes and the plane shape, from ``stack.shape`` (never reading data)."""
    shape = getattr(stack, "shape", None)
    if shape is None:
        raise TypeError(
            f"stack must be an array-like with a .shape (numpy, dask or zarr array), got {type(stack).__name__}"
        )
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] != 3):
        raise ValueError(f"stack must have shape (P, H, W) or (P, H, W, 3) (planes along axis 0), got shape {shape}")
    if shape[0] < 1:
        raise ValueError(f"stack has no planes (shape {shape})")
    return shape[0], shape[1:]


def read_plane(stack: Any, index: int) -> np.ndarray:
    """Plane ``index`` of ``stack`` as a NumPy array (dask and zarr read just this slice)."""
    return np.asarray(stack[index])


def select_reference_plane(stack: Any) -> int:
    """The plane whose strongest edges carry the most energy: the best one to estimate a kernel on.

    Parameters
    ----------
    stack : array-like, shape (P, H, W) or (P, H, W, 3)
        Read one plane at a time.

    Returns
    -------
    int
        Index of the chosen plane (the first one on ties).

    Notes
    -----
    The kernel estimate needs strong, well-separated edges; a plane that is blank or far out of
    focus has little gradient energy. The score is the sum of
    :func:`~napari_selfmsnet.engine.regions.edge_energy_map`: the squared gradient magnitudes at
    or above the 90th percentile of a plane smoothed with a Gaussian of sigma 1 pixel; it is
    not normalised by brightness, so a bright in-focus plane wins over a dim one.
    """
    planes, _ = stack_geometry(stack)
    scores = [float(edge_energy_map(read_plane(stack, i)).sum()) for i in range(planes)]
    return int(np.argmax(scores))


def deconvolve_plane(
    plane: np.ndarray, kernel: np.ndarray, *, device: str = "auto", method: str = "sparse"
) -> np.ndarray:
    """Deblur one plane with a known kernel (non-blind deconvolution): the shared mode's step.

    Parameters
    ----------
    plane : ndarray, shape (H, W) or (H, W, 3)
        Any real dtype; not modified.
    kernel : ndarray, shape (kh, kw)
        True-convolution orientation, centre at ``(kh // 2, kw // 2)`` (as
        :func:`napari_selfmsnet.deblur` returns it).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda:N"`` or ``"mps"``.
    method : str
        Passed to :func:`napari_selfmsnet.engine.nonblind.deconvolve`.

    Returns
    -------
    ndarray of float32, the shape of ``plane``, in its intensity units.
    """
    plane = np.asarray(plane)
    kernel = np.asarray(kernel)
    if plane.ndim not in (2, 3) or (plane.ndim == 3 and plane.shape[-1] != 3):
        raise ValueError(f"plane must have shape (H, W) or (H, W, 3), got {plane.shape}")
    if kernel.ndim != 2:
        raise ValueError(f"kernel must be 2-D (kh, kw), got shape {kernel.shape}")
    out = deconvolve(plane, kernel, method=method, device=device)
    return np.asarray(out, dtype=np.float32)


def warm_iteration_count(cold_iterations: int, warm_iterations: int | None = None) -> int:
    """Iterations of a warm-started plane: ``warm_iterations``, or by default
    ``WARM_FRACTION`` of a cold run's ``cold_iterations`` (at least 1)."""
    if warm_iterations is not None:
        return int(warm_iterations)
    return max(1, round(WARM_FRACTION * cold_iterations))


@dataclass(frozen=True)
class BlindRun:
    """What a stack keeps of one blind run: its plane, kernel, parameters, final loss and device.

    Made from a :class:`~.records.DeblurResult` by :meth:`of`, in this process or in a Dask
    task (which sends this, not the image, back to the client).
    """

    plane: int
    kernel: np.ndarray
    params: dict[str, Any]
    final_loss: float
    device: str

    @classmethod
    def of(cls, plane: int, result: DeblurResult) -> BlindRun:
        return cls(plane, np.asarray(result.kernel, dtype=np.float32), result.params, result.final_loss, result.device)


@dataclass(frozen=True)
class StackReport:
    """How a stack run went: :func:`stack_report`'s answer.

    ``params`` (the same keys in both modes): ``mode``, ``planes``, ``kernel_size``,
    ``reference_plane`` and ``nonblind_method`` (shared mode, else None), ``warm_planes``
    (per-plane mode, else None), ``plane_params`` (per plane in per-plane mode, None for a
    plane never run; the reference run's in shared mode), ``plane_final_losses`` (alike),
    ``unfinished_planes`` and ``interrupted_plane``. ``kernels`` ``(P, kh, kw)``: the shared
    kernel repeated, or each plane's (a delta kernel for a plane never run, which is what its
    output, the input unchanged, corresponds to). ``final_loss``: the reference run's, or the
    mean over the planes that ran (NaN when none did).
    """

    params: dict[str, Any]
    kernels: np.ndarray
    final_loss: float
    device: str


def stack_report(
    mode: str,
    planes: int,
    kernel_shape: tuple[int, int],
    runs: list[BlindRun],
    *,
    device: str,
    reference_plane: int | None = None,
    nonblind_method: str | None = None,
    warm_planes: bool | None = None,
    unfinished: Sequence[int] = (),
    interrupted: int | None = None,
) -> StackReport:
    """The one description of a stack run, from its blind runs (local or Dask alike).

    ``runs``: the reference plane's run in shared mode, every plane's that ran in per-plane
    mode. ``device``: reported when no run did (else the last run's).
    """
    if mode not in STACK_MODES:
        raise ValueError(f"mode must be one of {STACK_MODES}, got {mode!r}")
    if mode == "shared":
        (run,) = runs
        kernels = np.repeat(run.kernel[None], planes, axis=0)
        plane_params, losses = [run.params], [run.final_loss]
        final_loss = run.final_loss
    else:
        kernels = np.repeat(delta_kernel(tuple(kernel_shape)).numpy()[None], planes, axis=0)
        plane_params, losses = [None] * planes, [None] * planes
        for run in runs:
            kernels[run.plane] = run.kernel
            plane_params[run.plane], losses[run.plane] = run.params, run.final_loss
        finite = [run.final_loss for run in runs if math.isfinite(run.final_loss)]
        final_loss = float(np.mean(finite)) if finite else float("nan")
    params = {
        "mode": mode,
        "planes": planes,
        "kernel_size": list(kernel_shape),
        "reference_plane": reference_plane,
        "nonblind_method": nonblind_method,
        "warm_planes": warm_planes,
        "plane_params": plane_params,
        "plane_final_losses": losses,
        "unfinished_planes": list(unfinished),
        "interrupted_plane": interrupted,
    }
    return StackReport(params, kernels, final_loss, runs[-1].device if runs else device)
