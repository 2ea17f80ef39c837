"""Speed of the engine: seconds per iteration per preset, and the kernel step alone.

Measures, on one machine in one run:
- seconds per iteration of the alternating optimizer (network step + kernel steps at every
  scale) for each preset, on a ``--size`` square image with a ``--kernel`` kernel;
- the kernel step alone for the given kernel sizes, with the centring terms solved by
  Sherman-Morrison-Woodbury (ours) and, for comparison, by the dense ``k^2 x k^2`` complex
  solve the reference implementation performs every call;
- peak memory (CPU RSS; on CUDA ``torch.cuda.max_memory_allocated``).

Usage::

    python benchmarks/speed.py --out results/speed.json [--device auto] [--iterations 20]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _common import machine_info, peak_memory, reset_peak_memory, write_json

from napari_selfmsnet import PRESETS, deblur
from napari_selfmsnet.core.devices import resolve_device
from napari_selfmsnet.core.kernel_step import estimate_kernel, solve_kernel


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_iterations(preset: str, size: int, kernel: int, iterations: int, device: torch.device) -> dict:
    """Seconds per iteration of ``deblur`` (after one warm-up iteration), generator output only."""
    image = np.random.default_rng(0).random((size, size)).astype(np.float32)
    config = replace(PRESETS[preset], final="generator", refine_rounds=0)
    deblur(image, kernel, preset=config, iterations=1, device=str(device))  # warm-up
    reset_peak_memory(device)
    _sync(device)
    start = time.perf_counter()
    result = deblur(image, kernel, preset=config, iterations=iterations, device=str(device))
    _sync(device)
    seconds = (time.perf_counter() - start) / iterations
    return {
        "preset": preset,
        "width": config.width,
        "size": size,
        "kernel": kernel,
        "iterations_timed": iterations,
        "seconds_per_iteration": seconds,
        "projected_seconds_for_preset": seconds * PRESETS[preset].iterations,
        **peak_memory(device),
        "final_loss": result.final_loss,
    }


def _dense_centering_solve(z: torch.Tensor, denominator: torch.Tensor, size: tuple[int, int], gamma: float) -> torch.Tensor:
    """The reference's way: build I + a u^T + b v^T as a dense complex matrix and solve it."""
    kh, kw = z.shape
    rows = (torch.arange(kh, dtype=z.dtype) - kh // 2) / kh
    cols = (torch.arange(kw, dtype=z.dtype) - kw // 2) / kw
    u = rows[:, None].expand(kh, kw).reshape(-1)
    v = cols[None, :].expand(kh, kw).reshape(-1)

    def p_inverse(t: torch.Tensor) -> torch.Tensor:
        full = torch.fft.irfft2(torch.fft.rfft2(t.reshape(kh, kw), s=size) / denominator, s=size)
        return full[:kh, :kw].reshape(-1)

    a, b = gamma * p_inverse(u), gamma * p_inverse(v)
    dense = torch.eye(kh * kw, dtype=torch.complex64) + torch.outer(a, u).to(torch.complex64) + torch.outer(b, v).to(
        torch.complex64
    )
    return torch.linalg.solve(dense, z.reshape(-1).to(torch.complex64)).real.reshape(kh, kw)


def time_kernel_step(size: int, kernel: int, repeats: int, device: torch.device, dense: bool) -> dict:
    """The whole kernel step (edge mask, solve, clean-up); optionally the dense centring solve."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((1, 1, size, size)).astype(np.float32)).to(device)
    y = torch.from_numpy(rng.random((1, 1, size, size)).astype(np.float32)).to(device)
    kwargs = dict(lam=1e-6, gamma=1e-6, support_factor=2.0, prune_fraction=0.01, edge_percentile=90.0)
    estimate_kernel(x, y, (kernel, kernel), **kwargs)
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        estimate_kernel(x, y, (kernel, kernel), **kwargs)
    _sync(device)
    out = {"size": size, "kernel": kernel, "seconds_per_call_woodbury": (time.perf_counter() - start) / repeats}
    if dense:
        xs, ys = x[0, 0].cpu(), y[0, 0].cpu()
        z = solve_kernel(xs, ys, (kernel, kernel), lam=1e-6, gamma=0.0)
        spectrum = torch.fft.rfft2(xs)
        denominator = spectrum.real**2 + spectrum.imag**2 + 1e-3
        start = time.perf_counter()
        _dense_centering_solve(z, denominator, (size, size), 1e-3)
        out["seconds_dense_centering_solve_cpu"] = time.perf_counter() - start
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=255)
    parser.add_argument("--kernel", type=int, default=19)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--presets", nargs="+", default=sorted(PRESETS))
    parser.add_argument("--kernel-sizes", type=int, nargs="+", default=[19, 31, 75])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    report = {
        "machine": machine_info(device),
        "iterations": [time_iterations(p, args.size, args.kernel, args.iterations, device) for p in args.presets],
        "kernel_step": [
            time_kernel_step(args.size, k, repeats=10, device=device, dense=True) for k in args.kernel_sizes
        ],
    }
    write_json(args.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
