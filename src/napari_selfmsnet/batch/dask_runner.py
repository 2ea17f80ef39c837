"""The Dask batch runner: every step of a file is a task on the cluster.

The tasks execute the steps of the engine's stack plan
(:mod:`napari_selfmsnet.engine.stack_plan`), and the last one describes the run with the
same :func:`~napari_selfmsnet.engine.stack_plan.stack_report` as the runner of this process,
so a file's report has the same fields whichever ran it. One difference: in per-plane mode
every plane is its own task and runs from scratch, where :mod:`.serial` warm-starts each
plane from the one before (``RunOptions.warm_planes``); run serially with warm starts off,
the two give the very same numbers.

Every task reads its own plane from the input file and writes its own plane into the output
file (a memory-mapped TIFF or an OME-Zarr chunk), so only kernels and small summaries travel
between workers and the client; this needs a file system that the client and all workers
share (always true for ``--scheduler local``). Each task may be retried once
(``retries=1``); a task that fails twice fails its file, which is reported, and the other
files go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from distributed import as_completed

from .. import io
from ..engine.pipeline import deblur
from ..engine.stack_plan import BlindRun, deconvolve_plane, select_reference_plane, stack_report
from .clusters import cluster_has_gpus
from .jobs import FileJob, Outcome
from .plan import Plan, clean_partial, create_outputs, input_planes, make_plan, write_outputs
from .serial import process_file

__all__ = ["run_dask", "submit_job"]


def estimate_kernel_task(job: FileJob, plan: Plan) -> dict[str, Any]:
    """Shared mode, step 1: a blind run on the reference plane (chosen here if not given)."""
    start = time.perf_counter()
    planes = input_planes(job)
    reference = plan.reference_plane if plan.reference_plane is not None else select_reference_plane(planes)
    result = deblur(planes[reference], job.options.kernel_size, **job.options.deblur_kwargs())
    return {"run": BlindRun.of(reference, result), "elapsed_s": time.perf_counter() - start}


def deconvolve_plane_task(job: FileJob, plan: Plan, index: int, estimate: dict[str, Any]) -> dict[str, Any]:
    """Shared mode, step 2: deconvolve plane ``index`` with the shared kernel, write it."""
    start = time.perf_counter()
    plane = input_planes(job)[index]
    out = io.open_image(job.partial["image"], plan.output_meta)
    out[index] = deconvolve_plane(
        plane, estimate["run"].kernel, device=job.options.device, method=job.options.nonblind
    )
    out.flush()
    return {"plane": index, "elapsed_s": time.perf_counter() - start}


def deblur_plane_task(job: FileJob, plan: Plan, index: int) -> dict[str, Any]:
    """Per-plane mode: a blind run on plane ``index`` (from scratch); writes the image."""
    start = time.perf_counter()
    result = deblur(input_planes(job)[index], job.options.kernel_size, **job.options.deblur_kwargs())
    out = io.open_image(job.partial["image"], plan.output_meta)
    out[index] = result.image
    out.flush()
    return {"plane": index, "run": BlindRun.of(index, result), "elapsed_s": time.perf_counter() - start}


def write_outputs_task(
    job: FileJob, plan: Plan, estimate: dict | None, parts: list[dict], start: float
) -> dict[str, Any]:
    """The last task of a stack file: the report, the kernel(s), the outputs moved into place."""
    kernel_size = tuple(job.options.kernel_size)
    if estimate is not None:
        run = estimate["run"]
        report = stack_report(
            "shared", plan.planes, kernel_size, [run], device=job.options.device, reference_plane=run.plane,
            nonblind_method=job.options.nonblind,
        )  # fmt: skip
        kernels = report.kernels[0]
    else:
        runs = sorted((part["run"] for part in parts), key=lambda run: run.plane)
        report = stack_report("per-plane", plan.planes, kernel_size, runs, device=job.options.device, warm_planes=False)
        kernels = report.kernels
    summary = {
        "device": report.device, "final_loss": report.final_loss, "params": report.params,
        "elapsed_s": time.time() - start, "scheduler": "dask",
        "task_seconds": [p["elapsed_s"] for p in sorted(parts, key=lambda p: p["plane"])], "cancelled": False,
    }  # fmt: skip
    return write_outputs(job, plan, np.asarray(kernels), summary)


def submit_job(client: Any, job: FileJob, plan: Plan, resources: dict | None) -> Any:
    """Submit the tasks of one file; returns the future of its last task."""
    opts = {"retries": 1, "resources": resources, "pure": False}
    start = time.time()
    if plan.mode in ("current", "single"):
        return client.submit(process_file, job, **opts)
    created = client.submit(create_outputs, job, plan, **opts)
    if plan.mode == "shared":
        estimate = client.submit(estimate_kernel_task, job, created, **opts)
        parts = [client.submit(deconvolve_plane_task, job, created, i, estimate, **opts) for i in range(plan.planes)]
    else:
        estimate = None
        parts = [client.submit(deblur_plane_task, job, created, i, **opts) for i in range(plan.planes)]
    return client.submit(write_outputs_task, job, created, estimate, parts, start, **opts)


def run_dask(client: Any, jobs: list[FileJob], *, on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Process ``jobs`` as tasks on ``client``'s cluster; results are written by the workers."""
    resources = {"GPU": 1} if cluster_has_gpus(client) and jobs and jobs[0].options.device != "cpu" else None
    outcomes: dict[int, Outcome] = {}
    futures = {}
    for i, job in enumerate(jobs):
        try:
            plan = make_plan(job)
        except Exception as err:  # noqa: BLE001 - an unreadable header fails this file only
            outcomes[i] = Outcome(job, error=err)
            continue
        futures[submit_job(client, job, plan, resources)] = i
    for future in as_completed(futures):
        i = futures[future]
        if future.status == "finished":
            outcomes[i] = Outcome(jobs[i], summary=future.result())
        else:
            error = future.exception()
            client.submit(clean_partial, jobs[i], pure=False).result()
            outcomes[i] = Outcome(jobs[i], error=error)
        if on_done is not None:
            on_done(outcomes[i])
    return [outcomes[i] for i in range(len(jobs))]
