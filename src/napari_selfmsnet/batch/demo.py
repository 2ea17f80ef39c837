"""The ``demo`` command: deblur the bundled sample and show how far the result got.

Writes the result like the ``deblur`` command does, plus a side-by-side picture (blurred |
deblurred | kernel, each panel labelled above it), and prints the PSNR against the sample's
sharp original. Its progress bar follows the run's stages and its warnings are printed and
reported, as for ``deblur``; Ctrl-C or SIGTERM stop it without a traceback and without writing
anything (exit status 130 / 143).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from .. import io
from ..engine.pipeline import deblur
from ..evaluation.metrics import levin_scores
from ..evaluation.sample import blurred_sample, sample_kernel, sharp_sample
from .jobs import RunInterrupted
from .progress_bars import bar_callback
from .serial import stopping_callback
from .stopping import StopRequest

__all__ = ["PANEL_LABELS", "label_band", "run_demo", "side_by_side", "stretch"]


def stretch(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Contrast stretch for display only: percentiles ``low``/``high`` to 0/255 (uint8)."""
    image = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(image, [low, high])
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((image - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)


#: The labels of the comparison picture's panels, left to right.
PANEL_LABELS = ("blurred", "deblurred", "estimated kernel")


def side_by_side(
    blurred: np.ndarray,
    deblurred: np.ndarray,
    kernel: np.ndarray,
    gap: int = 8,
    *,
    labels: tuple[str, str, str] | None = PANEL_LABELS,
) -> np.ndarray:
    """blurred | deblurred | kernel, each stretched on its own, enlarged (nearest) for viewing,
    with a label above each panel.

    Parameters
    ----------
    blurred, deblurred : ndarray, shape (H, W) or (H, W, 3)
        The input and the result (any real dtype; each is contrast-stretched on its own).
    kernel : ndarray, shape (kh, kw)
    gap : int
        White columns between the panels.
    labels : (str, str, str) or None
        The panels' labels, written in black on a white band above them, centred over each
        panel (shrunk to the panel's width if need be); None: no band.

    Returns
    -------
    ndarray of uint8, shape (B + Z*H, W') or (B + Z*H, W', 3)
        Grey for grey images, RGB for RGB ones. Images smaller than 256 pixels high are
        enlarged by a whole factor ``Z``; the kernel is enlarged to about the image height and
        centred vertically. ``B`` is the label band's height (0 with ``labels=None``); the
        label font grows with the panels (:func:`label_band`).
    """
    zoom = max(1, 256 // blurred.shape[0])
    panels = [_enlarge(stretch(blurred, 0.1, 99.9), zoom), _enlarge(stretch(deblurred, 0.1, 99.9), zoom)]
    height = panels[0].shape[0]
    big_kernel = _enlarge(stretch(kernel, 0.0, 100.0), max(1, height // max(kernel.shape)))
    panel = np.zeros((height, big_kernel.shape[1], *panels[0].shape[2:]), dtype=np.uint8)
    top = (height - big_kernel.shape[0]) // 2
    panel[top : top + big_kernel.shape[0]] = big_kernel[:height, :, None] if panel.ndim == 3 else big_kernel[:height]
    panels.append(panel)
    spacer = np.full((height, gap, *panels[0].shape[2:]), 255, dtype=np.uint8)
    picture = np.concatenate([panels[0], spacer, panels[1], spacer, panels[2]], axis=1)
    if labels is None:
        return picture
    if len(labels) != len(panels):
        raise ValueError(f"labels must name the {len(panels)} panels (blurred, deblurred, kernel), got {labels!r}")
    band = label_band([p.shape[1] for p in panels], labels, gap, font_size=max(12, height // 16))
    if picture.ndim == 3:
        band = np.repeat(band[:, :, None], picture.shape[2], axis=2)
    return np.concatenate([band, picture], axis=0)


def label_band(widths: list[int], labels: tuple[str, ...], gap: int, font_size: int = 16) -> np.ndarray:
    """A white band with ``labels[i]`` in black, centred over a panel ``widths[i]`` wide.

    The panels are ``gap`` columns apart, as in :func:`side_by_side`. The font is Pillow's
    default (a scalable sans-serif with FreeType, else a small bitmap font) at ``font_size``
    pixels, smaller for a label wider than its panel (down to 8 px; beyond that it is cut at
    the panel's edges). Returns uint8 ``(B, sum(widths) + gap * (len(widths) - 1))``, ``B``
    the height of a line of the font plus a margin of a quarter of the font size above and
    below.
    """
    fonts = [_font_fitting(label, width, font_size) for label, width in zip(labels, widths)]
    boxes = [font.getbbox(label) for font, label in zip(fonts, labels)]
    margin = max(2, font_size // 4)
    # The height of a line of the font (ascenders and descenders), whatever the labels say.
    height = ImageFont.load_default(size=font_size).getbbox("Ag")[3] + 2 * margin
    pieces = []
    for index, (label, width, font, box) in enumerate(zip(labels, widths, fonts, boxes)):
        canvas = Image.new("L", (width, height), 255)
        left = (width - (box[2] - box[0])) // 2 - box[0]
        ImageDraw.Draw(canvas).text((left, margin), label, fill=0, font=font)
        pieces.append(np.asarray(canvas, dtype=np.uint8))
        if index < len(widths) - 1:
            pieces.append(np.full((height, gap), 255, dtype=np.uint8))
    return np.concatenate(pieces, axis=1)


def _font_fitting(label: str, width: int, size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``size`` px, or smaller (down to 8 px) until ``label`` fits ``width``."""
    while True:
        font = ImageFont.load_default(size=size)
        left, _, right, _ = font.getbbox(label)
        if right - left <= width or size <= 8:
            return font
        size -= 1


def _enlarge(image: np.ndarray, zoom: int) -> np.ndarray:
    return np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1)


def run_demo(args: argparse.Namespace) -> int:
    """The ``demo`` command: deblur the bundled sample, write results and a comparison PNG."""
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    blurred, sharp, true_kernel = blurred_sample(), sharp_sample(), sample_kernel()
    print(
        f"sample: {blurred.shape[1]} x {blurred.shape[0]} {blurred.dtype}, kernel {true_kernel.shape[1]} x {true_kernel.shape[0]}"
    )
    with StopRequest() as stop, tqdm(unit="step", disable=None, file=sys.stderr) as bar:
        stages = bar_callback(bar, "demo")
        try:
            result = deblur(
                blurred, true_kernel.shape, preset=args.preset, iterations=args.iterations, device=args.device,
                seed=0, callback=stopping_callback(stages, stop),
            )  # fmt: skip
        except (KeyboardInterrupt, RunInterrupted):
            result = None
        if result is not None and not stop:
            stages.finish()
    if stop or result is None:
        print(f"stopped by {stop.name or 'SIGINT'}: nothing was written", file=sys.stderr)
        return stop.exit_status or 130
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    meta = io.ImageMetadata(axes="YX", shape=blurred.shape, dtype=np.dtype(np.float32).str, source="tiff")
    report = {
        "input": "bundled sample (napari_selfmsnet.evaluation.sample.blurred_sample)",
        "device": result.device, "elapsed_s": result.elapsed_s, "final_loss": result.final_loss,
        "params": result.params, "warnings": list(result.warnings),
    }  # fmt: skip
    before = levin_scores(blurred, sharp, fit_intensity=True)
    after = levin_scores(result.image, sharp, kernel=result.kernel, true_kernel=true_kernel, fit_intensity=True)
    report["scores"] = {"blurred": before, "deblurred": after}
    paths = io.write_result(args.output_dir, "demo", result.image, result.kernel, meta, report)
    comparison = Path(args.output_dir) / "demo_comparison.png"
    io.write_picture(comparison, side_by_side(blurred, result.image, result.kernel))
    print(f"deblurred in {result.elapsed_s:.1f} s on {result.device}")
    print(
        f"PSNR against the sharp original (affine intensity fit): blurred {before['psnr']:.2f} dB -> deblurred {after['psnr']:.2f} dB"
    )
    print(f"kernel similarity to the true kernel: {after['kernel_similarity']:.3f}")
    print(f"wrote {paths['image']}, {paths['kernel']}, {paths['report']} and {comparison}")
    return 0
