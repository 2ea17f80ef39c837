"""Dask clusters for batches: a local one sized to the machine, or an existing one joined.

Workers share the cores: each worker process runs one task at a time with
``cores // workers`` torch threads (:class:`TorchThreads`); with CUDA GPUs, one worker per GPU,
each seeing only its own.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster, WorkerPlugin

__all__ = ["TorchThreads", "cluster_has_gpus", "start_client"]


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
        if isinstance(self.threads, int):
            count = self.threads
        elif isinstance(self.threads, dict) and worker.address in self.threads:
            count = self.threads[worker.address]
        else:
            count = (os.cpu_count() or 1) // max(1, worker.state.nthreads)
        torch.set_num_threads(max(1, count))

    def teardown(self, worker: Any) -> None:
        """Nothing to undo: the thread count dies with the worker."""


def cluster_has_gpus(client: Any) -> bool:
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
    if scheduler != "local":
        client = Client(scheduler)
        threads = torch_threads or _threads_per_worker_by_host(client)
        client.register_plugin(TorchThreads(threads), name=TorchThreads.name)
        return client, None
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
    process wants the same cores; passive waiting avoids that. A value the user set is kept.
    """
    return {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def _gpu_cluster(gpus: int, workers: int | None) -> Any:
    """One worker process per GPU, pinned by CUDA_VISIBLE_DEVICES (like dask-cuda does)."""
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
