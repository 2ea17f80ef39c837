"""How fast the generator alone can fit an image: a probe of its optimisation, not of deblurring.

The network is fitted, as in a run, from its noise inputs with Adam, but to the *sharp* image
(each scale's output against that scale's level of the sharp image, padded by reflection to
the output's padded size; MSE, no kernel, no kernel step). Whatever a run's generator image
can reach with a perfect kernel, it cannot reach faster than this; a network that fits the
sharp image slowly at the paper's step size returns a poor image however good its kernel is.
Reports the PSNR of every scale's output against its target every ``--every`` steps.

Examples
--------
python benchmarks/generator_fit.py --out results/generator_fit.json
python benchmarks/generator_fit.py --lr 0.001 --iterations 200 --out results/generator_fit_lr1e-3.json
python benchmarks/generator_fit.py --set "nonlocal_levels=0" --out results/generator_fit_no_nonlocal.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import DATA_ROOT, config_of, machine_info, parse_config_changes, write_json

from napari_selfmsnet import PRESETS
from napari_selfmsnet.engine.convolution import downsample, scale_geometry
from napari_selfmsnet.engine.devices import resolve_device
from napari_selfmsnet.engine.network import canvas_size
from napari_selfmsnet.engine.optimizer import autocast_dtype_for, build_generator, memory_format_for, noise_inputs
from napari_selfmsnet.evaluation.levin import list_levin_cases, load_levin_case


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=DATA_ROOT / "levin", help="Levin data folder (default: %(default)s)"
    )
    parser.add_argument(
        "--image", default="im4_kernel6", help="case whose sharp image and kernel size are used (default: %(default)s)"
    )
    parser.add_argument(
        "--preset", default="quality", choices=sorted(PRESETS), help="network settings (default: %(default)s)"
    )
    parser.add_argument(
        "--set", dest="changes", type=parse_config_changes, action="append", default=[], metavar="FIELD=VALUE",
        help="change SolverConfig fields of the preset (repeatable; FIELD=VALUE;FIELD=VALUE)",
    )  # fmt: skip
    parser.add_argument("--lr", type=float, default=None, help="Adam's step size (default: the preset's lr)")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--every", type=int, default=25, help="report every this many steps (default: %(default)s)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the results")
    args = parser.parse_args(argv)
    args.changes = {name: value for item in args.changes for name, value in item.items()}
    if args.iterations < 1 or args.every < 1:
        parser.error("--iterations and --every must be positive")
    return args


def _targets(sharp: torch.Tensor, geometry) -> list[torch.Tensor]:
    """Each scale's sharp level, reflection-padded to that scale's output size."""
    out = []
    for g in geometry:
        level = downsample(sharp, g.image)
        kh, kw = g.kernel
        out.append(F.pad(level, (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2), mode="reflect"))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = config_of(args)
    lr = config.lr if args.lr is None else args.lr
    found = list_levin_cases(args.data, args.image)
    if len(found) != 1:
        raise SystemExit(f"--image {args.image!r} names {len(found)} cases in {args.data}; name exactly one")
    case = load_levin_case(args.data, *found[0])
    sharp = torch.from_numpy(case.sharp.astype(np.float32))[None, None].to(device)
    geometry = scale_geometry(tuple(sharp.shape[-2:]), case.kernel.shape, config.scales)
    padded = [g.padded for g in geometry]
    targets = _targets(sharp, geometry)

    memory_format = memory_format_for(config, device)
    autocast_dtype = autocast_dtype_for(config, device)
    net = build_generator(config, 1, args.seed).to(device=device, memory_format=memory_format)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    canvas = canvas_size(padded, config.scales, net.depth)
    inputs = noise_inputs(geometry, canvas, config.input_channels, generator, device)
    inputs = [z.contiguous(memory_format=memory_format) for z in inputs]
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)

    trace = []
    start = time.perf_counter()
    for step in range(1, args.iterations + 1):
        optimizer.zero_grad(set_to_none=True)
        perturbed = [z + config.noise_std * torch.randn(z.shape, generator=generator, device=device) for z in inputs]
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            outputs = net(perturbed, padded)
        errors = [torch.mean((x.float() - t) ** 2) for x, t in zip(outputs, targets)]
        torch.stack(errors).sum().backward()
        optimizer.step()
        if step % args.every == 0 or step == args.iterations:
            psnr = [float(-10 * np.log10(e.item())) for e in errors]
            trace.append({"iteration": step, "psnr_per_scale": psnr, "seconds": time.perf_counter() - start})
            print(
                f"step {step}: PSNR per scale (coarse to fine) {' '.join(f'{p:.2f}' for p in psnr)}",
                file=sys.stderr,
                flush=True,
            )
    payload = {
        "benchmark": "generator_fit",
        "run": {
            "image": case.name,
            "preset": args.preset,
            "changes": args.changes,
            "lr": lr,
            "iterations": args.iterations,
            "seed": args.seed,
        },
        "machine": machine_info(device),
        "trace": trace,
    }
    write_json(args.out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
