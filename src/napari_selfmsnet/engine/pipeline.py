"""The pipeline of one image: :func:`deblur_steps`, a generator of staged progress that
returns the result, and :func:`deblur`, which runs it to the end.

The stages, in order (:data:`.records.STAGES`): ``"blind"``, the alternating optimizer
(:mod:`.optimizer`) on the kernel's window; ``"polish"``, the kernel polished by rounds of
sparse deconvolution (``final="nonblind"``); ``"deconvolve"``, the whole frame deconvolved
with the kernel (``final="nonblind"``, or a window smaller than the frame). The widget's
worker iterates :func:`deblur_steps`; the command line, stacks and Dask tasks call
:func:`deblur` or :func:`napari_selfmsnet.deblur_stack`, which drain it.

Stopping (:mod:`.steps`): a true value sent at a record ends the stage that made it, with
its estimate so far, and the run goes on to the next stage, which reports (and may be
stopped) in turn; so a stopped run still returns a whole deblurred frame and a kernel. A
stop in the blind stage keeps the last record's kernel (and, with ``final="generator"`` on
the whole frame, its image); one in the polish keeps the kernel polished so far; one in the
deconvolution keeps the solver's current iterate. The result is then ``cancelled`` and
hands on no warm start.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from .config import SolverConfig, method_of, resolve_config
from .convolution import resample_kernel
from .devices import device_name, progress_every_for, release_memory, resolve_device
from .inputs import (
    check_image,
    check_kernel_size,
    check_seed,
    drop_alpha,
    from_channels_first,
    largest_kernel,
    to_channels_first,
)
from .intensity import IntensityMap
from .kernel_size import AUTO, kernel_size_steps
from .kernel_step import delta_kernel, gray_noise_factor
from .noise import NoiseModel, estimate_noise, relative_noise
from .optimizer import OptimizerState, optimize
from .polish import Finish, cautious_steps, finish_steps
from .records import DeblurResult, Progress
from .regions import Region, resolve_region
from .selfcheck import (
    MAX_RESIDUAL_CORRELATION,
    MIN_AGREEMENT,
    SelfCheck,
    border_mass,
    judged_correlation,
    kernel_similarity,
    radial_symmetry,
    structure_above_noise,
)
from .steps import drain, relay

__all__ = ["deblur", "deblur_steps"]


def deblur(
    image: np.ndarray,
    kernel_size: int | tuple[int, int] | str = AUTO,
    *,
    method: str | None = None,
    iterations: int | None = None,
    preset: str | SolverConfig = "fast",
    device: str = "auto",
    seed: int = 0,
    callback: Callable[[Progress], Any] | None = None,
    region: str | Region | tuple[int, int, int, int] = "auto",
    warm_start: DeblurResult | None = None,
    progress_every: int | None = None,
) -> DeblurResult:
    """Estimate the sharp image and the blur kernel from one blurred image.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3)
        The blurred image, grey or RGB; uint8, uint16, other integers or float. Never modified.
    kernel_size : "auto", int or (int, int)
        Odd size of the blur kernel's support. ``"auto"`` (the default) measures it from the
        image by a short blind run at half resolution (:mod:`.kernel_size`; recorded in
        ``params["kernel_size"]`` and ``params["kernel_size_measure"]``). A given size wins: err
        on the large side (a support too small cannot hold the blur); the image must be at
        least twice as large, and large enough for the method's coarsest scale.
    method : {"self-msnet", "self-msnet-s"}, optional
        The multi-scale generator (scales 1/8, 1/4, 1/2, 1) or its single-scale ablation. None:
        ``"self-msnet"`` for a named preset, the configuration's own scales for a
        :class:`SolverConfig` (a method naming other scales than the configuration's is an
        error).
    iterations : int, optional
        Overrides the preset's number of iterations.
    preset : {"fast", "balanced", "quality"} or SolverConfig
        ``"quality"`` is the paper's configuration; ``"fast"`` a narrow network, a short run
        (about a minute on a CPU core at 255 x 255) and a sparse non-blind polish;
        ``"balanced"`` the same with about twice the iterations (measured times and PSNR in
        ``docs/benchmarks.md``).
    device : str
        ``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
    seed : int
        Seeds network weights and noise. The thread count is part of reproducibility: the
        same seed, device and torch thread count (``torch.get_num_threads()``) reproduce a
        CPU run exactly, while another thread count sums in another order and the blind run,
        which amplifies such rounding differences, can then end far from the first (by more
        than the input's range in places). Record the thread count with the seed, or fix it
        (``torch.set_num_threads``; the command line's ``--torch-threads``).
    callback : callable, optional
        Called with every :class:`Progress` record (each stage's; the blind stage's every
        ``progress_every`` iterations); returning True ends the stage running with its
        estimate so far, and the run finishes from there (``cancelled=True``; see
        :mod:`napari_selfmsnet.engine.pipeline`).
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
    progress_every : int, optional
        Blind-stage iterations between progress records (and so between chances to stop).
        Each record reads the loss back from the device, so on a GPU a record every iteration
        would keep it from running ahead. By default 1 on the CPU, 10 elsewhere.

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
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    steps = deblur_steps(
        image, kernel_size, method=method, iterations=iterations, preset=preset, device=device, seed=seed,
        region=region, warm_start=warm_start, progress_every=progress_every,
    )  # fmt: skip
    return drain(steps, callback)


def deblur_steps(
    image: np.ndarray,
    kernel_size: int | tuple[int, int] | str = AUTO,
    *,
    method: str | None = None,
    iterations: int | None = None,
    preset: str | SolverConfig = "fast",
    device: str = "auto",
    seed: int = 0,
    region: str | Region | tuple[int, int, int, int] = "auto",
    warm_start: DeblurResult | None = None,
    progress_every: int | None = None,
) -> Generator[Progress, Any, DeblurResult]:
    """:func:`deblur` as a generator: yields its :class:`Progress` records, returns the result.

    The arguments are those of :func:`deblur` (without ``callback``) and are checked at once,
    so a bad one raises here, not at the first ``next()``. Send True at a record to stop the
    stage running (see the module docstring).
    """
    array, alpha = drop_alpha(np.asarray(image)) if hasattr(image, "shape") else (image, None)
    array = check_image(array)
    config = resolve_config(preset, method, iterations)
    if warm_start is not None and isinstance(warm_start, DeblurResult) and kernel_size == AUTO:
        kernel_size = tuple(warm_start.params["kernel_size"])  # the previous plane's measure
    if isinstance(kernel_size, str) and kernel_size == AUTO:
        kernel_shape = None  # measured by the "size" stage
        check_kernel_size(3, array.shape[:2], config.scales, measuring=True)  # the smallest must fit: checked now
    else:
        kernel_shape = check_kernel_size(kernel_size, array.shape[:2], config.scales)
    seed = check_seed(seed)
    if progress_every is not None and (
        not isinstance(progress_every, (int, np.integer)) or isinstance(progress_every, bool) or progress_every < 1
    ):
        raise ValueError(f"progress_every must be a positive integer, got {progress_every!r}")
    if warm_start is not None and not isinstance(warm_start, DeblurResult):
        raise TypeError(f"warm_start must be a DeblurResult from a previous run, got {type(warm_start).__name__}")
    if warm_start is not None and warm_start.warm_start is None:
        raise ValueError("warm_start holds no network state (it was made without one); start from scratch")
    if region == "auto" and warm_start is not None:
        region = tuple(warm_start.params["region"])
    # With the size still to be measured, the window is checked for the smallest kernel here and
    # for the measured one after the "size" stage.
    window = resolve_region(region, array, kernel_shape or (3, 3))
    run_device = resolve_device(device)
    if progress_every is None:
        progress_every = progress_every_for(run_device)
    intensity = IntensityMap.fit(array, config.headroom)
    noise_model = estimate_noise(array, quantised=np.issubdtype(array.dtype, np.integer))
    params = {
        "method": method_of(config),
        "kernel_size": None if kernel_shape is None else list(kernel_shape),
        "kernel_size_source": "measured" if kernel_shape is None else "given",
        "preset": preset if isinstance(preset, str) else "custom",
        "seed": int(seed),
        "config": config.to_dict(),
        "intensity_offset": intensity.offset,
        "intensity_scale": intensity.scale,
        "input_dtype": str(array.dtype),
        "input_shape": list(array.shape),
        "region": window.to_list(),
        "warm_started": warm_start is not None,
        "input_warnings": [alpha] if alpha else [],
        "torch": torch.__version__,
    }
    return _run(
        intensity.to_unit(array), kernel_shape, config, window, region, intensity, noise_model, run_device,
        int(seed), warm_start, int(progress_every), params,
    )  # fmt: skip


def _run(
    unit: np.ndarray,
    kernel_shape: tuple[int, int] | None,
    config: SolverConfig,
    window: Region,
    region_asked: object,
    intensity: IntensityMap,
    noise_model: NoiseModel,
    device: torch.device,
    seed: int,
    warm_start: DeblurResult | None,
    progress_every: int,
    params: dict[str, Any],
) -> Generator[Progress, Any, DeblurResult]:
    """The stages of :func:`deblur_steps` on ``unit``, the image in normalised units."""
    start = time.perf_counter()
    noise = noise_model.sigma / intensity.scale
    kernel_noise = noise * gray_noise_factor(1 if unit.ndim == 2 else unit.shape[2])
    cancelled = False
    if kernel_shape is None:
        probe = kernel_size_steps(
            unit[window.slices], noise, config, device, seed=seed, progress_every=progress_every,
            limit=largest_kernel(window.to_list()[2:], config.scales),
        )  # fmt: skip
        sized, cancelled = yield from relay(probe, lambda r: replace(r, elapsed_s=time.perf_counter() - start))
        kernel_shape = sized.shape
        window = resolve_region(region_asked, unit, kernel_shape)
        params.update(kernel_size=list(kernel_shape), kernel_size_measure=sized.to_dict(), region=window.to_list())
        if cancelled:  # the probe's support when it stopped, not a measure of the blur
            params.update(kernel_size_source="probe stopped")
    unit_window = unit[window.slices]
    observation = torch.from_numpy(to_channels_first(unit_window))[None].to(device)
    whole_frame = unit_window.shape[:2] == unit.shape[:2]
    region = None if whole_frame else window.to_list()

    def to_output(x: torch.Tensor) -> np.ndarray:
        return intensity.to_input_units(from_channels_first(x[0].detach().to("cpu", torch.float32).numpy()))

    def blind_record(state: OptimizerState) -> Progress:
        return Progress(
            stage="blind",
            step=state.iteration,
            total=state.total,
            loss=state.loss,
            image=to_output(state.image),
            kernel=state.kernel.detach().cpu().numpy().astype(np.float32),
            elapsed_s=time.perf_counter() - start,
            region=region,
        )

    def timed(record: Progress) -> Progress:
        # The polish works on the window, the deconvolution on the whole frame.
        return replace(
            record, elapsed_s=time.perf_counter() - start, region=region if record.stage == "polish" else None
        )

    attempts: list[tuple[OptimizerState, Finish]] = []
    try:
        for attempt in range(config.seeds + config.retries):
            if cancelled:
                # Stopped while the size was measured: no blind fit has begun, and what there is
                # so far is the input under an identity kernel (a blind fit's first iteration
                # at full size could take seconds).
                identity = delta_kernel(kernel_shape, device=device)
                state = OptimizerState(0, config.iterations, float("nan"), observation, identity, [])
            else:
                blind = optimize(
                    observation,
                    kernel_shape,
                    config,
                    seed=seed + attempt,
                    warm_start=None if warm_start is None or attempt else warm_start.warm_start,
                    progress_every=progress_every,
                    noise_sigma=kernel_noise,
                )
                state, stopped = yield from relay(blind, blind_record)
                cancelled = cancelled or stopped
            finish = yield from _finish(unit_window, unit, state, config, device, noise, kernel_noise, timed)
            cancelled = cancelled or finish.stopped
            attempts.append((state, finish))
            if cancelled or (len(attempts) >= config.seeds and not _retry_called_for(attempts, noise, config)):
                break
        # Every attempt's kernel was checked the same way: keep the one whose misfit is most like
        # noise, judged as the self-check judges it (so a seed kept is one the check would pass first).
        kept = _kept_attempt(attempts, noise)
        state, finish = attempts[kept]
        agreement = _agreement(finish, [f for _, f in attempts if f is not finish])
        if (
            config.final == "nonblind"
            and not cancelled
            and agreement is not None
            and agreement < config.cautious_agreement
        ):
            # Kernels from different starts that barely agree: the kept one's error is large,
            # and a wrong kernel at the usual weight can leave the image worse than its input.
            cautious = cautious_steps(unit, window.slices, finish, config.cautious_factor, device, noise)
            finish, stopped = yield from relay(cautious, timed)
            cancelled = cancelled or stopped
        if config.final == "generator" and whole_frame:
            image_out = to_output(state.image)
        else:
            image_out = intensity.to_input_units(finish.image)
        kernel = finish.kernel
    finally:
        del observation
        release_memory(device)
    elapsed = time.perf_counter() - start
    check = SelfCheck.judge(
        structure=structure_above_noise(unit_window, noise),
        residual=finish.checked_residual,
        residual_correlation=finish.checked_correlation,
        border_mass=border_mass(kernel),
        agreement=agreement,
        kernel_shape=kernel_shape,
        noise_sigma=noise,
        image_shape=unit_window.shape[:2],
        size_measured=params["kernel_size_source"] != "given",
        cautious=finish.cautious,
    )
    params.update(
        noise={**noise_model.to_dict(), "sigma_normalised": noise, "relative": relative_noise(noise, unit)},
        deconvolution_weight=finish.weight,
        deconvolution_residual=finish.residual,
        smooth_psf=finish.smooth_psf,
        cautious_prior=finish.cautious,
        ensemble=max(len(finish.members), 1),
        self_check=check.to_dict(),
        attempts=len(attempts),
        seed_used=seed + kept,
    )

    return DeblurResult(
        image=image_out,
        kernel=kernel,
        history=np.asarray(state.history, dtype=np.float32),
        params=params,
        device=device_name(device),
        elapsed_s=elapsed,
        cancelled=cancelled,
        iterations_run=state.iteration,
        extras={"recoveries": state.recoveries},
        warm_start=None if cancelled else state.warm_start,
        warnings=[*params["input_warnings"], *check.warnings],
    )


def _finish(
    window: np.ndarray,
    frame: np.ndarray,
    state: OptimizerState,
    config: SolverConfig,
    device: torch.device,
    noise: float,
    kernel_noise: float,
    timed: Callable[[Progress], Progress],
) -> Generator[Progress, Any, Finish]:
    """The stages after one blind run: its kernel, and with more than one scale (and
    ``final="nonblind"``) the next coarser scale's kernel resampled, polished and checked."""
    kernel = state.kernel.detach().cpu().float()
    starts = [(kernel / kernel.sum()).numpy()]
    if config.final == "nonblind" and len(state.scale_kernels) > 1:
        coarse = state.scale_kernels[-2].detach().cpu().float()
        factor = config.scales[-1] / config.scales[-2]
        starts.append(resample_kernel(coarse, tuple(kernel.shape), factor).numpy())
    # The polish narrows smooth PSFs (Gaussian, defocus), on which a blind run is often right
    # already; on motion blur it is what makes the kernel sharp. A round kernel on which two
    # scales agree is taken for a smooth PSF, and the kernels as estimated become candidates of
    # their own (see finish_steps).
    as_estimated = (
        len(starts) > 1
        and kernel_similarity(starts[0], starts[1]) >= config.scale_agreement
        and radial_symmetry(starts[0]) >= config.smooth_symmetry
    )
    steps = finish_steps(
        window, frame, starts, config, device, noise_sigma=noise, kernel_noise_sigma=kernel_noise,
        as_estimated=as_estimated,
    )  # fmt: skip
    finish, _ = yield from relay(steps, timed)
    return finish


def _judged(finish: Finish, noise: float) -> float:
    """An attempt's misfit correlation at the check's weight, judged against the noise floor."""
    return judged_correlation(finish.checked_correlation, finish.checked_residual, noise)


def _retry_called_for(attempts: list[tuple[OptimizerState, Finish]], noise: float, config: SolverConfig) -> bool:
    """Whether a blind run from another seed might do better than the runs so far: the last
    one's kernels disagree, or no run's misfit is like noise, or the best run so far has both
    doubts at once in a milder form (its kernel agrees less than ``config.doubt_agreement``
    with any other start's or seed's, and its misfit is no more like noise than
    ``config.doubt_correlation``)."""
    finish = attempts[-1][1]
    kept = attempts[_kept_attempt(attempts, noise)][1]
    best = _judged(kept, noise)
    if best > MAX_RESIDUAL_CORRELATION or (finish.agreement is not None and finish.agreement < MIN_AGREEMENT):
        return True
    if best <= config.doubt_correlation:
        return False  # the misfit is noise-like: no kernel comparison needed
    agreement = _agreement(kept, [f for _, f in attempts if f is not kept])
    return agreement is not None and agreement < config.doubt_agreement


def _kept_attempt(attempts: list[tuple[OptimizerState, Finish]], noise: float) -> int:
    """The attempt whose misfit is most like noise, judged as the self-check judges it."""
    return min(range(len(attempts)), key=lambda i: _judged(attempts[i][1], noise))


def _agreement(chosen: Finish, others: list[Finish]) -> float | None:
    """How alike the kept kernel is to the most alike one found from another start or seed."""
    values = [chosen.agreement] if chosen.agreement is not None else []
    values += [kernel_similarity(chosen.kernel, other.kernel) for other in others]
    return max(values) if values else None
