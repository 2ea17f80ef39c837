"""One file of a batch: how its planes are processed, and its outputs.

Every combination of a file's stack axes is one plane (:class:`napari_selfmsnet.io.Planes`).
:func:`make_plan` decides from the header alone how they are processed (:func:`plan_mode`):

``single``     the file holds one plane: a blind run on it.
``current``    one plane only (``--plane``, else the reference plane, the one with the
               strongest edges).
``shared``     one kernel for all planes; ``per-plane``: one kernel each
               (:mod:`napari_selfmsnet.engine.stack_plan`).

Outputs are written under ``.partial`` names first (:func:`create_outputs`) and moved into
place by :func:`write_outputs` once the kernel(s) and the JSON report are written, the report
last: its presence is what marks a finished file.

:func:`make_plan` also checks, from the header alone, that a given ``--kernel-size`` fits the
file's planes at every scale of ``--method``, so a file that cannot run fails at once, in
the command line's words. A file's warnings (:func:`file_warnings`) are what reading it
changed (an alpha channel left out) followed by the run's own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from ..engine.config import METHOD_SCALES
from ..engine.inputs import check_kernel_size, largest_kernel
from ..engine.stack_plan import STACK_CHOICES
from .jobs import FileJob

__all__ = [
    "Plan",
    "clean_partial",
    "check_kernel_fits",
    "create_outputs",
    "file_warnings",
    "input_planes",
    "make_plan",
    "plan_mode",
    "plane_coords",
    "write_outputs",
]


@dataclass(frozen=True)
class Plan:
    """How a file's planes are processed (made on the client from the header alone)."""

    mode: str
    planes: int
    reference_plane: int | None
    input_meta: io.ImageMetadata
    output_meta: io.ImageMetadata
    stack_axes: str
    stack_shape: tuple[int, ...]


def plan_mode(stack_mode: str, planes: int) -> str:
    """The mode a file is actually processed in (a single plane is always a blind run)."""
    if stack_mode not in STACK_CHOICES:
        raise ValueError(f"stack mode must be one of {STACK_CHOICES}, got {stack_mode!r}")
    return "single" if planes == 1 else stack_mode


def make_plan(job: FileJob) -> Plan:
    """Read the header of ``job.input`` and decide what to compute and write."""
    meta = io.read_metadata(job.input, axes=job.options.axes)
    view = io.Planes(_Shape(meta.shape), meta.axes)
    mode = plan_mode(job.options.stack_mode, len(view))
    plane = job.options.plane
    if plane is not None and not 0 <= plane < len(view):
        raise ValueError(f"--plane {plane} is out of range: {job.input} has {len(view)} planes (0 to {len(view) - 1})")
    check_kernel_fits(job.options.kernel_size, job.options.method, tuple(view.shape[1:3]))
    if mode in ("current", "single"):
        axes, shape = view.plane_axes, view.shape[1:]
    else:
        axes, shape = view.output_axes, (*view.stack_shape, *view.shape[1:])
    return Plan(
        mode=mode, planes=len(view), reference_plane=0 if mode == "single" else plane,
        input_meta=meta, output_meta=io.output_metadata(meta, axes, shape),
        stack_axes=view.stack_axes, stack_shape=view.stack_shape,
    )  # fmt: skip


def check_kernel_fits(kernel_size: tuple[int, int] | str, method: str, plane_shape: tuple[int, int]) -> None:
    """Raise a ValueError in the command line's words when ``--kernel-size`` does not fit
    planes of ``plane_shape`` with ``--method`` (the engine's rule,
    :func:`~napari_selfmsnet.engine.inputs.check_kernel_size`); with ``auto``, when not even
    a 3-pixel kernel does."""
    h, w = plane_shape
    scales = METHOD_SCALES[method]
    largest = largest_kernel((h, w), scales)[0]
    if isinstance(kernel_size, str):
        if largest >= 3:
            return
        wanted = "a kernel of at least 3 pixels"
    else:
        try:
            check_kernel_size(kernel_size, (h, w), scales)
            return
        except ValueError:
            wanted = f"--kernel-size {kernel_size[0]},{kernel_size[1]}"
    other = next(m for m in sorted(METHOD_SCALES) if m != method)
    other_largest = largest_kernel((h, w), METHOD_SCALES[other])[0]
    remedies = []
    if largest >= 3:
        remedies.append(f"--kernel-size {largest} or smaller")
    if other_largest > max(largest, 1):
        remedies.append(f"--method {other} (kernels up to {other_largest})")
    advice = f"use {' or '.join(remedies)}" if remedies else "deblur a larger image"
    raise ValueError(
        f"{wanted} does not fit the {h}x{w} image with --method {method}: the image must be at least twice the "
        f"kernel and hold it at every scale of the method ({', '.join(f'{s:g}' for s in scales)}); {advice}"
    )


def file_warnings(plan: Plan, run_warnings: list[str] | tuple[str, ...]) -> list[str]:
    """A file's warnings for its report: what reading it changed, then the run's own."""
    return [*plan.input_meta.notes, *run_warnings]


class _Shape:
    """Stands in for an array when only the shape is needed (to build a Planes view)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


def input_planes(job: FileJob) -> io.Planes:
    """The planes of ``job.input``, read lazily (one TIFF page per plane where possible)."""
    data, meta = io.read_image_with_metadata(job.input, axes=job.options.axes, lazy=True)
    return io.Planes(data, meta.axes)


def plane_coords(plan: Plan, index: int) -> dict[str, int]:
    """Stack-axis coordinates of plane ``index`` (for the report of current mode)."""
    return (
        {a: int(c) for a, c in zip(plan.stack_axes, np.unravel_index(index, plan.stack_shape), strict=True)}
        if plan.stack_axes
        else {}
    )


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def create_outputs(job: FileJob, plan: Plan) -> Plan:
    """Create the (still partial) output image; the first step of a file."""
    job.outputs["image"].parent.mkdir(parents=True, exist_ok=True)
    for path in job.partial.values():
        _remove(path)
    if plan.mode not in ("current", "single"):
        io.create_image(job.partial["image"], plan.output_meta)
    return plan


def write_outputs(job: FileJob, plan: Plan, kernels: np.ndarray, report: dict[str, Any]) -> dict[str, Any]:
    """Write the kernel(s) and the JSON report, then move every output into place.

    Returns a small summary of the file (what the runners hand back).
    """
    kernels = np.asarray(kernels, dtype=np.float32)
    stack_axes = plan.stack_axes if kernels.ndim > 2 else ""
    if kernels.ndim > 2:
        kernels = kernels.reshape(*plan.stack_shape, *kernels.shape[-2:])
    kmeta = io.kernel_metadata(plan.output_meta, stack_axes, kernels.shape[:-2], kernels.shape[-2:])
    io.write_image(job.partial["kernel"], kernels, kmeta)
    summary = {
        "input": str(job.input),
        "outputs": {k: str(v) for k, v in job.outputs.items()},
        "mode": plan.mode,
        "planes": plan.planes,
        "input_metadata": plan.input_meta.to_dict(),
        "output_axes": plan.output_meta.axes,
        "options": job.options.to_dict(),
        **report,
    }
    io.write_json(job.partial["report"], summary)
    # The report moves last: its presence is what marks a finished file.
    for key in ("image", "kernel", "report"):
        if job.partial[key].exists():
            _remove(job.outputs[key])
            os.replace(job.partial[key], job.outputs[key])
    keys = ("input", "outputs", "mode", "planes", "device", "final_loss", "elapsed_s", "warnings")
    return {k: summary.get(k, []) if k == "warnings" else summary[k] for k in keys}


def clean_partial(job: FileJob) -> None:
    """Remove a failed file's partial outputs (best effort), so none is taken for a result."""
    for path in job.partial.values():
        with contextlib.suppress(OSError):
            _remove(path)
