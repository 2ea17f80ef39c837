"""The stages after the blind one: the polish of the kernel, and the frame deconvolved with it.

The generator's output after a short run is still smooth, and a kernel solved from a smooth
image comes out too wide. A sparse-prior non-blind deconvolution of the observation with the
current kernel has sharp edges; re-solving the kernel from it (the same closed-form kernel step)
and deconvolving again is the classical alternating-MAP polish, a few rounds of which sharpen
the kernel and the image at little cost. The prior starts strong and weakens round by round
(continuation): the first rounds' piecewise-flat images keep only salient edges, from which
many poor starting kernels are re-solved much closer to the true one (measured in
benchmarks/NOTEBOOK.md). Each kernel step also weighs how unsure the round's deconvolution
is (:func:`.kernel_step.posterior_variance_term`), as a marginal-likelihood estimate does:
taken for exact, a noisy deconvolution pulls the kernel onto the brightest part of the blur.
After the polish (``final="nonblind"``), or straight after the blind stage when it saw only
a region of the frame, the whole frame is deconvolved with the kernel by the sparse solver:
:func:`nonblind_steps`.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import torch

from .config import SolverConfig
from .convolution import center_kernel
from .inputs import to_channels_first
from .intensity import IntensityMap
from .kernel_step import LatentPrior, estimate_kernel
from .noise import relative_noise
from .nonblind import DEFAULT_ITERATIONS, SPARSE_ALPHA, deconvolve_steps
from .records import Progress
from .selfcheck import kernel_similarity, residual_statistics
from .steps import drain, relay

__all__ = [
    "Finish",
    "cautious_steps",
    "finish_steps",
    "polish_kernel",
    "polish_steps",
    "round_support_factor",
    "round_weights",
]


def _as_batch(image: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(to_channels_first(image.astype(np.float32, copy=False)))[None].to(device)


def round_weights(config: SolverConfig) -> np.ndarray:
    """The sparse prior's weight in each polish round: ``config.polish_weights`` decayed
    geometrically over ``config.polish_rounds`` (continuation, as in classical alternating MAP)."""
    first, last = config.polish_weights
    return np.geomspace(first, last, config.polish_rounds)


def round_support_factor(config: SolverConfig) -> float:
    """The support-threshold factor of the polish rounds: ``config.polish_support_factor``,
    or the finest scale's factor when that is ``None``."""
    if config.polish_support_factor is not None:
        return config.polish_support_factor
    return config.support_factor(len(config.scales) - 1)


def polish_steps(
    observation: np.ndarray,
    kernel: np.ndarray,
    config: SolverConfig,
    device: torch.device,
    *,
    noise_sigma: float = 0.0,
    kernel_noise_sigma: float | None = None,
    first_step: int = 0,
    total: int | None = None,
    weigh_uncertainty: bool = True,
) -> Generator[Progress, Any, np.ndarray]:
    """``config.polish_rounds`` rounds of (sparse deconvolution with the weights of
    :func:`round_weights`, kernel step) on ``observation``: a stage generator (:mod:`.steps`).

    Shape: ``observation`` ``(H, W)`` or ``(H, W, 3)`` in normalised units; ``kernel``
    ``(kh, kw)``. Yields a ``"polish"`` :class:`~.records.Progress` after every round (with
    the kernel so far); returns the polished kernel, centred by
    :func:`.convolution.center_kernel`, summing to 1 (with ``polish_rounds=0`` just the
    centred input kernel). A true value sent at a record ends the polish with that kernel.

    ``noise_sigma`` is the observation's noise (normalised units): no round's weight falls
    below ``config.polish_noise_floor`` times the weight it calls for. The kernel steps weigh
    the data against the noise of the grey image they solve on, ``kernel_noise_sigma``
    (``noise_sigma`` when None): with ``weigh_uncertainty``, by the uncertainty that noise
    leaves in the round's deconvolution (:func:`.kernel_step.posterior_variance_term`), else
    by the plain noise term (:func:`.kernel_step.noise_term`), both at
    ``config.polish_kernel_noise_weight``. ``first_step`` and ``total`` number the records
    when the polish runs from several starts, one after the other.
    """
    y = _as_batch(observation, device)
    percentile = config.final_edge_percentile
    kernel = center_kernel(torch.from_numpy(np.ascontiguousarray(kernel))).numpy()
    weights = round_weights(config)
    floor = config.polish_noise_floor * config.noise_weight(noise_sigma)
    kernel_sigma = noise_sigma if kernel_noise_sigma is None else kernel_noise_sigma
    total = len(weights) if total is None else total
    scale = IntensityMap.fit(observation).scale or 1.0
    for done, weight in enumerate(weights, start=first_step + 1):
        # A round's deconvolution is most of its time (seconds on a large window): it reports,
        # so a stop request ends the polish within a few solver iterations, not a round.
        solve = deconvolve_steps(
            observation, kernel, method="sparse", weight=max(weight, floor), device=device,
            progress_every=_ROUND_RECORDS,
        )  # fmt: skip
        sharp, halted = yield from relay(solve, _within_round(done - 1, total, kernel))
        if halted:
            break  # a partial deconvolution is no ground for a kernel step: the last kernel stands
        k = estimate_kernel(
            _as_batch(sharp, device),
            y,
            tuple(kernel.shape),
            lam=config.kernel_lambda,
            gamma=config.centroid_weight,
            support_factor=round_support_factor(config),
            prune_fraction=config.prune_fraction,
            edge_percentile=percentile,
            noise_sigma=kernel_sigma,
            noise_weight=config.polish_kernel_noise_weight,
            latent_prior=(
                LatentPrior(torch.from_numpy(_unit_sum(kernel)), max(weight, floor), SPARSE_ALPHA, scale)
                if weigh_uncertainty
                else None
            ),
            # Without a measured noise, the estimate's negative values are the solve's own
            # ringing, not noise: no noise threshold then.
            noise_threshold=config.polish_noise_threshold if kernel_sigma > 0 else 0.0,
        )
        if not torch.isfinite(k).all():
            break
        kernel = center_kernel(k.cpu().float()).numpy()
        preview = _unit_sum(kernel)
        if (yield Progress(stage="polish", step=done, total=total, kernel=preview)):
            break
    return _unit_sum(kernel)


_ROUND_RECORDS = 25  # solver iterations between the records within a polish round


def _within_round(step: int, total: int, kernel: np.ndarray):
    """A polish round's solver records: at the rounds done so far, with the kernel so far."""
    preview = _unit_sum(kernel)

    def convert(record: Progress) -> Progress:
        return Progress(stage="polish", step=step, total=total, kernel=preview)

    return convert


def polish_kernel(
    observation: np.ndarray,
    kernel: np.ndarray,
    config: SolverConfig,
    device: torch.device,
    *,
    noise_sigma: float = 0.0,
) -> np.ndarray:
    """The polished kernel of :func:`polish_steps`, without progress."""
    return drain(polish_steps(observation, kernel, config, device, noise_sigma=noise_sigma))


@dataclass(frozen=True)
class Finish:
    """What the stages after the blind one hand back (see :func:`finish_steps`).

    ``kernel`` and ``image`` (the frame deconvolved with it, normalised units) as chosen;
    ``start``: which candidate it was: the starts polished, in order, then (with
    ``as_estimated``) the starts as they were; ``checked_residual`` and
    ``checked_correlation``: its misfit on the window (:func:`.selfcheck.residual_statistics`)
    at the weight every kernel is checked at, by which kernels (and seeds) are compared and
    judged; ``residual`` and ``residual_correlation``: the misfit at the final weight, which
    the discrepancy floor may have raised (the same figures when it did not);
    ``agreement``: its similarity to the most alike kernel polished from another start (None
    with one start); ``weight``: the sparse prior's weight of the final deconvolution;
    ``stopped``: a stop request ended one of the stages early; ``smooth_psf``: the caller
    took the blur for a smooth PSF (``as_estimated``) and a kernel as estimated was kept, so
    the last deconvolution kept the law's weight; ``cautious``: the image was deconvolved
    again at a stronger weight because the kernels of different starts disagree
    (:func:`cautious_steps`); ``members``: the kernels whose deconvolutions ``image`` averages,
    the kept one first (see ``config.ensemble_margin``; empty: ``kernel`` alone).
    """

    kernel: np.ndarray
    image: np.ndarray
    start: int
    checked_residual: float
    checked_correlation: float
    residual: float
    residual_correlation: float
    agreement: float | None
    weight: float
    stopped: bool
    smooth_psf: bool = False
    cautious: bool = False
    members: tuple[np.ndarray, ...] = ()


def cautious_steps(
    frame: np.ndarray,
    window: tuple[slice, ...],
    finish: Finish,
    factor: float,
    device: torch.device,
    noise_sigma: float,
) -> Generator[Progress, Any, Finish]:
    """``finish`` with its frame deconvolved again at ``factor`` times its weight.

    For a kernel the starts and seeds disagree on: its error is then large, and acts on the
    deconvolution as extra noise that only a stronger prior absorbs (a wrong kernel deconvolved
    at the law's weight can leave the image worse than its input). ``frame`` is in normalised
    units, ``window`` the slices of it the kernel was checked on (for the misfit recorded). The
    records of the re-solve stay at the end of the bar, as the discrepancy re-solves' do; a
    stop request keeps the solver's current iterate. An averaged image (``finish.members``) is
    averaged again, each kernel's deconvolution at the stronger weight.
    """
    weight = finish.weight * factor
    images, halted = [], False
    for kernel in finish.members or (finish.kernel,):
        solve = deconvolve_steps(frame, kernel, method="sparse", weight=weight, device=device)
        image, halted = yield from relay(solve, lambda record: replace(record, step=record.total))
        if not (halted and images):
            images.append(image)  # a member stopped part-way is left out; the first never is
        if halted:
            break
    image = _mean_image(images)
    residual, correlation = residual_statistics(frame[window], image[window], finish.kernel, noise_sigma)
    return replace(
        finish, image=image, weight=weight, residual=residual, residual_correlation=correlation,
        stopped=finish.stopped or halted, cautious=True,
    )  # fmt: skip


def finish_steps(
    window: np.ndarray,
    frame: np.ndarray,
    starts: list[np.ndarray],
    config: SolverConfig,
    device: torch.device,
    *,
    noise_sigma: float = 0.0,
    kernel_noise_sigma: float | None = None,
    as_estimated: bool = False,
) -> Generator[Progress, Any, Finish]:
    """The stages after the blind one: polish every start, keep the best, deconvolve the frame.

    A stage generator (:mod:`.steps`) with two stages. ``"polish"``: with
    ``final="nonblind"`` each kernel of ``starts`` (the blind stage's full-scale kernel and a
    coarser scale's, resampled) is polished on ``window`` (:func:`polish_steps`), one after the
    other. ``"deconvolve"``: each polished kernel (each start as it is, with
    ``final="generator"``) deconvolves the window, and the one whose misfit is most like noise
    (the lowest neighbour correlation of the residual, :mod:`.selfcheck`) is kept: on noisy
    data the polish can drift from a good start, and which start ends best differs from image
    to image. The whole ``frame`` is then deconvolved with it (unless the window is the frame,
    whose deconvolution that already was), at the weight the noise calls for
    (:meth:`SolverConfig.deconvolution_weight_for`). With ``as_estimated`` (the caller's sign
    that the starts agree), every start is also checked as it is, unpolished, and where a
    polished kernel's check shows the polish narrowed the blur (:func:`_narrowed`: the
    estimate fits the noise) only the kernels as estimated are compared, one whose misfit
    stays above ``config.residual_floor`` preferred: the polish, an alternating MAP, narrows
    smooth blurs (a Gaussian or defocus PSF) towards a point even when it starts from the
    true one, while a blind run on such a blur is often right already. That fit to the
    noise is the sign the choice reads, and weighing the deconvolution's uncertainty in the
    kernel steps hides it (the polish then reshapes a disc without fitting the noise), so
    there the polish keeps the plain noise term (``weigh_uncertainty=False`` of
    :func:`polish_steps`).

    ``window`` and ``frame`` are in normalised units (``window`` is the part of ``frame`` the
    blind fit saw, or all of it); ``noise_sigma`` is their noise in the same units and
    ``kernel_noise_sigma`` that of their grey image (the kernel step's; ``noise_sigma`` when
    None). A stop request ends the stage it reaches: the starts not yet polished are dropped,
    the kernels not yet checked too (the first one is always checked), and the frame is always
    deconvolved.
    """
    rounds = config.polish_rounds if config.final == "nonblind" else 0
    stopped = False
    centred = [_centred(start) for start in starts]
    polished = []
    for index, kernel in enumerate(centred):
        if rounds:
            polish = polish_steps(
                window, kernel, config, device, noise_sigma=relative_noise(noise_sigma, window),
                kernel_noise_sigma=noise_sigma if kernel_noise_sigma is None else kernel_noise_sigma,
                first_step=index * rounds, total=rounds * len(starts), weigh_uncertainty=not as_estimated,
            )  # fmt: skip
            kernel, halted = yield from relay(polish, _same)
            stopped = stopped or halted
        polished.append(_unit_sum(kernel))
        if stopped:
            break

    # (start it came from, kernel): the polished ones, then the starts as estimated.
    kernels = list(enumerate(polished))
    if as_estimated and rounds and not stopped:
        kernels += [(index, _unit_sum(kernel)) for index, kernel in enumerate(centred)]
    iterations = DEFAULT_ITERATIONS["sparse"]
    whole = window.shape == frame.shape
    total = iterations * (len(kernels) + (0 if whole else 1))
    window_weight = config.deconvolution_weight_for(relative_noise(noise_sigma, window))
    candidates = []
    for index, (origin, kernel) in enumerate(kernels):
        check = deconvolve_steps(window, kernel, method="sparse", weight=window_weight, device=device)
        latent, halted = yield from relay(check, _offset(index * iterations, total - iterations * (index + 1)))
        if candidates and halted:
            break  # a partial solve says nothing of its kernel; the ones checked before stand
        residual, correlation = residual_statistics(window, latent, kernel, noise_sigma)
        candidates.append(_Candidate(correlation, residual, kernel, latent, origin))
        stopped = stopped or halted
        if stopped:
            break
    # (With no polish rounds every candidate is a kernel as estimated.)
    unpolished_from = len(polished) if rounds else 0
    best, eligible, floor = _choice(candidates, unpolished_from, as_estimated and noise_sigma > 0, config)
    correlation, residual, kernel, latent, origin = candidates[best]
    # The blur is taken for a smooth PSF when a kernel as estimated (unpolished) was kept.
    smooth_psf = as_estimated and best >= unpolished_from
    # Agreement is between different starts: a kernel and its own polish say nothing new.
    others = [kernel_similarity(kernel, c.kernel) for c in candidates if c.origin != origin]
    image, weight, residual, correlation, stopped = yield from _frame_steps(
        window, frame, candidates[best], window_weight, smooth_psf, config, device, noise_sigma, stopped, total,
        last=_pinned(total, total) if whole else _offset(total - iterations),
    )  # fmt: skip
    # Kernels the check cannot tell from the kept one (their misfits as like noise, within the
    # figure's sampling error) are as likely to be the blur: the frame deconvolved with each is
    # averaged, the posterior mean over those kernels. Their errors differ, and so do the
    # artefacts each leaves, which the mean halves where a single pick is a coin toss.
    images, averaged = [image], [kernel]
    for peer in _ensemble(candidates, best, eligible, floor, window, config.ensemble_margin):
        if stopped:
            break
        peer_smooth = as_estimated and peer >= unpolished_from
        peer_image, _, _, _, stopped = yield from _frame_steps(
            window, frame, candidates[peer], window_weight, peer_smooth, config, device, noise_sigma, False,
            total, last=_pinned(total, total),
        )  # fmt: skip
        if not stopped:  # a peer stopped part-way is left out; the ones done stand
            images.append(peer_image)
            averaged.append(candidates[peer].kernel)
    if len(images) > 1:
        image = _mean_image(images)
        if whole:
            residual, correlation = residual_statistics(window, image, kernel, noise_sigma)
    return Finish(
        kernel=kernel, image=image, start=best, checked_residual=candidates[best].residual,
        checked_correlation=candidates[best].correlation, residual=residual, residual_correlation=correlation,
        agreement=max(others) if others else None, weight=weight, stopped=stopped, smooth_psf=smooth_psf,
        members=tuple(averaged) if len(averaged) > 1 else (),
    )  # fmt: skip


def _mean_image(images: list[np.ndarray]) -> np.ndarray:
    """The mean of deconvolutions of one frame (the one itself when alone), in float32."""
    return images[0] if len(images) == 1 else np.mean(images, axis=0, dtype=np.float64).astype(np.float32)


def _choice(candidates: list, unpolished_from: int, gate: bool, config: SolverConfig) -> tuple[int, list[int], float]:
    """Which checked kernel to keep: ``(index, the indices it was chosen among, residual floor)``.

    ``candidates[unpolished_from:]`` are kernels as estimated (all of them without polish
    rounds); ``gate`` is whether the scales agreed on a round kernel (and the noise is known).
    Elsewhere the misfit most like noise (the lowest correlation) is kept. Behind the gate the
    polish's way of failing is known: it narrows a smooth blur towards a point. Where a
    polished kernel's check shows it (:func:`_narrowed`), the polished kernels are set aside
    and the kernels as estimated compared, one whose misfit stays above
    ``config.residual_floor`` preferred whatever its correlation. A compact motion blur also
    passes the gate, but its polish fits only as closely as a motion blur's does and sharpens
    a kernel the blind stage left round; there, as elsewhere, the correlation alone decides.
    """
    everything = list(range(len(candidates)))
    narrowed = unpolished_from == 0 or any(_narrowed(c, config) for c in candidates[:unpolished_from])
    if not (gate and narrowed):
        return min(everything, key=lambda i: candidates[i].correlation), everything, 0.0
    eligible = list(range(unpolished_from, len(candidates))) or everything
    floor = config.residual_floor
    return min(eligible, key=lambda i: (candidates[i].residual < floor, candidates[i].correlation)), eligible, floor


def _narrowed(candidate, config: SolverConfig) -> bool:
    """Whether a polished kernel's check shows the polish narrowed a smooth blur: the estimate
    explains the input far closer than its noise allows (misfit below
    ``config.overfit_residual`` of the noise variance), or closer than the noise
    (``config.residual_floor``) while the misfit's neighbours still correlate positively.
    The second is the same failure where the noise is low (high photon counts): the narrowed
    kernel leaves part of the blur unexplained, so the misfit keeps structure beside the
    noise the deconvolution fits; a right kernel's misfit is either as large as the noise or,
    fitted below it, like noise (its neighbours' correlation negative)."""
    return candidate.residual < config.overfit_residual or (
        candidate.residual < config.residual_floor and candidate.correlation > 0
    )


def _ensemble(
    candidates: list, best: int, eligible: list[int], floor: float, window: np.ndarray, margin: float
) -> list[int]:
    """The ``eligible`` candidates besides ``best`` whose misfit correlation lies within
    ``margin`` standard errors of its (on the same side of the residual floor): ``1 / sqrt(n)``
    over the ``n`` misfit values, the sampling error of a lag-one correlation of white noise.
    None where the kept misfit is not like noise (its correlation not negative)."""
    if margin <= 0 or candidates[best].correlation >= 0:
        # A misfit whose neighbours correlate positively is not noise but structure the kernel
        # left (noise-free data, a kernel error above the noise): there the figures differ for
        # a reason, not by sampling, and the pick is kept alone.
        return []
    kh, kw = candidates[best].kernel.shape
    channels = window.shape[2] if window.ndim == 3 else 1
    n = max(window.shape[0] - kh + 1, 1) * max(window.shape[1] - kw + 1, 1) * channels
    limit = candidates[best].correlation + margin / np.sqrt(n)
    above = candidates[best].residual < floor
    return [
        i for i in eligible
        if i != best and (candidates[i].residual < floor) == above and candidates[i].correlation <= limit
    ]  # fmt: skip


def _frame_steps(window, frame, candidate, window_weight, smooth_psf, config, device, noise_sigma, stopped, total, last):
    """The frame deconvolved with ``candidate``'s kernel, at the weight the noise calls for,
    raised by the discrepancy rule where its check fits the noise; returns ``(image, weight,
    residual, correlation, stopped)``, the misfit on the window at the final weight (the
    check's where the frame is not the window). ``last`` maps the records of the frame's solve."""
    correlation, residual, kernel, latent, _ = candidate
    whole = window.shape == frame.shape
    iterations = DEFAULT_ITERATIONS["sparse"]
    raise_by = 1.0
    if residual < config.residual_floor and noise_sigma > 0 and not stopped:
        # The estimate explains the input better than its noise allows: it fits the noise, which
        # a kernel sharper than the blur, or a wrong one, turns into ringing. Raise the weight
        # until the misfit reaches the floor (the discrepancy principle, as a lower bound).
        checked = total - (0 if whole else iterations)
        found = yield from _discrepancy_steps(
            window, kernel, window_weight, residual, config, device, noise_sigma, checked, total
        )
        if found is None:
            stopped = True  # stopped during a re-solve: the check's deconvolution stands
        else:
            raise_by, latent, residual, correlation = found
    frame_sigma = relative_noise(noise_sigma, frame)
    raised = config.deconvolution_weight_for(frame_sigma) * raise_by
    weight = max(raised, config.deconvolution_weight_for(frame_sigma, config.final_noise_factor_for(smooth_psf)))
    if whole and (weight == raised or stopped):
        # The window is the frame: its check is the frame's deconvolution (stopped, if a stop
        # came during it: the solver's iterate then is the image).
        return latent, weight, residual, correlation, stopped
    # The kernel was judged at the true kernel's weight; the image takes the stronger one.
    solve = deconvolve_steps(frame, kernel, method="sparse", weight=weight, device=device)
    image, halted = yield from relay(solve, last)
    if whole:
        residual, correlation = residual_statistics(window, image, kernel, noise_sigma)
    return image, weight, residual, correlation, stopped or halted


#: Steps of the weight in the discrepancy search, and how many at most.
_RAISE, _RAISES = 2.0, 5


class _Candidate(NamedTuple):
    """A kernel checked on the window: its misfit, the deconvolution, the start it came from."""

    correlation: float
    residual: float
    kernel: np.ndarray
    latent: np.ndarray
    origin: int


def _centred(start: np.ndarray) -> np.ndarray:
    """A start kernel as float32, centred by :func:`.convolution.center_kernel`."""
    return center_kernel(torch.from_numpy(np.ascontiguousarray(start, dtype=np.float32))).numpy()


def _unit_sum(kernel: np.ndarray) -> np.ndarray:
    return (kernel / kernel.sum()).astype(np.float32)


def _discrepancy_steps(window, kernel, weight, residual, config, device, noise_sigma, step, total):
    """Raise ``weight`` by factors of :data:`_RAISE` until the window's misfit reaches
    ``config.residual_floor``; returns ``(factor, latent, residual, correlation)`` of the first
    weight that does (the last tried when none does), or None when stopped."""
    factor = 1.0
    for _ in range(_RAISES):
        factor *= _RAISE
        solve = deconvolve_steps(window, kernel, method="sparse", weight=weight * factor, device=device)
        # Reported at the step the checks ended on: a re-solve adds no new ground to cover.
        latent, halted = yield from relay(solve, _pinned(step, total))
        if halted:
            return None
        residual, correlation = residual_statistics(window, latent, kernel, noise_sigma)
        if residual >= config.residual_floor:
            break
    return factor, latent, residual, correlation


def _same(record: Progress) -> Progress:
    return record


def _pinned(step: int, total: int):
    """Records of a solve that repeats one already counted: they stay at ``step`` of ``total``."""

    def convert(record: Progress) -> Progress:
        return replace(record, step=step, total=total)

    return convert


def _offset(before: int, after: int = 0):
    """Records of one of several solves, numbered over all of them: ``before`` iterations of
    the solves before it, ``after`` of those after it (a tiled solve counts its own total)."""

    def convert(record: Progress) -> Progress:
        return replace(record, step=before + record.step, total=before + record.total + after)

    return convert
