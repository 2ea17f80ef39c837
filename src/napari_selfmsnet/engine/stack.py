"""Deblurring a stack in this process: :func:`deblur_stack_steps` and :func:`deblur_stack`.

The steps are those of :mod:`.stack_plan` (the Dask runner executes the same ones); here
they run one after the other, the planes of per-plane mode each warm-started from the one
before, and the progress of every plane's pipeline is handed on with ``plane`` and
``planes`` set. A stop (see :mod:`.steps`) reaches the running plane's pipeline, which
finishes from there as :mod:`.pipeline` describes, and then ends the stack: the planes not
started yet keep the input (as float32), and a shared kernel whose blind run was stopped is
applied nowhere. A plane that cannot be deblurred is passed through and named in the result's
warnings (:mod:`.stack_plan`); it never stops the stack.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import replace
from typing import Any

import numpy as np

from .config import resolve_config
from .inputs import check_kernel_size, check_seed
from .kernel_size import AUTO
from .pipeline import deblur_steps
from .records import DeblurResult, Progress, StackResult
from .stack_plan import (
    STACK_MODES,
    BlindRun,
    choose_reference_plane,
    deconvolve_plane_steps,
    no_usable_plane,
    plane_problem,
    plane_weight,
    read_plane,
    stack_geometry,
    stack_report,
    stack_without_alpha,
    warm_iteration_count,
)
from .steps import drain, relay

__all__ = ["deblur_stack", "deblur_stack_steps"]


def deblur_stack(
    stack: Any,
    kernel_size: int | tuple[int, int] | str = AUTO,
    *,
    mode: str = "shared",
    reference_plane: int | None = None,
    callback: Callable[[Progress], Any] | None = None,
    nonblind_method: str = "sparse",
    out: Any = None,
    warm_planes: bool = True,
    warm_iterations: int | None = None,
    progress_every: int | None = None,
    **deblur_kwargs: Any,
) -> StackResult:
    """Blind deblurring of every plane of a stack.

    Parameters
    ----------
    stack : array-like, shape (P, H, W) or (P, H, W, 3)
        Planes along axis 0; numpy, dask or zarr. Read one plane at a time, never modified.
        RGBA ``(P, H, W, 4)`` and grey-and-alpha ``(P, H, W, 2)`` planes lose their alpha
        channel (with a warning). A plane that cannot be deblurred (blank, NaN or infinite
        values) is passed through unchanged and named in ``result.warnings``.
    kernel_size : "auto", int or (int, int)
        As for :func:`napari_selfmsnet.deblur`. ``"auto"`` (the default) measures the size
        once: on the reference plane in shared mode, on the first plane that can be deblurred
        in per-plane mode (every other plane then uses that size).
    mode : {"shared", "per-plane"}
        ``"shared"``: estimate one kernel on ``reference_plane`` with
        :func:`napari_selfmsnet.deblur`, then deblur every plane (the reference too, so the
        stack is consistent) with it by non-blind deconvolution. ``"per-plane"``: a blind run
        on every plane, each with its own kernel (the same seed for every plane), each plane
        after the first warm-started from the one before (see ``warm_planes``).
    reference_plane : int, optional
        Shared mode: the plane to estimate the kernel on; by default
        :func:`~napari_selfmsnet.engine.stack_plan.select_reference_plane` picks it, which it
        also does (with a warning) when the plane asked for cannot be deblurred.
    callback : callable, optional
        Receives the :class:`~napari_selfmsnet.Progress` records of each plane's pipeline
        with ``plane`` and ``planes`` set and, in shared mode, one ``"planes"`` record per
        plane deconvolved with the shared kernel (``step`` = planes done, ``loss`` = the
        reference run's final loss). Returning True stops the running stage and then the
        whole stack (see :mod:`napari_selfmsnet.engine.stack`).
    nonblind_method : str
        Shared mode: the method of the planes' deconvolution.
    out : array-like, optional
        Where to write the planes (for example a TIFF memory map or a Zarr array of the
        result's shape, float32); by default a new array. ``result.image`` is ``out`` then.
    warm_planes : bool
        Per-plane mode: start each plane's run from the previous plane's network and kernel
        (same region) with ``warm_iterations`` iterations, instead of from scratch with the
        full count. Neighbouring planes of a stack differ little, so this is several times
        faster for the same quality (measured in ``docs/benchmarks.md``).
    warm_iterations : int, optional
        Iterations of a warm-started plane; by default ``WARM_FRACTION`` of the first plane's.
    progress_every : int, optional
        Blind-stage iterations between progress records (by default 1 on the CPU, 10 elsewhere).
    **deblur_kwargs
        ``method``, ``iterations``, ``preset``, ``device``, ``seed``, ``region``: passed to
        :func:`napari_selfmsnet.deblur`.

    Returns
    -------
    StackResult
        Planes that were never started when a stop came are the input as float32 and listed
        in ``params["unfinished_planes"]``; the plane whose blind run was stopped keeps that
        run's best estimate and is ``params["interrupted_plane"]``. Planes passed through are
        ``params["passed_through_planes"]``; ``warnings`` says why, and holds every plane
        run's own warnings, each prefixed with its plane.

    Raises
    ------
    ValueError
        Before any work, for bad arguments, and when no plane of the stack can be deblurred.
    """
    steps = deblur_stack_steps(
        stack, kernel_size, mode=mode, reference_plane=reference_plane, nonblind_method=nonblind_method, out=out,
        warm_planes=warm_planes, warm_iterations=warm_iterations, progress_every=progress_every, **deblur_kwargs,
    )  # fmt: skip
    return drain(steps, callback)


def deblur_stack_steps(
    stack: Any,
    kernel_size: int | tuple[int, int] | str = AUTO,
    *,
    mode: str = "shared",
    reference_plane: int | None = None,
    nonblind_method: str = "sparse",
    out: Any = None,
    warm_planes: bool = True,
    warm_iterations: int | None = None,
    progress_every: int | None = None,
    **deblur_kwargs: Any,
) -> Generator[Progress, Any, StackResult]:
    """:func:`deblur_stack` as a generator: yields its records, returns the :class:`StackResult`.

    The arguments (those of :func:`deblur_stack` without ``callback``) are checked at once.
    """
    if mode not in STACK_MODES:
        raise ValueError(f"mode must be one of {STACK_MODES}, got {mode!r}")
    if "callback" in deblur_kwargs or "image" in deblur_kwargs:
        raise TypeError("pass callback to deblur_stack itself; image is the stack")
    if "warm_start" in deblur_kwargs:
        raise TypeError("deblur_stack warm-starts the planes of per-plane mode with warm_planes=True/False")
    stack, alpha = stack_without_alpha(stack)
    planes, plane_shape = stack_geometry(stack)
    dtype = getattr(stack, "dtype", None)
    if dtype is not None and np.dtype(dtype).kind not in "iuf":
        raise TypeError(
            f"stack dtype {np.dtype(dtype)} is not supported; pass integer (uint8 to int64) or floating-point "
            "(float16 to float64) intensities"
        )
    config = resolve_config(
        deblur_kwargs.get("preset", "fast"), deblur_kwargs.get("method"), deblur_kwargs.get("iterations")
    )
    if isinstance(kernel_size, str) and kernel_size == AUTO:
        kshape = None  # measured by the first run
    else:
        kshape = check_kernel_size(kernel_size, plane_shape[:2], config.scales)
    check_seed(deblur_kwargs.get("seed", 0))
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
    kwargs = {**deblur_kwargs, "progress_every": progress_every}
    notes = [alpha] if alpha else []
    if mode == "shared":
        return _shared(stack, planes, kshape, reference_plane, nonblind_method, out, kwargs, notes)
    return _per_plane(stack, planes, kshape, out, bool(warm_planes), warm_iterations, kwargs, notes)


def _on_plane(plane: int, planes: int) -> Callable[[Progress], Progress]:
    def tag(record: Progress) -> Progress:
        return replace(record, plane=plane, planes=planes)

    return tag


def _within_plane(
    plane: int, planes: int, estimate: DeblurResult, kernel: np.ndarray, start: float
) -> Callable[[Progress], Progress]:
    """A solver record within a shared-mode plane, as a ``"planes"`` record at the planes done."""

    def convert(record: Progress) -> Progress:
        return Progress(
            stage="planes", step=plane, total=planes, loss=estimate.final_loss, kernel=kernel,
            elapsed_s=time.perf_counter() - start, plane=plane, planes=planes,
        )  # fmt: skip

    return convert


def _keep_input(stack: Any, out: Any, indices: list[int]) -> None:
    for i in indices:
        out[i] = read_plane(stack, i).astype(np.float32)


def _shared(
    stack, planes, kshape, reference_plane, nonblind_method, out, kwargs, notes
) -> Generator[Progress, Any, StackResult]:
    start = time.perf_counter()
    # Checked before the blind run: once it has run, no plane may stop the stack.
    reference_plane, reference, note = choose_reference_plane(stack, reference_plane)
    notes += [note] if note else []
    steps = deblur_steps(reference, AUTO if kshape is None else kshape, **kwargs)
    estimate, _ = yield from relay(steps, _on_plane(reference_plane, planes))
    kernel = np.asarray(estimate.kernel, dtype=np.float32)
    unfinished: list[int] = []
    passed_through: dict[int, str] = {}
    interrupted = None
    if estimate.cancelled:
        # The kernel is not final: apply it nowhere, keep the reference run's best image.
        interrupted = reference_plane
        out[reference_plane] = estimate.image
        unfinished = [i for i in range(planes) if i != reference_plane]
    else:
        for i in range(planes):
            plane = read_plane(stack, i)
            problem = plane_problem(plane)
            if problem is None:
                # The plane's solve reports within it (as "planes" records at the planes done so
                # far), so a stop is seen within a plane however large; a plane stopped midway
                # keeps its input, like the planes after it.
                solve = deconvolve_plane_steps(
                    plane, kernel, device=kwargs.get("device", "auto"), method=nonblind_method,
                    weight=plane_weight(plane, estimate.params, nonblind_method),
                )  # fmt: skip
                deblurred, halted = yield from relay(solve, _within_plane(i, planes, estimate, kernel, start))
                if halted:
                    unfinished = list(range(i, planes))
                    break
            else:
                passed_through[i] = problem
                deblurred = plane.astype(np.float32)
            out[i] = deblurred
            record = Progress(
                stage="planes", step=i + 1, total=planes, loss=estimate.final_loss, image=deblurred, kernel=kernel,
                elapsed_s=time.perf_counter() - start, plane=i, planes=planes,
            )  # fmt: skip
            if (yield record):
                unfinished = list(range(i + 1, planes))
                break
    _keep_input(stack, out, unfinished)
    report = stack_report(
        "shared", planes, kernel.shape, [BlindRun.of(reference_plane, estimate)],
        device=str(kwargs.get("device", "auto")), reference_plane=reference_plane, nonblind_method=nonblind_method,
        unfinished=unfinished, interrupted=interrupted, passed_through=passed_through, notes=notes,
    )  # fmt: skip
    return _result(out, report, [estimate], start, interrupted, unfinished, kernel=kernel)


def _per_plane(
    stack, planes, kshape, out, warm_planes, warm_iterations, kwargs, notes
) -> Generator[Progress, Any, StackResult]:
    start = time.perf_counter()
    results: list[tuple[int, DeblurResult]] = []
    unfinished: list[int] = []
    passed_through: dict[int, str] = {}
    interrupted = None
    previous = first = None
    for i in range(planes):
        plane = read_plane(stack, i)
        problem = plane_problem(plane)
        if problem is not None:
            passed_through[i] = problem
            out[i] = plane.astype(np.float32)
            continue
        # "auto": the first plane run measures the size, and every other plane uses it.
        size = kshape if kshape is not None else (tuple(first.kernel.shape) if first else AUTO)
        warm = warm_planes and previous is not None and previous.warm_start is not None
        if warm:
            iterations = warm_iteration_count(first.params["config"]["iterations"], warm_iterations)
            steps = deblur_steps(plane, size, warm_start=previous, **{**kwargs, "iterations": iterations})
        else:
            steps = deblur_steps(plane, size, **kwargs)
        result, _ = yield from relay(steps, _on_plane(i, planes))
        if first is None:
            first = result
        previous = result
        out[i] = result.image
        results.append((i, result))
        if result.cancelled:
            interrupted = i
            unfinished = list(range(i + 1, planes))
            break
    if not results:
        raise ValueError(no_usable_plane(passed_through))
    _keep_input(stack, out, unfinished)
    runs = [BlindRun.of(i, result) for i, result in results]
    report = stack_report(
        "per-plane", planes, tuple(first.kernel.shape), runs, device=str(kwargs.get("device", "auto")),
        warm_planes=warm_planes, unfinished=unfinished, interrupted=interrupted, passed_through=passed_through,
        notes=notes,
    )  # fmt: skip
    return _result(out, report, [result for _, result in results], start, interrupted, unfinished)


def _result(out, report, results, start, interrupted, unfinished, kernel=None) -> StackResult:
    return StackResult(
        image=out,
        kernels=report.kernels,
        params=report.params,
        device=report.device,
        elapsed_s=time.perf_counter() - start,
        cancelled=interrupted is not None or bool(unfinished),
        final_loss=report.final_loss,
        kernel=kernel,
        histories=[np.asarray(result.history) for result in results],
        warnings=report.warnings,
    )
