"""How many iterations a warm-started plane needs: per-plane stacks, cold against warm.

A time-lapse-like stack: one fluorescence phantom drifting by about a pixel per plane, every
plane blurred by the same camera-shake kernel, with fresh camera noise. Per-plane mode (as
``deblur_stack(mode="per-plane")`` runs it, timed plane by plane here) is run cold (every
plane from scratch with the preset's iterations) and warm (the first plane cold, every later
plane started from the previous one with ``--warm`` iterations). For every plane:
PSNR against the sharp plane (up to a small shift, the blind-deblurring convention), kernel
similarity to the true kernel, and wall time. The warm count that matches the cold quality is
the default of :data:`napari_selfmsnet.engine.stack_plan.WARM_FRACTION`.

Usage::

    python benchmarks/warm_start.py --out results/warm_start.json --warm 25 50 100
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine_info, mean, write_json
from scipy import ndimage

from napari_selfmsnet import deblur
from napari_selfmsnet.engine.devices import resolve_device
from napari_selfmsnet.evaluation.metrics import align_up_to_shift, kernel_similarity, psnr
from napari_selfmsnet.evaluation.synth import add_noise, blur_valid, motion_kernel, phantom

PHOTONS = 3000.0
OFFSET = 100.0


def drifting_stack(planes: int, size: int, kernel_size: int, seed: int):
    """``(blurred uint16 (P, H, W), sharp (P, H, W) in [0, 1], kernel)``: a drifting phantom."""
    rng = np.random.default_rng(seed)
    kernel = motion_kernel(kernel_size, rng)
    margin = 2 * planes + kernel_size
    scene = phantom((size + 2 * margin, size + 2 * margin), rng)
    pad = kernel_size // 2
    blurred, sharp = [], []
    for p in range(planes):
        moved = ndimage.shift(scene, (0.7 * p, 1.1 * p), order=1, mode="nearest")
        window = moved[margin - pad : margin + size + pad, margin - pad : margin + size + pad]
        blurred.append(add_noise(blur_valid(window, kernel), rng, photons=PHOTONS, offset=OFFSET))
        sharp.append(window[pad : pad + size, pad : pad + size])
    return np.stack(blurred), np.stack(sharp), kernel


def to_unit(counts: np.ndarray) -> np.ndarray:
    """Camera counts back to the phantom's [0, 1] scale (the known gain and offset)."""
    return (np.asarray(counts, dtype=np.float64) - OFFSET) / PHOTONS


def plane_psnr(estimate_counts: np.ndarray, sharp: np.ndarray, kernel_size: int, max_shift: int) -> float:
    aligned = align_up_to_shift(
        np.clip(to_unit(estimate_counts), 0, 1),
        sharp,
        max_shift=max_shift,
        crop=kernel_size // 2 + 4,
    )
    return psnr(aligned.aligned, aligned.sharp)


def run_variant(blurred, kernel_size: int, warm: int | None, common: dict) -> list[dict]:
    """Per-plane deblurring as ``deblur_stack(mode="per-plane")`` does it, timed plane by plane."""
    rows, previous = [], None
    for plane in blurred:
        start = time.perf_counter()
        if warm is not None and previous is not None:
            result = deblur(plane, kernel_size, warm_start=previous, iterations=warm, **common)
        else:
            result = deblur(plane, kernel_size, **common)
        rows.append({"result": result, "seconds": time.perf_counter() - start})
        previous = result
    return rows


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    blurred, sharp, kernel = drifting_stack(args.planes, args.size, args.kernel, args.seed)
    common = {
        "method": "self-msnet",
        "preset": args.preset,
        "device": str(device),
        "seed": 0,
    }
    runs = []
    for warm in [None, *args.warm]:
        planes = [
            {
                "plane": p,
                "psnr": plane_psnr(row["result"].image, sharp[p], args.kernel, max_shift=4),
                "kernel_similarity": kernel_similarity(row["result"].kernel, kernel),
                "iterations": len(row["result"].history),
                "seconds": row["seconds"],
            }
            for p, row in enumerate(run_variant(blurred, args.kernel, warm, common))
        ]
        later = planes[1:]
        runs.append(
            {
                "variant": "cold" if warm is None else f"warm {warm}",
                "warm_iterations": warm,
                "seconds_per_later_plane": mean(r["seconds"] for r in later),
                "mean_psnr_later_planes": mean(r["psnr"] for r in later),
                "mean_kernel_similarity_later_planes": mean(r["kernel_similarity"] for r in later),
                "planes": planes,
            }
        )
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "planes"}), flush=True)
    blurred_scores = [plane_psnr(b, s, args.kernel, max_shift=0) for b, s in zip(blurred, sharp)]
    return {
        "machine": machine_info(device),
        "stack": {
            "planes": args.planes,
            "size": args.size,
            "kernel": args.kernel,
            "seed": args.seed,
        },
        "preset": args.preset,
        "blurred_psnr_later_planes": mean(blurred_scores[1:]),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--planes", type=int, default=5)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--kernel", type=int, default=15)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--warm", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run(args)
    write_json(args.out, report)


if __name__ == "__main__":
    main()
