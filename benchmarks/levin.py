"""Levin et al.'s benchmark: 32 real camera-shake images, scored as the literature does.

For every image: deblur with the true kernel's *size* (the literature's setting), then score
the result up to shift against the sharp image (PSNR, SSIM), its error ratio against the
fixed non-blind reference (``napari_selfmsnet.engine.nonblind.deconvolve`` with the true kernel,
method "sparse", default weight), and its kernel's similarity to the true kernel. The same
figures are recorded for the blurred input and the non-blind reference, so every table carries
both anchors. Results (with the machine description) are rewritten after every image: a crash
at image 20 keeps the first 19.

Results are clipped to ``[0, 1]`` before scoring, as writing them to an 8-bit file would.

Examples
--------
python benchmarks/levin.py --preset fast --out results/levin_fast.json --markdown results/levin_fast.md
python benchmarks/levin.py --baseline true-kernel --out results/levin_nonblind.json
python benchmarks/levin.py --preset fast --images "im1_kernel*" --iterations 50 --out /tmp/quick.json
python benchmarks/levin.py --preset quality --set "amp='bf16'" --images im1_kernel3 --out results/q.json
python benchmarks/levin.py --preset quality --images im4_kernel6 --trace 100 --out results/q_trace.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import (
    DATA_ROOT,
    config_of,
    machine_info,
    mean,
    parse_config_changes,
    peak_memory,
    reset_peak_memory,
    write_json,
    write_text,
)

from napari_selfmsnet import PRESETS, SolverConfig, deblur
from napari_selfmsnet.engine.devices import resolve_device
from napari_selfmsnet.engine.nonblind import DEFAULT_ITERATIONS, DEFAULT_WEIGHTS, deconvolve
from napari_selfmsnet.evaluation.levin import LevinCase, list_levin_cases, load_levin_case
from napari_selfmsnet.evaluation.metrics import levin_scores

BASELINES = ("blurred", "true-kernel")
REFERENCE_METHOD = "sparse"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA_ROOT / "levin", help="folder with imI_kernelJ_img.png and gt/ (default: %(default)s)")
    parser.add_argument("--images", default="im*_kernel*", help='glob on the case names, e.g. "im1_kernel*" (default: all 32)')
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS), help="deblur preset (default: %(default)s)")
    parser.add_argument("--method", default="self-msnet", help="deblur method (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=None, help="override the preset's iterations")
    parser.add_argument(
        "--set", dest="changes", type=parse_config_changes, action="append", default=[], metavar="FIELD=VALUE",
        help="change SolverConfig fields of the preset, e.g. \"amp='bf16'\" (repeatable; FIELD=VALUE;FIELD=VALUE)",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda:N or mps (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--baseline", choices=BASELINES, default=None,
        help="score a baseline instead of deblur: the blurred input itself, or the non-blind reference with the true kernel",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the results")
    parser.add_argument("--markdown", type=Path, default=None, help="also write a markdown table here")
    parser.add_argument(
        "--save", type=Path, default=None, metavar="DIR",
        help="also keep each result's image and kernel here (NAME.npz), e.g. to finish a long run's kernel differently",
    )  # fmt: skip
    parser.add_argument(
        "--trace", type=int, default=None, metavar="N",
        help="also score the run's current image and kernel every N iterations, to see where a long run peaks",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.changes = {name: value for item in args.changes for name, value in item.items()}
    if args.trace is not None and args.trace < 1:
        parser.error(f"--trace must be a positive number of iterations, got {args.trace}")
    return args


def preset_of(args: argparse.Namespace) -> str | SolverConfig:
    """The preset's name (recorded as such in the results), or with ``--set`` changes its SolverConfig."""
    return config_of(args) if args.changes else args.preset


def run_case(case: LevinCase, args: argparse.Namespace, device: torch.device) -> dict:
    """Score one image: the method (or baseline), the blurred input and the non-blind reference."""
    start = time.perf_counter()
    reference = np.clip(deconvolve(case.blurred, case.kernel, method=REFERENCE_METHOD, device=device), 0, 1)
    reference_s = time.perf_counter() - start
    record = {
        "name": case.name,
        "kernel_size": list(case.kernel.shape),
        "kernel_rotated": case.rotated,
        "blurred": levin_scores(case.blurred, case.sharp),
        "true_kernel": {**levin_scores(reference, case.sharp), "seconds": reference_s},
    }
    reset_peak_memory(device)
    checked: dict = {}  # what the run said of itself; a baseline says nothing
    if args.baseline == "blurred":
        image, kernel, seconds, iterations = case.blurred, None, 0.0, 0
    elif args.baseline == "true-kernel":
        image, kernel, seconds, iterations = reference, case.kernel, reference_s, DEFAULT_ITERATIONS[REFERENCE_METHOD]
    else:
        trace: list[dict] = []

        def score_preview(progress) -> None:
            # The blind stage's previews are what the run holds at that iteration: the
            # generator's image and the current kernel, before any non-blind stage.
            # A blind run that the self-check doubts is followed by one from the next seed: its
            # steps start again, and its points are numbered as a further attempt. The last
            # iteration is the run's own result, not a trace point.
            if progress.stage == "blind" and progress.step < progress.total:
                attempt = trace[-1]["attempt"] + (progress.step <= trace[-1]["iteration"]) if trace else 0
                preview = np.clip(progress.image.astype(np.float64), 0, 1)
                scores = levin_scores(preview, case.sharp, kernel=progress.kernel, true_kernel=case.kernel)
                trace.append({"attempt": attempt, "iteration": progress.step, "loss": progress.loss, **scores})

        result = deblur(
            case.blurred.astype(np.float32), case.kernel.shape, method=args.method, preset=preset_of(args),
            iterations=args.iterations, device=str(device), seed=args.seed,
            callback=score_preview if args.trace else None, progress_every=args.trace or 10,
        )  # fmt: skip
        if args.trace:
            record["trace"] = trace
        if args.save is not None:
            args.save.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(args.save / f"{case.name}.npz", image=result.image, kernel=result.kernel)
        image, kernel = np.clip(result.image.astype(np.float64), 0, 1), result.kernel
        seconds, iterations = result.elapsed_s, result.iterations_run
        checked = {
            "warnings": result.warnings,
            "self_check": result.params["self_check"],
            "attempts": result.params["attempts"],
        }
    scores = levin_scores(image, case.sharp, reference=reference, kernel=kernel, true_kernel=case.kernel)
    record["result"] = {
        **scores,
        "seconds": seconds,
        "iterations": iterations,
        "seconds_per_iteration": seconds / iterations if iterations else None,
        **peak_memory(device),
        **checked,
    }
    return record


def summarise(records: list[dict]) -> dict:
    """Means over the images so far, for the method and both anchors."""
    results = [r["result"] for r in records]
    ratios = [r.get("error_ratio") for r in results if r.get("error_ratio") is not None]
    summary = {
        "images": len(records),
        "psnr": mean(r["psnr"] for r in results),
        "ssim": mean(r["ssim"] for r in results),
        "error_ratio": mean(ratios),
        "success_le_2": float(np.mean([q <= 2 for q in ratios])) if ratios else None,
        "success_le_3": float(np.mean([q <= 3 for q in ratios])) if ratios else None,
        "kernel_similarity": mean(r.get("kernel_similarity") for r in results),
        "seconds": mean(r["seconds"] for r in results),
        "seconds_per_iteration": mean(r["seconds_per_iteration"] for r in results),
        # A blind method may fail; it must not fail silently.
        "worse_than_input": sum(r["result"]["psnr"] < r["blurred"]["psnr"] for r in records),
        "worse_without_warning": sum(
            r["result"]["psnr"] < r["blurred"]["psnr"] and not r["result"].get("warnings") for r in records
        ),
    }
    for anchor in ("blurred", "true_kernel"):
        summary[anchor] = {
            "psnr": mean(r[anchor]["psnr"] for r in records),
            "ssim": mean(r[anchor]["ssim"] for r in records),
        }
    return summary


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(payload: dict) -> str:
    """Per-image rows, then the mean of the method and of both anchors."""
    run, machine, summary = payload["run"], payload["machine"], payload["summary"]
    label = f"baseline: {run['baseline']}" if run["baseline"] else f"{run['method']}, preset {run['preset']}"
    lines = [
        f"# Levin et al. benchmark — {label}",
        "",
        f"{summary['images']} images; {machine['device']}; CPU {machine['cpu']} "
        f"({machine['torch_threads']} torch threads); torch {machine['torch']}; {machine['date']}.",
        "Scored up to shift (crop 15, shifts ±5 px, step 0.25); results clipped to [0, 1]; "
        f"error ratio against non-blind '{REFERENCE_METHOD}' deconvolution with the true kernel.",
        "",
        "| image | kernel | PSNR | SSIM | error ratio | kernel sim. | s | s/it | blurred PSNR | true-kernel PSNR |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for record in payload["images"]:
        r = record["result"]
        kh, kw = record["kernel_size"]
        lines.append(
            f"| {record['name']} | {kh}x{kw} | {r['psnr']:.2f} | {r['ssim']:.4f} | {_fmt(r.get('error_ratio'), '.2f')} | "
            f"{_fmt(r.get('kernel_similarity'), '.3f')} | {r['seconds']:.1f} | {_fmt(r['seconds_per_iteration'], '.3f')} | "
            f"{record['blurred']['psnr']:.2f} | {record['true_kernel']['psnr']:.2f} |"
        )
    lines += [
        "",
        "| row | PSNR | SSIM | error ratio | success ≤2 | success ≤3 | kernel sim. | s / image | s / it |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| **{label}** | {_fmt(summary['psnr'], '.2f')} | {_fmt(summary['ssim'], '.4f')} | "
        f"{_fmt(summary['error_ratio'], '.2f')} | {_fmt(summary['success_le_2'], '.0%')} | "
        f"{_fmt(summary['success_le_3'], '.0%')} | {_fmt(summary['kernel_similarity'], '.3f')} | "
        f"{_fmt(summary['seconds'], '.1f')} | {_fmt(summary['seconds_per_iteration'], '.3f')} |",
        f"| non-blind, true kernel ({REFERENCE_METHOD}) | {_fmt(summary['true_kernel']['psnr'], '.2f')} | "
        f"{_fmt(summary['true_kernel']['ssim'], '.4f')} | 1.00 | | | | | |",
        f"| blurred input | {_fmt(summary['blurred']['psnr'], '.2f')} | {_fmt(summary['blurred']['ssim'], '.4f')} | | | | | | |",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cases = list_levin_cases(args.data, args.images)
    if not cases:
        print(f"no case matches {args.images!r} under {args.data}", file=sys.stderr)
        return 2
    payload = {
        "benchmark": "levin",
        "run": {
            "method": args.method, "preset": args.preset, "iterations": args.iterations, "seed": args.seed,
            "changes": args.changes,
            "baseline": args.baseline, "images": args.images, "data": str(args.data),
            "reference": {"method": REFERENCE_METHOD, "weight": DEFAULT_WEIGHTS[REFERENCE_METHOD],
                          "iterations": DEFAULT_ITERATIONS[REFERENCE_METHOD]},
        },  # fmt: skip
        "machine": machine_info(device),
        "images": [],
        "summary": {},
    }
    for index, (i, j) in enumerate(cases, start=1):
        record = run_case(load_levin_case(args.data, i, j), args, device)
        payload["images"].append(record)
        payload["summary"] = summarise(payload["images"])
        write_json(args.out, payload)
        if args.markdown is not None:
            write_text(args.markdown, markdown(payload))
        r = record["result"]
        print(
            f"[{index}/{len(cases)}] {record['name']}: PSNR {r['psnr']:.2f} SSIM {r['ssim']:.4f} "
            f"ratio {_fmt(r.get('error_ratio'), '.2f')} ksim {_fmt(r.get('kernel_similarity'), '.3f')} "
            f"{r['seconds']:.1f} s (blurred {record['blurred']['psnr']:.2f}, true kernel {record['true_kernel']['psnr']:.2f})",
            file=sys.stderr, flush=True,
        )  # fmt: skip
    s = payload["summary"]
    print(
        f"mean over {s['images']}: PSNR {s['psnr']:.2f} SSIM {s['ssim']:.4f} ratio {_fmt(s['error_ratio'], '.2f')} "
        f"success<=2 {_fmt(s['success_le_2'], '.0%')} ksim {_fmt(s['kernel_similarity'], '.3f')} | "
        f"true kernel {s['true_kernel']['psnr']:.2f}/{s['true_kernel']['ssim']:.4f} | "
        f"blurred {s['blurred']['psnr']:.2f}/{s['blurred']['ssim']:.4f}"
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
