"""Batches of files: the per-file pipeline, run serially or as Dask-distributed tasks.

One input file is one :class:`FileJob`. Its planes (every combination of the stack axes) are
processed in one of four ways, chosen by :func:`plan_mode`:

``single``     the file holds one plane: a blind run on it.
``current``    one plane only (``--plane``, else the plane with the strongest edges).
``shared``     a blind run on the reference plane estimates the kernel; every plane is then
               deconvolved with it (:func:`napari_selfmsnet.engine.stack.apply_kernel`).
``per-plane``  a blind run on every plane, same seed for each; in this process each plane is
               warm-started from the previous one (``RunOptions.warm_start``), on Dask every
               plane is its own task and runs from scratch.

On Dask every step is a task that reads its own plane from the input file and writes its own
plane into the output file (a memory-mapped TIFF or an OME-Zarr chunk), so only kernels and
small summaries travel between workers and the client; this needs a file system that the
client and all workers share (always true for ``--scheduler local``). Each task may be retried
once (``retries=1``); a task that fails twice fails its file, which is reported, and the
other files go on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from distributed import WorkerPlugin

from . import io
from .engine.stack import apply_kernel, deblur_stack, select_reference_plane

__all__ = [
    "FileJob",
    "RunOptions",
    "TorchThreads",
    "plan_mode",
    "process_file",
    "run_dask",
    "run_serial",
    "start_client",
]


@dataclass(frozen=True)
class RunOptions:
    """Everything a file's run needs besides the file (picklable, for Dask tasks)."""

    kernel_size: tuple[int, int]
    method: str = "self-msnet"
    preset: str = "fast"
    iterations: int | None = None
    device: str = "auto"
    seed: int = 0
    stack_mode: str = "shared"
    plane: int | None = None
    nonblind: str = "sparse"
    axes: str | None = None
    ome_zarr: bool = False
    region: str | tuple[int, int, int, int] = "auto"
    warm_start: bool = True
    warm_iterations: int | None = None

    def deblur_kwargs(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "preset": self.preset,
            "iterations": self.iterations,
            "device": self.device,
            "seed": self.seed,
            "region": self.region,
        }


@dataclass(frozen=True)
class FileJob:
    """One input and where its results go."""

    input: Path
    outputs: dict[str, Path]
    options: RunOptions

    @property
    def partial(self) -> dict[str, Path]:
        """Names the outputs have while being written; renamed when the file is done."""
        return {k: p.with_name(p.name.replace(".", ".partial.", 1)) for k, p in self.outputs.items()}


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
    if stack_mode not in ("current", "shared", "per-plane"):
        raise ValueError(f"stack mode must be 'current', 'shared' or 'per-plane', got {stack_mode!r}")
    return "single" if planes == 1 else stack_mode


def make_plan(job: FileJob) -> Plan:
    """Read the header of ``job.input`` and decide what to compute and write."""
    meta = io.read_metadata(job.input, axes=job.options.axes)
    view = io.Planes(_Shape(meta.shape), meta.axes)
    mode = plan_mode(job.options.stack_mode, len(view))
    plane = job.options.plane
    if plane is not None and not 0 <= plane < len(view):
        raise ValueError(f"--plane {plane} is out of range: {job.input} has {len(view)} planes (0 to {len(view) - 1})")
    if mode in ("current", "single"):
        axes, shape = view.plane_axes, view.shape[1:]
    else:
        axes, shape = view.output_axes, (*view.stack_shape, *view.shape[1:])
    return Plan(
        mode=mode, planes=len(view), reference_plane=0 if mode == "single" else plane,
        input_meta=meta, output_meta=io.output_metadata(meta, axes, shape),
        stack_axes=view.stack_axes, stack_shape=view.stack_shape,
    )  # fmt: skip


class _Shape:
    """Stands in for an array when only the shape is needed (to build a Planes view)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


def _input_planes(job: FileJob) -> io.Planes:
    data, meta = io.read_image_with_metadata(job.input, axes=job.options.axes, lazy=True)
    return io.Planes(data, meta.axes)


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


def estimate_kernel(job: FileJob, plan: Plan) -> dict[str, Any]:
    """Shared mode, step 1: a blind run on the reference plane (chosen here if not given)."""
    from .engine.pipeline import deblur

    start = time.perf_counter()
    planes = _input_planes(job)
    reference = plan.reference_plane if plan.reference_plane is not None else select_reference_plane(planes)
    result = deblur(planes[reference], job.options.kernel_size, **job.options.deblur_kwargs())
    return {
        "reference_plane": reference, "kernel": result.kernel, "params": result.params,
        "device": result.device, "final_loss": result.final_loss, "elapsed_s": time.perf_counter() - start,
    }  # fmt: skip


def apply_to_plane(job: FileJob, plan: Plan, index: int, estimate: dict[str, Any]) -> dict[str, Any]:
    """Shared mode, step 2: deconvolve plane ``index`` with the shared kernel, write it."""
    start = time.perf_counter()
    plane = _input_planes(job)[index]
    out = io.open_image(job.partial["image"], plan.output_meta)
    out[index] = apply_kernel(plane, estimate["kernel"], device=job.options.device, method=job.options.nonblind)
    out.flush()
    return {"plane": index, "elapsed_s": time.perf_counter() - start}


def deblur_plane(job: FileJob, plan: Plan, index: int) -> dict[str, Any]:
    """Per-plane mode: a blind run on plane ``index``; writes the image, returns the kernel."""
    from .engine.pipeline import deblur

    start = time.perf_counter()
    result = deblur(_input_planes(job)[index], job.options.kernel_size, **job.options.deblur_kwargs())
    out = io.open_image(job.partial["image"], plan.output_meta)
    out[index] = result.image
    out.flush()
    return {
        "plane": index, "kernel": result.kernel, "params": result.params, "device": result.device,
        "final_loss": result.final_loss, "elapsed_s": time.perf_counter() - start,
    }  # fmt: skip


def finish(job: FileJob, plan: Plan, kernels: np.ndarray, report: dict[str, Any]) -> dict[str, Any]:
    """Write the kernel(s) and the JSON report, then move every output into place."""
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
        "options": {**job.options.__dict__, "kernel_size": list(job.options.kernel_size)},
        **report,
    }
    io.write_json(job.partial["report"], summary)
    # The report moves last: its presence is what marks a finished file.
    for key in ("image", "kernel", "report"):
        if job.partial[key].exists():
            _remove(job.outputs[key])
            os.replace(job.partial[key], job.outputs[key])
    return {k: summary[k] for k in ("input", "outputs", "mode", "planes", "device", "final_loss", "elapsed_s")}


def process_file(job: FileJob, callback: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """The whole pipeline for one file in this process; returns a small summary."""
    from .engine.pipeline import deblur

    start = time.perf_counter()
    plan = create_outputs(job, make_plan(job))
    planes = _input_planes(job)
    kwargs = job.options.deblur_kwargs()
    if plan.mode in ("current", "single"):
        index = plan.reference_plane if plan.reference_plane is not None else select_reference_plane(planes)
        result = deblur(planes[index], job.options.kernel_size, callback=callback, **kwargs)
        io.write_image(job.partial["image"], result.image, plan.output_meta)
        kernels, params = result.kernel, {"plane": index, "plane_index": _coords(plan, index), **result.params}
        report = {"device": result.device, "final_loss": result.final_loss, "cancelled": result.cancelled}
    else:
        out = io.open_image(job.partial["image"], plan.output_meta)
        result = deblur_stack(
            planes, job.options.kernel_size, mode=plan.mode, reference_plane=plan.reference_plane,
            callback=callback, out=out, nonblind_method=job.options.nonblind,
            warm_start=job.options.warm_start, warm_iterations=job.options.warm_iterations, **kwargs,
        )  # fmt: skip
        out.flush()
        # Shared mode writes its one kernel; per-plane mode the stack of kernels.
        kernels = result.kernel if plan.mode == "shared" else result.kernels
        params = result.params
        report = {"device": result.device, "final_loss": result.final_loss, "cancelled": result.cancelled}
    report.update(params=params, elapsed_s=time.perf_counter() - start, scheduler="serial")
    return finish(job, plan, kernels, report)


def _coords(plan: Plan, index: int) -> dict[str, int]:
    """Stack-axis coordinates of plane ``index`` (for the report of current mode)."""
    return (
        {a: int(c) for a, c in zip(plan.stack_axes, np.unravel_index(index, plan.stack_shape), strict=True)}
        if plan.stack_axes
        else {}
    )


def _finish_stack(job: FileJob, plan: Plan, estimate: dict | None, parts: list[dict], start: float) -> dict[str, Any]:
    """Dask: the last task of a stack file (runs on a worker, like the others)."""
    if estimate is not None:
        kernels = np.asarray(estimate["kernel"])
        report = {
            "device": estimate["device"], "final_loss": estimate["final_loss"],
            "params": {
                "mode": "shared", "reference_plane": estimate["reference_plane"],
                "nonblind_method": job.options.nonblind, "plane_params": [estimate["params"]],
            },
        }  # fmt: skip
    else:
        parts = sorted(parts, key=lambda p: p["plane"])
        kernels = np.stack([p["kernel"] for p in parts])
        losses = [p["final_loss"] for p in parts]
        report = {
            "device": parts[0]["device"], "final_loss": float(np.mean(losses)),
            "params": {
                "mode": "per-plane", "warm_start": False, "plane_params": [p["params"] for p in parts],
                "plane_final_losses": losses,
            },
        }  # fmt: skip
    report.update(
        elapsed_s=time.time() - start, scheduler="dask", task_seconds=[p["elapsed_s"] for p in parts], cancelled=False
    )
    return finish(job, plan, kernels, report)


# --- Running a batch --------------------------------------------------------------------------


@dataclass
class Outcome:
    """What happened to one job: a summary, or the error that stopped it."""

    job: FileJob
    summary: dict[str, Any] | None = None
    error: BaseException | None = None


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
            _clean_partial(job)
            outcome = Outcome(job, error=err)
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)
    return outcomes


def _clean_partial(job: FileJob) -> None:
    # Best effort: a leftover .partial file is never taken for a result.
    for path in job.partial.values():
        with contextlib.suppress(OSError):
            _remove(path)


def submit_job(client: Any, job: FileJob, plan: Plan, resources: dict | None) -> Any:
    """Submit the tasks of one file; returns the future of its last task."""
    opts = {"retries": 1, "resources": resources, "pure": False}
    start = time.time()
    if plan.mode in ("current", "single"):
        return client.submit(process_file, job, **opts)
    created = client.submit(create_outputs, job, plan, **opts)
    if plan.mode == "shared":
        estimate = client.submit(estimate_kernel, job, created, **opts)
        parts = [client.submit(apply_to_plane, job, created, i, estimate, **opts) for i in range(plan.planes)]
    else:
        estimate = None
        parts = [client.submit(deblur_plane, job, created, i, **opts) for i in range(plan.planes)]
    return client.submit(_finish_stack, job, created, estimate, parts, start, **opts)


def run_dask(client: Any, jobs: list[FileJob], *, on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Process ``jobs`` as tasks on ``client``'s cluster; results are written by the workers."""
    from distributed import as_completed

    resources = {"GPU": 1} if _cluster_has_gpus(client) and jobs and jobs[0].options.device != "cpu" else None
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
            client.submit(_clean_partial, jobs[i], pure=False).result()
            outcomes[i] = Outcome(jobs[i], error=error)
        if on_done is not None:
            on_done(outcomes[i])
    return [outcomes[i] for i in range(len(jobs))]


# --- Clusters ---------------------------------------------------------------------------------


class TorchThreads(WorkerPlugin):
    """Worker plugin: sets torch's thread count on each worker so workers share the cores.

    ``threads`` maps worker addresses to a count; workers not listed (joined later) use
    ``cpu_count // worker threads``.
    """

    name = "napari-selfmsnet-torch-threads"

    def __init__(self, threads: dict[str, int] | int | None = None) -> None:
        self.threads = threads

    def setup(self, worker: Any) -> None:
        """Runs on each worker when it starts (or when the plugin is registered)."""
        import torch

        if isinstance(self.threads, int):
            count = self.threads
        elif isinstance(self.threads, dict) and worker.address in self.threads:
            count = self.threads[worker.address]
        else:
            count = (os.cpu_count() or 1) // max(1, worker.state.nthreads)
        torch.set_num_threads(max(1, count))

    def teardown(self, worker: Any) -> None:
        """Nothing to undo: the thread count dies with the worker."""


def _cluster_has_gpus(client: Any) -> bool:
    workers = client.scheduler_info().get("workers", {})
    return any(w.get("resources", {}).get("GPU") for w in workers.values())


def _threads_per_worker_by_host(client: Any) -> dict[str, int]:
    """torch threads for each worker: that host's cores over all worker threads on the host."""
    workers = client.scheduler_info().get("workers", {})
    cores = client.run(os.cpu_count)
    per_host: dict[str, int] = {}
    for info in workers.values():
        per_host[info["host"]] = per_host.get(info["host"], 0) + int(info["nthreads"])
    return {addr: max(1, (cores.get(addr) or 1) // per_host[info["host"]]) for addr, info in workers.items()}


def start_client(
    scheduler: str, *, workers: int | None = None, device: str = "auto", torch_threads: int | None = None
) -> tuple[Any, Any]:
    """A Dask client: ``"local"`` starts a cluster on this machine, anything else is an address.

    Local cluster on CPU: ``workers`` processes (default: half the cores, at least 1), one
    task thread each, torch threads = cores // workers (or ``torch_threads``, which also
    applies to the workers of an existing cluster). With CUDA GPUs (and ``device`` not
    ``"cpu"``): one worker process per GPU, each seeing only its GPU through
    ``CUDA_VISIBLE_DEVICES`` and advertising the resource ``GPU=1``.

    Returns
    -------
    (client, cluster)
        ``cluster`` is None when joining an existing scheduler; close both when done.
    """
    from distributed import Client, LocalCluster

    if scheduler != "local":
        client = Client(scheduler)
        threads = torch_threads or _threads_per_worker_by_host(client)
        client.register_plugin(TorchThreads(threads), name=TorchThreads.name)
        return client, None
    import torch

    cores = os.cpu_count() or 1
    gpus = torch.cuda.device_count() if device != "cpu" and torch.cuda.is_available() else 0
    if gpus:
        cluster = _gpu_cluster(gpus, workers)
        threads = max(1, cores // len(cluster.workers))
    else:
        n = workers or max(1, cores // 2)
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0", env=_worker_env()
        )
        threads = max(1, cores // n)
    client = Client(cluster)
    client.register_plugin(TorchThreads(torch_threads or threads), name=TorchThreads.name)
    return client, cluster


def _worker_env() -> dict[str, str]:
    """Environment of local worker processes.

    OpenMP threads that spin while waiting make torch many times slower as soon as another
    process wants the same cores (measured: a tiny run took 20 s instead of 0.4 s on a busy
    2-core machine); passive waiting avoids that. A value the user set is kept.
    """
    return {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def _gpu_cluster(gpus: int, workers: int | None) -> Any:
    """One worker process per GPU, pinned by CUDA_VISIBLE_DEVICES (like dask-cuda does)."""
    from distributed import Nanny, Scheduler, SpecCluster

    count = min(gpus, workers) if workers else gpus
    specs = {
        f"gpu-{i}": {
            "cls": Nanny,
            "options": {
                "nthreads": 1,
                "env": {**_worker_env(), "CUDA_VISIBLE_DEVICES": str(i)},
                "resources": {"GPU": 1},
            },
        }
        for i in range(count)
    }
    return SpecCluster(workers=specs, scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}})
