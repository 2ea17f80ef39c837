"""Blind deblurring with noise: Levin's images under Lai et al.'s protocol, and synthetic microscopy.

Two suites, each case deblurred with the true kernel's *size* (as the literature does):

- ``levin``: Levin's sharp images and true kernels (``gt/``), blurred by a valid convolution,
  Gaussian noise of 0, 0.5, 1, 2 and 5% of the range added, stored in 8 bits
  (:func:`napari_selfmsnet.evaluation.levin.synthetic_blur`); scored like ``levin.py``
  (results clipped to [0, 1], comparison up to shift).
- ``micro``: the project's fluorescence-like phantom (:mod:`napari_selfmsnet.evaluation.synth`)
  blurred by a 27 px and a 41 px drift kernel, a Gaussian PSF (sigma 2.5 px) and a defocus disc
  (radius 5 px), with Poisson noise at 100, 300, 1000 and 10000 photons, read noise and a camera
  offset, stored as uint16 counts; scored after a least-squares affine intensity fit.

Per case: PSNR and SSIM of the input and of the result, the gain, kernel similarity, the
non-blind reference (the same sparse solver with the *true* kernel, at the weight the run chose
from the noise it measured), time, the run's warnings and self-check figures. The summary per
suite and noise level gives the mean gain, the share of cases worse than their input (and how
many of those carried a warning), and the mean gap to the reference. The JSON is rewritten after
every case, so a stopped run keeps what it measured; ``--resume`` skips cases already in it.

Examples
--------
python benchmarks/noise.py --out results/noise.json --markdown results/noise.md
python benchmarks/noise.py --suite levin --levels 1 5 --images "im[12]_kernel*" --out /tmp/n.json
python benchmarks/noise.py --suite micro --photons 1000 --seeds 2 --out /tmp/m.json --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _common import (
    DATA_ROOT,
    add_run_options,
    machine_info,
    mean,
    noise_scores,
    run_setup,
    write_json,
    write_text,
)

from napari_selfmsnet import deblur
from napari_selfmsnet.engine.intensity import IntensityMap
from napari_selfmsnet.engine.nonblind import deconvolve
from napari_selfmsnet.evaluation.levin import list_levin_cases, load_levin_case, synthetic_blur
from napari_selfmsnet.evaluation.metrics import kernel_similarity
from napari_selfmsnet.evaluation.synth import defocus_psf, gaussian_psf, make_case, motion_kernel

LEVELS = (0.0, 0.5, 1.0, 2.0, 5.0)
PHOTONS = (100.0, 300.0, 1000.0, 10000.0)
MICRO_KINDS = ("drift27", "drift41", "gaussian", "defocus")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=("levin", "micro", "all"), default="all")
    parser.add_argument("--data", type=Path, default=DATA_ROOT / "levin", help="Levin's folder (default: %(default)s)")
    parser.add_argument("--images", default="im*_kernel*", help='glob on Levin case names (default: all 32)')
    parser.add_argument("--levels", type=float, nargs="+", default=list(LEVELS), help="Gaussian noise, %% of the range")
    parser.add_argument("--photons", type=float, nargs="+", default=list(PHOTONS), help="microscopy photon budgets")
    parser.add_argument("--kinds", nargs="+", default=list(MICRO_KINDS), choices=MICRO_KINDS, help="microscopy PSFs")
    parser.add_argument("--size", type=int, default=256, help="side of the microscopy images (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=2, help="microscopy cases per kind and budget (default: 2)")
    parser.add_argument(
        "--kernel-size", default="true", choices=("true", "auto"),
        help="give each run the true kernel's size (the literature's setting, default) or let it measure it",
    )  # fmt: skip
    add_run_options(parser)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--resume", action="store_true", help="keep the cases already in --out and skip them")
    parser.add_argument("--save", type=Path, default=None, metavar="DIR", help="also keep each case's input, result and kernels (NAME.npz)")
    args = parser.parse_args(argv)
    args.changes = {name: value for item in args.changes for name, value in item.items()}
    return args


def levin_cases(args: argparse.Namespace):
    """``(name, group, blurred uint8, sharp, true kernel, fit_intensity)`` per Levin case and level."""
    found = list_levin_cases(args.data, args.images)
    for level in args.levels:
        for i, j in found:
            case = load_levin_case(args.data, i, j)
            blurred, sharp = synthetic_blur(case, level / 100.0, seed=100 * i + j)
            yield f"{case.name}@{level:g}%", f"levin {level:g}%", blurred, sharp, case.kernel, False


def micro_kernel(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind.startswith("drift"):
        return motion_kernel(int(kind[5:]), rng)
    if kind == "gaussian":
        return gaussian_psf(17, 2.5)
    return defocus_psf(13, 5.0)


def micro_cases(args: argparse.Namespace):
    for photons in args.photons:
        for kind in args.kinds:
            for seed in range(args.seeds):
                rng = np.random.default_rng(1000 * seed + MICRO_KINDS.index(kind))
                case = make_case((args.size, args.size), rng, kernel=micro_kernel(kind, rng), photons=photons)
                name = f"{kind}@{photons:g}ph#{seed}"
                yield name, f"micro {photons:g} photons", case.blurred, case.sharp, case.kernel, True


def run_case(name, group, blurred, sharp, kernel, fit, args, preset, device) -> dict:
    size = kernel.shape if args.kernel_size == "true" else "auto"
    result = deblur(blurred, size, preset=preset, device=str(device), seed=args.seed)
    weight = result.params["deconvolution_weight"]
    intensity = IntensityMap.fit(blurred)
    start = time.perf_counter()
    reference = intensity.to_input_units(deconvolve(intensity.to_unit(blurred), kernel, weight=weight, device=device))
    record = {
        "name": name,
        "group": group,
        "kernel_size": list(kernel.shape),
        "kernel_size_used": result.params["kernel_size"],
        "blurred": noise_scores(blurred, sharp, fit),
        "true_kernel": {**noise_scores(reference, sharp, fit), "seconds": time.perf_counter() - start},
        "result": {
            **noise_scores(result.image, sharp, fit),
            "kernel_similarity": kernel_similarity(result.kernel, kernel),
            "seconds": result.elapsed_s,
        },
        "warnings": result.warnings,
        "noise": result.params["noise"],
        "self_check": result.params["self_check"],
        "deconvolution_weight": weight,
        "attempts": result.params["attempts"],
        "smooth_psf": result.params["smooth_psf"],
        "cautious_prior": result.params["cautious_prior"],
        "ensemble": result.params["ensemble"],
    }
    if args.save is not None:
        # What the finish depends on beyond the kernel, so that final_weight.py replays it exactly.
        agreement = result.params["self_check"]["agreement"]
        args.save.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            args.save / f"{name.replace('%', 'pc').replace('#', '_')}.npz",
            blurred=blurred, sharp=sharp, true_kernel=kernel, image=result.image, kernel=result.kernel, group=group,
            smooth_psf=result.params["smooth_psf"], agreement=np.nan if agreement is None else agreement,
            ensemble=result.params["ensemble"],
        )  # fmt: skip
    record["gain"] = record["result"]["psnr"] - record["blurred"]["psnr"]
    record["gap_to_reference"] = record["true_kernel"]["psnr"] - record["result"]["psnr"]
    return record


def summarise(records: list[dict]) -> dict:
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["group"], []).append(r)
    summary = {}
    for group, rows in groups.items():
        worse = [r for r in rows if r["gain"] < 0]
        summary[group] = {
            "cases": len(rows),
            "blurred_psnr": mean(r["blurred"]["psnr"] for r in rows),
            "psnr": mean(r["result"]["psnr"] for r in rows),
            "reference_psnr": mean(r["true_kernel"]["psnr"] for r in rows),
            "gain": mean(r["gain"] for r in rows),
            "gap_to_reference": mean(r["gap_to_reference"] for r in rows),
            "kernel_similarity": mean(r["result"]["kernel_similarity"] for r in rows),
            "worse_than_input": len(worse),
            "worse_by_more_than_half_db": sum(r["gain"] < -0.5 for r in rows),
            "worse_without_warning": sum(not r["warnings"] for r in worse),
            "warned": sum(bool(r["warnings"]) for r in rows),
            "min_gain": min(r["gain"] for r in rows),
            "seconds": mean(r["result"]["seconds"] for r in rows),
        }
    return summary


def markdown(payload: dict) -> str:
    machine, summary = payload["machine"], payload["summary"]
    lines = [
        f"# Noise benchmark — preset {payload['run']['preset']}",
        "",
        f"{machine['device']}; CPU {machine['cpu']} ({machine['torch_threads']} torch threads); torch {machine['torch']};"
        f" commit {machine['git_commit']}; {machine['date']}.",
        "",
        "| suite, noise | cases | input PSNR | result PSNR | gain | true-kernel ref. | gap to ref. | kernel sim. "
        "| worse than input (> 0.5 dB) | of those warned | warned | s / case |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group, s in summary.items():
        worse = s["worse_than_input"]
        lines.append(
            f"| {group} | {s['cases']} | {s['blurred_psnr']:.2f} | {s['psnr']:.2f} | {s['gain']:+.2f} | "
            f"{s['reference_psnr']:.2f} | {s['gap_to_reference']:.2f} | {s['kernel_similarity']:.3f} | "
            f"{worse} ({s['worse_by_more_than_half_db']}) | {worse - s['worse_without_warning']} | {s['warned']} | "
            f"{s['seconds']:.1f} |"
        )
    lines += ["", "| case | input | result | gain | ref. | kernel sim. | s | warnings |", "|---|---|---|---|---|---|---|---|"]
    for r in payload["cases"]:
        lines.append(
            f"| {r['name']} | {r['blurred']['psnr']:.2f} | {r['result']['psnr']:.2f} | {r['gain']:+.2f} | "
            f"{r['true_kernel']['psnr']:.2f} | {r['result']['kernel_similarity']:.3f} | {r['result']['seconds']:.1f} | "
            f"{len(r['warnings'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device, preset = run_setup(args)
    payload = {
        "benchmark": "noise",
        "run": {"preset": args.preset, "changes": args.changes, "seed": args.seed, "suite": args.suite,
                "levels": args.levels, "photons": args.photons, "kinds": args.kinds, "size": args.size,
                "seeds": args.seeds, "images": args.images, "kernel_size": args.kernel_size},  # fmt: skip
        "machine": machine_info(device),
        "cases": [],
        "summary": {},
    }
    if args.resume and args.out.exists():
        payload["cases"] = json.loads(args.out.read_text())["cases"]
    done = {r["name"] for r in payload["cases"]}
    suites = []
    if args.suite in ("levin", "all"):
        suites.append(levin_cases(args))
    if args.suite in ("micro", "all"):
        suites.append(micro_cases(args))
    for cases in suites:
        for name, group, blurred, sharp, kernel, fit in cases:
            if name in done:
                continue
            record = run_case(name, group, blurred, sharp, kernel, fit, args, preset, device)
            payload["cases"].append(record)
            payload["summary"] = summarise(payload["cases"])
            write_json(args.out, payload)
            if args.markdown is not None:
                write_text(args.markdown, markdown(payload))
            print(
                f"{name}: input {record['blurred']['psnr']:.2f} -> {record['result']['psnr']:.2f} dB "
                f"({record['gain']:+.2f}; true kernel {record['true_kernel']['psnr']:.2f}), "
                f"ksim {record['result']['kernel_similarity']:.3f}, {record['result']['seconds']:.1f} s"
                + (f", {len(record['warnings'])} warning(s)" if record["warnings"] else ""),
                file=sys.stderr, flush=True,
            )  # fmt: skip
    for group, s in payload["summary"].items():
        print(
            f"{group}: gain {s['gain']:+.2f} dB (gap to true kernel {s['gap_to_reference']:.2f}), "
            f"{s['worse_than_input']}/{s['cases']} worse than input, {s['warned']} warned"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
