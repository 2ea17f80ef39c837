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

The stack plan's rules hold here too: a plane that cannot be deblurred is written through
unchanged by its own task and named in the report's warnings; shared mode's first task
checks the reference plane before its blind run; and in per-plane mode with
``--kernel-size auto``, one task runs the planes up to the first usable one, whose measured
size the other planes' tasks then use.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from distributed import as_completed

from .. import io
from ..engine.pipeline import deblur
from ..engine.stack_plan import (
    BlindRun,
    choose_reference_plane,
    deconvolve_plane,
    no_usable_plane,
    plane_problem,
    plane_weight,
    stack_report,
)
from .clusters import cluster_has_gpus
from .jobs import FileJob, Outcome
from .plan import Plan, clean_partial, create_outputs, file_warnings, input_planes, make_plan, write_outputs
from .serial import process_file

__all__ = ["run_dask", "submit_job"]


def estimate_kernel_task(job: FileJob, plan: Plan) -> dict[str, Any]:
    """Shared mode, step 1: a blind run on the reference plane (chosen here if not given, or
    if the one given cannot be deblurred)."""
    start = time.perf_counter()
    reference, plane, note = choose_reference_plane(input_planes(job), plan.reference_plane)
    result = deblur(plane, job.options.kernel_size, **job.options.deblur_kwargs())
    run = BlindRun.of(reference, result)
    return {"run": run, "notes": [note] if note else [], "elapsed_s": time.perf_counter() - start}


def deconvolve_plane_task(job: FileJob, plan: Plan, index: int, estimate: dict[str, Any]) -> dict[str, Any]:
    """Shared mode, step 2: deconvolve plane ``index`` with the shared kernel (or pass it
    through unchanged when it cannot be deblurred), write it."""
    start = time.perf_counter()
    plane = input_planes(job)[index]
    problem = plane_problem(plane)
    out = io.open_image(job.partial["image"], plan.output_meta)
    if problem is None:
        run = estimate["run"]
        weight = plane_weight(plane, run.params, job.options.nonblind)
        out[index] = deconvolve_plane(
            plane, run.kernel, device=job.options.device, method=job.options.nonblind, weight=weight
        )
    else:
        out[index] = plane.astype(np.float32)
    out.flush()
    return {"plane": index, "problem": problem, "elapsed_s": time.perf_counter() - start}


def first_plane_task(job: FileJob, plan: Plan) -> dict[str, Any]:
    """Per-plane mode with ``--kernel-size auto``, step 1: the planes up to the first usable
    one, which measures the size every other plane then uses (as in this process's runner).
    """
    start = time.perf_counter()
    planes = input_planes(job)
    problems: dict[int, str] = {}
    for index in range(len(planes)):
        part = _plane_part(job, plan, planes[index], index, "auto", start)
        if part["problem"] is None:
            return {**part, "passed_through": problems, "kernel_size": tuple(part["run"].kernel.shape)}
        problems[index] = part["problem"]
    return {"plane": None, "passed_through": problems, "kernel_size": None, "elapsed_s": time.perf_counter() - start}


def deblur_plane_task(job: FileJob, plan: Plan, index: int, first: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per-plane mode: a blind run on plane ``index`` (from scratch); writes the image. With
    ``first`` (``--kernel-size auto``), planes ``first`` handled are left alone and the others
    use the size it measured."""
    start = time.perf_counter()
    if first is not None and (first["plane"] is None or index <= first["plane"]):
        return {"plane": index, "handled_by_first": True, "elapsed_s": 0.0}
    size = job.options.kernel_size if first is None else first["kernel_size"]
    return _plane_part(job, plan, input_planes(job)[index], index, size, start)


def _plane_part(job: FileJob, plan: Plan, plane: np.ndarray, index: int, size: Any, start: float) -> dict[str, Any]:
    """One plane of per-plane mode: deblurred, or passed through unchanged; written."""
    problem = plane_problem(plane)
    run = None
    if problem is None:
        result = deblur(plane, size, **job.options.deblur_kwargs())
        run, image = BlindRun.of(index, result), result.image
    else:
        image = plane.astype(np.float32)
    out = io.open_image(job.partial["image"], plan.output_meta)
    out[index] = image
    out.flush()
    return {"plane": index, "run": run, "problem": problem, "elapsed_s": time.perf_counter() - start}


def write_outputs_task(
    job: FileJob, plan: Plan, estimate: dict | None, parts: list[dict], start: float, first: dict | None = None
) -> dict[str, Any]:
    """The last task of a stack file: the report, the kernel(s), the outputs moved into place."""
    parts = [part for part in parts if not part.get("handled_by_first")]
    if first is not None and first["plane"] is not None:
        parts.append({k: first[k] for k in ("plane", "run", "problem", "elapsed_s")})
    passed_through = {part["plane"]: part["problem"] for part in parts if part.get("problem")}
    if first is not None:
        passed_through.update(first["passed_through"])
    if estimate is not None:
        run = estimate["run"]
        report = stack_report(
            "shared", plan.planes, run.kernel.shape, [run], device=job.options.device, reference_plane=run.plane,
            nonblind_method=job.options.nonblind, passed_through=passed_through, notes=estimate["notes"],
        )  # fmt: skip
        kernels = run.kernel  # the one shared kernel (report.kernels holds deltas for planes passed through)
    else:
        runs = sorted((part["run"] for part in parts if part.get("run") is not None), key=lambda run: run.plane)
        if not runs:
            raise ValueError(no_usable_plane(dict(sorted(passed_through.items()))))
        report = stack_report(
            "per-plane", plan.planes, runs[0].kernel.shape, runs, device=job.options.device, warm_planes=False,
            passed_through=passed_through,
        )  # fmt: skip
        kernels = report.kernels
    seconds = {part["plane"]: part["elapsed_s"] for part in parts}
    if first is not None:
        seconds.update({i: 0.0 for i in first["passed_through"]})
    summary = {
        "device": report.device, "final_loss": report.final_loss, "params": report.params,
        "elapsed_s": time.time() - start, "scheduler": "dask",
        "task_seconds": [seconds.get(i, 0.0) for i in range(plan.planes)], "cancelled": False,
        "warnings": file_warnings(plan, report.warnings),
    }  # fmt: skip
    return write_outputs(job, plan, np.asarray(kernels), summary)


def submit_job(client: Any, job: FileJob, plan: Plan, resources: dict | None) -> Any:
    """Submit the tasks of one file; returns the future of its last task."""
    opts = {"retries": 1, "resources": resources, "pure": False}
    start = time.time()
    if plan.mode in ("current", "single"):
        return client.submit(process_file, job, **opts)
    created = client.submit(create_outputs, job, plan, **opts)
    estimate = first = None
    if plan.mode == "shared":
        estimate = client.submit(estimate_kernel_task, job, created, **opts)
        parts = [client.submit(deconvolve_plane_task, job, created, i, estimate, **opts) for i in range(plan.planes)]
    else:
        if isinstance(job.options.kernel_size, str):  # "auto": the first usable plane measures it
            first = client.submit(first_plane_task, job, created, **opts)
        parts = [client.submit(deblur_plane_task, job, created, i, first, **opts) for i in range(plan.planes)]
    return client.submit(write_outputs_task, job, created, estimate, parts, start, first, **opts)


def run_dask(client: Any, jobs: list[FileJob], *, on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Process ``jobs`` as tasks on ``client``'s cluster; results are written by the workers.

    A KeyboardInterrupt while waiting (Ctrl-C, SIGTERM: :mod:`.stopping`) cancels the tasks
    of every file not done yet, removes their partial outputs and returns them as
    interrupted.
    """
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
    try:
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
    except KeyboardInterrupt:
        client.cancel([future for future, i in futures.items() if i not in outcomes])
        for i in range(len(jobs)):
            if i not in outcomes:
                clean_partial(jobs[i])
                outcomes[i] = Outcome(jobs[i], interrupted=True)
    return [outcomes[i] for i in range(len(jobs))]
