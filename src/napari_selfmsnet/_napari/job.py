"""One run of the widget: what it deblurs and how (checked when Run is pressed), the engine
generator it iterates, and the result shaped back like the layer.

No napari or Qt here either: the widget's worker iterates :meth:`DeblurJob.steps` (the
engine's :func:`~napari_selfmsnet.engine.pipeline.deblur_steps` or
:func:`~napari_selfmsnet.engine.stack.deblur_stack_steps`) in its thread and hands the
returned result to :meth:`DeblurJob.outcome`.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine.config import METHOD_SCALES, PRESETS
from ..engine.convolution import scale_geometry
from ..engine.devices import resolve_device
from ..engine.inputs import check_kernel_size
from ..engine.pipeline import deblur_steps
from ..engine.records import DeblurResult, Progress, StackResult
from ..engine.regions import check_region
from ..engine.stack import deblur_stack_steps
from ..engine.stack_plan import warm_iteration_count
from .layers import LayerSource, PlaneStack, describe_layer, shapes_region

__all__ = ["DeblurJob", "JobOutcome", "make_job", "progress_step"]

#: Blind-stage iterations between the engine's progress records on a GPU (the engine's own
#: default). Each record reads the loss back to the host, which waits for the device's queued
#: work, so a record every iteration would keep the GPU from running ahead; GPU iterations
#: are short enough that Cancel (honoured at the next record) still acts promptly.
_GPU_PROGRESS_EVERY = 10


@dataclass(frozen=True)
class DeblurJob:
    """Everything one run needs, checked and captured when Run is pressed.

    ``planes`` reads the layer lazily; in ``"current"`` and ``"single"`` mode it holds the one
    plane to deblur (``plane_index`` is its position on the leading axes in ``"current"`` mode).
    ``region`` is the engine's ``region`` argument (``"auto"``, ``"full"`` or
    ``(top, left, height, width)``; ``region_layer`` names the Shapes layer it came from);
    ``warm_planes`` applies to ``"per-plane"`` mode.
    """

    source: LayerSource
    planes: PlaneStack
    mode: str
    kernel_size: int
    method: str
    preset: str
    iterations: int | None
    device: str
    seed: int
    plane_index: tuple[int, ...] | None = None
    region: str | tuple[int, int, int, int] = "auto"
    region_layer: str | None = None
    warm_planes: bool = True

    @property
    def full_iterations(self) -> int:
        """Iterations of a blind run from scratch."""
        return self.iterations or PRESETS[self.preset].iterations

    @property
    def warm_iterations(self) -> int:
        """Iterations of a warm-started plane (``deblur_stack``'s default for ``warm_iterations``)."""
        return warm_iteration_count(self.full_iterations)

    def plane_offset(self, plane: int) -> int:
        """Per-plane mode: the progress-bar steps of the planes before ``plane``."""
        if not self.warm_planes or plane == 0:
            return plane * self.full_iterations
        return self.full_iterations + (plane - 1) * self.warm_iterations

    @property
    def total_steps(self) -> int:
        """Length of the progress bar: iterations, plus one step per plane deconvolved."""
        iterations = self.full_iterations
        if self.mode == "shared":
            return iterations + len(self.planes)
        if self.mode == "per-plane":
            return self.plane_offset(len(self.planes))
        return iterations

    @property
    def progress_every(self) -> int:
        """Blind-stage iterations between the engine's progress records."""
        # On the CPU every iteration makes a record, so Cancel is honoured within one
        # iteration even with the slow "quality" preset (the forwarding to the GUI is
        # throttled instead); on a GPU that would synchronise the device every iteration.
        return 1 if resolve_device(self.device).type == "cpu" else _GPU_PROGRESS_EVERY

    def engine_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the engine's pipeline this job sets."""
        return {
            "method": self.method,
            "iterations": self.iterations,
            "preset": self.preset,
            "progress_every": self.progress_every,
            "device": self.device,
            "seed": self.seed,
            "region": self.region,
        }

    def steps(self) -> Generator[Progress, Any, DeblurResult | StackResult]:
        """The engine's generator for this job (checks its inputs at once)."""
        if self.mode in ("current", "single"):
            return deblur_steps(self.planes[0], self.kernel_size, **self.engine_kwargs())
        warm = {"warm_planes": self.warm_planes} if self.mode == "per-plane" else {}
        return deblur_stack_steps(self.planes, self.kernel_size, mode=self.mode, **warm, **self.engine_kwargs())

    def outcome(self, result: DeblurResult | StackResult) -> JobOutcome:
        """The engine's result shaped like the layer, with the layers' metadata."""
        source = self.source
        if isinstance(result, DeblurResult):
            image, kernel = result.image, result.kernel
            extra: dict[str, Any] = {"iterations_run": int(result.iterations_run)}
            if self.plane_index is not None:
                extra["plane"] = list(self.plane_index)
        else:
            plane_shape = tuple(result.image.shape[1:])
            image = np.asarray(result.image).reshape(source.leading_shape + plane_shape)
            if self.mode == "shared":
                kernel = result.kernel
            else:
                kernel = result.kernels.reshape(source.leading_shape + tuple(result.kernels.shape[1:]))
            extra = {"warm_planes": self.warm_planes} if self.mode == "per-plane" else {}
        metadata = {
            "source_layer": source.name,
            "mode": self.mode,
            "method": self.method,
            "preset": self.preset,
            "iterations": self.full_iterations,
            "kernel_size": self.kernel_size,
            # As asked for; the rectangle each blind run used is params["region"] (per plane:
            # params["plane_params"][i]["region"]), which "auto" resolves.
            "region": list(self.region) if isinstance(self.region, tuple) else self.region,
            "region_layer": self.region_layer,
            "seed": self.seed,
            "device_requested": self.device,
            "device": result.device,
            "elapsed_s": float(result.elapsed_s),
            "final_loss": float(result.final_loss),
            "cancelled": bool(result.cancelled),
            "data_level": 0 if source.multiscale else None,
            **extra,
            "params": result.params,
        }
        return JobOutcome(
            image=np.asarray(image, dtype=np.float32),
            kernel=np.asarray(kernel, dtype=np.float32),
            metadata=metadata,
            cancelled=bool(result.cancelled),
        )


def make_job(
    layer: Any,
    *,
    region: Any,
    kernel_size: int,
    method: str,
    preset: str,
    iterations: int | None,
    device: str,
    seed: int,
    stack_mode: str,
    warm_planes: bool,
    world_point: Any,
) -> DeblurJob:
    """Check the widget's settings and the chosen Image ``layer``; the job to run.

    ``region`` is the region control's value (``"auto"``, ``"full"`` or a Shapes layer);
    ``world_point`` the viewer's current position (it picks the plane of ``"current"`` mode).

    Raises
    ------
    ValueError, TypeError
        With a message for the user (no layer, even kernel size, kernel too large for the
        image, unsupported dtype, NaN in in-memory data, no such device...).
    """
    if layer is None:
        raise ValueError("no Image layer to deblur: open an image (or File > Open Sample) first")
    source = describe_layer(layer)
    if source.dtype.kind not in "uif":
        raise TypeError(f"layer {source.name!r} has dtype {source.dtype}; deblurring needs integer or float data")
    if source.rgb and source.channels not in (3, 4):
        raise ValueError(f"RGB layer {source.name!r} has {source.channels} channels; expected 3 or 4")
    check_kernel_size(kernel_size, source.spatial_shape)
    try:
        scale_geometry(source.spatial_shape, (kernel_size, kernel_size), METHOD_SCALES[method])
    except ValueError as err:
        raise ValueError(f"{err} (image {source.spatial_shape[0]}x{source.spatial_shape[1]})") from None
    resolve_device(device)
    region, region_layer = _region(region, layer, source, kernel_size, method)

    mode = stack_mode if source.is_stack else "single"
    plane_index = None
    if mode == "current":
        plane_index = _current_plane(layer, source, world_point)
        planes = PlaneStack(source, [plane_index])
    elif mode == "single":
        planes = PlaneStack(source, [()])
    else:
        planes = PlaneStack(source)
    if isinstance(source.data, np.ndarray):
        # In-memory data is cheap to check now, before a thread starts; lazy data is
        # checked plane by plane as it is read (PlaneStack raises, the worker reports).
        for i in range(len(planes)):
            planes[i]
    return DeblurJob(
        source=source,
        planes=planes,
        mode=mode,
        kernel_size=kernel_size,
        method=method,
        preset=preset,
        iterations=iterations,
        device=device,
        seed=seed,
        plane_index=plane_index,
        region=region,
        region_layer=region_layer,
        warm_planes=warm_planes,
    )


def _region(
    choice: Any, layer: Any, source: LayerSource, kernel_size: int, method: str
) -> tuple[str | tuple[int, int, int, int], str | None]:
    """The engine's ``region`` for the region control's ``choice``, and the Shapes layer's name."""
    if isinstance(choice, str):
        return choice, None
    region = shapes_region(choice, layer, source.spatial_shape)
    try:
        check_region(region, source.spatial_shape, kernel_size)
    except ValueError as err:
        raise ValueError(f"Shapes layer {choice.name!r}: {err}") from None
    try:
        # The blind run sees only the region, so the pyramid must fit in it, as in the image.
        scale_geometry(region[2:], (kernel_size, kernel_size), METHOD_SCALES[method])
    except ValueError as err:
        raise ValueError(f"Shapes layer {choice.name!r}: {err} (region {region[2]}x{region[3]})") from None
    return region, choice.name


def _current_plane(layer: Any, source: LayerSource, world_point: Any) -> tuple[int, ...]:
    """The leading-axis index of the plane the viewer's sliders show for ``layer``."""
    coords = np.asarray(layer.world_to_data(world_point), dtype=float)
    leading = coords[: len(source.leading_shape)]
    return tuple(int(np.clip(np.round(c), 0, n - 1)) for c, n in zip(leading, source.leading_shape, strict=True))


@dataclass
class JobOutcome:
    """What the worker returns: result arrays shaped for napari, and the layers' metadata."""

    image: np.ndarray | None
    kernel: np.ndarray | None
    metadata: dict[str, Any] = field(default_factory=dict)
    cancelled: bool = False
    #: A user-facing reason when the engine refused the input (the arrays are None then).
    error: str | None = None


def progress_step(progress: Progress, job: DeblurJob) -> int:
    """Position of a progress record on the widget's bar (0 .. ``job.total_steps``).

    The bar counts blind-stage iterations (per plane in per-plane mode) and, in shared mode,
    the planes deconvolved with the shared kernel; a run's polish and deconvolution records
    sit at the end of its blind stage.
    """
    iterations = job.full_iterations
    if progress.stage == "planes":
        return iterations + progress.step
    if job.mode == "per-plane":
        plane = progress.plane or 0
        done = progress.step if progress.stage == "blind" else job.plane_offset(plane + 1) - job.plane_offset(plane)
        return job.plane_offset(plane) + done
    return progress.step if progress.stage == "blind" else iterations
