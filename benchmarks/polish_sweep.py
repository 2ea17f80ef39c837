"""Finishing-stage variants on fixed generator kernels: what the polish alone is worth.

The generator stage is nearly all of a run's time (about 50-100 s per Levin image on one CPU
core); the polish rounds and the final deconvolution take seconds, and a short generator run is
sensitive to rounding, so comparing polish settings through full runs mixes the two. Here the
generator stage runs once per Levin image (``deblur`` with ``polish_rounds=0``: its kernel,
centred, saved under ``--cache``; reused by later sweeps), then the same kernel is polished
under every ``--variant`` (``SolverConfig`` fields changed from the preset, e.g.
``polish_support_factor=4`` or ``polish_rounds=8;polish_weights=(2e-4,2e-4)``) and the input is
deconvolved with the result, as ``deblur`` finishes a ``final="nonblind"`` run, and scored by
the Levin protocol. Whatever is chosen from such a table is in-sample; a full ``levin.py`` run
is the test. ``--noise`` runs on ``noise.py``'s noisy Levin cases instead (the same draws: Lai
et al.'s protocol, 8-bit), whose full-run test is ``noise.py``.

Example::

    python benchmarks/polish_sweep.py --preset balanced --images "im*_kernel7" --threads 1 \
        --variant polish_support_factor=2 --variant polish_support_factor=4 \
        --cache results/polish_cache --out results/polish_sweep.json
    python benchmarks/polish_sweep.py --preset fast --noise 1 --threads 1 \
        --variant "polish_rounds=10" --variant "polish_noise_floor=2.5" \
        --cache results/polish_cache --out results/polish_sweep_1pc.json
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _common import DATA_ROOT, machine_info, mean, nonblind_like_deblur, parse_config_changes, unit_range, write_json

from napari_selfmsnet import PRESETS, deblur
from napari_selfmsnet.engine.devices import resolve_device
from napari_selfmsnet.evaluation.levin import LevinCase, list_levin_cases, load_levin_case, synthetic_blur
from napari_selfmsnet.evaluation.metrics import levin_scores


def generator_kernel(case: LevinCase, args: argparse.Namespace, device: torch.device) -> np.ndarray:
    """The preset's generator-stage kernel for ``case`` (centred), from the cache or computed."""
    iterations = args.iterations or PRESETS[args.preset].iterations
    noise = f"_{args.noise:g}pc" if args.noise else ""
    path = args.cache / f"{args.preset}_{iterations}it_seed{args.seed}_{case.name}{noise}.npy"
    if path.exists():
        return np.load(path)
    config = replace(PRESETS[args.preset], polish_rounds=0, iterations=iterations)
    # A noisy case is handed over as its 8-bit counts, as noise.py hands it to deblur.
    image = case.blurred if case.blurred.dtype == np.uint8 else case.blurred.astype(np.float32)
    result = deblur(image, case.kernel.shape, preset=config, device=str(device), seed=args.seed)
    args.cache.mkdir(parents=True, exist_ok=True)
    np.save(path, result.kernel)
    print(f"{case.name}: generator stage {result.elapsed_s:.1f} s, cached", file=sys.stderr, flush=True)
    return result.kernel


def polish_and_score(case: LevinCase, kernel: np.ndarray, config, device: torch.device) -> dict:
    """Finish ``kernel`` under ``config`` as ``deblur`` does, in its normalised units; score."""
    polished, image = nonblind_like_deblur(case.blurred, kernel, config, device)
    eight_bit = case.blurred.dtype == np.uint8
    return levin_scores(unit_range(image, eight_bit=eight_bit), case.sharp, kernel=polished, true_kernel=case.kernel)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA_ROOT / "levin")
    parser.add_argument("--images", default="im*_kernel*", help="glob on the case names (default: all 32)")
    parser.add_argument("--preset", default="balanced", choices=sorted(PRESETS))
    parser.add_argument("--variant", action="append", default=[], help="FIELD=VALUE[;FIELD=VALUE]; repeatable")
    parser.add_argument("--iterations", type=int, default=None, help="override the preset's iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--noise", type=float, default=0.0, help="Gaussian noise, %% of the range (noise.py's cases)")
    parser.add_argument("--cache", type=Path, required=True, help="folder for the generator-stage kernels")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    variants = {label: parse_config_changes(label) for label in (args.variant or ["polish_rounds=10"])}
    cases = list_levin_cases(args.data, args.images)
    if not cases:
        print(f"no case matches {args.images!r} under {args.data}", file=sys.stderr)
        return 2
    payload = {
        "benchmark": "polish_sweep",
        "run": {
            "preset": args.preset,
            "iterations": args.iterations,
            "seed": args.seed,
            "images": args.images,
            "noise_percent": args.noise,
            "variants": list(variants),
        },
        "machine": machine_info(device),
        "images": [],
        "summary": {},
    }
    for i, j in cases:
        case = load_levin_case(args.data, i, j)
        if args.noise:
            blurred, sharp = synthetic_blur(case, args.noise / 100.0, seed=100 * i + j)
            case = replace(case, blurred=blurred, sharp=sharp)
        kernel = generator_kernel(case, args, device)
        record = {"name": case.name}
        for label, changes in variants.items():
            record[label] = polish_and_score(case, kernel, replace(PRESETS[args.preset], **changes), device)
        payload["images"].append(record)
        payload["summary"] = {
            label: {
                "psnr": mean(r[label]["psnr"] for r in payload["images"]),
                "kernel_similarity": mean(r[label]["kernel_similarity"] for r in payload["images"]),
            }
            for label in variants
        }
        write_json(args.out, payload)
        print(case.name, "  ".join(f"{label}: {record[label]['psnr']:.2f}" for label in variants), flush=True)
    for label, s in payload["summary"].items():
        print(f"mean over {len(payload['images'])}: {label}: PSNR {s['psnr']:.2f} ksim {s['kernel_similarity']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
