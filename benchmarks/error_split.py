"""Where a saved result's error lies, against a sparse deconvolution with the result's own kernel.

For every Levin case with a result saved by ``levin.py --save DIR``, the result and the input
deconvolved with the result's kernel by the sparse solver (as a ``final="nonblind"`` run
finishes, without polish rounds) are each reported with:

- PSNR after Levin's alignment up to shift;
- the share of the squared error in five bands of the sharp image's intensity, as fractions
  of the blurred image's range ``[lo, hi]``: below 5 %, 5-20 %, 20-80 %, 80-95 %, above 95 %
  (the bands' share of the pixels is reported too);
- the rms of the image blurred by the kernel minus the blurred input (``--border`` pixels
  off every side left out): how closely the image explains the data.

And, for every case, what ``headroom=1`` can cost at most: the PSNR of the sharp image clipped
to its blurred image's range, which bounds the result of a network whose sigmoid spans that
range.

A kernel saved off centre (results saved before commit bb123ef) comes with an image in that
kernel's frame; both are moved as ``deblur`` returns them since then (image shifted by the
kernel's offset, kernel centred), so old and new results are read alike.

Example::

    python benchmarks/error_split.py --saved results/quality_bf16_dotnl_saved --out results/error_split_quality.json
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _common import DATA_ROOT, machine_info, nonblind_like_deblur, write_json

from napari_selfmsnet import PRESETS
from napari_selfmsnet.engine.convolution import center_crop, center_kernel, kernel_offset, valid_convolve
from napari_selfmsnet.engine.devices import resolve_device
from napari_selfmsnet.evaluation.levin import LevinCase, list_levin_cases, load_levin_case
from napari_selfmsnet.evaluation.metrics import align_up_to_shift, psnr

#: Band edges as fractions of the blurred image's range (the outer ones are open).
BANDS = (0.05, 0.2, 0.8, 0.95)


def registered(image: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(image, kernel)`` as ``deblur`` returns them: kernel centred, image moved with it."""
    k = torch.from_numpy(np.ascontiguousarray(kernel, dtype=np.float32))
    dy, dx = kernel_offset(k)
    # np.roll wraps |offset| edge rows round; the alignment's crop and --border drop them.
    return np.roll(image, (dy, dx), axis=(0, 1)), center_kernel(k).numpy()


def clip_ceiling(case: LevinCase) -> dict:
    lo, hi = float(case.blurred.min()), float(case.blurred.max())
    clipped = np.clip(case.sharp, lo, hi)
    return {
        # metrics.psnr would warn on a zero error; nothing clipped means no ceiling.
        "clip_psnr": float("inf") if np.array_equal(clipped, case.sharp) else psnr(clipped, case.sharp),
        "outside_fraction": float(np.mean((case.sharp < lo) | (case.sharp > hi))),
    }


def describe(image: np.ndarray, kernel: np.ndarray, case: LevinCase, border: int) -> dict:
    aligned = align_up_to_shift(np.clip(image, 0, 1), case.sharp)
    error = (aligned.aligned - aligned.sharp) ** 2
    lo, hi = float(case.blurred.min()), float(case.blurred.max())
    edges = [-np.inf, *(lo + f * (hi - lo) for f in BANDS), np.inf]
    bands = [(aligned.sharp >= a) & (aligned.sharp < b) for a, b in itertools.pairwise(edges)]
    reblurred = valid_convolve(torch.from_numpy(image)[None, None], torch.from_numpy(kernel))[0, 0].numpy()
    observed = center_crop(case.blurred, kernel.shape)
    residual = (reblurred - observed)[border:-border, border:-border]
    return {
        "psnr": psnr(aligned.aligned, aligned.sharp),
        "shift": list(aligned.shift),
        "error_share": [float(error[b].sum() / error.sum()) for b in bands],
        "pixel_share": [float(b.mean()) for b in bands],
        "data_fit_rms": float(np.sqrt(np.mean(residual**2))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA_ROOT / "levin")
    parser.add_argument("--images", default="im*_kernel*", help="glob on the case names (default: all 32)")
    parser.add_argument("--saved", type=Path, default=None, help="folder of levin.py --save results")
    parser.add_argument("--border", type=int, default=10, help="pixels left out of the data-fit rms per side")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.border < 1:
        parser.error("--border must be at least 1")
    device = resolve_device(args.device)
    # The sparse deconvolution of a final="nonblind" run, without polish rounds: the same solver and
    # weight a run's own kernel would meet.
    config = replace(PRESETS["quality"], final="nonblind", polish_rounds=0)

    records = []
    for indices in list_levin_cases(args.data, args.images):
        case = load_levin_case(args.data, *indices)
        record = {"name": case.name, **clip_ceiling(case)}
        path = None if args.saved is None else args.saved / f"{case.name}.npz"
        if path is not None and path.exists():
            saved = np.load(path)
            image, kernel = registered(saved["image"].astype(np.float32), saved["kernel"])
            _, sparse = nonblind_like_deblur(case.blurred, kernel, config, device)
            record["result"] = describe(image, kernel, case, args.border)
            record["sparse_own_kernel"] = describe(sparse, kernel, case, args.border)
            for label in ("result", "sparse_own_kernel"):
                r = record[label]
                print(
                    f"{case.name} {label}: PSNR {r['psnr']:.2f}, error share by band "
                    f"{' '.join(f'{100 * s:.1f}' for s in r['error_share'])} %, data-fit rms {r['data_fit_rms']:.4f}",
                    file=sys.stderr,
                )
        print(
            f"{case.name}: sharp clipped to the blurred range {record['clip_psnr']:.2f} dB "
            f"({100 * record['outside_fraction']:.2f} % of pixels outside)",
            file=sys.stderr,
        )
        records.append(record)
    payload = {
        "benchmark": "error_split",
        "run": {"images": args.images, "saved": None if args.saved is None else str(args.saved), "bands": BANDS},
        "machine": machine_info(device),
        "images": records,
        "summary": {"min_clip_psnr": min(r["clip_psnr"] for r in records)} if records else {},
    }
    write_json(args.out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
