"""The alternating optimizer: an Adam step on the generator, then the kernel step, per iteration.

:func:`optimize` is a stage generator (:mod:`.steps`): it yields an :class:`OptimizerState`
every ``progress_every`` iterations and after the last one, and returns the final state; a
true value sent at a yield before the last stops the run there, and the state just yielded is
returned. Every state is a complete, valid estimate.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

# torch.optim imports torch._dynamo when the first optimizer is made (about a second on a CPU).
# Paid at import, it leaves a run's first steps, which a stop cannot interrupt, that much shorter.
import torch
import torch._dynamo  # noqa: F401

from .config import SolverConfig
from .convolution import (
    ScaleGeometry,
    center_crop,
    downsample,
    register_to_observation,
    scale_geometry,
    valid_convolve,
)
from .kernel_step import delta_kernel, estimate_kernel
from .losses import differentiable_ssim, total_variation
from .network import SelfMSNet, canvas_size, scale_level

__all__ = [
    "OptimizerState",
    "WarmStart",
    "autocast_dtype_for",
    "build_generator",
    "memory_format_for",
    "noise_inputs",
    "optimize",
]

# Stride-2 levels of the generator's encoder.
_DEPTH = 5
# Iterations between in-memory checkpoints the divergence guard can roll back to.
_CHECKPOINT_EVERY = 50
# Roll-backs allowed before the run gives up and reports the last good estimate.
_MAX_RECOVERIES = 5


@dataclass
class WarmStart:
    """What a finished run hands to the next one (the next plane of a stack).

    The generator's weights, its noise inputs and the per-scale kernels, on the CPU. A run
    started from it begins where the previous one ended, so on a plane that resembles the
    previous one it needs far fewer iterations (see ``docs/benchmarks.md``).
    """

    network: dict[str, torch.Tensor]
    inputs: list[torch.Tensor]
    kernels: list[torch.Tensor]
    #: Adam's state (moment estimates): a fresh Adam's first steps are about ``lr`` per weight
    #: whatever the gradient, which would throw a fitted network off its fit.
    optimizer: dict
    #: Everything the network's and the inputs' shapes depend on; must match to be reused.
    signature: tuple


@dataclass
class OptimizerState:
    """A snapshot of the run. Tensors are detached; ``image`` is the full-scale estimate.

    Shape: ``image`` ``(1, C, H, W)`` in the normalised units of the observation, the part
    of the generator's padded output that lies under the observation; ``kernel`` ``(kh, kw)``,
    centred (both by :func:`.convolution.register_to_observation`); ``history`` one loss per
    iteration run so far; ``scale_kernels`` the kernel of every scale of the pyramid at the
    same iteration, coarse to fine, as the kernel step left them (not centred).
    ``finished`` and ``warm_start`` are set on the state of a run that ran to its end only.
    """

    iteration: int
    total: int
    loss: float
    image: torch.Tensor
    kernel: torch.Tensor
    history: list[float]
    recoveries: int = 0
    scale_kernels: list[torch.Tensor] = field(default_factory=list)
    finished: bool = False
    warm_start: WarmStart | None = None


def noise_inputs(
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


def build_generator(config: SolverConfig, channels: int, seed: int) -> SelfMSNet:
    """The generator of a run with ``config``, its weights drawn from ``seed`` (on the CPU).

    Weight initialisation uses the global RNG; it is forked (with every CUDA device's, which
    ``manual_seed`` reseeds too), so the caller's RNG state is untouched and the same seed
    always gives the same weights.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return SelfMSNet(
            config.scales,
            out_channels=channels,
            width=config.width,
            skip_channels=config.skip_channels,
            input_channels=config.input_channels,
            depth=_DEPTH,
            nonlocal_levels=config.nonlocal_levels,
        )


def _lr_at(config: SolverConfig, iteration: int) -> float:
    drops = sum(iteration >= round(m * config.iterations) for m in config.lr_milestones)
    return config.lr * 0.5**drops


def autocast_dtype_for(config: SolverConfig, device: torch.device) -> torch.dtype | None:
    """The reduced precision of the generator pass, or None for float32."""
    if config.amp == "off" or (config.amp == "auto" and device.type != "cuda"):
        return None
    if config.amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if config.amp == "bf16" else torch.float16


def memory_format_for(config: SolverConfig, device: torch.device) -> torch.memory_format:
    """The layout of the generator's feature maps on ``device`` (``config.memory_format`` with "auto" resolved)."""
    # channels_last feeds the tensor cores on CUDA and oneDNN's blocked convolutions on CPU
    # (faster per iteration on both, docs/benchmarks.md); MPS is left as it is.
    if config.memory_format == "channels_last" or (
        config.memory_format == "auto" and device.type in ("cuda", "cpu")
    ):
        return torch.channels_last
    return torch.contiguous_format


def _signature(config: SolverConfig, channels: int, shape: tuple[int, int], kernel_shape: tuple[int, int]) -> tuple:
    return (
        config.scales,
        config.width,
        config.skip_channels,
        config.input_channels,
        config.nonlocal_levels,
        channels,
        tuple(shape),
        tuple(kernel_shape),
    )


def optimize(
    observation: torch.Tensor,
    kernel_shape: tuple[int, int],
    config: SolverConfig,
    *,
    seed: int = 0,
    warm_start: WarmStart | None = None,
    progress_every: int = 10,
    noise_sigma: float = 0.0,
) -> Generator[OptimizerState, Any, OptimizerState]:
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
    warm_start : WarmStart, optional
        Start from a previous run's network, noise inputs and kernels instead of from scratch
        (the previous run must have had the same image and kernel size and network settings).
        Such a run uses the MSE loss and the edge mask from its first iteration, and continues
        the previous run's Adam state at the step size a run from scratch ends with.
    progress_every : int
        Iterations between the states yielded.
    noise_sigma : float
        The noise of ``observation`` (standard deviation, in its normalised units; see
        :mod:`.noise`). Each scale's kernel step weighs its data against it: the pyramid's
        area averaging divides it by the linear size ratio of each scale.

    Yields
    ------
    OptimizerState
        Every ``progress_every`` iterations, and after the last iteration (so a run of
        ``progress_every`` iterations or fewer reports too, and a progress bar reaches its
        total); sending a true value back stops the run, which then returns that state (at
        the last one, the run has ended anyway and returns its final state).

    Returns
    -------
    OptimizerState
        The final state: ``finished=True`` with ``warm_start`` set for a run that ran to its
        end, else the state the stop was sent at.

    Notes
    -----
    The loss stays on the device and is read back once every ``progress_every``
    iterations, so a GPU run is not stalled by a host synchronisation per iteration; the
    divergence guard checks those losses and, on a non-finite one, rolls the network, the
    optimizer and the kernels back to the last checkpoint and goes on with half the step.
    """
    device = observation.device
    _, channels, h, w = observation.shape
    signature = _signature(config, channels, (h, w), kernel_shape)
    if warm_start is not None and warm_start.signature != signature:
        raise ValueError(
            "warm_start comes from a run with a different image size, kernel size, channel count or "
            f"network settings ({warm_start.signature} vs {signature}); start this run from scratch"
        )
    geometry = scale_geometry((h, w), kernel_shape, config.scales)
    padded = [g.padded for g in geometry]
    canvas = canvas_size(padded, config.scales, _DEPTH)
    targets = [downsample(observation, g.image) for g in geometry]
    scale_noise = [noise_sigma * math.sqrt(g.image[0] * g.image[1] / (h * w)) for g in geometry]
    fresh = warm_start is None
    memory_format = memory_format_for(config, device)
    autocast_dtype = autocast_dtype_for(config, device)

    generator = torch.Generator(device=device).manual_seed(seed)
    net = build_generator(config, channels, seed)
    if warm_start is not None:
        net.load_state_dict(warm_start.network)
        inputs = [z.to(device) for z in warm_start.inputs]
        kernels = [k.to(device) for k in warm_start.kernels]
    else:
        inputs = noise_inputs(geometry, canvas, config.input_channels, generator, device)
        kernels = [delta_kernel(g.kernel, device=device) for g in geometry]
    net = net.to(device=device, memory_format=memory_format)
    inputs = [z.contiguous(memory_format=memory_format) for z in inputs]
    model = torch.compile(net) if config.compile else net
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    if warm_start is not None:
        optimizer.load_state_dict(warm_start.optimizer)
    # float16 needs loss scaling against underflowing gradients; bfloat16 and float32 do not.
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)

    history: list[float] = []
    pending: list[torch.Tensor] = []
    checkpoint = _Checkpoint.take(net, optimizer, kernels, 0)
    # A warm start continues at the step size a run from scratch ends with: it refines a fit.
    lr_scale = 1.0 if fresh else 0.5 ** len(config.lr_milestones)
    recoveries = 0
    # (padded full-scale output, full-scale kernel); cropped and centred only when handed out.
    last_good = (torch.full((1, channels, *padded[-1]), 0.5, device=device), kernels[-1])
    latest = last_good
    good_kernels = latest_kernels = list(kernels)

    benchmark_before = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        # The shapes never change during a run, so cuDNN's autotuning pays for itself.
        torch.backends.cudnn.benchmark = True
    try:
        iteration = 0
        while iteration < config.iterations:
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(config, iteration) * lr_scale
            # The SSIM phase and the unmasked first kernel steps only help a run find its
            # footing from scratch; a warm start already stands on the previous run's.
            use_ssim = fresh and config.loss == "ssim" and iteration < config.ssim_fraction * config.iterations
            warming = fresh and iteration < config.mask_warmup
            percentile = None if warming else config.edge_percentile_at(iteration)
            solve = iteration % config.kernel_every == 0

            optimizer.zero_grad(set_to_none=True)
            perturbed = [
                z + config.noise_std * torch.randn(z.shape, generator=generator, device=device) for z in inputs
            ]
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                outputs = model(perturbed, padded)
            outputs = [x.float() for x in outputs]
            loss = observation.new_zeros(())
            new_kernels = []
            for index, (x, y, g) in enumerate(zip(outputs, targets, geometry)):
                k = kernels[index]
                if solve:
                    estimate = estimate_kernel(
                        center_crop(x, g.kernel),
                        y,
                        g.kernel,
                        lam=config.kernel_lambda,
                        gamma=config.centroid_weight,
                        support_factor=config.support_factor(index),
                        prune_fraction=config.prune_fraction,
                        edge_percentile=percentile,
                        noise_sigma=scale_noise[index],
                        noise_weight=config.kernel_noise_weight,
                    )
                    k = torch.where(torch.isfinite(estimate).all(), estimate, k)
                new_kernels.append(k)
                blurred = valid_convolve(x, k)
                data = 1 - differentiable_ssim(blurred, y) if use_ssim else torch.mean((blurred - y) ** 2)
                loss = loss + data
                if config.tv_weight > 0:
                    loss = loss + config.tv_weight * total_variation(center_crop(x, g.kernel))

            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            kernels = new_kernels
            pending.append(loss.detach())
            latest = (outputs[-1].detach(), kernels[-1])
            latest_kernels = kernels
            iteration += 1

            if iteration % progress_every and iteration < config.iterations:
                continue
            # One host read-back for the whole window of losses.
            values = torch.stack(pending).tolist()
            pending = []
            if not all(math.isfinite(v) for v in values):
                # Divergence guard: roll back to the last checkpoint with a smaller step.
                recoveries += 1
                if recoveries > _MAX_RECOVERIES:
                    break
                checkpoint.restore(net, optimizer)
                kernels = list(checkpoint.kernels)
                iteration = checkpoint.iteration
                del history[iteration:]
                lr_scale *= 0.5
                continue
            history.extend(values)
            last_good, good_kernels = latest, latest_kernels
            if iteration % _CHECKPOINT_EVERY < progress_every:
                checkpoint = _Checkpoint.take(net, optimizer, kernels, iteration)
            state = OptimizerState(
                iteration, config.iterations, history[-1], *register_to_observation(*last_good), history, recoveries,
                scale_kernels=list(good_kernels),
            )  # fmt: skip
            if (yield state) and iteration < config.iterations:
                return state

        if recoveries > _MAX_RECOVERIES:
            # Gave up: what is handed on must be the last good state, not the diverged one.
            checkpoint.restore(net, optimizer)
            kernels = list(checkpoint.kernels)
        warm = WarmStart(
            network=_to_cpu(net.state_dict()),
            inputs=_to_cpu(inputs),
            kernels=_to_cpu(kernels),
            optimizer=_to_cpu(optimizer.state_dict()),
            signature=signature,
        )
        return OptimizerState(
            len(history),
            config.iterations,
            history[-1] if history else float("nan"),
            *register_to_observation(*last_good),
            history,
            recoveries,
            scale_kernels=list(good_kernels),
            finished=True,
            warm_start=warm,
        )
    finally:
        torch.backends.cudnn.benchmark = benchmark_before


def _to_cpu(state: object) -> object:
    """A deep copy of a state dict (or list of tensors) with every tensor on the CPU."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {key: _to_cpu(value) for key, value in state.items()}
    if isinstance(state, list):
        return [_to_cpu(value) for value in state]
    return copy.deepcopy(state)


@dataclass
class _Checkpoint:
    """An in-memory copy of the run the divergence guard can roll back to."""

    network: dict
    optimizer: dict
    kernels: list[torch.Tensor]
    iteration: int

    @classmethod
    def take(cls, net: torch.nn.Module, optimizer: torch.optim.Optimizer, kernels: list[torch.Tensor], iteration: int):
        return cls(copy.deepcopy(net.state_dict()), copy.deepcopy(optimizer.state_dict()), list(kernels), iteration)

    def restore(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        net.load_state_dict(self.network)
        optimizer.load_state_dict(self.optimizer)
