"""The Self-MSNet generator: a multi-input multi-output encoder-decoder fed with fixed noise.

One network emits the latent image at every scale of the pyramid (coarse to fine). Its inputs
are noise maps, one per scale, all resized from one draw. Internally everything runs on a
"canvas" whose side is a multiple of ``2 ** depth`` so every stride-2 level halves exactly; each
scale's output is cropped from its canvas level to that scale's padded size
``(H_s + kh_s - 1, W_s + kw_s - 1)``, so that a valid convolution with the scale's kernel gives
back exactly the observation at that scale.

Shape:
    inputs: list of ``(1, input_channels, canvas_h / 2**m, canvas_w / 2**m)`` tensors, one per
    scale, coarse to fine (``m`` = 3, 2, 1, 0 for scales 1/8 .. 1);
    outputs: list of ``(1, out_channels, *padded_s)`` tensors in ``[0, 1]``, coarse to fine.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SelfMSNet", "canvas_size", "scale_level"]

_SLOPE = 0.2


def scale_level(scale: float) -> int:
    """Encoder level at which an input of ``scale`` enters: 1 -> 0, 1/2 -> 1, 1/4 -> 2, ..."""
    level = round(-math.log2(scale))
    if not math.isclose(2.0**-level, scale):
        raise ValueError(f"scales must be powers of 1/2, got {scale}")
    return level


def canvas_size(padded_sizes: list[tuple[int, int]], scales: tuple[float, ...], depth: int) -> tuple[int, int]:
    """Smallest canvas, a multiple of ``2**depth``, whose level of every scale holds its output."""
    multiple = 2**depth
    # At least two multiples: the deepest level is then 2 x 2 or more, never the single
    # pixel BatchNorm cannot normalise while training.
    need_h = max(2 * multiple, *(p[0] * 2 ** scale_level(s) for p, s in zip(padded_sizes, scales)))
    need_w = max(2 * multiple, *(p[1] * 2 ** scale_level(s) for p, s in zip(padded_sizes, scales)))
    return (-(-need_h // multiple) * multiple, -(-need_w // multiple) * multiple)


def conv_bn_act(cin: int, cout: int, kernel: int = 3, stride: int = 1, act: str = "leaky") -> nn.Sequential:
    """conv (reflection padded, as in deep-image-prior practice) + BatchNorm + activation."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, padding_mode="reflect" if kernel > 1 else "zeros"),
        nn.BatchNorm2d(cout),
    ]
    layers.append(nn.LeakyReLU(_SLOPE, inplace=True) if act == "leaky" else nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class NonLocalBlock(nn.Module):
    """Non-local block, dot-product form: keys/values max-pooled 2x2, residual.

    ``y_i = 1/N sum_j (theta_i . phi_j) g_j`` over the ``N`` pooled positions (no softmax),
    as in the dot-product variant of Wang et al.'s non-local networks. Without a softmax the
    sum factors as ``theta_i . (1/N sum_j phi_j g_j^T)``: a ``(C/2 x C/2)`` context matrix,
    so the cost is linear in the number of positions, not quadratic.

    The output BatchNorm's scale starts at zero, so the block starts as the identity (as in
    Wang et al.): with the default scale of one, the deepest encoder levels are fed untrained
    attention paths at full strength from the first step, and the 128-channel network fits a
    sharp image far more slowly (``benchmarks/generator_fit.py``; benchmarks/NOTEBOOK.md).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(channels // 2, 1)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.out = nn.Sequential(nn.Conv2d(inner, channels, 1), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.out[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        pooled = F.max_pool2d(x, 2) if min(h, w) >= 2 else x
        query = self.theta(x).flatten(2)  # (n, inner, H W)
        key = self.phi(pooled).flatten(2)  # (n, inner, N)
        value = self.g(pooled).flatten(2)  # (n, inner, N)
        context = torch.bmm(value, key.transpose(1, 2)) / key.shape[-1]
        y = torch.bmm(context, query).reshape(n, -1, h, w)
        return x + self.out(y)


class EncoderBlock(nn.Module):
    """Stride-2 conv, then two convs; optionally preceded by a non-local block."""

    def __init__(self, cin: int, cout: int, nonlocal_block: bool) -> None:
        super().__init__()
        self.attention = NonLocalBlock(cin) if nonlocal_block else nn.Identity()
        self.body = nn.Sequential(conv_bn_act(cin, cout, stride=2), conv_bn_act(cout, cout), conv_bn_act(cout, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.attention(x))


class ShallowInput(nn.Module):
    """Lifts a coarse noise input to encoder width: conv + BN + ReLU, deeper for coarser scales."""

    def __init__(self, cin: int, cout: int, layers: int) -> None:
        super().__init__()
        blocks = [conv_bn_act(cin, cout, act="relu")]
        blocks += [conv_bn_act(cout, cout, act="relu") for _ in range(layers - 1)]
        self.body = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


class FeatureAttention(nn.Module):
    """Merges a coarse input into the encoder: ``f + conv_bn(f * z)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(channels)
        )

    def forward(self, f: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return f + self.conv(f * z)


class DecoderBlock(nn.Module):
    """Nearest x2 upsampling, concatenation with a narrow skip, conv3x3 and conv1x1."""

    def __init__(self, cin: int, skip_in: int, skip_channels: int, cout: int) -> None:
        super().__init__()
        self.skip = conv_bn_act(skip_in, skip_channels)
        self.norm = nn.BatchNorm2d(cin + skip_channels)
        self.body = nn.Sequential(conv_bn_act(cin + skip_channels, cout), conv_bn_act(cout, cout, kernel=1))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.body(self.norm(torch.cat([x, self.skip(skip)], dim=1)))


class SelfMSNet(nn.Module):
    """Multi-input multi-output generator for the scales ``scales`` (coarse to fine).

    Parameters
    ----------
    scales : tuple of float
        Powers of 1/2 ending with 1, e.g. ``(1/8, 1/4, 1/2, 1)``; ``(1,)`` is Self-MSNet-S.
    out_channels : int
        1 for grey/fluorescence, 3 for RGB.
    width : int
        Channels of every encoder and decoder level (the paper: 128).
    skip_channels, input_channels, depth, nonlocal_levels : int
        Skip-branch width (4), noise channels (16), number of stride-2 levels (5) and how many
        of the deepest levels start with a non-local block (3).
    """

    def __init__(
        self,
        scales: tuple[float, ...],
        out_channels: int = 1,
        width: int = 128,
        skip_channels: int = 4,
        input_channels: int = 16,
        depth: int = 5,
        nonlocal_levels: int = 3,
    ) -> None:
        super().__init__()
        self.scales = tuple(scales)
        self.levels = [scale_level(s) for s in self.scales]
        if max(self.levels) >= depth:
            raise ValueError(f"the coarsest scale needs fewer than depth={depth} levels, got scales {scales}")
        self.depth = depth
        self.input_conv = conv_bn_act(input_channels, width)
        self.encoder = nn.ModuleList(
            EncoderBlock(width, width, nonlocal_block=level >= depth - nonlocal_levels) for level in range(depth)
        )
        coarse = [lv for lv in self.levels if lv > 0]
        self.shallow = nn.ModuleDict({str(lv): ShallowInput(input_channels, width, layers=lv + 1) for lv in coarse})
        self.merge = nn.ModuleDict({str(lv): FeatureAttention(width) for lv in coarse})
        # decoder[i] goes from level depth - i to level depth - i - 1; level 0's skip is the input.
        self.decoder = nn.ModuleList(
            DecoderBlock(width, input_channels if level == 0 else width, skip_channels, width)
            for level in reversed(range(depth))
        )
        # Output heads: per-scale small block and input skip, then blocks shared by all scales.
        self.head_in = nn.ModuleDict({str(lv): conv_bn_act(width, width) for lv in self.levels})
        self.head_skip = nn.ModuleDict({str(lv): conv_bn_act(input_channels, skip_channels) for lv in self.levels})
        self.head_shared = nn.Sequential(conv_bn_act(width + skip_channels, width), conv_bn_act(width, width, kernel=1))
        self.head_out = nn.Conv2d(width, out_channels, 3, padding=1, padding_mode="reflect")

    def forward(self, inputs: list[torch.Tensor], padded_sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        if len(inputs) != len(self.scales) or len(padded_sizes) != len(self.scales):
            raise ValueError(f"expected {len(self.scales)} inputs and sizes, got {len(inputs)} and {len(padded_sizes)}")
        by_level = dict(zip(self.levels, inputs))
        z0 = by_level[0]
        multiple = 2**self.depth
        if z0.shape[-2] % multiple or z0.shape[-1] % multiple:
            raise ValueError(f"the full-scale input must be a multiple of {multiple}, got {tuple(z0.shape[-2:])}")

        features = [self.input_conv(z0)]
        for level, block in enumerate(self.encoder, start=1):
            f = block(features[-1])
            if level in by_level:
                f = self.merge[str(level)](f, self.shallow[str(level)](by_level[level]))
            features.append(f)

        outputs: dict[int, torch.Tensor] = {}
        x = features[-1]
        for i, block in enumerate(self.decoder):
            level = self.depth - 1 - i
            x = block(x, z0 if level == 0 else features[level])
            if level in by_level:
                head = self.head_in[str(level)](x)
                head = torch.cat([head, self.head_skip[str(level)](by_level[level])], dim=1)
                outputs[level] = torch.sigmoid(self.head_out(self.head_shared(head)))
        return [outputs[lv][..., : p[0], : p[1]] for lv, p in zip(self.levels, padded_sizes)]
