"""What estimating the kernel on a region costs, against the blind fit on the whole frame.

Two data sets, the same preset, each image run twice:

- ``full``: ``deblur(region="full")``, the blind optimizer on the whole frame;
- ``region``: the blind optimizer on the window :func:`~napari_selfmsnet.engine.regions.auto_region`
  picks (``--levin-window`` px on Levin's 255 x 255 images, ``--synth-window`` on the synthetic
  frames), then the whole frame deconvolved with that kernel, as ``region="auto"`` does on
  large frames.

Levin et al.'s images are scored by the benchmark's protocol (PSNR up to shift, kernel
similarity); the synthetic microscopy frames (the fluorescence phantom of
:mod:`napari_selfmsnet.evaluation.synth`, camera noise, a motion or Gaussian kernel) against their
ground truth the same way.

Usage::

    python benchmarks/region_cost.py --out results/region_cost.json --levin "im*_kernel3" --synth 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import DATA_ROOT, machine_info, mean, write_json

from napari_selfmsnet import deblur
from napari_selfmsnet.engine.devices import resolve_device
from napari_selfmsnet.engine.regions import auto_region
from napari_selfmsnet.evaluation.levin import list_levin_cases, load_levin_case
from napari_selfmsnet.evaluation.metrics import align_up_to_shift, kernel_similarity, levin_scores, psnr
from napari_selfmsnet.evaluation.synth import make_case

PHOTONS = 1000.0
OFFSET = 100.0


def _runs(blurred: np.ndarray, kernel_size: tuple[int, int], window: int, common: dict):
    """``{"full": (result, seconds), "region": (result, seconds)}`` for one image."""
    region = auto_region(blurred, window, kernel_size)
    out = {}
    for name, choice in (("full", "full"), ("region", region.to_list())):
        start = time.perf_counter()
        result = deblur(blurred, kernel_size, region=choice, **common)
        out[name] = (result, time.perf_counter() - start)
    return out


def levin_part(args: argparse.Namespace, common: dict) -> list[dict]:
    rows = []
    for image_index, kernel_index in list_levin_cases(args.data, args.levin):
        case = load_levin_case(args.data, image_index, kernel_index)
        runs = _runs(case.blurred.astype(np.float32), case.kernel.shape, args.levin_window, common)
        row = {"image": case.name, "kernel_size": list(case.kernel.shape)}
        for name, (result, seconds) in runs.items():
            scores = levin_scores(
                np.clip(result.image, 0, 1), case.sharp, kernel=result.kernel, true_kernel=case.kernel
            )
            row[name] = {
                "psnr": scores["psnr"],
                "kernel_similarity": scores["kernel_similarity"],
                "seconds": seconds,
                "region": result.params["region"],
            }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def synthetic_part(args: argparse.Namespace, common: dict) -> list[dict]:
    rows = []
    for index in range(args.synth):
        kind = ("motion", "gaussian")[index % 2]
        case = make_case((args.synth_size, args.synth_size), 100 + index, kernel=kind, kernel_size=15, photons=PHOTONS)
        runs = _runs(case.blurred, case.kernel.shape, args.synth_window, common)
        row = {"image": f"phantom {index} ({kind})", "size": args.synth_size, "kernel_size": list(case.kernel.shape)}
        for name, (result, seconds) in runs.items():
            unit = (result.image.astype(np.float64) - OFFSET) / PHOTONS
            aligned = align_up_to_shift(np.clip(unit, 0, 1), case.sharp, max_shift=4, crop=16)
            row[name] = {
                "psnr": psnr(aligned.aligned, aligned.sharp),
                "kernel_similarity": kernel_similarity(result.kernel, case.kernel),
                "seconds": seconds,
                "region": result.params["region"],
            }
        blurred_unit = (case.blurred.astype(np.float64) - OFFSET) / PHOTONS
        aligned = align_up_to_shift(np.clip(blurred_unit, 0, 1), case.sharp, max_shift=0, crop=16)
        row["blurred_psnr"] = psnr(aligned.aligned, aligned.sharp)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def summary(rows: list[dict]) -> dict:
    return {
        name: {
            "mean_psnr": mean(r[name]["psnr"] for r in rows),
            "mean_kernel_similarity": mean(r[name]["kernel_similarity"] for r in rows),
            "mean_seconds": mean(r[name]["seconds"] for r in rows),
        }
        for name in ("full", "region")
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DATA_ROOT / "levin")
    parser.add_argument("--levin", default="im*_kernel3", help="glob of Levin cases ('' to skip)")
    parser.add_argument("--levin-window", type=int, default=160)
    parser.add_argument("--synth", type=int, default=2, help="number of synthetic frames (0 to skip)")
    parser.add_argument("--synth-size", type=int, default=512)
    parser.add_argument("--synth-window", type=int, default=256)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--iterations", type=int, default=None, help="override the preset's (smoke runs)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    common = {"preset": args.preset, "iterations": args.iterations, "device": str(device), "seed": 0}
    settings = {**vars(args), "out": str(args.out), "data": str(args.data)}
    report: dict = {"machine": machine_info(device), "preset": args.preset, "settings": settings}
    if args.levin:
        report["levin"] = levin_part(args, common)
        report["levin_summary"] = summary(report["levin"])
        write_json(args.out, report)
    if args.synth:
        report["synthetic"] = synthetic_part(args, common)
        report["synthetic_summary"] = summary(report["synthetic"])
    write_json(args.out, report)
    print(json.dumps({k: v for k, v in report.items() if k.endswith("summary")}, indent=2))


if __name__ == "__main__":
    main()
