"""Deblurring a stack of planes (z-stack, time series): one shared kernel, or one per plane.

The stack is read one plane at a time (``np.asarray(stack[i])``), so NumPy arrays, Dask arrays,
Zarr arrays and TIFF memory maps all work and a stack larger than memory is never loaded whole.
The command line, the Dask tasks and the napari widget all go through these functions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal

import numpy as np

from .inputs import check_kernel_size
from .kernel_step import delta_kernel
from .nonblind import deconvolve
from .pipeline import deblur
from .records import Progress, StackResult
from .regions import edge_energy_map

__all__ = [
    "StackResult",
    "apply_kernel",
    "deblur_stack",
    "select_reference_plane",
    "warm_iteration_count",
]

StackMode = Literal["shared", "per-plane"]
STACK_MODES: tuple[str, ...] = ("shared", "per-plane")

#: Share of a cold run's iterations that a warm-started plane runs by default. Measured with
#: benchmarks/warm_start.py (drifting phantom stack, planes after the first, docs/benchmarks.md):
#: fast preset (120 iterations cold) 22.14 dB; warm 30 iterations 20.75 dB; warm 60 iterations
#: 22.31 dB. Half the iterations keep the cold runs' quality at half their generator work; a
#: quarter, enough when a cold run had 250 iterations, loses 1.4 dB after 120.
WARM_FRACTION = 0.5


def _stack_geometry(stack: Any) -> tuple[int, tuple[int, ...]]:
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


def _plane(stack: Any, index: int) -> np.ndarray:
    # One plane only: dask/zarr compute or read just this slice.
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
    planes, _ = _stack_geometry(stack)
    scores = [float(edge_energy_map(_plane(stack, i)).sum()) for i in range(planes)]
    return int(np.argmax(scores))


def apply_kernel(plane: np.ndarray, kernel: np.ndarray, *, device: str = "auto", method: str = "sparse") -> np.ndarray:
    """Deblur one plane with a known kernel (non-blind deconvolution).

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


class _PlaneCallback:
    """Tags each progress record with its plane and remembers a stop request."""

    def __init__(self, callback: Callable[[Progress], Any] | None, planes: int) -> None:
        self.callback = callback
        self.planes = planes
        self.plane = 0
        self.stop_requested = False

    def __call__(self, progress: Progress) -> bool:
        progress = replace(progress, plane=self.plane, planes=self.planes)
        stop = self.callback is not None and bool(self.callback(progress))
        self.stop_requested = self.stop_requested or stop
        return stop


def deblur_stack(
    stack: Any,
    kernel_size: int | tuple[int, int],
    *,
    mode: StackMode = "shared",
    reference_plane: int | None = None,
    callback: Callable[[Progress], Any] | None = None,
    nonblind_method: str = "sparse",
    out: Any = None,
    warm_start: bool = True,
    warm_iterations: int | None = None,
    **deblur_kwargs: Any,
) -> StackResult:
    """Blind deblurring of every plane of a stack.

    Parameters
    ----------
    stack : array-like, shape (P, H, W) or (P, H, W, 3)
        Planes along axis 0; numpy, dask or zarr. Read one plane at a time, never modified.
    kernel_size : int or (int, int)
        Odd kernel size, as for :func:`napari_selfmsnet.deblur`.
    mode : {"shared", "per-plane"}
        ``"shared"``: estimate one kernel on ``reference_plane`` with
        :func:`napari_selfmsnet.deblur`, then deblur every plane (the reference too, so the
        stack is consistent) with it by non-blind deconvolution. ``"per-plane"``: a blind run
        on every plane, each with its own kernel (the same seed for every plane), each plane
        after the first warm-started from the one before (see ``warm_start``).
    reference_plane : int, optional
        Shared mode: the plane to estimate the kernel on; by default
        :func:`select_reference_plane` picks it.
    callback : callable, optional
        Receives the :class:`~napari_selfmsnet.Progress` records of each blind run with
        ``plane`` and ``planes`` set. In shared mode it also receives one record per plane
        deconvolved with the shared kernel (``iteration`` = planes done, ``total`` = P,
        ``loss`` = the reference run's final loss). Returning True or setting
        ``progress.stop`` ends the whole stack.
    nonblind_method : str
        Shared mode: the method of :func:`apply_kernel`.
    out : array-like, optional
        Where to write the planes (for example a TIFF memory map or a Zarr array of the
        result's shape, float32); by default a new array. ``result.image`` is ``out`` then.
    warm_start : bool
        Per-plane mode: start each plane's run from the previous plane's network and kernel
        (same region) with ``warm_iterations`` iterations, instead of from scratch with the
        full count. Neighbouring planes of a stack differ little, so this is several times
        faster for the same quality (measured in ``docs/benchmarks.md``).
    warm_iterations : int, optional
        Iterations of a warm-started plane; by default ``WARM_FRACTION`` of the first plane's.
    **deblur_kwargs
        ``method``, ``iterations``, ``preset``, ``device``, ``seed``, ``config``: passed to
        :func:`napari_selfmsnet.deblur`.

    Returns
    -------
    StackResult
        Planes that were never started when a stop came are the input as float32 and listed
        in ``params["unfinished_planes"]``; the plane whose blind run was stopped keeps that
        run's best estimate and is ``params["interrupted_plane"]``.
    """
    if mode not in STACK_MODES:
        raise ValueError(f"mode must be one of {STACK_MODES}, got {mode!r}")
    if "callback" in deblur_kwargs or "image" in deblur_kwargs:
        raise TypeError("pass callback to deblur_stack itself; image is the stack")
    planes, plane_shape = _stack_geometry(stack)
    kshape = check_kernel_size(kernel_size, plane_shape[:2])
    if reference_plane is not None:
        if not isinstance(reference_plane, (int, np.integer)) or not 0 <= reference_plane < planes:
            raise ValueError(f"reference_plane must be an int in [0, {planes - 1}], got {reference_plane!r}")
        reference_plane = int(reference_plane)
    if warm_iterations is not None and (
        not isinstance(warm_iterations, (int, np.integer)) or isinstance(warm_iterations, bool) or warm_iterations < 1
    ):
        raise ValueError(f"warm_iterations must be a positive integer, got {warm_iterations!r}")
    if out is None:
        out = np.empty((planes, *plane_shape), dtype=np.float32)
    elif tuple(out.shape) != (planes, *plane_shape):
        raise ValueError(f"out must have shape {(planes, *plane_shape)}, got {tuple(out.shape)}")

    start = time.perf_counter()
    tagger = _PlaneCallback(callback, planes)
    if mode == "shared":
        result = _shared(stack, kshape, reference_plane, tagger, nonblind_method, out, deblur, deblur_kwargs)
    else:
        result = _per_plane(stack, kshape, tagger, out, deblur, deblur_kwargs, warm_start, warm_iterations)
    result.elapsed_s = time.perf_counter() - start
    return result


def _fill_unfinished(stack: Any, out: Any, indices: list[int]) -> None:
    for i in indices:
        out[i] = _plane(stack, i).astype(np.float32)


def _shared(stack, kshape, reference_plane, tagger, nonblind_method, out, deblur, kwargs) -> StackResult:
    planes = tagger.planes
    if reference_plane is None:
        reference_plane = select_reference_plane(stack)
    tagger.plane = reference_plane
    estimate = deblur(_plane(stack, reference_plane), kshape, callback=tagger, **kwargs)
    kernel = np.asarray(estimate.kernel, dtype=np.float32)
    device = kwargs.get("device", "auto")
    unfinished: list[int] = []
    interrupted = None
    if tagger.stop_requested or estimate.cancelled:
        # The kernel is not final: apply it nowhere, keep the reference run's best image.
        interrupted = reference_plane
        out[reference_plane] = estimate.image
        unfinished = [i for i in range(planes) if i != reference_plane]
    else:
        for i in range(planes):
            if tagger.stop_requested:
                unfinished = list(range(i, planes))
                break
            deblurred = apply_kernel(_plane(stack, i), kernel, device=device, method=nonblind_method)
            out[i] = deblurred
            tagger.plane = i
            tagger(Progress(stage="planes", step=i + 1, total=planes, loss=estimate.final_loss, image=deblurred, kernel=kernel))
    _fill_unfinished(stack, out, unfinished)
    params = {
        "mode": "shared",
        "planes": planes,
        "kernel_size": list(kshape),
        "reference_plane": reference_plane,
        "nonblind_method": nonblind_method,
        "plane_params": [estimate.params],
        "unfinished_planes": unfinished,
        "interrupted_plane": interrupted,
    }
    return StackResult(
        image=out,
        kernels=np.repeat(kernel[None], planes, axis=0),
        params=params,
        device=estimate.device,
        elapsed_s=0.0,
        cancelled=interrupted is not None or bool(unfinished),
        final_loss=estimate.final_loss,
        kernel=kernel,
        histories=[np.asarray(estimate.history)],
    )


def warm_iteration_count(cold_iterations: int, warm_iterations: int | None = None) -> int:
    """Iterations of a warm-started plane: ``warm_iterations``, or by default
    ``WARM_FRACTION`` of a cold run's ``cold_iterations`` (at least 1)."""
    if warm_iterations is not None:
        return int(warm_iterations)
    return max(1, round(WARM_FRACTION * cold_iterations))


def _per_plane(stack, kshape, tagger, out, deblur, kwargs, warm_start, warm_iterations) -> StackResult:
    planes = tagger.planes
    kernels = np.repeat(delta_kernel(kshape).numpy()[None], planes, axis=0)
    plane_params: list[dict | None] = [None] * planes
    histories, losses = [], []
    device = str(kwargs.get("device", "auto"))
    unfinished: list[int] = []
    interrupted = None
    previous = first = None
    for i in range(planes):
        if tagger.stop_requested:
            unfinished = list(range(i, planes))
            break
        tagger.plane = i
        if warm_start and previous is not None and previous.warm_start is not None:
            warm_kwargs = {**kwargs, "iterations": warm_iteration_count(first.params["config"]["iterations"], warm_iterations)}
            result = deblur(_plane(stack, i), kshape, callback=tagger, warm_start=previous, **warm_kwargs)
        else:
            result = deblur(_plane(stack, i), kshape, callback=tagger, **kwargs)
            first = result
        previous = result
        out[i] = result.image
        kernels[i] = result.kernel
        plane_params[i] = result.params
        histories.append(np.asarray(result.history))
        losses.append(result.final_loss)
        device = result.device
        if result.cancelled or tagger.stop_requested:
            interrupted = i
            tagger.stop_requested = True
    _fill_unfinished(stack, out, unfinished)
    finite = [x for x in losses if math.isfinite(x)]
    params = {
        "mode": "per-plane",
        "planes": planes,
        "warm_start": bool(warm_start),
        "kernel_size": list(kshape),
        "plane_params": plane_params,
        "unfinished_planes": unfinished,
        "interrupted_plane": interrupted,
    }
    return StackResult(
        image=out,
        kernels=kernels,
        params=params,
        device=device,
        elapsed_s=0.0,
        cancelled=interrupted is not None or bool(unfinished),
        final_loss=float(np.mean(finite)) if finite else float("nan"),
        histories=histories,
    )
