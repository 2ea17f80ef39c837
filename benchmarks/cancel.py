"""Cancel latency: how long a stop takes to end a run, at every stage.

Issue 18 asks that a stop take effect within 2 s at any stage, with the best estimate so far
kept. Each case runs :func:`napari_selfmsnet.deblur` (or :func:`napari_selfmsnet.deblur_stack`)
on a synthetic frame and asks it to stop through its ``callback`` at one progress record;
every record after it is answered True as well, as the widget's Cancel does. Measured: the
wall time from that request to the call returning (``latency_s``); checked: the result says
``cancelled`` and holds a finite image of the input's shape.

The cases, each where the stop is requested:

``size``          the first record of the kernel-size probes (``kernel_size="auto"``);
``blind``         the first record of the blind iterations;
``polish``        the first record of the polish;
``deconvolve``    the first record of the non-blind deconvolution (the candidates' checks);
``discrepancy``   the first record of a discrepancy re-solve (the weight raised because the
                  misfit was below ``residual_floor``; the floor is raised for this case so
                  the re-solves always run: why they run does not change how they stop);
``per-plane``     a per-plane stack, the first record of plane 1 (of ``--planes``);
``shared``        a shared-kernel stack, the ``"planes"`` record of plane 1;
``tiled``         the first record of the middle tile of the frame's tiled deconvolution: the
                  kernel is estimated on a centred window of half the frame's side, so the
                  frame is deconvolved apart, and the solver's memory budget is capped so
                  that the frame goes in ``--tile`` px tiles, as on a device with little
                  memory.

Besides the latency from the record, a stop requested *between* records waits for the next
one: ``record_gaps`` gives, per stage, the longest and the median time between consecutive
records seen before the stops (the start of a stage counts from the last record of the stage
before it). A stop requested at the worst moment takes about the longest gap plus the latency.
``after_stop`` lists the records made after the request (the stages that still did their
first step), with their time since the request.

Inputs: a ``--size`` square phantom of :mod:`napari_selfmsnet.evaluation.synth` blurred by a
``--kernel`` px camera-shake kernel, with Poisson and read noise, as uint16 counts (a stack:
independent phantoms under the same kernel). Records come every ``--progress-every`` blind
iterations (1: what the widget asks for on a CPU).

Output: ``--out`` JSON with ``settings``, ``machine`` (with the load average before and after
and ``--machine-note``), one record per case in ``cases``, ``record_gaps`` and ``summary``
(latency per case and whether it is within ``--limit``).

Usage::

    python benchmarks/cancel.py --out benchmarks/results/cancel_cpu.json \\
        --machine-note "2 cores shared with another heavy job"
    python benchmarks/cancel.py --out /tmp/c.json --size 128 --kernel 5 --iterations 3 \\
        --method self-msnet-s --tile 80   # smoke test only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from _common import machine_info, write_json

from napari_selfmsnet import deblur, deblur_stack
from napari_selfmsnet.engine import tiling
from napari_selfmsnet.engine.config import resolve_config
from napari_selfmsnet.engine.devices import resolve_device
from napari_selfmsnet.engine.nonblind import DEFAULT_ITERATIONS
from napari_selfmsnet.evaluation import synth

CASES = ("size", "blind", "polish", "deconvolve", "discrepancy", "per-plane", "shared", "tiled")
#: The stop request's limit of issue 18, seconds.
LIMIT_S = 2.0
#: The solver iterations of one tile (the frame's deconvolution uses the sparse method's default).
_TILE_ITERATIONS = DEFAULT_ITERATIONS["sparse"]


@dataclass
class Stopper:
    """A ``callback`` that logs every record and asks for a stop from the record ``when`` picks on.

    ``when(record, log)`` sees each record and the ``(seconds, record)`` pairs before it.
    """

    when: Callable
    log: list = field(default_factory=list)
    stop_at: float | None = None
    stop_index: int | None = None

    def __call__(self, record) -> bool:
        now = time.perf_counter()
        if self.stop_at is None and self.when(record, self.log):
            self.stop_at, self.stop_index = now, len(self.log)
        self.log.append((now, record))
        return self.stop_at is not None


def first_of(stage: str) -> Callable:
    return lambda record, log: record.stage == stage


def in_plane(plane: int, stage: str | None = None) -> Callable:
    return lambda record, log: record.plane == plane and (stage is None or record.stage == stage)


def first_resolve(record, log) -> bool:
    """The first record of a discrepancy re-solve: a ``"deconvolve"`` record pinned at the step
    of the one before it (a re-solve repeats ground already counted, engine/polish.py)."""
    if record.stage != "deconvolve":
        return False
    previous = [r for _, r in log if r.stage == "deconvolve"]
    return bool(previous) and (record.step, record.total) == (previous[-1].step, previous[-1].total)


def tiled_solve(record, log) -> tuple[int, int] | None:
    """``(offset, tiles)`` when ``record`` is one of the frame's tiled solve, else None.

    The frame's solve comes after the window's checks and counts on from them: its records
    total ``offset + tiles * iterations`` where the checks' total ``offset + iterations``
    (engine/polish.py), so it is told apart by its larger total.
    """
    if record.stage != "deconvolve":
        return None
    checks = [r.total for _, r in log if r.stage == "deconvolve"]
    if not checks or record.total <= checks[0]:
        return None
    offset = checks[0] - _TILE_ITERATIONS
    return offset, (record.total - offset) // _TILE_ITERATIONS


def middle_tile(record, log) -> bool:
    """The first record of the middle tile of the frame's tiled solve."""
    solve = tiled_solve(record, log)
    if solve is None:
        return False
    offset, tiles = solve
    return (record.step - offset - 1) // _TILE_ITERATIONS == tiles // 2


def synthetic_frame(size: int, kernel_size: int, seed: int) -> np.ndarray:
    return synth.make_case((size, size), seed, kernel="motion", kernel_size=kernel_size).blurred


def synthetic_stack(planes: int, size: int, kernel_size: int, seed: int) -> np.ndarray:
    return synth.make_case((size, size), seed, kernel="motion", kernel_size=kernel_size, planes=planes).blurred


@contextlib.contextmanager
def memory_budget(budget: int | None):
    """Plan the non-blind solves for ``budget`` bytes (None: the device's own budget), as on
    a device with that little memory."""
    if budget is None:
        yield
        return
    before = tiling.memory_budget
    tiling.memory_budget = lambda device="auto": budget
    try:
        yield
    finally:
        tiling.memory_budget = before


def run_case(
    name: str, frame: np.ndarray, stack: np.ndarray | None, args: argparse.Namespace, device: str
) -> tuple[dict, tuple[float, list]]:
    """One case: the run, stopped where the case says; its record, and its start and records
    up to the stop (for :func:`record_gaps`)."""
    config = resolve_config(args.preset, args.method, args.iterations)
    common = {"preset": config, "device": device, "seed": 0, "progress_every": args.progress_every}
    size, image, region, budget, extra = args.kernel, frame, "auto", None, {}
    if name == "size":
        when, size = first_of("size"), "auto"
    elif name in ("blind", "polish", "deconvolve"):
        when = first_of(name)
    elif name == "discrepancy":
        when = first_resolve
        common["preset"] = replace(config, residual_floor=1e9)  # the re-solves always run
    elif name in ("per-plane", "shared"):
        when, image = in_plane(1, "planes" if name == "shared" else None), stack
    elif name == "tiled":
        side = frame.shape[0] // 2
        when, region = middle_tile, (side // 2, side // 2, side, side)
        budget = tiling.solver_peak_bytes((args.tile, args.tile), (args.kernel, args.kernel))
        extra = {"tile": args.tile, "window": list(region)}
    else:
        raise ValueError(f"unknown case {name!r}; choose from {CASES}")

    stopper = Stopper(when)
    with memory_budget(budget):
        start = time.perf_counter()
        if name in ("per-plane", "shared"):
            result = deblur_stack(image, size, mode=name, callback=stopper, **common)
        else:
            result = deblur(image, size, region=region, callback=stopper, **common)
        end = time.perf_counter()
    record = {**describe(name, stopper, result, start, end, image.shape), **extra}
    before_stop = stopper.log if stopper.stop_index is None else stopper.log[: stopper.stop_index + 1]
    if name == "tiled" and stopper.stop_index is not None:
        _, tiles = tiled_solve(before_stop[-1][1], before_stop[:-1])
        record.update(tiles=tiles, stop_tile=tiles // 2)
    return record, (start, before_stop)


def describe(name: str, stopper: Stopper, result, start: float, end: float, shape: tuple) -> dict:
    image = np.asarray(result.image)
    record = {
        "case": name,
        "stage": None,
        "status": "not_reached" if stopper.stop_at is None else "ok",
        "run_s": end - start,
        "cancelled": bool(result.cancelled),
        "image_shape": list(image.shape),
        "image_ok": tuple(image.shape) == tuple(shape) and bool(np.isfinite(image).all()),
        "kernel_ok": _kernel_ok(result),
        "records": len(stopper.log),
    }
    if stopper.stop_at is None:
        return record
    at, stop_record = stopper.log[stopper.stop_index]
    before = stopper.log[stopper.stop_index - 1][0] if stopper.stop_index else start
    record.update(
        stage=stop_record.stage,
        stop_step=stop_record.step,
        stop_total=stop_record.total,
        stop_plane=stop_record.plane,
        time_to_stop_s=at - start,
        latency_s=end - at,
        gap_before_stop_s=at - before,
        after_stop=[
            {"stage": r.stage, "step": r.step, "total": r.total, "plane": r.plane, "since_stop_s": t - at}
            for t, r in stopper.log[stopper.stop_index + 1 :]
        ],
    )
    return record


def _kernel_ok(result) -> bool:
    """The result's kernel(s): finite, non-negative, each summing to 1."""
    kernels = np.asarray(result.kernel if getattr(result, "kernel", None) is not None else result.kernels)
    sums = kernels.reshape(-1, *kernels.shape[-2:]).sum(axis=(1, 2))
    return bool(np.isfinite(kernels).all() and (kernels >= 0).all() and np.allclose(sums, 1, atol=1e-3))


def record_gaps(logs: list[tuple[float, list]]) -> dict:
    """Per stage, the time between consecutive records (up to each case's stop)."""
    gaps: dict[str, list[float]] = {}
    for start, log in logs:
        previous = start
        for t, r in log:
            gaps.setdefault(r.stage, []).append(t - previous)
            previous = t
    return {
        stage: {"max_s": float(max(v)), "median_s": float(np.median(v)), "count": len(v)} for stage, v in gaps.items()
    }


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    frame = synthetic_frame(args.size, args.kernel, args.seed)
    stack = (
        synthetic_stack(args.planes, args.size, args.kernel, args.seed)
        if {"per-plane", "shared"} & set(args.cases)
        else None
    )
    report = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            **machine_info(device),
            "note": args.machine_note,
            "load_average_before": list(os.getloadavg()),
        },
        "input": {"size": args.size, "kernel": args.kernel, "seed": args.seed, "dtype": str(frame.dtype)},
        "limit_s": args.limit,
        "cases": [],
    }
    logs = []
    for name in args.cases:
        print(f"case {name}...", flush=True)
        try:
            record, log = run_case(name, frame, stack, args, str(device))
            logs.append(log)
        except Exception as error:  # recorded, the other cases still run
            record = {"case": name, "status": "failed", "error": f"{type(error).__name__}: {error}"}
        report["cases"].append(record)
        print(json.dumps({k: v for k, v in record.items() if k != "after_stop"}), flush=True)
        write_json(args.out, report)
    report["machine"]["load_average_after"] = list(os.getloadavg())
    report["record_gaps"] = record_gaps(logs)
    report["summary"] = {
        r["case"]: {
            "latency_s": r.get("latency_s"),
            "within_limit": r.get("latency_s") is not None and r["latency_s"] <= args.limit,
            "cancelled": r.get("cancelled"),
            "image_ok": r.get("image_ok"),
            "status": r["status"],
        }
        for r in report["cases"]
    }
    write_json(args.out, report)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--size", type=int, default=512, help="side of the frame (px)")
    parser.add_argument(
        "--kernel", type=int, default=15, help="side of the blur kernel (px), given to every case but 'size'"
    )
    parser.add_argument("--planes", type=int, default=3, help="planes of the stacks")
    parser.add_argument("--tile", type=int, default=256, help="tile side of the 'tiled' case (px)")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--method", default=None)
    parser.add_argument("--iterations", type=int, default=None, help="blind iterations (the preset's by default)")
    parser.add_argument(
        "--progress-every", type=int, default=1, help="blind iterations between records (widget on CPU: 1)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--limit", type=float, default=LIMIT_S, help="the latency asked for (s)")
    parser.add_argument("--machine-note", default="", help="the machine's state (shared, idle...), stored as is")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run(args)


if __name__ == "__main__":
    main()
