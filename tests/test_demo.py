"""The demo's comparison picture: blurred | deblurred | kernel, each panel labelled above it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_selfmsnet.batch.demo import PANEL_LABELS, label_band, side_by_side


def _inputs(shape: tuple[int, ...], dtype: str):
    rng = np.random.default_rng(0)
    blurred = (rng.random(shape) * 1000).astype(dtype)
    deblurred = (rng.random(shape) * 1200 - 50).astype(np.float32)
    kernel = rng.random((9, 9)).astype(np.float32)
    return blurred, deblurred, kernel / kernel.sum()


def _panel_columns(picture_width: int, kernel_panel: int, gap: int = 8) -> list[slice]:
    image_panel = (picture_width - kernel_panel - 2 * gap) // 2
    starts = [0, image_panel + gap, 2 * (image_panel + gap)]
    return [slice(s, s + w) for s, w in zip(starts, [image_panel, image_panel, kernel_panel])]


@pytest.mark.parametrize("shape", [(64, 80), (64, 80, 3)], ids=["grey", "rgb"])
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_each_panel_has_a_label_band_above_it(shape, dtype):
    blurred, deblurred, kernel = _inputs(shape, dtype)
    labelled = side_by_side(blurred, deblurred, kernel)
    plain = side_by_side(blurred, deblurred, kernel, labels=None)

    assert labelled.dtype == np.uint8 and plain.dtype == np.uint8
    assert labelled.ndim == len(shape) and labelled.shape[1:] == plain.shape[1:]
    # The panels are those of the unlabelled picture, below a band of their width.
    band_height = labelled.shape[0] - plain.shape[0]
    assert band_height >= 12
    np.testing.assert_array_equal(labelled[band_height:], plain)
    band = labelled[:band_height]
    zoom = 256 // shape[0]
    kernel_panel = 9 * (shape[0] * zoom // 9)
    for columns in _panel_columns(labelled.shape[1], kernel_panel):
        above = band[:, columns]
        # Not a blank band: dark text on white, the text well inside the panel's columns.
        assert (above < 128).sum() > 20, "no label drawn over a panel"
        assert np.mean(above == 255) > 0.6, "the band is not mostly white"
        assert (above[:, :2] == 255).all() and (above[:, -2:] == 255).all()
    if labelled.ndim == 3:  # RGB: the band is grey, the same in each channel
        assert (band == band[..., :1]).all()


def test_the_sample_size_picture_has_a_readable_band():
    blurred, deblurred, kernel = _inputs((128, 128), "uint16")
    picture = side_by_side(blurred, deblurred, kernel)
    band = picture.shape[0] - 256
    # Font of 16 px at a 256 px panel height: readable at a glance, not a speck.
    assert 20 <= band <= 40
    text_rows = np.flatnonzero((picture[:band] < 128).any(axis=1))
    assert text_rows.size >= 10


def test_label_band_is_blank_without_text_and_fits_narrow_panels():
    blank = label_band([40, 50], ("", ""), gap=8)
    assert blank.dtype == np.uint8 and blank.shape[1] == 98 and (blank == 255).all()
    band = label_band([40, 50], ("a", "b"), gap=8)
    assert band.shape == blank.shape and not (band == 255).all()
    # A label too wide for its panel is drawn smaller, within the panel.
    narrow = label_band([60], ("estimated kernel",), gap=8, font_size=20)
    assert narrow.shape[1] == 60 and (narrow < 128).any()


def test_labels_must_name_the_three_panels():
    blurred, deblurred, kernel = _inputs((48, 48), "float32")
    with pytest.raises(ValueError, match="labels must name the 3 panels"):
        side_by_side(blurred, deblurred, kernel, labels=("blurred", "deblurred"))
    assert PANEL_LABELS == ("blurred", "deblurred", "estimated kernel")
