"""The sample data reaches napari through the manifest (File > Open Sample)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_selfmsnet.evaluation.sample import SAMPLE_KERNEL_SIZE, blurred_sample, sample_kernel, sharp_sample  # noqa: E402

PLUGIN = "napari-selfmsnet"


def test_blurred_sample_opens(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "blurred")
    assert [layer.name for layer in layers] == ["blurred sample"]
    layer = viewer.layers["blurred sample"]
    assert layer.data.dtype == np.uint16 and layer.data.ndim == 2
    np.testing.assert_array_equal(layer.data, blurred_sample())
    assert layer.metadata["suggested_kernel_size"] == SAMPLE_KERNEL_SIZE
    # The layer owns a writable copy; the cached sample stays as it was.
    layer.data[0, 0] += 1
    assert blurred_sample()[0, 0] == layer.data[0, 0] - 1


def test_sharp_sample_opens_with_its_true_kernel(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "sharp")
    sharp = viewer.layers["sharp sample"]
    kernel = viewer.layers["true kernel"]
    assert sharp.data.shape == blurred_sample().shape
    np.testing.assert_array_equal(sharp.data, sharp_sample())
    assert kernel.data.shape == (SAMPLE_KERNEL_SIZE, SAMPLE_KERNEL_SIZE)
    np.testing.assert_allclose(kernel.data, sample_kernel())
    assert np.isclose(kernel.data.sum(), 1.0, atol=1e-5)
    assert kernel.colormap.name == "inferno"


def test_samples_are_offered_in_the_menu():
    from npe2 import PluginManager

    manager = PluginManager.instance()
    manager.discover()
    offered = dict(manager.iter_sample_data())
    assert {sample.key for sample in offered[PLUGIN]} == {"blurred", "sharp"}
