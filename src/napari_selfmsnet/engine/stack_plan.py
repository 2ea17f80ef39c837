"""The plan of a stack run: its modes and the steps both runners execute.

A stack (z-stack, time series) is deblurred in one of two modes (:data:`STACK_MODES`):

``"shared"``     a blind run (:func:`napari_selfmsnet.deblur`) on the reference plane
                 (:func:`select_reference_plane`) estimates one kernel; every plane, the
                 reference too, is then deconvolved with it (:func:`deconvolve_plane`), at
                 the weight the blind run chose, moved to each plane's noise (:func:`plane_weight`).
``"per-plane"``  a blind run on every plane, each with its own kernel.

The command line and the widget also offer ``"current"`` (:data:`STACK_CHOICES`): one plane
only, a plain blind run on it. The local runner (:func:`napari_selfmsnet.deblur_stack`) and
the Dask tasks of :mod:`napari_selfmsnet.batch` execute the same steps, so the two paths
cannot drift apart, and both describe the run with :func:`stack_report`. Planes are read one
at a time (:func:`read_plane`), so NumPy, Dask and Zarr arrays and TIFF memory maps all work
and a stack larger than memory is never loaded whole.

A plane that cannot be deblurred (blank, or holding NaN or infinite values:
:func:`plane_problem`) never stops a stack: it is passed through unchanged and named in the
run's warnings, and the other planes finish. Shared mode estimates its kernel on a usable
plane (:func:`select_reference_plane` skips the others). With ``kernel_size="auto"``, shared
mode measures the size on the reference plane; per-plane mode on the first usable plane, and
every other plane uses that size, so the kernels of a stack stay alike in shape.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import SolverConfig
from .inputs import drop_alpha, image_array, image_problem
from .kernel_step import delta_kernel
from .noise import estimate_noise, relative_noise
from .nonblind import deconvolve_steps
from .records import DeblurResult, Progress
from .regions import edge_energy_map
from .steps import drain

__all__ = [
    "STACK_CHOICES",
    "STACK_MODES",
    "WARM_FRACTION",
    "BlindRun",
    "StackReport",
    "bad_plane_warning",
    "choose_reference_plane",
    "deconvolve_plane",
    "deconvolve_plane_steps",
    "no_usable_plane",
    "plane_problem",
    "plane_weight",
    "read_plane",
    "select_reference_plane",
    "stack_geometry",
    "stack_report",
    "stack_without_alpha",
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


class _WithoutAlpha:
    """A stack of RGBA or grey-and-alpha planes seen without their alpha channel."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        shape = tuple(int(s) for s in stack.shape)
        self.shape = (*shape[:-1], 3) if shape[-1] == 4 else shape[:-1]
        self.dtype = getattr(stack, "dtype", None)

    def __getitem__(self, index: int) -> np.ndarray:
        return drop_alpha(np.asarray(self.stack[index]))[0]


def stack_without_alpha(stack: Any) -> tuple[Any, str | None]:
    """A ``(P, H, W, 4)`` RGBA or ``(P, H, W, 2)`` grey-and-alpha stack seen without its alpha
    channel (planes are read and cut one at a time), with the warning that says so; any
    other stack as it is, with None."""
    shape = getattr(stack, "shape", None)
    if shape is None or len(shape) != 4 or shape[-1] not in (2, 4):
        return stack, None
    what = "RGBA" if shape[-1] == 4 else "grey and alpha"
    return _WithoutAlpha(stack), f"the stack's planes are {what}: their alpha channel was left out"


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


def plane_problem(plane: np.ndarray) -> str | None:
    """Why ``plane`` cannot be deblurred (blank, NaN or infinite values, values a float32
    result cannot hold: :func:`~.inputs.image_problem`), or None when it can.

    A dtype or shape no plane of the stack could have raises instead (TypeError, ValueError).
    """
    return image_problem(image_array(plane))


def bad_plane_warning(index: int, problem: str) -> str:
    """The warning that names a plane passed through unchanged."""
    return f"plane {index}: {problem}; the plane was passed through unchanged"


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

    Raises
    ------
    ValueError
        When no plane can be deblurred (:func:`plane_problem`); the message names each one's
        problem.

    Notes
    -----
    The kernel estimate needs strong, well-separated edges; a plane that is blank or far out of
    focus has little gradient energy. The score is the sum of
    :func:`~napari_selfmsnet.engine.regions.edge_energy_map`: the squared gradient magnitudes at
    or above the 90th percentile of a plane smoothed with a Gaussian of sigma 1 pixel; it is
    not normalised by brightness, so a bright in-focus plane wins over a dim one. Planes that
    cannot be deblurred (:func:`plane_problem`) are never chosen.
    """
    planes, _ = stack_geometry(stack)
    scores, problems = [], {}
    for i in range(planes):
        plane = read_plane(stack, i)
        problem = plane_problem(plane)
        if problem is None:
            scores.append(float(edge_energy_map(plane).sum()))
        else:
            problems[i] = problem
            scores.append(-np.inf)
    if len(problems) == planes:
        raise ValueError(no_usable_plane(problems))
    return int(np.argmax(scores))


def choose_reference_plane(stack: Any, asked: int | None = None) -> tuple[int, np.ndarray, str | None]:
    """Shared mode's reference plane, its pixels, and a warning when it is not the one asked.

    The plane ``asked`` for when it can be deblurred (:func:`plane_problem`), else the one
    :func:`select_reference_plane` picks; checked before the blind run, so that no plane
    can stop the stack after it.
    """
    if asked is not None:
        plane = read_plane(stack, asked)
        problem = plane_problem(plane)
        if problem is None:
            return asked, plane, None
        chosen = select_reference_plane(stack)
        note = (
            f"plane {asked}, the reference plane asked for, cannot be deblurred ({problem}); "
            f"the kernel was estimated on plane {chosen}, the one with the strongest edges"
        )
        return chosen, read_plane(stack, chosen), note
    chosen = select_reference_plane(stack)
    return chosen, read_plane(stack, chosen), None


def no_usable_plane(problems: dict[int, str]) -> str:
    """The message of a stack none of whose planes can be deblurred."""
    listed = "; ".join(f"plane {i}: {why}" for i, why in list(problems.items())[:3])
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return f"no plane of the stack can be deblurred: {listed}{more}"


def plane_weight(plane: np.ndarray, params: Mapping[str, Any], method: str = "sparse") -> float | None:
    """The sparse prior's weight for ``plane`` deconvolved with the kernel of a blind run on
    another plane (shared mode), whose ``params`` say what weight it chose and at what noise.

    The run's final weight, moved along its noise law (:meth:`.SolverConfig.deconvolution_weight_for`)
    from the run's relative noise to this plane's own (measured here): planes of unequal
    exposure, or of a bleaching series, each get the weight their noise calls for, and the
    run's own raises (the discrepancy floor, a cautious prior) carry over. None (the solver's
    default) for other methods, or ``params`` without the figures.
    """
    noise, weight = params.get("noise") or {}, params.get("deconvolution_weight")
    if method != "sparse" or weight is None or "relative" not in noise:
        return None
    config = SolverConfig(**params["config"])
    factor = config.final_noise_factor_for(bool(params.get("smooth_psf")))
    sigma = estimate_noise(plane, quantised=np.issubdtype(np.asarray(plane).dtype, np.integer)).sigma
    own = relative_noise(sigma, np.asarray(plane, dtype=np.float64))
    moved = config.deconvolution_weight_for(own, factor) / config.deconvolution_weight_for(noise["relative"], factor)
    return float(weight * moved)


def deconvolve_plane(
    plane: np.ndarray,
    kernel: np.ndarray,
    *,
    device: str = "auto",
    method: str = "sparse",
    weight: float | None = None,
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
    method, weight : str, float or None
        Passed to :func:`napari_selfmsnet.engine.nonblind.deconvolve` (the weight of the blind
        run that found the kernel: :func:`plane_weight`).

    Returns
    -------
    ndarray of float32, the shape of ``plane``, in its intensity units.
    """
    return drain(deconvolve_plane_steps(plane, kernel, device=device, method=method, weight=weight))


def deconvolve_plane_steps(
    plane: np.ndarray,
    kernel: np.ndarray,
    *,
    device: str = "auto",
    method: str = "sparse",
    weight: float | None = None,
) -> Generator[Progress, Any, np.ndarray]:
    """:func:`deconvolve_plane` as a stage generator (:mod:`.steps`): the solver's
    ``"deconvolve"`` records, so that a stop is seen within a plane; a true value sent at one
    stops the solver (the plane's partial iterate is returned)."""
    plane = np.asarray(plane)
    kernel = np.asarray(kernel)
    if plane.ndim not in (2, 3) or (plane.ndim == 3 and plane.shape[-1] != 3):
        raise ValueError(f"plane must have shape (H, W) or (H, W, 3), got {plane.shape}")
    if kernel.ndim != 2:
        raise ValueError(f"kernel must be 2-D (kh, kw), got shape {kernel.shape}")
    out = yield from deconvolve_steps(plane, kernel, method=method, weight=weight, device=device)
    return np.asarray(out, dtype=np.float32)


def warm_iteration_count(cold_iterations: int, warm_iterations: int | None = None) -> int:
    """Iterations of a warm-started plane: ``warm_iterations``, or by default
    ``WARM_FRACTION`` of a cold run's ``cold_iterations`` (at least 1)."""
    if warm_iterations is not None:
        return int(warm_iterations)
    return max(1, round(WARM_FRACTION * cold_iterations))


@dataclass(frozen=True)
class BlindRun:
    """What a stack keeps of one blind run: its plane, kernel, parameters, final loss, device
    and the run's warnings.

    Made from a :class:`~.records.DeblurResult` by :meth:`of`, in this process or in a Dask
    task (which sends this, not the image, back to the client).
    """

    plane: int
    kernel: np.ndarray
    params: dict[str, Any]
    final_loss: float
    device: str
    warnings: tuple[str, ...] = ()

    @classmethod
    def of(cls, plane: int, result: DeblurResult) -> BlindRun:
        return cls(
            plane, np.asarray(result.kernel, dtype=np.float32), result.params, result.final_loss, result.device,
            tuple(result.warnings),
        )  # fmt: skip


@dataclass(frozen=True)
class StackReport:
    """How a stack run went: :func:`stack_report`'s answer.

    ``params`` (the same keys in both modes): ``mode``, ``planes``, ``kernel_size``,
    ``reference_plane`` and ``nonblind_method`` (shared mode, else None), ``warm_planes``
    (per-plane mode, else None), ``plane_params`` (per plane in per-plane mode, None for a
    plane never run; the reference run's in shared mode), ``plane_final_losses`` (alike),
    ``unfinished_planes``, ``interrupted_plane`` and ``passed_through_planes`` (planes that
    could not be deblurred and are the input unchanged). ``kernels`` ``(P, kh, kw)``: the
    shared kernel repeated, or each plane's (a delta kernel for a plane never run or passed
    through, which is what its output, the input unchanged, corresponds to). ``final_loss``: the reference
    run's, or the mean over the planes that ran (NaN when none did). ``warnings``: the
    stack's own (``notes``), then per plane in order, each prefixed with its plane: why it
    was passed through, or its run's warnings.
    """

    params: dict[str, Any]
    kernels: np.ndarray
    final_loss: float
    device: str
    warnings: list[str]


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
    passed_through: Mapping[int, str] | None = None,
    notes: Sequence[str] = (),
) -> StackReport:
    """The one description of a stack run, from its blind runs (local or Dask alike).

    ``runs``: the reference plane's run in shared mode, every plane's that ran in per-plane
    mode. ``device``: reported when no run did (else the last run's). ``kernel_shape``: the
    size the planes were run with (the measured one for ``kernel_size="auto"``).
    ``passed_through``: the planes passed through unchanged, with why; ``notes``: warnings
    about the whole stack (an alpha channel left out, another reference plane chosen).
    """
    passed_through = dict(sorted((passed_through or {}).items()))
    if mode not in STACK_MODES:
        raise ValueError(f"mode must be one of {STACK_MODES}, got {mode!r}")
    if mode == "shared":
        (run,) = runs
        kernels = np.repeat(run.kernel[None], planes, axis=0)
        for i in passed_through:  # their output is the input: no kernel was applied
            kernels[i] = delta_kernel(tuple(run.kernel.shape)).numpy()
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
        "passed_through_planes": list(passed_through),
    }
    warnings = list(notes)
    by_plane = {i: [bad_plane_warning(i, why)] for i, why in passed_through.items()}
    for run in runs:
        by_plane.setdefault(run.plane, []).extend(f"plane {run.plane}: {w}" for w in run.warnings)
    warnings += [w for i in sorted(by_plane) for w in by_plane[i]]
    return StackReport(params, kernels, final_loss, runs[-1].device if runs else device, warnings)
