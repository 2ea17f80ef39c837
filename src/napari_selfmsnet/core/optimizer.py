"""The alternating optimizer: an Adam step on the generator, then the kernel step, per iteration.

:func:`optimize` is a generator: it yields an :class:`OptimizerState` every
``config.preview_every`` iterations and once at the end, so callers (the public API, the
widget's worker, batch jobs) can show progress, and stop a run simply by no longer iterating
(``close()``); the last state they received is a complete, valid estimate.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .config import SolverConfig
from .convolution import ScaleGeometry, center_crop, downsample, scale_geometry, valid_convolve
from .kernel_step import delta_kernel, estimate_kernel
from .losses import ssim, total_variation
from .network import SelfMSNet, canvas_size, scale_level

__all__ = ["OptimizerState", "optimize"]

# Iterations between in-memory checkpoints the divergence guard can roll back to.
_CHECKPOINT_EVERY = 50
# Roll-backs allowed before the run gives up and reports the last good estimate.
_MAX_RECOVERIES = 5


@dataclass
class OptimizerState:
    """A snapshot of the run. Tensors are detached; ``image`` is the full-scale estimate.

    Shape: ``image`` ``(1, C, H, W)`` in the normalised units of the observation;
    ``kernel`` ``(kh, kw)``; ``history`` one loss per iteration run so far.
    """

    iteration: int
    total: int
    loss: float
    image: torch.Tensor
    kernel: torch.Tensor
    history: list[float]
    recoveries: int = 0
    finished: bool = False


def _noise_inputs(
    geometry: list[ScaleGeometry], canvas: tuple[int, int], channels: int, generator: torch.Generator, device
) -> list[torch.Tensor]:
    """One noise draw at full canvas size, nearest-resized to each scale's canvas level."""
    base = torch.rand((1, channels, *canvas), generator=generator, device=device) * 0.1
    inputs = []
    for g in geometry:
        level = scale_level(g.scale)
        size = (canvas[0] >> level, canvas[1] >> level)
        inputs.append(base if level == 0 else torch.nn.functional.interpolate(base, size=size, mode="nearest"))
    return inputs


def _lr_at(config: SolverConfig, iteration: int) -> float:
    drops = sum(iteration >= round(m * config.iterations) for m in config.lr_milestones)
    return config.lr * 0.5**drops


def optimize(
    observation: torch.Tensor,
    kernel_shape: tuple[int, int],
    config: SolverConfig,
    *,
    seed: int = 0,
) -> Iterator[OptimizerState]:
    """Fit Self-MSNet to one observation, alternating with the closed-form kernel step.

    Parameters
    ----------
    observation : Tensor, shape (1, C, H, W)
        The blurred image, C = 1 or 3, normalised so its values lie in ``[0, 1]``; its device
        and dtype (float32) are the run's.
    kernel_shape : (kh, kw)
        Odd kernel size at full scale.
    config : SolverConfig
        The solver's settings.
    seed : int
        Seeds the network's initial weights and every noise draw (deterministic on CPU).

    Yields
    ------
    OptimizerState
        Every ``config.preview_every`` iterations, and a final one with ``finished=True``.
    """
    device = observation.device
    _, channels, h, w = observation.shape
    geometry = scale_geometry((h, w), kernel_shape, config.scales)
    padded = [g.padded for g in geometry]
    depth = 5
    canvas = canvas_size(padded, config.scales, depth)
    targets = [downsample(observation, g.image) for g in geometry]

    generator = torch.Generator(device=device).manual_seed(seed)
    # Weight initialisation uses the global RNG; fork it so the caller's RNG state is untouched.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        net = SelfMSNet(
            config.scales,
            out_channels=channels,
            width=config.width,
            skip_channels=config.skip_channels,
            input_channels=config.input_channels,
            depth=depth,
            nonlocal_levels=config.nonlocal_levels,
        ).to(device)
    inputs = _noise_inputs(geometry, canvas, config.input_channels, generator, device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)

    kernels = [delta_kernel(g.kernel, device=device) for g in geometry]
    history: list[float] = []
    checkpoint = (copy.deepcopy(net.state_dict()), copy.deepcopy(optimizer.state_dict()), list(kernels))
    lr_scale = 1.0
    recoveries = 0
    best_image = center_crop(torch.full_like(observation, 0.5), kernel_shape)
    last_good = (best_image, kernels[-1])

    iteration = 0
    while iteration < config.iterations:
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(config, iteration) * lr_scale
        use_ssim = config.loss == "ssim" and iteration < config.ssim_fraction * config.iterations
        percentile = None if iteration < config.mask_warmup else config.edge_percentile_at(iteration)

        optimizer.zero_grad(set_to_none=True)
        perturbed = [z + config.noise_std * torch.randn(z.shape, generator=generator, device=device) for z in inputs]
        outputs = net(perturbed, padded)
        loss = observation.new_zeros(())
        new_kernels = []
        for index, (x, y, g) in enumerate(zip(outputs, targets, geometry)):
            k = estimate_kernel(
                center_crop(x, g.kernel),
                y,
                g.kernel,
                lam=config.kernel_lambda,
                gamma=config.centroid_weight,
                support_factor=config.support_factor(index),
                prune_fraction=config.prune_fraction,
                edge_percentile=percentile,
            )
            if not torch.isfinite(k).all():
                k = kernels[index]
            new_kernels.append(k)
            blurred = valid_convolve(x, k)
            data = 1 - ssim(blurred, y) if use_ssim else torch.mean((blurred - y) ** 2)
            loss = loss + data
            if config.tv_weight > 0:
                loss = loss + config.tv_weight * total_variation(center_crop(x, g.kernel))
        value = float(loss.detach())

        if not math.isfinite(value):
            # Divergence guard: roll back to the last checkpoint with a smaller step.
            recoveries += 1
            if recoveries > _MAX_RECOVERIES:
                break
            net.load_state_dict(checkpoint[0])
            optimizer.load_state_dict(checkpoint[1])
            kernels = list(checkpoint[2])
            lr_scale *= 0.5
            continue

        loss.backward()
        optimizer.step()
        kernels = new_kernels
        history.append(value)
        iteration += 1
        last_good = (center_crop(outputs[-1].detach(), kernel_shape), kernels[-1])
        if iteration % _CHECKPOINT_EVERY == 0:
            checkpoint = (copy.deepcopy(net.state_dict()), copy.deepcopy(optimizer.state_dict()), list(kernels))
        if iteration % config.preview_every == 0 and iteration < config.iterations:
            yield OptimizerState(iteration, config.iterations, value, last_good[0], last_good[1], history, recoveries)

    yield OptimizerState(
        iteration,
        config.iterations,
        history[-1] if history else float("nan"),
        last_good[0],
        last_good[1],
        history,
        recoveries,
        finished=True,
    )
