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
    instead of ending the sweep. Inputs are synthetic: ``evaluation.synth`` phantoms (filaments and
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
    iteration x the remaining iterations + the non-blind stages, timed directly (the polish
    rounds of :func:`~napari_selfmsnet.engine.polish.polish_kernel` on the region and the
    full-frame sparse :func:`~napari_selfmsnet.engine.nonblind.deconvolve`, each when the
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
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from _common import fmt, machine_info, run_json_subprocess, write_json, write_text
from _speed_cases import (
    InputCache,
    build_config,
    run_case,
    synthetic_frame,  # noqa: F401 - speed.synthetic_frame, for the tests
    synthetic_stack,  # noqa: F401 - speed.synthetic_stack, for the tests
)
from _speed_report import FAITHFUL, markdown_summary, sweep_ratios, switch_comparisons

from napari_selfmsnet import PRESETS
from napari_selfmsnet.engine.config import SolverConfig
from napari_selfmsnet.engine.devices import resolve_device
from napari_selfmsnet.engine.inputs import check_kernel_size
from napari_selfmsnet.engine.optimizer import autocast_dtype_for, memory_format_for
from napari_selfmsnet.engine.regions import AUTO_REGION_THRESHOLD

SECTIONS = ("sweep", "switches", "stack", "kernel_step")
STACK_MODES = ("shared", "per-plane", "per-plane-cold")


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


_AMP_NAMES = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}


def effective_settings(config: SolverConfig, device_type: str, cudnn_benchmark: bool | None) -> dict:
    """The speed settings a run really uses on ``device_type`` ("auto" resolved)."""
    cuda = device_type == "cuda"
    device = torch.device(device_type)
    # The engine's own rules, so a case is labelled (and deduplicated) by what it really runs.
    amp = _AMP_NAMES[autocast_dtype_for(config, device)]
    channels_last = memory_format_for(config, device) == torch.channels_last
    memory = "channels_last" if channels_last else "contiguous"
    return {
        "amp": amp,
        "memory_format": memory,
        "compile": config.compile,
        "kernel_every": config.kernel_every,
        "cudnn_benchmark": (cudnn_benchmark is not False) if cuda else None,
    }


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
        "config": {**config.to_dict(), **resolved},
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
