"""Speed of the engine: time per iteration, time to the result, peak memory, throughput.

Sections (``--sections``; all by default), every figure from one machine in one run:

``sweep``
    For each device, configuration, image size and kernel size: seconds per iteration, the
    time to the final result and the peak memory. The configurations are ``faithful`` (the
    ``quality`` preset, i.e. the paper's settings, on the whole frame: ``region="full"``,
    the generator's output as the result) and every preset in ``PRESETS`` as a user runs it
    (``region="auto"``: frames above 512 px fit the kernel on a 384 px window, then the frame
    is deconvolved). ``ratios``: faithful time to result / preset time to result, for each
    size and kernel where both were measured.
``switches``
    For one size and kernel: seconds per iteration with each speed setting on and off, one
    at a time from each preset's defaults: mixed precision, ``channels_last``,
    ``torch.compile`` (its compile time reported apart from the steady state), the kernel
    step every 4 iterations, and on CUDA cuDNN autotuning. On the CPU ``amp="auto"`` means
    off; bfloat16 is then forced and labelled so.
``stack``
    Planes per minute for a synthetic stack with the ``fast`` preset: one shared kernel,
    and a kernel per plane with and without warm starts.
``kernel_step``
    The kernel step alone, with the centring terms solved by Sherman-Morrison-Woodbury (ours)
    and by the dense ``k^2 x k^2`` complex solve the reference implementation performs.

How it is measured
    Every case runs in its own process (``speed.py --case JSON`` prints one JSON line), so
    its peak memory (CPU: ``ru_maxrss`` of that process, imports included, with the figure
    before the work as ``memory.before``; CUDA: ``torch.cuda.max_memory_allocated``) is its
    own, and a case that runs out of memory or past ``--timeout`` is recorded as failed
    instead of ending the sweep. Inputs are synthetic: ``core.synth`` phantoms (filaments and
    beads, mirrored tiles of a 384 px phantom for large frames) blurred by a motion kernel
    of the case's size, with Poisson and read noise, as uint16 counts.

    Seconds per iteration: the optimizer runs on the same window and normalised
    observation as :func:`napari_selfmsnet.deblur`, with the configuration's own schedule;
    after ``--warmup`` iterations, ``--iterations`` more are timed (rounded up to whole
    kernel-step periods), reading the loss back and synchronising CUDA after every one. These
    are a run's first iterations (the SSIM-loss phase, slightly dearer than the later MSE
    phase), so projections err on the slow side.

    Time to the final result, labelled ``time_to_result_kind``: ``"projected"`` (default) is
    setup (region choice, intensity fit, transfer) + the warm-up iterations + seconds per
    iteration x the remaining iterations + the finishing stage, timed directly (the polish
    rounds of :func:`~napari_selfmsnet.core.refine.polish_kernel` on the region and the
    full-frame sparse :func:`~napari_selfmsnet.core.nonblind.deconvolve`, each when the
    configuration does them); ``"measured"`` (``--end-to-end``) is the wall time of a full
    ``deblur`` call with the configuration's iterations.

    Not measured, and said so in the output: ``faithful`` above ``--faithful-max-size`` (512
    on the CPU: a 128-channel network on the whole frame would take hours per run there), and
    kernels larger than half the image.

Output
    ``--out`` JSON, rewritten after every case: ``settings`` (the command line), ``machines``
    (per device: CPU, GPU and memory, threads, versions, commit), ``configs`` (each
    configuration's preset, overrides, region rule and full SolverConfig), then one record
    per case in ``sweep``, ``switches``, ``stack`` and ``kernel_step`` (its labels;
    ``status`` ok / failed / timeout / skipped with ``error`` or ``reason``; the figures;
    ``memory`` before / after the iterations / peak; ``same_measurement_as`` where an
    identical case, such as ``quality`` = ``faithful`` up to 512 px, was measured once), and
    the derived ``ratios`` and ``switch_comparisons``. The markdown tables are printed and,
    with ``--markdown``, written.

Usage::

    python benchmarks/speed.py --out results/speed_cpu.json --markdown results/speed_cpu.md
    python benchmarks/speed.py --out results/speed_gpu.json --devices cuda \\
        --stack-planes 50 --stack-size 1024
    python benchmarks/speed.py --out /tmp/s.json --sizes 64 128 --kernels 7 15 --iterations 2 \\
        --width 4 --config-iterations 12 --stack-planes 2 --stack-size 96   # smoke test only
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np
import torch
from _common import (
    fmt,
    machine_info,
    markdown_table,
    peak_memory,
    reset_peak_memory,
    run_json_subprocess,
    write_json,
    write_text,
)
from scipy.signal import fftconvolve

from napari_selfmsnet import PRESETS, deblur
from napari_selfmsnet.core import synth
from napari_selfmsnet.core.config import SolverConfig, resolve_config
from napari_selfmsnet.core.devices import device_name, release_memory, resolve_device
from napari_selfmsnet.core.kernel_step import estimate_kernel, solve_kernel
from napari_selfmsnet.core.nonblind import deconvolve
from napari_selfmsnet.core.optimizer import optimize
from napari_selfmsnet.core.refine import polish_kernel
from napari_selfmsnet.core.regions import (
    AUTO_REGION_THRESHOLD,
    resolve_region,  # the API's own choice of window
)
from napari_selfmsnet.core.validation import (
    IntensityMap,
    check_image,
    check_kernel_size,
    to_channels_first,
)
from napari_selfmsnet.stack import deblur_stack

SECTIONS = ("sweep", "switches", "stack", "kernel_step")
FAITHFUL = "faithful"
STACK_MODES = ("shared", "per-plane", "per-plane-cold")
#: Side of the phantom tile the synthetic frames are mirrored from.
PHANTOM_TILE = 384


# --------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------


def config_spec(name: str) -> tuple[str, dict, str]:
    """``(preset, overrides, region)`` of a configuration named on the command line."""
    if name == FAITHFUL:
        return "quality", {"final": "generator"}, "full"
    if name in PRESETS:
        return name, {}, "auto"
    raise ValueError(f"unknown configuration {name!r}; choose from {config_names()}")


def config_names() -> list[str]:
    return [FAITHFUL, *PRESETS]


def build_config(preset: str, overrides: dict, method: str) -> SolverConfig:
    """The preset with ``overrides`` (SolverConfig fields) and the method's scales."""
    return resolve_config(replace(PRESETS[preset], **overrides), method, None)


def effective_settings(config: SolverConfig, device_type: str, cudnn_benchmark: bool | None) -> dict:
    """The speed settings a run really uses on ``device_type`` ("auto" resolved)."""
    cuda = device_type == "cuda"
    amp = "off" if config.amp == "auto" and not cuda else config.amp
    memory = config.memory_format
    if memory == "auto":
        memory = "channels_last" if cuda else "contiguous"
    return {
        "amp": amp,
        "memory_format": memory,
        "compile": config.compile,
        "kernel_every": config.kernel_every,
        "cudnn_benchmark": (cudnn_benchmark is not False) if cuda else None,
    }


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
    run = optimize(observation, kernel_shape, replace(config, preview_every=1), seed=0)
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


def time_finishing(
    unit: np.ndarray,
    unit_window: np.ndarray,
    kernel: np.ndarray,
    config: SolverConfig,
    device: torch.device,
) -> dict:
    """The stage after the optimizer, as ``deblur`` runs it: polish rounds on the region,
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
        out.update(polish_rounds=config.refine_rounds, polish_s=time.perf_counter() - start)
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
    finishing = time_finishing(unit, unit_window, kernel / kernel.sum(), config, device)
    first_s = sum(times[:warmup])
    record.update(
        region=window.to_list(),
        setup_s=setup_s,
        warmup_iterations=warmup,
        iterations_timed=timed,
        first_iterations_s=first_s,
        seconds_per_iteration=per_iteration,
        iteration_times_s=times,
        finishing=finishing,
        time_to_result_kind="projected",
        projected_time_to_result_s=setup_s
        + first_s
        + per_iteration * (config.iterations - warmup)
        + finishing["polish_s"]
        + finishing["deconvolve_s"],
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
        warm_start=case["mode"] == "per-plane",
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


# --------------------------------------------------------------------------------------
# The run: plans cases, starts their processes, collects the records
# --------------------------------------------------------------------------------------

#: Label fields that name a record in the log and in ``same_measurement_as``.
_NAME_FIELDS = ("device", "config", "switch", "state", "mode", "size", "kernel")


class Runner:
    """Runs cases in child processes, reuses identical measurements, saves as it goes.

    Each case gets an empty compiler cache (``TORCHINDUCTOR_CACHE_DIR``,
    ``TRITON_CACHE_DIR``), so ``torch.compile`` times are those of a first run.
    """

    def __init__(self, args: argparse.Namespace, report: dict, scratch: Path) -> None:
        self.args = args
        self.report = report
        self.scratch = scratch
        self.done: dict[str, dict] = {}
        self.env = dict(os.environ)
        if args.threads:
            for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                self.env[name] = str(args.threads)

    def measure(self, section: str, label: dict, case: dict) -> None:
        """Record ``case`` under ``label``; a case identical to an earlier one reuses it."""
        identity = json.dumps(case.pop("identity", case), sort_keys=True)
        name = f"{section}:" + "/".join(str(label[k]) for k in _NAME_FIELDS if k in label)
        if identity in self.done:
            first = self.done[identity]
            record = {**first["record"], **label, "same_measurement_as": first["name"]}
        else:
            record = {**label, **self._run(case)}
            self.done[identity] = {"record": record, "name": name}
        self._add(section, record, name)

    def skip(self, section: str, label: dict, reason: str) -> None:
        record = {**label, "status": "skipped", "reason": reason}
        name = "/".join(str(label[k]) for k in _NAME_FIELDS if k in label)
        self._add(section, record, f"{section}:{name}")

    def _run(self, case: dict) -> dict:
        cache = self.scratch / f"compile_cache_{len(self.done)}"
        env = {
            **self.env,
            "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
            "TRITON_CACHE_DIR": str(cache / "triton"),
        }
        command = [sys.executable, str(Path(__file__).resolve()), "--case"]
        return run_json_subprocess([*command, json.dumps(case)], self.args.timeout, env)

    def _add(self, section: str, record: dict, name: str) -> None:
        self.report[section].append(record)
        write_json(self.args.out, self.report)
        figure = record.get("seconds_per_iteration") or record.get("planes_per_minute")
        status = record["status"]
        detail = fmt(figure) if status == "ok" else record.get("error", record.get("reason"))
        print(f"{name}: {status} {detail}", file=sys.stderr, flush=True)


def _overrides(args: argparse.Namespace, overrides: dict) -> dict:
    """``overrides`` plus the debug ones (``--width``, ``--config-iterations``)."""
    out = dict(overrides)
    if args.width:
        out["width"] = args.width
    if args.config_iterations:
        out["iterations"] = args.config_iterations
    return out


def iteration_case(args, device: torch.device, name: str, size: int, kernel: int, change=None) -> dict:
    """A case of kind ``iterations``: configuration ``name`` with ``change`` applied.

    Its ``identity`` holds what the measurement depends on (the settings as the device
    resolves them, the window rule), so equal cases are measured once.
    """
    preset, overrides, region = config_spec(name)
    overrides = _overrides(args, {**overrides, **(change or {})})
    cudnn = overrides.pop("cudnn_benchmark", None)
    config = build_config(preset, overrides, args.method)
    whole = region == "full" or size <= AUTO_REGION_THRESHOLD
    case = {
        "kind": "iterations",
        "device": str(device),
        "threads": args.threads,
        "method": args.method,
        "preset": preset,
        "overrides": overrides,
        "cudnn_benchmark": cudnn,
        "region": region,
        "image": f"frame_{size}_{kernel}.npy",
        "kernel": kernel,
        "warmup": max(args.warmup, 3) if config.compile else args.warmup,
        "iterations": args.iterations,
        "end_to_end": args.end_to_end,
    }
    resolved = effective_settings(config, device.type, cudnn)
    case["identity"] = {
        **case,
        "preset": None,
        "overrides": None,
        "cudnn_benchmark": None,
        "region": "full" if whole else region,
        "config": {**config.to_dict(), **resolved, "preview_every": None},
    }
    return case


def faithful_limit(args: argparse.Namespace, device: torch.device) -> int | None:
    if args.faithful_max_size is not None:
        return args.faithful_max_size or None
    return 512 if device.type == "cpu" else None


def run_sweep(runner: Runner, devices: list[torch.device], inputs: InputCache) -> None:
    args = runner.args
    for device, size, kernel in itertools.product(devices, args.sizes, args.kernels):
        limit = faithful_limit(args, device)
        for name in args.configs:
            label = {"device": str(device), "config": name, "size": size, "kernel": kernel}
            reason = _sweep_skip_reason(name, device, size, kernel, limit)
            if reason:
                runner.skip("sweep", label, reason)
                continue
            case = iteration_case(args, device, name, size, kernel)
            case["image"] = inputs.frame(size, kernel)
            runner.measure("sweep", label, case)


def _sweep_skip_reason(name, device, size: int, kernel: int, limit) -> str | None:
    try:
        check_kernel_size(kernel, (size, size))
    except ValueError as error:
        return str(error)
    if name == FAITHFUL and limit is not None and size > limit:
        return (
            f"faithful configuration not run on {device.type} above --faithful-max-size "
            f"{limit}: a 128-channel network on the whole {size}x{size} frame would take "
            "hours per run here and may not fit in memory; measure it on a GPU"
        )
    return None


@dataclass(frozen=True)
class Switch:
    """A speed setting measured off and on, everything else at the configuration's defaults.

    ``setting`` is a SolverConfig field, or ``cudnn_benchmark`` (CUDA only).
    """

    name: str
    setting: str
    off: object
    on: object
    note: str = ""


SWITCHES = (
    Switch("mixed precision", "amp", "off", "auto", "amp='auto': bfloat16 where supported, else float16"),
    Switch("channels_last", "memory_format", "contiguous", "channels_last"),
    Switch("torch.compile", "compile", False, True, "compile s: first iterations, empty compiler cache"),
    Switch("kernel step every 4 iterations", "kernel_every", 1, 4),
    Switch("cuDNN autotuning", "cudnn_benchmark", False, True),
)


def switches_for(device_type: str, settings: list[str]) -> list[Switch]:
    """The switches named by ``settings`` that apply to ``device_type``.

    Off CUDA, ``amp="auto"`` is off, so bfloat16 is forced instead (and labelled so); cuDNN
    autotuning exists only on CUDA.
    """
    out = []
    for switch in SWITCHES:
        if switch.setting not in settings or (switch.setting == "cudnn_benchmark" and device_type != "cuda"):
            continue
        if switch.setting == "amp" and device_type != "cuda":
            switch = replace(switch, on="bf16", note="bfloat16 forced: amp='auto' is off on this device")
        out.append(switch)
    return out


def run_switches(runner: Runner, devices: list[torch.device], inputs: InputCache) -> None:
    args = runner.args
    size, kernel = args.switch_size, args.switch_kernel
    image = inputs.frame(size, kernel)
    for device, name in itertools.product(devices, args.switch_configs):
        for switch in switches_for(device.type, args.switches):
            for state in ("off", "on"):
                change = {switch.setting: getattr(switch, state)}
                label = {
                    "device": str(device),
                    "config": name,
                    "switch": switch.name,
                    "state": state,
                    "settings": change,
                    "note": switch.note,
                    "size": size,
                    "kernel": kernel,
                }
                case = iteration_case(args, device, name, size, kernel, change)
                case["image"] = image
                runner.measure("switches", label, case)


def run_stack(runner: Runner, devices: list[torch.device], inputs: InputCache) -> None:
    args = runner.args
    path = inputs.stack(args.stack_planes, args.stack_size, args.stack_kernel)
    for device, mode in itertools.product(devices, args.stack_modes):
        label = {
            "device": str(device),
            "mode": mode,
            "warm_start": None if mode == "shared" else mode == "per-plane",
            "preset": args.stack_preset,
            "planes": args.stack_planes,
            "size": args.stack_size,
            "kernel": args.stack_kernel,
        }
        case = {
            "kind": "stack",
            "device": str(device),
            "threads": args.threads,
            "method": args.method,
            "preset": args.stack_preset,
            "overrides": _overrides(args, {}),
            "mode": mode,
            "stack": path,
            "kernel": args.stack_kernel,
        }
        runner.measure("stack", label, case)


def run_kernel_step(runner: Runner, devices: list[torch.device]) -> None:
    args = runner.args
    for device, kernel in itertools.product(devices, args.kernels):
        size = args.kernel_step_size
        case = {
            "kind": "kernel_step",
            "device": str(device),
            "threads": args.threads,
            "size": size,
            "kernel": kernel,
            "repeats": args.kernel_step_repeats,
        }
        label = {"device": str(device), "size": size, "kernel": kernel}
        runner.measure("kernel_step", label, case)


# --------------------------------------------------------------------------------------
# Derived figures and the summary
# --------------------------------------------------------------------------------------


def _ok(record: dict) -> bool:
    return record.get("status") == "ok"


def _peak_mib(record: dict) -> float | None:
    peak = record.get("memory", {}).get("peak", {})
    return peak.get("gpu_peak_allocated_mib", peak.get("cpu_peak_rss_mib"))


def sweep_ratios(sweep: list[dict]) -> list[dict]:
    """Faithful / preset: time to result, seconds per iteration, peak memory."""
    faithful = {(r["device"], r["size"], r["kernel"]): r for r in sweep if r["config"] == FAITHFUL and _ok(r)}
    ratios = []
    for record in sweep:
        reference = faithful.get((record["device"], record["size"], record["kernel"]))
        if reference is None or not _ok(record) or record is reference:
            continue
        if record.get("same_measurement_as"):  # e.g. quality is faithful up to 512 px
            continue
        peaks = _peak_mib(reference), _peak_mib(record)
        ratios.append(
            {
                "device": record["device"],
                "size": record["size"],
                "kernel": record["kernel"],
                "config": record["config"],
                "faithful_time_to_result_s": reference["time_to_result_s"],
                "config_time_to_result_s": record["time_to_result_s"],
                "time_to_result_kinds": [
                    reference["time_to_result_kind"],
                    record["time_to_result_kind"],
                ],
                "time_to_result_ratio": reference["time_to_result_s"] / record["time_to_result_s"],
                "seconds_per_iteration_ratio": reference["seconds_per_iteration"] / record["seconds_per_iteration"],
                "peak_memory_ratio": peaks[0] / peaks[1] if all(peaks) else None,
            }
        )
    return ratios


def switch_comparisons(records: list[dict]) -> list[dict]:
    """One row per (device, config, switch): seconds per iteration off and on."""
    rows: dict[tuple, dict] = {}
    for record in records:
        key = (record["device"], record["config"], record["switch"])
        row = rows.setdefault(key, dict(zip(("device", "config", "switch"), key)))
        row["note"] = record["note"]
        row[f"{record['state']}_seconds_per_iteration"] = record.get("seconds_per_iteration") if _ok(record) else None
        if record["state"] == "on" and _ok(record) and "compile_overhead_s" in record:
            row["compile_overhead_s"] = record["compile_overhead_s"]
        if not _ok(record):
            row[f"{record['state']}_error"] = record.get("error", record.get("reason"))
    for row in rows.values():
        off, on = (
            row.get("off_seconds_per_iteration"),
            row.get("on_seconds_per_iteration"),
        )
        row["speedup"] = off / on if off and on else None
    return list(rows.values())


def _status(record: dict) -> str:
    if _ok(record):
        same = record.get("same_measurement_as")
        return f"ok (= {same})" if same else "ok"
    return f"{record['status']}: {record.get('error', record.get('reason', ''))}"


def _display(record: dict) -> dict:
    """``record`` with the derived cells the tables show."""
    region = record.get("region")
    return {
        **record,
        "window": f"{region[2]}x{region[3]}" if region else None,
        "peak_mib": _peak_mib(record),
        "status_text": _status(record) if "status" in record else None,
    }


# Table columns: (header, record key, format spec or None for text).
SWEEP_COLUMNS = [
    ("device", "device", None),
    ("config", "config", None),
    ("size", "size", None),
    ("kernel", "kernel", None),
    ("blind-fit window", "window", None),
    ("s / it", "seconds_per_iteration", ".3g"),
    ("to result (s)", "time_to_result_s", ".4g"),
    ("kind", "time_to_result_kind", None),
    ("peak MiB", "peak_mib", ".0f"),
    ("status", "status_text", None),
]
RATIO_COLUMNS = [
    ("device", "device", None),
    ("size", "size", None),
    ("kernel", "kernel", None),
    ("config", "config", None),
    ("time to result", "time_to_result_ratio", ".3g"),
    ("s / it", "seconds_per_iteration_ratio", ".3g"),
    ("peak memory", "peak_memory_ratio", ".3g"),
]
SWITCH_COLUMNS = [
    ("device", "device", None),
    ("config", "config", None),
    ("switch", "switch", None),
    ("off s / it", "off_seconds_per_iteration", ".3g"),
    ("on s / it", "on_seconds_per_iteration", ".3g"),
    ("off / on", "speedup", ".3g"),
    ("compile s", "compile_overhead_s", ".3g"),
    ("note", "note", None),
]
STACK_COLUMNS = [
    ("device", "device", None),
    ("mode", "mode", None),
    ("warm start", "warm_start", None),
    ("planes", "planes", None),
    ("size", "size", None),
    ("s", "elapsed_s", ".4g"),
    ("planes / min", "planes_per_minute", ".3g"),
    ("peak MiB", "peak_mib", ".0f"),
    ("status", "status_text", None),
]
KERNEL_STEP_COLUMNS = [
    ("device", "device", None),
    ("size", "size", None),
    ("kernel", "kernel", None),
    ("Woodbury s / call", "seconds_per_call_woodbury", ".3g"),
    ("dense centring solve s (CPU)", "seconds_dense_centering_solve_cpu", ".3g"),
    ("status", "status_text", None),
]
TABLES = [
    ("sweep", "Sweep", SWEEP_COLUMNS),
    ("ratios", "Faithful / preset, same run (how many times faster, smaller)", RATIO_COLUMNS),
    ("switch_comparisons", "Speed switches, one at a time", SWITCH_COLUMNS),
    ("stack", "Stacks", STACK_COLUMNS),
    ("kernel_step", "Kernel step", KERNEL_STEP_COLUMNS),
]


def _table(records: list[dict], columns: list[tuple[str, str, str | None]]) -> list[str]:
    rows = []
    for record in map(_display, records):
        values = [record.get(key) for _, key, _ in columns]
        rows.append([fmt(v, spec) if spec else fmt(v, "") for v, (_, _, spec) in zip(values, columns)])
    return markdown_table([header for header, _, _ in columns], rows)


def markdown_summary(report: dict) -> str:
    """The report's tables in markdown, headed by the machines they were measured on."""
    lines = ["# Speed", ""]
    for device, machine in report["machines"].items():
        lines.append(
            f"- {device}: {machine['device']}; CPU {machine['cpu']} ({machine['torch_threads']} torch threads); "
            f"torch {machine['torch']}; {machine['date']}"
        )
    settings = report["settings"]
    if settings.get("width") or settings.get("config_iterations"):
        lines.append("- **debug overrides in force (--width / --config-iterations): these figures describe no preset**")
    for key, title, columns in TABLES:
        if report[key]:
            lines += ["", f"## {title}", "", *_table(report[key], columns)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="JSON file for the results (required)")
    p.add_argument("--markdown", type=Path, help="also write the summary tables here")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--devices", nargs="+", default=["auto"], help="auto, cpu, cuda:N, mps")
    p.add_argument("--threads", type=int, help="torch CPU threads per case")
    p.add_argument("--method", default="self-msnet")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per case")
    sweep = p.add_argument_group("sweep")
    sweep.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    sweep.add_argument("--kernels", type=int, nargs="+", default=[15, 31, 51, 75])
    sweep.add_argument("--configs", nargs="+", default=config_names())
    sweep.add_argument("--iterations", type=int, default=3, help="timed iterations")
    sweep.add_argument("--warmup", type=int, default=1, help="untimed first iterations")
    sweep.add_argument("--end-to-end", action="store_true", help="measure whole deblur runs too")
    sweep.add_argument("--faithful-max-size", type=int, help="0: no limit (default 512 on CPU only)")
    switches = p.add_argument_group("switches")
    switches.add_argument("--switch-size", type=int, default=256)
    switches.add_argument("--switch-kernel", type=int, default=31)
    switches.add_argument("--switch-configs", nargs="+", default=list(PRESETS))
    names = [switch.setting for switch in SWITCHES]
    switches.add_argument("--switches", nargs="+", choices=names, default=names, help="settings to toggle")
    stack = p.add_argument_group("stack")
    stack.add_argument("--stack-planes", type=int, default=8)
    stack.add_argument("--stack-size", type=int, default=256)
    stack.add_argument("--stack-kernel", type=int, default=31)
    stack.add_argument("--stack-preset", default="fast", choices=list(PRESETS))
    stack.add_argument("--stack-modes", nargs="+", choices=STACK_MODES, default=list(STACK_MODES))
    step = p.add_argument_group("kernel step")
    step.add_argument("--kernel-step-size", type=int, default=256)
    step.add_argument("--kernel-step-repeats", type=int, default=10)
    debug = p.add_argument_group("debug (the figures then describe no preset)")
    debug.add_argument("--width", type=int, help="force the network width")
    debug.add_argument("--config-iterations", type=int, help="force the iteration count")
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.case is None and args.out is None:
        p.error("--out is required")
    unknown = sorted(set(args.configs + args.switch_configs) - set(config_names()))
    if unknown:
        p.error(f"unknown configurations {unknown}; choose from {config_names()}")
    return args


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.case is not None:
        print(json.dumps(run_case(json.loads(args.case))), flush=True)
        return None
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = list(dict.fromkeys(resolve_device(d) for d in args.devices))
    report = {
        "benchmark": "speed",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "case"},
        "machines": {str(d): machine_info(d) for d in devices},
        "configs": {name: _describe(args, name) for name in config_names()},
        **{name: [] for name in SECTIONS},
        "ratios": [],
        "switch_comparisons": [],
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="speed_") as folder:
        runner = Runner(args, report, Path(folder))
        inputs = InputCache(Path(folder), args.seed)
        if "kernel_step" in args.sections:
            run_kernel_step(runner, devices)
        if "sweep" in args.sections:
            run_sweep(runner, devices, inputs)
        if "switches" in args.sections:
            run_switches(runner, devices, inputs)
        if "stack" in args.sections:
            run_stack(runner, devices, inputs)
    report["ratios"] = sweep_ratios(report["sweep"])
    report["switch_comparisons"] = switch_comparisons(report["switches"])
    report["total_wall_s"] = time.perf_counter() - start
    write_json(args.out, report)
    summary = markdown_summary(report)
    print(summary)
    if args.markdown:
        write_text(args.markdown, summary)
    return report


def _describe(args: argparse.Namespace, name: str) -> dict:
    preset, overrides, region = config_spec(name)
    config = build_config(preset, _overrides(args, overrides), args.method)
    return {
        "preset": preset,
        "overrides": overrides,
        "region": region,
        **config.to_dict(),
    }


if __name__ == "__main__":
    main()
