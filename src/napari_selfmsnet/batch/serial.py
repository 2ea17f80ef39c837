"""The batch runner of this process: one file after the other, each through the engine's
pipeline (:func:`napari_selfmsnet.deblur`) or stack run (:func:`napari_selfmsnet.deblur_stack`),
with progress handed to a callback (the command line's progress bars).

A request to stop (``stop()`` true: Ctrl-C or SIGTERM on the command line) reaches the running
file through the engine's own stop mechanism (its progress callback returns True); the file is
then not written (:class:`~.jobs.RunInterrupted`, its partial outputs removed) and no later
file starts. The engine would then still run each later stage up to its first record; as
nothing of a stopped file is kept, the next record ends the file's run at once (the callback
raises, which closes the engine's generator: its ``finally`` clauses free the device).

The engine's default record rate holds here: every blind iteration on the CPU, so a stop is
seen within one iteration; every 10 on a GPU, where iterations take milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from .. import io
from ..engine.pipeline import deblur
from ..engine.records import Progress
from ..engine.stack import deblur_stack
from ..engine.stack_plan import plane_problem, select_reference_plane
from .jobs import FileJob, Outcome, RunInterrupted
from .plan import clean_partial, create_outputs, file_warnings, input_planes, make_plan, plane_coords, write_outputs

__all__ = ["process_file", "run_serial", "stopping_callback"]


def process_file(job: FileJob, callback: Callable[[Progress], Any] | None = None) -> dict[str, Any]:
    """The whole pipeline for one file in this process; returns a small summary.

    Per-plane stacks warm-start each plane from the previous one (``RunOptions.warm_planes``).

    Raises
    ------
    RunInterrupted
        When ``callback`` asked the run to stop (returned True): nothing is written.
    """
    start = time.perf_counter()
    plan = create_outputs(job, make_plan(job))
    planes = input_planes(job)
    kwargs = job.options.deblur_kwargs()
    if plan.mode in ("current", "single"):
        index = _plane_to_deblur(plan, planes)
        result = deblur(planes[index], job.options.kernel_size, callback=callback, **kwargs)
        _stop_if_cancelled(job, result.cancelled)
        io.write_image(job.partial["image"], result.image, plan.output_meta)
        kernels, params = result.kernel, {"plane": index, "plane_index": plane_coords(plan, index), **result.params}
    else:
        out = io.open_image(job.partial["image"], plan.output_meta)
        result = deblur_stack(
            planes, job.options.kernel_size, mode=plan.mode, reference_plane=plan.reference_plane,
            callback=callback, out=out, nonblind_method=job.options.nonblind,
            warm_planes=job.options.warm_planes, warm_iterations=job.options.warm_iterations, **kwargs,
        )  # fmt: skip
        _stop_if_cancelled(job, result.cancelled)
        out.flush()
        # Shared mode writes its one kernel; per-plane mode the stack of kernels.
        kernels = result.kernel if plan.mode == "shared" else result.kernels
        params = result.params
    report = {
        "device": result.device, "final_loss": result.final_loss, "cancelled": result.cancelled, "params": params,
        "elapsed_s": time.perf_counter() - start, "scheduler": "serial",
        "warnings": file_warnings(plan, result.warnings),
    }  # fmt: skip
    return write_outputs(job, plan, kernels, report)


def _plane_to_deblur(plan: Any, planes: io.Planes) -> int:
    """The plane of a single-plane run: the one asked for (``--plane``), which must be usable,
    or the reference plane (:func:`select_reference_plane` skips unusable ones)."""
    if plan.reference_plane is None:
        return select_reference_plane(planes)
    if plan.mode == "current":
        problem = plane_problem(planes[plan.reference_plane])
        if problem is not None:
            raise ValueError(
                f"--plane {plan.reference_plane} cannot be deblurred: {problem}; choose another --plane, or leave "
                "it out to take the plane with the strongest edges"
            )
    return plan.reference_plane


def _stop_if_cancelled(job: FileJob, cancelled: bool) -> None:
    if cancelled:
        raise RunInterrupted(f"{job.input}: stopped before it was done; nothing was written")


def run_serial(
    jobs: Iterable[FileJob],
    *,
    progress: Callable[[FileJob], Callable | None] | None = None,
    on_done: Callable[[Outcome], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> list[Outcome]:
    """Process ``jobs`` one after the other in this process; an error fails only its own job.

    ``progress(job)`` may return a callback for that file's progress records; ``on_done`` is
    called with each :class:`Outcome` as soon as its file ends. Once ``stop()`` is true, the
    running file is stopped (its callback returns True) and counted as interrupted, and no
    other file starts (they are not in the list returned). A KeyboardInterrupt (a second
    Ctrl-C) does the same at once.
    """
    if stop is None:  # (not `stop or ...`: a StopRequest is false until a signal comes)
        stop = _never
    outcomes = []
    for job in jobs:
        if stop():
            break
        callback = stopping_callback(progress(job) if progress else None, stop)
        try:
            outcome = Outcome(job, summary=process_file(job, callback))
        except (RunInterrupted, KeyboardInterrupt):
            clean_partial(job)
            outcome = Outcome(job, interrupted=True)
        except Exception as err:  # noqa: BLE001 - reported per file; the batch goes on
            clean_partial(job)
            outcome = Outcome(job, error=err)
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)
        if outcome.interrupted:
            break
    return outcomes


def _never() -> bool:
    return False


def stopping_callback(
    callback: Callable[[Progress], Any] | None, stop: Callable[[], bool]
) -> Callable[[Progress], bool]:
    """``callback`` (if any) at every record, then True (stop) once ``stop()`` is; the next
    record after that raises :class:`~.jobs.RunInterrupted`."""
    stopping = False

    def call(record: Progress) -> bool:
        nonlocal stopping
        asked = callback(record) if callback is not None else None
        if not stop():
            return bool(asked)
        if stopping:
            raise RunInterrupted("stopped before it was done; nothing was written")
        stopping = True
        return True

    return call
