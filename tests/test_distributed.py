"""Dask-distributed batches: the same outputs as a serial run, retries, failures, GPU pinning."""

from __future__ import annotations

import json
import os

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from _tiny_run import FAST, KSIZE, counts
from scipy import ndimage, signal

from napari_selfmsnet.batch.cli import main
from napari_selfmsnet.batch.dask_runner import run_dask, submit_job
from napari_selfmsnet.batch.jobs import FileJob, RunOptions, plan_jobs
from napari_selfmsnet.batch.plan import make_plan
from napari_selfmsnet.batch.serial import run_serial

distributed = pytest.importorskip("distributed")

OPTIONS = RunOptions((KSIZE, KSIZE), method="self-msnet-s", iterations=3, device="cpu", nonblind="wiener")


def _blurred(rng, shape):
    kernel = np.eye(KSIZE) / KSIZE
    planes = [
        signal.convolve2d(
            ndimage.gaussian_filter((rng.random((40 + KSIZE - 1,) * 2) > 0.97) * 1.0, 1.0), kernel, mode="valid"
        )
        for _ in range(int(np.prod(shape[:-2])))
    ]
    out = np.stack(planes).reshape(shape)
    return (out / out.max() * 200 + 20).astype(np.uint8 if len(shape) == 2 else np.uint16)


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes, torch limited to 1 thread each (as --torch-threads 1)."""
    from distributed import Client, LocalCluster

    from napari_selfmsnet.batch.clusters import TorchThreads

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
        with Client(local) as client:
            client.register_plugin(TorchThreads(1), name=TorchThreads.name)
            yield local, client


@pytest.fixture
def four_files(tmp_path):
    rng = np.random.default_rng(5)
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        iio.imwrite(folder / f"{name}.png", _blurred(rng, (40, 40)))
    for name in ("c", "d"):
        tifffile.imwrite(folder / f"{name}.tif", _blurred(rng, (3, 40, 40)), imagej=True, metadata={"axes": "ZYX"})
    return folder


def _outputs(folder):
    return {p.name: tifffile.imread(p) for p in sorted(folder.glob("*.tif"))}


def _same(serial, parallel):
    assert serial.keys() == parallel.keys() and len(serial) == 8
    for name in serial:
        np.testing.assert_array_equal(serial[name], parallel[name], err_msg=name)


def test_workers_use_one_torch_thread(cluster):
    _, client = cluster
    import torch

    assert set(client.run(torch.get_num_threads).values()) == {1}


@pytest.mark.parametrize("mode", ["shared", "per-plane"])
def test_cluster_matches_serial(cluster, four_files, tmp_path, mode):
    """Four files as tasks on two workers: the very same numbers as one after the other."""
    import torch

    _, client = cluster
    # Dask runs every plane as its own task, so the serial run must not warm-start planes.
    options = RunOptions(**{**OPTIONS.__dict__, "stack_mode": mode, "warm_planes": False})
    files = sorted(four_files.iterdir())
    serial_jobs, _, _ = plan_jobs(files, tmp_path / "serial", options, overwrite=False)
    dask_jobs, _, _ = plan_jobs(files, tmp_path / "dask", options, overwrite=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' count: CPU results depend on it
    try:
        serial = run_serial(serial_jobs)
    finally:
        torch.set_num_threads(threads)
    parallel = run_dask(client, dask_jobs)
    assert [o.error for o in serial + parallel] == [None] * 8
    _same(_outputs(tmp_path / "serial"), _outputs(tmp_path / "dask"))
    report = json.loads((tmp_path / "dask" / "c.json").read_text())
    assert report["scheduler"] == "dask" and report["mode"] == mode and len(report["task_seconds"]) == 3
    # One stack report for both runners: the same fields, and here the same values.
    serial_report = json.loads((tmp_path / "serial" / "c.json").read_text())
    assert report["params"] == serial_report["params"] and report["warnings"] == serial_report["warnings"]
    assert report["final_loss"] == serial_report["final_loss"] and report["device"] == serial_report["device"]


@pytest.mark.parametrize("mode", ["shared", "per-plane"])
def test_bad_planes_and_a_measured_kernel_size_as_in_serial(cluster, tmp_path, mode):
    """Blank and NaN planes passed through and named, the size measured once: the same report."""
    import torch

    _, client = cluster
    stack = _blurred(np.random.default_rng(3), (4, 40, 40)).astype(np.float32)
    stack[0] = 7.0  # per-plane: the first usable plane (1) measures the size
    stack[2, :3, :3] = np.nan  # shared: asked for as the reference, so another is chosen
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "ZYX"})
    options = RunOptions(
        **{**OPTIONS.__dict__, "kernel_size": "auto", "stack_mode": mode, "warm_planes": False, "plane": 2}
    )
    serial_jobs, _, _ = plan_jobs([path], tmp_path / "serial", options, overwrite=False)
    dask_jobs, _, _ = plan_jobs([path], tmp_path / "dask", options, overwrite=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (serial,) = run_serial(serial_jobs)
    finally:
        torch.set_num_threads(threads)
    (parallel,) = run_dask(client, dask_jobs)
    assert serial.error is None and parallel.error is None, (serial.error, parallel.error)
    for name in ("s_deblurred.tif", "s_kernel.tif"):
        serial_out, dask_out = (tifffile.imread(tmp_path / folder / name) for folder in ("serial", "dask"))
        np.testing.assert_array_equal(serial_out, dask_out, err_msg=name)
    reports = [json.loads((tmp_path / folder / "s.json").read_text()) for folder in ("serial", "dask")]
    assert reports[0]["params"] == reports[1]["params"] and reports[0]["warnings"] == reports[1]["warnings"]
    assert reports[1]["params"]["passed_through_planes"] == [0, 2]
    assert [w.split(":")[0] for w in reports[1]["warnings"] if "passed through" in w] == ["plane 0", "plane 2"]
    out = tifffile.imread(tmp_path / "dask" / "s_deblurred.tif")
    np.testing.assert_array_equal(out[[0, 2]], stack[[0, 2]])
    if mode == "per-plane":
        sources = [p and p["kernel_size_source"] for p in reports[1]["params"]["plane_params"]]
        assert sources == [None, "measured", None, "given"]
    else:
        assert reports[1]["warnings"][0].startswith("plane 2, the reference plane asked for, cannot be deblurred")


def test_cli_joins_an_existing_scheduler(cluster, four_files, tmp_path, capsys):
    local, _ = cluster
    args = [
        "deblur",
        str(four_files),
        "--output-dir",
        str(tmp_path / "o"),
        "--scheduler",
        local.scheduler_address,
        *FAST,
    ]
    assert main(args) == 0
    assert counts(capsys.readouterr().out) == (4, 0, 0)
    assert main(["deblur", str(four_files), "--output-dir", str(tmp_path / "serial"), *FAST]) == 0
    _same(_outputs(tmp_path / "serial"), _outputs(tmp_path / "o"))


def test_failed_file_is_reported_and_others_finish(cluster, four_files, tmp_path):
    _, client = cluster
    (four_files / "e.tif").write_bytes(b"broken")
    jobs, _, _ = plan_jobs(sorted(four_files.iterdir()), tmp_path / "o", OPTIONS, overwrite=False)
    outcomes = run_dask(client, jobs)
    errors = {o.job.input.name: o.error for o in outcomes}
    assert [name for name, err in errors.items() if err is not None] == ["e.tif"]
    assert "not a TIFF file" in str(errors["e.tif"])
    assert len(list((tmp_path / "o").glob("*_deblurred.tif"))) == 4
    assert not list((tmp_path / "o").glob("*partial*"))


def test_a_stack_plane_that_fails_fails_its_file(cluster, tmp_path):
    """A task error inside a stack (here: a plane file truncated after planning) is not dropped."""
    _, client = cluster
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, _blurred(np.random.default_rng(0), (3, 40, 40)), imagej=True, metadata={"axes": "ZYX"})
    (job,), _, _ = plan_jobs([path], tmp_path / "o", OPTIONS, overwrite=False)
    plan = make_plan(job)
    path.write_bytes(path.read_bytes()[:400])  # the pixel data is gone
    future = submit_job(client, job, plan, None)
    with pytest.raises(ValueError, match="failed to read"):
        future.result()
    assert not (tmp_path / "o" / "s.json").exists()


class _SubmitRecorder:
    """Stands in for a Client: records the keyword arguments of every submit."""

    def __init__(self):
        self.calls = []

    def submit(self, func, *args, **kwargs):
        self.calls.append((func.__name__, kwargs))
        return object()


def test_every_task_is_retried_once(tmp_path):
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, np.zeros((3, 40, 40), np.uint16), imagej=True, metadata={"axes": "ZYX"})
    for mode, expected in (("shared", ["create_outputs", "estimate_kernel_task", *["deconvolve_plane_task"] * 3, "write_outputs_task"]),
                           ("per-plane", ["create_outputs", *["deblur_plane_task"] * 3, "write_outputs_task"])):  # fmt: skip
        job = FileJob(
            path,
            {"image": tmp_path / "i.tif", "kernel": tmp_path / "k.tif", "report": tmp_path / "r.json"},
            RunOptions((5, 5), stack_mode=mode),
        )
        client = _SubmitRecorder()
        submit_job(client, job, make_plan(job), {"GPU": 1})
        assert [name for name, _ in client.calls] == expected
        assert all(kw["retries"] == 1 and kw["resources"] == {"GPU": 1} for _, kw in client.calls)


def test_gpu_workers_are_pinned_one_per_gpu():
    """The cluster built when torch sees GPUs: one worker per GPU, each with its own device."""
    from distributed import Client

    from napari_selfmsnet.batch.clusters import _gpu_cluster, cluster_has_gpus

    with _gpu_cluster(2, None) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert sorted(seen.values()) == ["0", "1"]
        assert cluster_has_gpus(client)
        resources = [w["resources"] for w in client.scheduler_info()["workers"].values()]
        assert resources == [{"GPU": 1}, {"GPU": 1}]


def test_local_cluster_is_sized_to_the_machine():
    from napari_selfmsnet.batch.clusters import start_client

    client, cluster = start_client("local", workers=2, device="cpu", torch_threads=1)
    try:
        import torch

        workers = client.scheduler_info()["workers"].values()
        assert len(workers) == 2 and all(w["nthreads"] == 1 for w in workers)
        assert set(client.run(torch.get_num_threads).values()) == {1}
        assert set(client.run(lambda: os.environ.get("OMP_WAIT_POLICY")).values()) == {
            os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
        }
    finally:
        client.close()
        cluster.close()


def test_unreachable_scheduler_fails_cleanly(four_files, tmp_path, capsys):
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        status = main(
            [
                "deblur",
                str(four_files / "a.png"),
                "--output-dir",
                str(tmp_path / "o"),
                "--scheduler",
                "tcp://127.0.0.1:9",
                *FAST,
            ]
        )
    captured = capsys.readouterr()
    assert status == 1
    assert "cannot start or reach the Dask scheduler 'tcp://127.0.0.1:9'" in captured.err
    assert counts(captured.out) == (0, 0, 1)
