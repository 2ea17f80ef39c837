"""The public pipeline: :func:`deblur`. The widget, CLI, stacks and benchmarks all call it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .config import SolverConfig, resolve_config
from .devices import device_name, release_memory, resolve_device
from .inputs import (
    check_image,
    check_kernel_size,
    from_channels_first,
    to_channels_first,
)
from .intensity import IntensityMap
from .optimizer import optimize
from .polish import finish_with_kernel
from .records import DeblurResult, Progress
from .regions import Region, resolve_region

__all__ = ["deblur"]


def deblur(
    image: np.ndarray,
    kernel_size: int | tuple[int, int],
    *,
    method: str = "self-msnet",
    iterations: int | None = None,
    preset: str | SolverConfig = "fast",
    device: str = "auto",
    seed: int = 0,
    callback: Callable[[Progress], Any] | None = None,
    region: str | Region | tuple[int, int, int, int] = "auto",
    warm_start: DeblurResult | None = None,
) -> DeblurResult:
    """Estimate the sharp image and the blur kernel from one blurred image.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3)
        The blurred image, grey or RGB; uint8, uint16, other integers or float. Never modified.
    kernel_size : int or (int, int)
        Odd size of the blur kernel's support (err on the large side: a too-small support cannot
        hold the blur; the image must be at least twice as large).
    method : {"self-msnet", "self-msnet-s"}
        The multi-scale generator (scales 1/8, 1/4, 1/2, 1) or its single-scale ablation.
    iterations : int, optional
        Overrides the preset's number of iterations.
    preset : {"fast", "balanced", "quality"} or SolverConfig
        ``"quality"`` is the paper's configuration; ``"fast"`` a narrow network, a short run
        (about a minute on a CPU core at 255 x 255) and a sparse non-blind polish;
        ``"balanced"`` the same with twice the iterations (measured times and PSNR in
        ``docs/benchmarks.md``).
    device : str
        ``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
    seed : int
        Seeds network weights and noise: a seed reproduces a run on CPU.
    callback : callable, optional
        Called with a :class:`Progress` every few iterations; returning ``True`` or setting
        ``progress.stop`` ends the run early with the estimate so far (``cancelled=True``).
    region : "auto", "full" or (top, left, height, width)
        Where the kernel is estimated. ``"full"``: the whole frame. A rectangle: only there
        (it must hold strong edges and be at least twice the kernel size). ``"auto"``: the
        whole frame when neither side exceeds 512 px, otherwise the 384 x 384 window richest
        in strong edges. When the region is smaller than the frame, the full frame is then
        deconvolved with the estimated kernel by the sparse non-blind solver (tiled when it
        would not fit in memory), so the blind optimizer's cost depends on the region, not on
        the frame.
    warm_start : DeblurResult, optional
        A previous result (typically the neighbouring plane of a stack) whose network, noise
        inputs and kernels this run starts from; it then needs far fewer iterations. Needs
        the same image size, kernel size, method and network settings; with
        ``region="auto"`` the previous run's region is reused.

    Returns
    -------
    DeblurResult
        ``.image`` float32 (H, W[, 3]) in the input's units, ``.kernel`` float32 (kh, kw)
        summing to 1, ``.history``, ``.params`` (with the ``region`` used), ``.device``,
        ``.elapsed_s``, ``.warm_start`` (for a next run).

    Notes
    -----
    The model is ``y = k * x + n`` (uniform blur). A fresh generator network is fitted to this
    one image (no training data, no pretrained weights) while, every iteration, the kernel at
    each scale is re-solved in closed form from the current estimate.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_selfmsnet import deblur
    >>> y = np.random.default_rng(0).random((48, 48)).astype(np.float32)
    >>> result = deblur(y, 7, method="self-msnet-s", iterations=2)
    >>> result.image.shape, result.kernel.shape
    ((48, 48), (7, 7))
    """
    array = check_image(image)
    kernel_shape = check_kernel_size(kernel_size, array.shape[:2])
    config = resolve_config(preset, method, iterations)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    if warm_start is not None and not isinstance(warm_start, DeblurResult):
        raise TypeError(f"warm_start must be a DeblurResult from a previous run, got {type(warm_start).__name__}")
    if warm_start is not None and warm_start.warm_start is None:
        raise ValueError("warm_start holds no network state (it was made without one); start from scratch")
    if region == "auto" and warm_start is not None:
        region = tuple(warm_start.params["region"])
    window = resolve_region(region, array, kernel_shape)
    run_device = resolve_device(device)

    intensity = IntensityMap.fit(array, config.headroom)
    unit = intensity.to_unit(array)
    unit_window = unit[window.slices]
    observation = torch.from_numpy(to_channels_first(unit_window))[None].to(run_device)
    whole_frame = unit_window.shape[:2] == unit.shape[:2]

    def to_output(x: torch.Tensor) -> np.ndarray:
        return intensity.to_input_units(from_channels_first(x[0].detach().to("cpu", torch.float32).numpy()))

    start = time.perf_counter()
    cancelled = False
    state = None
    run = optimize(
        observation,
        kernel_shape,
        config,
        seed=int(seed),
        warm_start=None if warm_start is None else warm_start.warm_start,
    )
    try:
        for state in run:
            if callback is None or state.finished:
                continue
            progress = Progress(
                iteration=state.iteration,
                total=state.total,
                loss=state.loss,
                image=to_output(state.image),
                kernel=state.kernel.detach().cpu().numpy().astype(np.float32),
                elapsed_s=time.perf_counter() - start,
                region=None if whole_frame else window.to_list(),
            )
            if callback(progress) is True or progress.stop:
                cancelled = True
                break
        run.close()  # frees the network before the non-blind stage needs the device
        kernel = state.kernel.detach().cpu().numpy().astype(np.float32)
        kernel /= kernel.sum()
        if config.final == "nonblind" or not whole_frame:
            # The generator only ever saw the region; the frame is finished with the kernel.
            kernel, sharp = finish_with_kernel(unit_window, unit, kernel, config, run_device)
            image_out = intensity.to_input_units(sharp)
        else:
            image_out = to_output(state.image)
    finally:
        run.close()
        del observation
        release_memory(run_device)
    elapsed = time.perf_counter() - start

    params = {
        "method": method,
        "kernel_size": list(kernel_shape),
        "preset": preset if isinstance(preset, str) else "custom",
        "seed": int(seed),
        "config": config.to_dict(),
        "intensity_offset": intensity.offset,
        "intensity_scale": intensity.scale,
        "input_dtype": str(array.dtype),
        "input_shape": list(array.shape),
        "region": window.to_list(),
        "warm_started": warm_start is not None,
        "torch": torch.__version__,
    }
    return DeblurResult(
        image=image_out,
        kernel=kernel,
        history=np.asarray(state.history, dtype=np.float32),
        params=params,
        device=device_name(run_device),
        elapsed_s=elapsed,
        cancelled=cancelled,
        iterations_run=state.iteration,
        extras={"recoveries": state.recoveries},
        warm_start=None if cancelled else state.warm_start,
    )
