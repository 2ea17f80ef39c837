"""Noisy stacks in shared mode: one kernel from the reference plane, every plane deconvolved.

Synthetic microscopy stacks (:func:`napari_selfmsnet.evaluation.synth.make_case` with
``planes``: independent phantoms blurred by one kernel, Poisson noise at a photon budget, read
noise, offset, uint16), the PSFs of ``noise.py``'s microscopy suite. Each stack is deblurred by
``deblur_stack(mode="shared")``; every plane is scored as ``noise.py`` scores a case (PSNR after
an affine intensity fit) against, on the same kernel, the plane deconvolved at the non-blind
solver's noise-free default weight (how shared mode deconvolved its planes before it followed
the noise), and the true kernel at the weight the run gave the plane. One figure per stack:
the mean over its planes.

Example::

    python benchmarks/stack_noise.py --photons 300 1000 --planes 4 --threads 1 --out /tmp/stack.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import add_run_options, machine_info, mean, noise_scores, run_setup, write_json
from noise import MICRO_KINDS, micro_kernel

from napari_selfmsnet import deblur_stack
from napari_selfmsnet.engine.stack_plan import deconvolve_plane, plane_weight
from napari_selfmsnet.evaluation.metrics import kernel_similarity
from napari_selfmsnet.evaluation.synth import make_case


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photons", type=float, nargs="+", default=[300.0, 1000.0], help="photon budgets")
    parser.add_argument("--kinds", nargs="+", default=list(MICRO_KINDS), choices=MICRO_KINDS, help="PSFs")
    parser.add_argument("--planes", type=int, default=4, help="planes per stack (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="side of each plane (default: %(default)s)")
    add_run_options(parser)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.changes = {k: v for change in args.changes for k, v in change.items()}
    return args


def run_stack(kind: str, photons: float, args: argparse.Namespace, preset, device: torch.device) -> dict:
    rng = np.random.default_rng(MICRO_KINDS.index(kind))
    case = make_case((args.size, args.size), rng, kernel=micro_kernel(kind, rng), planes=args.planes, photons=photons)
    start = time.perf_counter()
    result = deblur_stack(case.blurred, case.kernel.shape, mode="shared", preset=preset, device=str(device), seed=args.seed)
    seconds = time.perf_counter() - start
    (run,) = result.params["plane_params"]  # shared mode: the reference plane's blind run
    planes = []
    for i in range(args.planes):
        blurred, sharp = case.blurred[i], case.sharp[i]
        default = deconvolve_plane(blurred, result.kernel, device=str(device))
        weight = plane_weight(blurred, run)
        reference = deconvolve_plane(blurred, case.kernel, device=str(device), weight=weight)
        planes.append(
            {
                "input": noise_scores(blurred, sharp, True)["psnr"],
                "result": noise_scores(result.image[i], sharp, True)["psnr"],
                "default_weight": noise_scores(default, sharp, True)["psnr"],
                "true_kernel": noise_scores(reference, sharp, True)["psnr"],
                "weight": weight,
            }
        )
    gains = {key: mean(p[key] - p["input"] for p in planes) for key in ("result", "default_weight", "true_kernel")}
    return {
        "name": f"{kind}@{photons:g}ph",
        "planes": planes,
        "gain": gains["result"],
        "gain_default_weight": gains["default_weight"],
        "gain_true_kernel": gains["true_kernel"],
        "kernel_similarity": kernel_similarity(result.kernel, case.kernel),
        "seconds": seconds,
        "warnings": result.warnings,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device, preset = run_setup(args)
    payload = {"benchmark": "stack_noise", "run": vars(args) | {"out": str(args.out)}, "machine": machine_info(device)}
    payload["stacks"] = []
    for photons in args.photons:
        for kind in args.kinds:
            record = run_stack(kind, photons, args, preset, device)
            payload["stacks"].append(record)
            write_json(args.out, payload)
            print(
                f"{record['name']}: gain {record['gain']:+.2f} dB over {args.planes} planes (at the default weight "
                f"{record['gain_default_weight']:+.2f}, true kernel {record['gain_true_kernel']:+.2f}), "
                f"ksim {record['kernel_similarity']:.3f}, {record['seconds']:.1f} s",
                file=sys.stderr, flush=True,
            )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
