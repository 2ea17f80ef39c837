"""The measurement side of ``speed.py``: what runs inside one case process.

The synthetic inputs the cases are given, and the timing of one case (iterations, a whole
``deblur``, a stack, the kernel step), which :func:`run_case` turns into one record.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import torch
from _common import peak_memory, reset_peak_memory
from scipy.signal import fftconvolve

from napari_selfmsnet import deblur
from napari_selfmsnet.engine.config import SolverConfig, resolve_config
from napari_selfmsnet.engine.devices import device_name, release_memory, resolve_device
from napari_selfmsnet.engine.inputs import check_image, check_kernel_size, to_channels_first
from napari_selfmsnet.engine.intensity import IntensityMap
from napari_selfmsnet.engine.kernel_step import estimate_kernel, solve_kernel
from napari_selfmsnet.engine.nonblind import deconvolve
from napari_selfmsnet.engine.optimizer import optimize
from napari_selfmsnet.engine.polish import polish_kernel
from napari_selfmsnet.engine.regions import resolve_region  # the API's own choice of window
from napari_selfmsnet.engine.stack import deblur_stack
from napari_selfmsnet.evaluation import synth

#: Side of the phantom tile the synthetic frames are mirrored from.
PHANTOM_TILE = 384


def build_config(preset: str, overrides: dict, method: str) -> SolverConfig:
    """The preset with ``overrides`` (SolverConfig fields) and the method's scales."""
    return replace(resolve_config(preset, method), **overrides)


# --------------------------------------------------------------------------------------
# Synthetic inputs
# --------------------------------------------------------------------------------------


@cache
def _phantom_tile(seed: int) -> np.ndarray:
    return synth.phantom((PHANTOM_TILE, PHANTOM_TILE), seed)


def sharp_object(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A fluorescence-like object of any ``shape``: mirrored tiles of one phantom.

    ``synth.phantom`` costs time in proportion to area times object count, too slow for
    2048 px frames; mirroring keeps the tiles seamless.
    """
    tile = _phantom_tile(seed)
    block = np.block([[tile, tile[:, ::-1]], [tile[::-1], tile[::-1, ::-1]]])
    reps = (math.ceil(shape[0] / block.shape[0]), math.ceil(shape[1] / block.shape[1]))
    return np.tile(block, reps)[: shape[0], : shape[1]]


def _blur(sharp: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    # Valid true convolution, as synth.blur_valid, by FFT: the direct one needs k^2 x H x W
    # memory for a 75 px kernel. Round-off negatives are clipped for the Poisson noise.
    return np.clip(fftconvolve(sharp, kernel, mode="valid"), 0, None)


def synthetic_frame(size: int, kernel_size: int, seed: int = 0) -> np.ndarray:
    """A ``size`` x ``size`` uint16 frame blurred by a motion kernel, with camera noise."""
    kernel = synth.motion_kernel(kernel_size, seed)
    padded = size + kernel_size - 1
    blurred = _blur(sharp_object((padded, padded), seed), kernel)
    return synth.add_noise(blurred, seed + 1)


def synthetic_stack(planes: int, size: int, kernel_size: int, seed: int = 0) -> np.ndarray:
    """``planes`` frames of one object drifting by a pixel per plane, independent noise."""
    kernel = synth.motion_kernel(kernel_size, seed)
    padded = size + kernel_size - 1
    blurred = _blur(sharp_object((padded, padded + planes - 1), seed), kernel)
    rng = synth.make_rng(seed + 1)
    return np.stack([synth.add_noise(blurred[:, i : i + size], rng) for i in range(planes)])


class InputCache:
    """Synthetic inputs saved once as ``.npy`` files in ``folder``, for the case processes."""

    def __init__(self, folder: Path, seed: int) -> None:
        self.folder = Path(folder)
        self.seed = seed

    def frame(self, size: int, kernel: int) -> str:
        path = self.folder / f"frame_{size}_{kernel}.npy"
        if not path.exists():
            np.save(path, synthetic_frame(size, kernel, self.seed))
        return str(path)

    def stack(self, planes: int, size: int, kernel: int) -> str:
        path = self.folder / f"stack_{planes}_{size}_{kernel}.npy"
        if not path.exists():
            np.save(path, synthetic_stack(planes, size, kernel, self.seed))
        return str(path)


# --------------------------------------------------------------------------------------
# One case, in its own process
# --------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _pin_cudnn_benchmark(enabled: bool) -> None:
    """Keep cuDNN autotuning at ``enabled`` for this process.

    The optimizer switches autotuning on for every CUDA run and has no setting for it; to
    measure it off, this case process makes later assignments to the flag no-ops.
    """
    from torch.backends import ContextProp

    torch._C._set_cudnn_benchmark(enabled)
    type(torch.backends.cudnn).benchmark = ContextProp(torch._C._get_cudnn_benchmark, lambda _value: None)


def _memory(device: torch.device) -> dict:
    out = peak_memory(device)
    if device.type == "cuda":
        reserved = torch.cuda.max_memory_reserved(device)
        out["gpu_peak_reserved_mib"] = round(reserved / 2**20, 1)
    return out


def _timed_count(config: SolverConfig, warmup: int, requested: int) -> int:
    """Whole kernel-step periods, leaving the run's last iteration (it also packs up)."""
    period = config.kernel_every
    count = math.ceil(requested / period) * period
    count = min(count, config.iterations - warmup - 1)
    if count < 1:
        raise ValueError(
            f"the configuration runs {config.iterations} iterations: too few to time "
            f"{warmup} warm-up + {requested}; lower --warmup or raise --config-iterations"
        )
    return count


def time_optimizer(
    observation: torch.Tensor,
    kernel_shape: tuple[int, int],
    config: SolverConfig,
    warmup: int,
    timed: int,
) -> tuple[list[float], object]:
    """Wall time of each of the first ``warmup + timed`` iterations, and the last state."""
    device = observation.device
    run = optimize(observation, kernel_shape, config, seed=0, progress_every=1)
    times: list[float] = []
    state = None
    tick = time.perf_counter()
    try:
        for state in run:
            _sync(device)
            now = time.perf_counter()
            times.append(now - tick)
            tick = now
            if len(times) == warmup + timed:
                break
    finally:
        run.close()
    return times, state


def time_nonblind_stages(
    unit: np.ndarray,
    unit_window: np.ndarray,
    kernel: np.ndarray,
    config: SolverConfig,
    device: torch.device,
) -> dict:
    """The stages after the blind one, as ``deblur`` runs them: polish rounds on the region,
    then the sparse deconvolution of the whole frame (each only when the run does it)."""
    out = {
        "polish_rounds": 0,
        "polish_s": 0.0,
        "deconvolve_s": 0.0,
        "deconvolved": None,
    }
    if config.final == "nonblind":
        start = time.perf_counter()
        kernel = polish_kernel(unit_window, kernel, config, device)
        _sync(device)
        out.update(polish_rounds=config.polish_rounds, polish_s=time.perf_counter() - start)
    if config.final == "nonblind" or unit_window.shape != unit.shape:
        start = time.perf_counter()
        deconvolve(unit, kernel, method="sparse", device=device)
        out.update(deconvolve_s=time.perf_counter() - start, deconvolved=list(unit.shape))
    return out


def measure_iterations(case: dict, device: torch.device) -> dict:
    """Seconds per iteration, time to the result and peak memory of one configuration."""
    config = build_config(case["preset"], case["overrides"], case["method"])
    image = check_image(np.load(case["image"]))
    kernel_shape = check_kernel_size(case["kernel"], image.shape[:2])
    warmup = case["warmup"]
    timed = _timed_count(config, warmup, case["iterations"])
    record = {"width": config.width, "iterations": config.iterations}
    record["memory"] = {"before": _memory(device)}

    start = time.perf_counter()
    window = resolve_region(case["region"], image, kernel_shape)
    intensity = IntensityMap.fit(image, config.headroom)
    unit = intensity.to_unit(image)
    unit_window = unit[window.slices]
    observation = torch.from_numpy(to_channels_first(unit_window))[None].to(device)
    _sync(device)
    setup_s = time.perf_counter() - start

    times, state = time_optimizer(observation, kernel_shape, config, warmup, timed)
    if len(times) < warmup + timed:
        raise RuntimeError(f"the optimizer stopped after {len(times)} iterations")
    per_iteration = sum(times[warmup:]) / timed
    record["memory"]["iterations"] = _memory(device)
    kernel = state.kernel.detach().cpu().numpy().astype(np.float32)
    del observation, state
    release_memory(device)
    nonblind = time_nonblind_stages(unit, unit_window, kernel / kernel.sum(), config, device)
    first_s = sum(times[:warmup])
    record.update(
        region=window.to_list(),
        setup_s=setup_s,
        warmup_iterations=warmup,
        iterations_timed=timed,
        first_iterations_s=first_s,
        seconds_per_iteration=per_iteration,
        iteration_times_s=times,
        nonblind_stages=nonblind,
        time_to_result_kind="projected",
        projected_time_to_result_s=setup_s
        + first_s
        + per_iteration * (config.iterations - warmup)
        + nonblind["polish_s"]
        + nonblind["deconvolve_s"],
    )
    record["time_to_result_s"] = record["projected_time_to_result_s"]
    if config.compile:
        record["compile_overhead_s"] = first_s - warmup * per_iteration
    if case["end_to_end"]:
        try:
            record.update(measure_end_to_end(case, config, image, device))
        except Exception as error:  # noqa: BLE001 - keep the projection, say why
            record["end_to_end_error"] = f"{type(error).__name__}: {str(error)[:1000]}"
    record["memory"]["peak"] = _memory(device)
    return record


def measure_end_to_end(case: dict, config: SolverConfig, image: np.ndarray, device: torch.device) -> dict:
    """The wall time of one full ``deblur`` call with the configuration's iterations."""
    start = time.perf_counter()
    result = deblur(
        image,
        case["kernel"],
        method=case["method"],
        preset=config,
        device=str(device),
        region=case["region"],
    )
    return {
        "time_to_result_kind": "measured",
        "time_to_result_s": time.perf_counter() - start,
        "deblur_elapsed_s": result.elapsed_s,
        "iterations_run": result.iterations_run,
        "region": result.params["region"],
    }


def measure_stack(case: dict, device: torch.device) -> dict:
    """Planes per minute of ``deblur_stack`` in one mode."""
    config = build_config(case["preset"], case["overrides"], case["method"])
    stack = np.load(case["stack"], mmap_mode="r")
    mode = "shared" if case["mode"] == "shared" else "per-plane"
    before = _memory(device)
    result = deblur_stack(
        stack,
        case["kernel"],
        mode=mode,
        warm_planes=case["mode"] == "per-plane",
        method=case["method"],
        preset=config,
        device=str(device),
    )
    return {
        "width": config.width,
        "iterations": config.iterations,
        "elapsed_s": result.elapsed_s,
        "planes_per_minute": 60 * stack.shape[0] / result.elapsed_s,
        "iterations_per_blind_run": [len(h) for h in result.histories],
        "memory": {"before": before, "peak": _memory(device)},
    }


def _dense_centering_solve(
    z: torch.Tensor, denominator: torch.Tensor, size: tuple[int, int], gamma: float
) -> torch.Tensor:
    """The reference's way: build I + a u^T + b v^T as a dense complex matrix, solve it."""
    kh, kw = z.shape
    rows = (torch.arange(kh, dtype=z.dtype) - kh // 2) / kh
    cols = (torch.arange(kw, dtype=z.dtype) - kw // 2) / kw
    u = rows[:, None].expand(kh, kw).reshape(-1)
    v = cols[None, :].expand(kh, kw).reshape(-1)

    def p_inverse(t: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft2(t.reshape(kh, kw), s=size) / denominator
        return torch.fft.irfft2(spectrum, s=size)[:kh, :kw].reshape(-1)

    a, b = gamma * p_inverse(u), gamma * p_inverse(v)
    dense = (
        torch.eye(kh * kw, dtype=torch.complex64)
        + torch.outer(a, u).to(torch.complex64)
        + torch.outer(b, v).to(torch.complex64)
    )
    solution = torch.linalg.solve(dense, z.reshape(-1).to(torch.complex64))
    return solution.real.reshape(kh, kw)


def time_kernel_step(size: int, kernel: int, repeats: int, device: torch.device, dense: bool) -> dict:
    """The whole kernel step (edge mask, solve, clean-up); optionally the dense solve."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((1, 1, size, size)).astype(np.float32)).to(device)
    y = torch.from_numpy(rng.random((1, 1, size, size)).astype(np.float32)).to(device)
    kwargs = {
        "lam": 1e-6,
        "gamma": 1e-6,
        "support_factor": 2.0,
        "prune_fraction": 0.01,
        "edge_percentile": 90.0,
    }
    estimate_kernel(x, y, (kernel, kernel), **kwargs)
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        estimate_kernel(x, y, (kernel, kernel), **kwargs)
    _sync(device)
    seconds = (time.perf_counter() - start) / repeats
    out = {"size": size, "kernel": kernel, "seconds_per_call_woodbury": seconds}
    if dense:
        xs, ys = x[0, 0].cpu(), y[0, 0].cpu()
        z = solve_kernel(xs, ys, (kernel, kernel), lam=1e-6, gamma=0.0)
        spectrum = torch.fft.rfft2(xs)
        denominator = spectrum.real**2 + spectrum.imag**2 + 1e-3
        start = time.perf_counter()
        _dense_centering_solve(z, denominator, (size, size), 1e-3)
        out["seconds_dense_centering_solve_cpu"] = time.perf_counter() - start
    return out


def _out_of_memory(error: BaseException) -> bool:
    cuda_oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(error, (MemoryError, cuda_oom)) or (
        "out of memory" in str(error).lower() or "can't allocate memory" in str(error).lower()
    )


def run_case(case: dict) -> dict:
    """Measure one case in this process; errors become a ``failed`` record."""
    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    device = resolve_device(case["device"])
    if device.type == "cuda" and case.get("cudnn_benchmark") is not None:
        _pin_cudnn_benchmark(case["cudnn_benchmark"])
    reset_peak_memory(device)
    start = time.perf_counter()
    try:
        if case["kind"] == "iterations":
            record = measure_iterations(case, device)
        elif case["kind"] == "stack":
            record = measure_stack(case, device)
        else:
            record = time_kernel_step(case["size"], case["kernel"], case["repeats"], device, dense=True)
        record["status"] = "ok"
    except Exception as error:  # noqa: BLE001 - any failure is a result to record
        record = {
            "status": "failed",
            "error": f"{type(error).__name__}: {str(error)[:1000]}",
            "out_of_memory": _out_of_memory(error),
            "memory": {"peak": _memory(device)},
        }
    record.update(device_name=device_name(device), wall_s=time.perf_counter() - start)
    return record
