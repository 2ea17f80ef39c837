"""The final deconvolution's weight on saved kernels: which weight rule serves estimated kernels.

The final sparse deconvolution's weight follows the measured noise (``noise_weight_law``,
fitted on true kernels, times ``final_noise_factor``) and is raised by the discrepancy rule
(``residual_floor``) when the re-blurred estimate fits the noise. An estimated kernel is never
exact, and a stronger prior also absorbs its error, so the best weight for a blind run's own
kernel may lie above the law.
The weight does not steer the kernel (seeds and retries are judged at the check's own weight),
so it can be chosen afterwards: this script takes the cases ``noise.py --save DIR`` kept (the
input, the run's final kernel, whether the run took it for a smooth PSF, how well its starts
agreed, the sharp image), deconvolves each input with its kernel as ``deblur`` finishes a run
under every ``--variant`` (``SolverConfig`` fields changed from the preset, with the polish
off: the kernel is already final; ``cautious_agreement`` and ``cautious_factor`` act on the
saved agreement) and scores the results as ``noise.py`` does. The unchanged preset reproduces
the saved results (checked per case), except where the run averaged the deconvolutions of
several kernels (``params["ensemble"]`` above 1, see ``ensemble_margin``): one kernel cannot
replay those, so such rows are marked ``"ensemble"`` and replayed from the kept kernel alone;
save with ``--set ensemble_margin=0`` to study the weight on single kernels.

Example::

    python benchmarks/noise.py --suite levin --levels 5 --threads 1 --save results/saved --out /tmp/n.json
    python benchmarks/final_weight.py results/saved --variant "final_noise_factor=2" \
        --variant "residual_floor=1.0" --out results/final_weight.json
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _common import machine_info, mean, noise_scores, nonblind_like_deblur, parse_config_changes, write_json

from napari_selfmsnet import PRESETS
from napari_selfmsnet.engine.devices import resolve_device


def score(image: np.ndarray, sharp: np.ndarray, counts: bool) -> float:
    return noise_scores(image, sharp, counts)["psnr"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("saved", type=Path, help="the folder of noise.py --save")
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS))
    parser.add_argument("--variant", action="append", default=[], help="FIELD=VALUE[;FIELD=VALUE]; repeatable")
    parser.add_argument("--cases", default="*", help="glob on the saved file names (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    base = replace(PRESETS[args.preset], polish_rounds=0)
    variants = {"preset": base} | {v: replace(base, **parse_config_changes(v)) for v in args.variant}
    rows = []
    for path in sorted(args.saved.glob(f"{args.cases}.npz")):
        saved = np.load(path)
        counts = saved["blurred"].dtype != np.uint8
        row = {
            "name": path.stem,
            "group": str(saved["group"]),
            "input": score(saved["blurred"], saved["sharp"], counts),
        }
        row["saved"] = score(saved["image"], saved["sharp"], counts)
        row["ensemble"] = int(saved["ensemble"]) if "ensemble" in saved else 1
        # Saves made before these were kept replay as a motion blur with one start.
        decided = {}
        if "smooth_psf" in saved:
            agreement = float(saved["agreement"])
            decided = {"smooth_psf": bool(saved["smooth_psf"]), "agreement": None if np.isnan(agreement) else agreement}
        for label, config in variants.items():
            _, image = nonblind_like_deblur(saved["blurred"], saved["kernel"], config, device, **decided)
            row[label] = score(image, saved["sharp"], counts)
        rows.append(row)
        print(
            f"{row['name']}: " + ", ".join(f"{k} {row[k]:.2f}" for k in ["input", "saved", *variants]),
            file=sys.stderr,
            flush=True,
        )
    groups = sorted({r["group"] for r in rows})
    summary = {
        g: {
            label: {
                "gain": mean(r[label] - r["input"] for r in rows if r["group"] == g),
                "worse_than_input": sum(r[label] < r["input"] for r in rows if r["group"] == g),
            }
            for label in ["saved", *variants]
        }
        for g in groups
    }
    write_json(
        args.out, {"benchmark": "final_weight", "machine": machine_info(device), "summary": summary, "cases": rows}
    )
    for g in groups:
        print(
            g + ": " + "; ".join(f"{k} {v['gain']:+.2f} ({v['worse_than_input']} worse)" for k, v in summary[g].items())
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
