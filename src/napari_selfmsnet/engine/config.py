"""Solver configuration: one frozen dataclass; presets are instances of it."""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, replace
from typing import Literal

__all__ = ["SolverConfig", "PRESETS", "METHOD_SCALES", "method_of", "resolve_config"]

#: Pyramid scales per method, coarse to fine: the multi-scale generator and its single-scale
#: ablation (Self-MSNet-S).
METHOD_SCALES: dict[str, tuple[float, ...]] = {
    "self-msnet": (0.125, 0.25, 0.5, 1.0),
    "self-msnet-s": (1.0,),
}


@dataclass(frozen=True)
class SolverConfig:
    """Every knob of the alternating optimizer (see ``docs/parameters.md``).

    Network
        ``width``: channels of the encoder/decoder (the paper: 128); ``skip_channels``: width
        of the skip branches (4); ``input_channels``: channels of the noise input (16);
        ``nonlocal_levels``: how many of the deepest encoder levels start with a non-local block.
    Image step
        ``iterations``; ``lr`` (Adam) halved at each fraction of the run in ``lr_milestones``;
        ``noise_std``: perturbation added to the noise input every iteration; ``loss``:
        ``"ssim"`` (1 - SSIM) for the first ``ssim_fraction`` of the run, then MSE;
        ``tv_weight``: total-variation weight on each scale's output.
    Kernel step
        ``kernel_lambda``: Tikhonov weight relative to the masked gradient energy of the
        current image; ``centroid_weight``: weight of the two centring terms, relative to the
        same energy; ``support_factors``: the support-threshold factor ``c`` per scale (coarse
        to fine; larger keeps more of the kernel); ``prune_fraction``: connected parts of the
        support holding less than this share of the mass are dropped; ``edge_percentile``:
        only pixels above this percentile of a directional edge response take part, lowered by
        ``edge_decay`` every ``edge_decay_fraction`` of the run; ``mask_warmup``: iterations
        before the edge mask is used; ``kernel_noise_weight``: the weight of the noise term of
        every kernel step (the measured noise power of the data over the kernel's, see
        :func:`.kernel_step.noise_term`; 0 ignores the noise).
    Output
        ``final``: ``"generator"`` returns the network's full-scale output (the paper: no
        non-blind step), registered with the input and with the kernel centred;
        ``"nonblind"`` deconvolves the input with the estimated kernel by the sparse-prior
        solver of :mod:`.nonblind` (better on short runs, whose generator output is still
        smooth); ``polish_rounds``: with ``final="nonblind"``, rounds of
        (sparse non-blind deconvolution, kernel step on its sharper result) that polish the
        full-scale kernel before the last deconvolution; ``polish_weights``: the sparse prior's
        weight in those rounds' deconvolutions, ``(first, last)``, decayed geometrically
        between them (a strong prior first keeps only salient edges, which steer a poor kernel
        out of its local minimum; the last matches the final deconvolution);
        ``polish_support_factor``: the support-threshold factor of the polish rounds' kernel
        steps (``None``: the finest scale's); the polish solves from a sharp image, so it can
        keep faint kernel trails that the generator stage must cut; ``polish_noise_floor``:
        no polish round's weight falls below this many times the noise weight (below), since
        a deconvolution that keeps the noise hands it to the kernel step, which then drifts
        away from the blur; ``polish_noise_threshold``: the polish's kernel steps also cut
        values below this many times the estimate's own noise level;
        ``polish_kernel_noise_weight``: the weight of the noise term in the polish's kernel
        steps, the summed posterior variance of the round's deconvolution
        (:func:`.kernel_step.posterior_variance_term`; where the blur may be a smooth PSF,
        the flat :func:`.kernel_step.noise_term`); 1 weighs it as the expected misfit has
        it, 0 takes the deconvolution for exact (alternating MAP);
        ``deconvolution_weight``: the sparse prior's weight of the final deconvolution on
        noise-free data (it also absorbs the small misfit of any estimated kernel);
        ``noise_weight_law``: ``(a, b)``: with the measured noise ``sigma`` (normalised units)
        kernels are checked at ``max(deconvolution_weight, a * sigma ** b)``; ``residual_floor``:
        where the image re-blurred by the kernel explains the input closer than this share of
        the noise variance (it fits the noise, the mark of a kernel sharper than the blur), the
        final weight is doubled until it does not (the discrepancy principle as a lower bound;
        0 turns it off); ``final_noise_factor``: with ``final="nonblind"``, unless the blur
        was taken for a smooth PSF (below), the last deconvolution's weight is at least
        ``max(deconvolution_weight, final_noise_factor * a * sigma ** b)``: the law was fitted
        on true kernels, and an estimated motion kernel's error also needs the prior;
        ``cautious_agreement``, ``cautious_factor``: when the kept kernel is less than
        ``cautious_agreement`` similar to every kernel found from another start or seed
        (``params["self_check"]["agreement"]``), the blur is poorly determined and the
        kernel's error large: the frame is deconvolved again at ``cautious_factor`` times the
        final weight (``params["cautious_prior"]``), trading sharpness for safety, and the
        result is warned about (0 turns it off);
        ``scale_agreement``, ``smooth_symmetry``: when the finest scale's
        kernel and the next coarser one's (resampled) are at least ``scale_agreement``
        similar and the finest one is round (:func:`.selfcheck.radial_symmetry` at least
        ``smooth_symmetry``: a smooth PSF, not a motion trail), both are also checked
        unpolished, beside their polish; ``overfit_residual``: when a polished one's misfit
        then falls below this share of the noise variance, or below ``residual_floor`` with
        its neighbours still correlated (the polish narrowed a smooth blur until the estimate
        fits the noise), the kernels as estimated are compared, one whose misfit stays above
        ``residual_floor`` preferred (smooth blurs; ``scale_agreement`` above 1: never);
        ``ensemble_margin``:
        every other candidate kernel whose misfit correlation lies within this many standard
        errors (``1 / sqrt(n)`` over its ``n`` misfit values) of the kept one's is also
        deconvolved, and the images are averaged: where the check cannot tell kernels apart,
        the mean over them is the safer estimate. Only where the kept misfit is like noise
        (its correlation negative): a structured misfit (noise-free data) tells kernels apart
        by more than sampling (0: the kept kernel alone; ``inf``: every candidate on the kept
        one's side of the residual floor); ``headroom``: the
        deblurred image may exceed the blurred image's intensity range by
        this factor (1 reproduces the paper; raise it for point-like fluorescence, whose
        deblurred peaks are brighter than the blurred ones).
    Self-check
        ``seeds``: blind runs from consecutive seeds, always; ``retries``: further ones while the
        self-check finds the kernel doubtful (:mod:`.selfcheck`), or while the best run so far
        has two milder doubts at once: its kernel agrees less than ``doubt_agreement`` with any
        other start's or seed's, and its misfit's neighbour correlation is above
        ``doubt_correlation`` (not clearly noise; ``doubt_agreement=0``, the default: never).
        The run keeps the kernel, of all runs and starts, whose misfit is most like noise.
    Speed (results do not depend on these beyond rounding, except ``kernel_every``)
        ``kernel_every``: run the kernel step every this many iterations and reuse the kernels
        in between (1: every iteration, as in the paper); ``amp``: mixed precision for the
        generator's forward and backward pass (``"auto"``: bfloat16 on CUDA GPUs that support
        it, else float16; off on CPU and MPS: on CPUs with AMX ``"bf16"`` runs the 128-channel
        network faster, but its effect on the result there is unmeasured); the kernel step and
        the loss always run in float32; ``memory_format``: ``"channels_last"`` lays feature maps
        out for the tensor cores and for oneDNN's convolutions (``"auto"``: on CUDA and CPU,
        not on MPS); ``compile``: ``torch.compile``
        the generator (pays off on long GPU runs; the first iterations then include
        compilation).
    """

    scales: tuple[float, ...] = METHOD_SCALES["self-msnet"]
    width: int = 128
    skip_channels: int = 4
    input_channels: int = 16
    nonlocal_levels: int = 3
    iterations: int = 2000
    lr: float = 0.01
    lr_milestones: tuple[float, ...] = (0.5, 0.75)
    noise_std: float = 1e-3
    loss: Literal["ssim", "mse"] = "ssim"
    ssim_fraction: float = 0.25
    tv_weight: float = 0.0
    kernel_lambda: float = 1e-7
    centroid_weight: float = 1e-7
    support_factors: tuple[float, ...] = (2.0, 3.0, 7.0, 10.0)
    prune_fraction: float = 0.01
    edge_percentile: float = 90.0
    edge_decay: float = 0.99
    edge_decay_fraction: float = 0.1
    mask_warmup: int = 1
    kernel_noise_weight: float = 0.3
    headroom: float = 1.0
    final: Literal["generator", "nonblind"] = "generator"
    polish_rounds: int = 0
    polish_weights: tuple[float, float] = (4e-3, 2e-4)
    polish_support_factor: float | None = None
    polish_noise_floor: float = 5.0
    polish_noise_threshold: float = 3.0
    polish_kernel_noise_weight: float = 1.0
    deconvolution_weight: float = 2e-4
    noise_weight_law: tuple[float, float] = (0.15, 1.34)
    residual_floor: float = 0.9
    final_noise_factor: float = 2.0
    cautious_agreement: float = 0.45
    cautious_factor: float = 4.0
    overfit_residual: float = 0.6
    ensemble_margin: float = 2.0
    scale_agreement: float = 0.8
    smooth_symmetry: float = 0.9
    seeds: int = 1
    retries: int = 1
    doubt_agreement: float = 0.0
    doubt_correlation: float = -0.05
    kernel_every: int = 1
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    memory_format: Literal["auto", "contiguous", "channels_last"] = "auto"
    compile: bool = False

    def __post_init__(self) -> None:
        if not self.scales or any(not (0 < s <= 1) for s in self.scales) or self.scales[-1] != 1:
            raise ValueError(f"scales must lie in (0, 1] and end with 1, got {self.scales}")
        if len(self.support_factors) not in (1, len(self.scales)) and len(self.support_factors) != 4:
            raise ValueError(
                f"support_factors needs one value or one per scale ({len(self.scales)}), got {self.support_factors}"
            )
        for name in ("width", "iterations", "input_channels", "skip_channels", "kernel_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.loss not in ("ssim", "mse"):
            raise ValueError(f"loss must be 'ssim' or 'mse', got {self.loss!r}")
        if self.final not in ("generator", "nonblind"):
            raise ValueError(f"final must be 'generator' or 'nonblind', got {self.final!r}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ValueError(f"amp must be 'auto', 'off', 'bf16' or 'fp16', got {self.amp!r}")
        if self.memory_format not in ("auto", "contiguous", "channels_last"):
            raise ValueError(
                f"memory_format must be 'auto', 'contiguous' or 'channels_last', got {self.memory_format!r}"
            )
        if len(self.polish_weights) != 2 or any(not (w > 0) for w in self.polish_weights):
            raise ValueError(f"polish_weights must be two positive weights (first, last), got {self.polish_weights}")
        if self.polish_support_factor is not None and not (self.polish_support_factor > 0):
            raise ValueError(f"polish_support_factor must be positive or None, got {self.polish_support_factor}")
        if self.headroom < 1:
            raise ValueError(f"headroom must be >= 1, got {self.headroom}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {self.retries!r}")
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds must be an integer >= 1, got {self.seeds!r}")
        if not self.final_noise_factor >= 1:
            raise ValueError(f"final_noise_factor must be >= 1, got {self.final_noise_factor}")
        if not self.cautious_factor >= 1:
            raise ValueError(f"cautious_factor must be >= 1, got {self.cautious_factor}")
        if not 0 <= self.doubt_agreement <= 1:
            raise ValueError(f"doubt_agreement must lie in [0, 1], got {self.doubt_agreement}")
        if not -1 <= self.doubt_correlation <= 1:
            raise ValueError(f"doubt_correlation must lie in [-1, 1], got {self.doubt_correlation}")
        if not 0 <= self.cautious_agreement <= 1:
            raise ValueError(f"cautious_agreement must lie in [0, 1], got {self.cautious_agreement}")
        for name in (
            "kernel_noise_weight",
            "polish_kernel_noise_weight",
            "polish_noise_floor",
            "polish_noise_threshold",
            "ensemble_margin",
        ):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.deconvolution_weight > 0:
            raise ValueError(f"deconvolution_weight must be positive, got {self.deconvolution_weight}")
        if len(self.noise_weight_law) != 2 or not all(v >= 0 for v in self.noise_weight_law):
            raise ValueError(f"noise_weight_law must be two numbers (a, b) >= 0, got {self.noise_weight_law}")

    def support_factor(self, index: int) -> float:
        """The support factor of scale ``index`` (counted coarse to fine)."""
        if len(self.support_factors) == 1:
            return self.support_factors[0]
        if len(self.support_factors) == len(self.scales):
            return self.support_factors[index]
        # A 4-value table (the paper's) used with fewer scales: take the finest entries.
        return self.support_factors[len(self.support_factors) - len(self.scales) + index]

    def edge_percentile_at(self, iteration: int) -> float:
        """The edge-selection percentile at ``iteration``, lowered every ``edge_decay_fraction``."""
        interval = max(1, round(self.edge_decay_fraction * self.iterations))
        return self.edge_percentile * self.edge_decay ** (iteration // interval)

    @property
    def final_edge_percentile(self) -> float:
        """The percentile after the schedule's last decay step (``1 / edge_decay_fraction - 1``
        steps): the widest edge selection of a run, used by the polish rounds after it."""
        return self.edge_percentile * self.edge_decay ** max(0, round(1 / self.edge_decay_fraction) - 1)

    def noise_weight(self, sigma: float) -> float:
        """``a * sigma ** b`` of ``noise_weight_law``: the sparse prior's weight that the noise
        ``sigma`` (normalised units) calls for, before the noise-free floor."""
        a, b = self.noise_weight_law
        return float(a * max(float(sigma), 0.0) ** b)

    def deconvolution_weight_for(self, sigma: float, noise_factor: float = 1.0) -> float:
        """The sparse deconvolution's weight at the noise ``sigma``: ``max(deconvolution_weight,
        noise_factor * noise_weight(sigma))`` (the last deconvolution of a motion kernel takes
        ``noise_factor=final_noise_factor``)."""
        return max(self.deconvolution_weight, noise_factor * self.noise_weight(sigma))

    def final_noise_factor_for(self, smooth_psf: bool) -> float:
        """The ``noise_factor`` of the last deconvolution: ``final_noise_factor`` for a kernel
        of ours with ``final="nonblind"`` (a kernel polished from noisy data carries an error
        the prior absorbs), 1 for a smooth PSF kept as estimated (taken for the blur itself:
        the law was fitted on true kernels) or with ``final="generator"`` (the network's image
        is the result)."""
        return self.final_noise_factor if self.final == "nonblind" and not smooth_psf else 1.0

    def to_dict(self) -> dict:
        return asdict(self)


_FAST = SolverConfig(
    width=16,
    iterations=120,
    kernel_lambda=1e-6,
    centroid_weight=1e-6,
    support_factors=(2.0, 2.0, 2.0, 2.0),
    final="nonblind",
    polish_rounds=10,
    polish_support_factor=4.0,
)

#: The named configurations, fastest first (their figures on Levin's set: docs/benchmarks.md).
PRESETS: dict[str, SolverConfig] = {
    # A narrow network and a short run find the kernel's extent; a stronger kernel regulariser
    # and a harder support threshold keep it compact; the sparse non-blind polish, from a
    # strong prior to a weak one and with a looser threshold that keeps faint trails,
    # sharpens both and rescues runs that ended in a poor kernel.
    "fast": _FAST,
    # The same with about twice the iterations, for a better kernel at twice the time.
    "balanced": replace(_FAST, iterations=250),
    # The paper's settings: 128 channels, 2000 iterations, the generator's image as the result.
    # A known departure: the loss schedule (1 - SSIM for a quarter of the run, then MSE), as
    # the authors' 1 - SSIM throughout scored lower on Levin's images (benchmarks/NOTEBOOK.md).
    "quality": SolverConfig(),
}


def method_of(config: SolverConfig) -> str:
    """The name of the method whose scales ``config`` has, or ``"custom"``."""
    return next((name for name, scales in METHOD_SCALES.items() if scales == tuple(config.scales)), "custom")


def resolve_config(
    preset: str | SolverConfig, method: str | None = None, iterations: int | None = None
) -> SolverConfig:
    """The configuration a run uses.

    Parameters
    ----------
    preset : str or SolverConfig
        A name in :data:`PRESETS`, whose scales are then ``method``'s; or a SolverConfig, used
        with its own scales.
    method : str, optional
        A name in :data:`METHOD_SCALES`. With a preset name, None means ``"self-msnet"``.
        With a SolverConfig, None keeps its scales; a method whose scales differ from the
        configuration's is refused rather than silently replacing them.
    iterations : int, optional
        Overrides the configuration's number of iterations.

    Raises
    ------
    ValueError
        For an unknown preset or method, a method that contradicts the SolverConfig's scales,
        or iterations that are not a positive integer.
    """
    if method is not None and method not in METHOD_SCALES:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHOD_SCALES)}")
    if isinstance(preset, SolverConfig):
        config = preset
        if method is not None and tuple(config.scales) != METHOD_SCALES[method]:
            raise ValueError(
                f"method={method!r} means scales {METHOD_SCALES[method]}, but the SolverConfig given as preset has "
                f"scales {tuple(config.scales)}; pass method=None to use the configuration's scales, or "
                "dataclasses.replace(config, scales=...) to change them"
            )
    elif isinstance(preset, str) and preset in PRESETS:
        config = replace(PRESETS[preset], scales=METHOD_SCALES[method or "self-msnet"])
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)} or pass a SolverConfig")
    if iterations is not None:
        # Any integer type (np.int64 too), but not a bool, which is an int to Python.
        if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
        config = replace(config, iterations=int(iterations))
    return config
