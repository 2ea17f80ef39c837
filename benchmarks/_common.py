"""Shared bits of the benchmark scripts: machine description, peak memory, safe JSON writing,
and the non-blind stages of a run on a given kernel."""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_selfmsnet import PRESETS, SolverConfig, io
from napari_selfmsnet.engine.config import resolve_config
from napari_selfmsnet.engine.devices import resolve_device
from napari_selfmsnet.engine.intensity import IntensityMap
from napari_selfmsnet.engine.noise import estimate_noise
from napari_selfmsnet.engine.polish import cautious_steps, finish_steps
from napari_selfmsnet.engine.steps import drain
from napari_selfmsnet.evaluation.metrics import levin_scores

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The shared data folder sits next to the repository (never copied into it).
DATA_ROOT = REPO_ROOT.parent / "shared" / "data"


def parse_config_changes(text: str) -> dict:
    """``"a=1;b=(2, 3)"`` -> ``{"a": 1, "b": (2, 3)}``, checked against ``SolverConfig``'s fields."""
    names = {f.name for f in dataclasses.fields(PRESETS["fast"])}
    changes = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, value = item.partition("=")
        if not sep or name.strip() not in names:
            # ArgumentTypeError: argparse then shows this message instead of "invalid value".
            raise argparse.ArgumentTypeError(f"{item!r} is not FIELD=VALUE with a SolverConfig field")
        changes[name.strip()] = ast.literal_eval(value.strip())
    return changes


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of a run shared by the noisy-data benchmarks: ``--preset``, ``--set`` (read
    back merged by :func:`config_of`), ``--device``, ``--seed``, ``--threads``."""
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS))
    parser.add_argument(
        "--set", dest="changes", type=parse_config_changes, action="append", default=[], metavar="FIELD=VALUE",
        help="change SolverConfig fields of the preset (repeatable)",
    )  # fmt: skip
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0, help="the runs' seed (default: 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def run_setup(args: argparse.Namespace) -> tuple[torch.device, SolverConfig | str]:
    """What :func:`add_run_options` asked for: torch's threads set, the device resolved, and the
    preset to hand to ``deblur`` (its name, or a SolverConfig with the ``--set`` changes)."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return resolve_device(args.device), config_of(args) if args.changes else args.preset


def config_of(args: argparse.Namespace) -> SolverConfig:
    """``args.preset``'s SolverConfig, with ``args.method``'s scales (where the script has a
    ``--method``) and the ``--set`` changes (``args.changes``) applied."""
    return dataclasses.replace(resolve_config(args.preset, getattr(args, "method", None)), **args.changes)


def nonblind_like_deblur(
    blurred: np.ndarray,
    kernel: np.ndarray,
    config: SolverConfig,
    device: torch.device,
    *,
    smooth_psf: bool = False,
    agreement: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The stages after the blind one on ``kernel`` and ``blurred``, as ``deblur`` runs them
    under ``config`` (the polish with ``final="nonblind"``, then the sparse deconvolution).

    In ``deblur``'s normalised units (the sparse prior's weight depends on them), by
    :func:`~napari_selfmsnet.engine.polish.finish_steps` from ``kernel`` alone, with the noise
    measured as ``deblur`` measures it; ``smooth_psf`` and ``agreement`` are what the run
    decided and measured (``params["smooth_psf"]``, ``params["self_check"]["agreement"]``),
    which a lone kernel cannot tell: with them the last deconvolution is the run's own
    (:func:`~napari_selfmsnet.engine.polish.cautious_steps` below ``cautious_agreement``).
    Returns ``(kernel, deblurred image in blurred's units)``.
    """
    image = np.asarray(blurred, dtype=np.float32)
    intensity = IntensityMap.fit(image, config.headroom)
    unit = intensity.to_unit(image)
    noise = estimate_noise(blurred, quantised=np.issubdtype(np.asarray(blurred).dtype, np.integer)).sigma
    sigma = noise / intensity.scale
    finish = drain(finish_steps(unit, unit, [kernel], config, device, noise_sigma=sigma, as_estimated=smooth_psf))
    if config.final == "nonblind" and agreement is not None and agreement < config.cautious_agreement:
        whole = (slice(None), slice(None))
        finish = drain(cautious_steps(unit, whole, finish, config.cautious_factor, device, sigma))
    return finish.kernel, intensity.to_input_units(finish.image)


def unit_range(image: np.ndarray, eight_bit: bool) -> np.ndarray:
    """A result in the input's units as the Levin protocol scores it: in [0, 1], from 8-bit
    counts when the input was 8-bit (``deblur`` keeps a uint8 input's 0-255 scale)."""
    data = np.asarray(image, dtype=np.float64)
    return np.clip(data / 255.0 if eight_bit else data, 0, 1)


def noise_scores(image: np.ndarray, sharp: np.ndarray, counts: bool, **kernels) -> dict:
    """``levin_scores`` as ``noise.py`` scores a case: Levin's 8-bit cases in [0, 1], microscopy
    counts after an affine intensity fit."""
    data = np.asarray(image, dtype=np.float64) if counts else unit_range(image, eight_bit=True)
    return levin_scores(data, sharp, fit_intensity=counts, **kernels)


def cpu_model() -> str:
    """The CPU's marketing name (Linux ``/proc/cpuinfo``, else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The repository's HEAD commit, or None outside a git checkout or before the first commit."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], check=False, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def machine_info(device: torch.device) -> dict:
    """Everything a reader needs to compare timings: CPU, threads, GPU, library versions."""
    from napari_selfmsnet import __version__
    from napari_selfmsnet.engine.devices import device_name

    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device_name(device),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "napari_selfmsnet": __version__,
        "git_commit": git_commit(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    """Peak CPU RSS of this process so far (MiB) and, on CUDA, peak allocated GPU memory since
    the last :func:`reset_peak_memory` (MiB)."""
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mib = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
    out = {"cpu_peak_rss_mib": round(rss_mib, 1)}
    if device.type == "cuda":
        out["gpu_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` atomically, so an interrupted run leaves the previous complete file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_json(path, payload)


def write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def mean(values) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def run_json_subprocess(command: list[str], timeout: float, env: dict[str, str] | None = None) -> dict:
    """Run ``command`` in its own process group and return the JSON object it printed.

    The result is the last line of its standard output that parses as a JSON object. When
    none comes back, a record that says why: ``{"status": "timeout"}`` after ``timeout``
    seconds (the whole process group is killed, compiler workers included), or
    ``{"status": "failed"}`` with the exit code or signal (a SIGKILL is usually the
    out-of-memory killer) and the end of its standard error.
    """
    start = time.perf_counter()
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            return {
                "status": "timeout",
                "error": f"no result within the per-case timeout of {timeout:g} s",
                "stderr_tail": stderr[-2000:],
                "wall_s": time.perf_counter() - start,
            }
    for line in reversed(stdout.splitlines()):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                return record
    code = proc.returncode
    why = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    if code == -signal.SIGKILL:
        why += " (usually the out-of-memory killer)"
    return {
        "status": "failed",
        "error": f"the case process printed no result: {why}",
        "stderr_tail": stderr[-2000:],
        "wall_s": time.perf_counter() - start,
    }


def fmt(value, spec: str = ".3g", missing: str = "–") -> str:
    """``value`` formatted with ``spec``, or ``missing`` for None and non-finite numbers."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return missing
    return format(value, spec)


def markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A GitHub markdown table, one string per line."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines
