"""The batch runner of this process: one file after the other, each through the engine's
pipeline (:func:`napari_selfmsnet.deblur`) or stack run (:func:`napari_selfmsnet.deblur_stack`),
with progress handed to a callback (the command line's progress bars)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from .. import io
from ..engine.pipeline import deblur
from ..engine.records import Progress
from ..engine.stack import deblur_stack
from ..engine.stack_plan import select_reference_plane
from .jobs import FileJob, Outcome
from .plan import clean_partial, create_outputs, input_planes, make_plan, plane_coords, write_outputs

__all__ = ["process_file", "run_serial"]


def process_file(job: FileJob, callback: Callable[[Progress], Any] | None = None) -> dict[str, Any]:
    """The whole pipeline for one file in this process; returns a small summary.

    Per-plane stacks warm-start each plane from the previous one (``RunOptions.warm_planes``).
    """
    start = time.perf_counter()
    plan = create_outputs(job, make_plan(job))
    planes = input_planes(job)
    kwargs = job.options.deblur_kwargs()
    if plan.mode in ("current", "single"):
        index = plan.reference_plane if plan.reference_plane is not None else select_reference_plane(planes)
        result = deblur(planes[index], job.options.kernel_size, callback=callback, **kwargs)
        io.write_image(job.partial["image"], result.image, plan.output_meta)
        kernels, params = result.kernel, {"plane": index, "plane_index": plane_coords(plan, index), **result.params}
    else:
        out = io.open_image(job.partial["image"], plan.output_meta)
        result = deblur_stack(
            planes, job.options.kernel_size, mode=plan.mode, reference_plane=plan.reference_plane,
            callback=callback, out=out, nonblind_method=job.options.nonblind,
            warm_planes=job.options.warm_planes, warm_iterations=job.options.warm_iterations, **kwargs,
        )  # fmt: skip
        out.flush()
        # Shared mode writes its one kernel; per-plane mode the stack of kernels.
        kernels = result.kernel if plan.mode == "shared" else result.kernels
        params = result.params
    report = {
        "device": result.device, "final_loss": result.final_loss, "cancelled": result.cancelled, "params": params,
        "elapsed_s": time.perf_counter() - start, "scheduler": "serial",
    }  # fmt: skip
    return write_outputs(job, plan, kernels, report)


def run_serial(
    jobs: Iterable[FileJob],
    *,
    progress: Callable[[FileJob], Callable | None] | None = None,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Process ``jobs`` one after the other in this process; an error fails only its own job.

    ``progress(job)`` may return a callback for that file's progress records; ``on_done`` is
    called with each :class:`Outcome` as soon as its file ends.
    """
    outcomes = []
    for job in jobs:
        try:
            outcome = Outcome(job, summary=process_file(job, progress(job) if progress else None))
        except Exception as err:  # noqa: BLE001 - reported per file; the batch goes on
            clean_partial(job)
            outcome = Outcome(job, error=err)
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)
    return outcomes
