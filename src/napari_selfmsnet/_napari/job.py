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
from ..engine.devices import progress_every_for, resolve_device
from ..engine.inputs import check_kernel_size, largest_kernel
from ..engine.kernel_size import AUTO
from ..engine.pipeline import deblur_steps
from ..engine.records import DeblurResult, Progress, StackResult
from ..engine.regions import check_region
from ..engine.stack import deblur_stack_steps
from .layers import LayerSource, PlaneStack, describe_layer, physical_pixel, shapes_region

__all__ = ["DeblurJob", "JobOutcome", "make_job"]

#: The smallest kernel a measured size can come out at: the image must be large enough for it.
_SMALLEST_KERNEL = 5


@dataclass(frozen=True)
class DeblurJob:
    """Everything one run needs, checked and captured when Run is pressed.

    ``planes`` reads the layer lazily; in ``"current"`` and ``"single"`` mode it holds the one
    plane to deblur (``plane_index`` is its position on the leading axes in ``"current"`` mode).
    ``region`` is the engine's ``region`` argument (``"auto"``, ``"full"`` or
    ``(top, left, height, width)``; ``region_layer`` names the Shapes layer it came from);
    ``warm_planes`` applies to ``"per-plane"`` mode. ``kernel_size`` is ``"auto"`` (measured
    by the engine) or an odd size in pixels; ``kernel_size_source`` says where a given size
    came from (``"given"``, or ``"layer metadata"`` for a sample's suggested size).
    """

    source: LayerSource
    planes: PlaneStack
    mode: str
    kernel_size: int | str
    method: str
    preset: str
    iterations: int | None
    device: str
    seed: int
    plane_index: tuple[int, ...] | None = None
    region: str | tuple[int, int, int, int] = "auto"
    region_layer: str | None = None
    warm_planes: bool = True
    kernel_size_source: str = "given"

    @property
    def all_planes(self) -> bool:
        """True when the job deblurs every plane of a stack (``"shared"``, ``"per-plane"``)."""
        return self.mode not in ("current", "single")

    @property
    def full_iterations(self) -> int:
        """Iterations of a blind run from scratch."""
        return self.iterations or PRESETS[self.preset].iterations

    @property
    def progress_every(self) -> int:
        """Blind-stage iterations between the engine's progress records."""
        # On the CPU every iteration makes a record, so Cancel is honoured within one
        # iteration even with the slow "quality" preset (the forwarding to the GUI is
        # throttled instead); on a GPU that would synchronise the device every iteration.
        return progress_every_for(resolve_device(self.device))

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
        if not self.all_planes:
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
            for key in ("unfinished_planes", "interrupted_plane"):
                if key in result.params:
                    extra[key] = result.params[key]
        # StackResult carries warnings (plane-tagged) from engine versions that check planes.
        warnings = [str(w) for w in getattr(result, "warnings", None) or []]
        kernel_shape = tuple(int(k) for k in np.shape(kernel)[-2:])
        metadata = {
            "source_layer": source.name,
            "mode": self.mode,
            "method": self.method,
            "preset": self.preset,
            "iterations": self.full_iterations,
            **self._kernel_size_metadata(kernel_shape, _engine_size_source(result.params)),
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
            "warnings": warnings,
            "data_level": 0 if source.multiscale else None,
            **extra,
            "params": result.params,
        }
        return JobOutcome(
            image=np.asarray(image, dtype=np.float32),
            kernel=np.asarray(kernel, dtype=np.float32),
            metadata=metadata,
            cancelled=bool(result.cancelled),
            warnings=warnings,
        )

    def _kernel_size_metadata(
        self, kernel_shape: tuple[int, int], engine_source: str | None = None
    ) -> dict[str, Any]:
        """The kernel size used (pixels, and world units when the layer has them), and where it
        came from (for ``"auto"``, the engine's word: ``"probe stopped"`` when Cancel came
        during the size probes)."""
        kh, kw = kernel_shape
        measured = engine_source if engine_source == "probe stopped" else "measured"
        meta: dict[str, Any] = {
            "kernel_size": kh if kh == kw else [kh, kw],
            "kernel_size_requested": self.kernel_size,
            "kernel_size_source": measured if self.kernel_size == AUTO else self.kernel_size_source,
        }
        pixel = physical_pixel(self.source)
        if pixel is not None:
            meta["kernel_extent"] = max(kh, kw) * pixel.size
            meta["kernel_extent_unit"] = pixel.unit
        return meta


def make_job(
    layer: Any,
    *,
    region: Any,
    kernel_size: int | str,
    method: str,
    preset: str,
    iterations: int | None,
    device: str,
    seed: int,
    stack_mode: str,
    warm_planes: bool,
    world_point: Any,
    kernel_size_source: str = "given",
) -> DeblurJob:
    """Check the widget's settings and the chosen Image ``layer``; the job to run.

    ``region`` is the region control's value (``"auto"``, ``"full"`` or a Shapes layer);
    ``kernel_size`` ``"auto"`` or an odd size in pixels (``kernel_size_source`` says where it
    came from, for the results' metadata); ``world_point`` the viewer's current position (it
    picks the plane of ``"current"`` mode).

    Raises
    ------
    ValueError, TypeError
        With a message for the user (no layer, even kernel size, kernel too large for the
        image, unsupported dtype, values the engine refuses (NaN, beyond float32...) in the in-memory
        image to deblur, no such device...).
    """
    if layer is None:
        raise ValueError("no Image layer to deblur: open an image (or File > Open Sample) first")
    source = describe_layer(layer)
    if source.dtype.kind not in "uif":
        raise TypeError(f"layer {source.name!r} has dtype {source.dtype}; deblurring needs integer or float data")
    if source.rgb and source.channels not in (3, 4):
        raise ValueError(f"RGB layer {source.name!r} has {source.channels} channels; expected 3 or 4")
    # A measured size is at least the smallest kernel: the image must hold that one, at every
    # scale of the method.
    checked_size = _SMALLEST_KERNEL if kernel_size == AUTO else kernel_size
    try:
        check_kernel_size(checked_size, source.spatial_shape, METHOD_SCALES[method], measuring=kernel_size == AUTO)
    except ValueError as err:
        if kernel_size != AUTO or largest_kernel(source.spatial_shape, METHOD_SCALES[method])[0] < 3:
            raise  # a size given, or an image too small for any kernel: the engine's message says so
        h, w = source.spatial_shape
        raise ValueError(f"image {h}x{w} is too small to measure a kernel in: {err}") from None
    resolve_device(device)
    region, region_layer = _region(region, layer, source, checked_size, method)

    mode = stack_mode if source.is_stack else "single"
    plane_index = None
    if mode == "current":
        plane_index = _current_plane(layer, source, world_point)
        planes = PlaneStack(source, [plane_index])
    elif mode == "single":
        planes = PlaneStack(source, [()])
    else:
        # A bad plane of a stack (blank, NaN) is the engine's to pass through and name.
        planes = PlaneStack(source, check_values=False)
    if isinstance(source.data, np.ndarray) and mode in ("current", "single"):
        # In-memory data is cheap to check now, before a thread starts; lazy data is
        # checked as it is read (PlaneStack raises, the worker reports).
        planes[0]
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
        kernel_size_source=kernel_size_source,
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
    #: What the engine's self-check doubted about the result (``DeblurResult.warnings``).
    warnings: list[str] = field(default_factory=list)


def _engine_size_source(params: dict[str, Any]) -> str | None:
    """``kernel_size_source`` as the engine recorded it: the run's, or a stack's first blind run's."""
    if "kernel_size_source" in params:
        return params["kernel_size_source"]
    runs = [p for p in params.get("plane_params") or [] if p]
    return runs[0].get("kernel_size_source") if runs else None
