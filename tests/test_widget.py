"""The napari widget, end to end under Xvfb: runs, kernel size, progress, cancel at every
stage, stacks, odd inputs, the manifest and the menus.

Runs are tiny (about 40 x 40 pixels, a few iterations of Self-MSNet-S) so the file takes a
few minutes on 2 CPU cores; image quality is tested elsewhere.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_selfmsnet._napari.layers import PlaneStack, describe_layer, shapes_region  # noqa: E402
from napari_selfmsnet._napari.progress import STAGE_NOUNS  # noqa: E402
from napari_selfmsnet.engine.records import STAGES, Progress  # noqa: E402

PLUGIN = "napari-selfmsnet"
WIDGET = "Blind deblur"
RUN_TIMEOUT_MS = 180_000


def _blurred(rng: np.random.Generator, shape: tuple[int, ...], dtype=np.uint16) -> np.ndarray:
    """Smooth random structure with a little noise: something with edges to deblur."""
    from scipy import ndimage

    data = ndimage.gaussian_filter(rng.random(shape), sigma=[0] * (len(shape) - 2) + [1.5, 1.5])
    data = (data - data.min()) / (data.max() - data.min())
    if np.dtype(dtype).kind == "f":
        return data.astype(dtype)
    return (data * (200 if dtype == np.uint8 else 4000) + 10).astype(dtype)


@pytest.fixture(autouse=True)
def light_fast_preset(monkeypatch):
    """The widget's runs here check bookkeeping, not quality: the "fast" preset with 2 polish
    rounds, no second blind run and 20 solver iterations keeps each run to a few seconds."""
    from dataclasses import replace

    from napari_selfmsnet.engine import config, nonblind

    monkeypatch.setitem(config.PRESETS, "fast", replace(config.PRESETS["fast"], polish_rounds=2, retries=0))
    monkeypatch.setitem(nonblind.DEFAULT_ITERATIONS, "sparse", 20)


@pytest.fixture
def viewer_widget(make_napari_viewer):
    """A viewer and the plugin's widget, docked the way a user opens it from the Plugins menu."""
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return viewer, widget


def _configure(widget, *, kernel_size=5, iterations=1, method="self-msnet-s") -> None:
    # One iteration is enough where only shapes and bookkeeping are checked (the engine's
    # own tests check what the iterations achieve). kernel_size="auto" measures it.
    widget.auto_kernel_size.value = kernel_size == "auto"
    if kernel_size != "auto":
        widget.kernel_size.value = kernel_size
    widget.method.value = method
    widget.iterations.value = iterations
    widget.device.value = "cpu"


def _run_to_end(qtbot, widget):
    worker = widget.run()
    assert worker is not None, f"the run was refused: {widget.status.value}"
    with qtbot.waitSignal(worker.finished, timeout=RUN_TIMEOUT_MS):
        pass
    return worker


def _shown(control) -> bool:
    # magicgui's .visible is Qt's isVisible(), False while the (test) window is not shown;
    # isHidden() tells whether the widget itself was hidden.
    return not control.native.isHidden()


def _edges(layer) -> np.ndarray:
    """World coordinates of a 2-D layer's top-left and bottom-right pixel edges."""
    scale, translate = np.asarray(layer.scale), np.asarray(layer.translate)
    top_left = translate - scale / 2
    return np.array([top_left, top_left + np.asarray(layer.data.shape[-2:]) * scale])


def _errors(notifications) -> list[str]:
    from napari.utils.notifications import NotificationSeverity

    return [n.message for n in notifications if n.severity == NotificationSeverity.ERROR]


class _PlaneReadArray:
    """An array-like (as a Zarr array is) that refuses to be loaded whole.

    Records every index it is read with; ``np.asarray`` on the whole array fails the test.
    """

    def __init__(self, data: np.ndarray) -> None:
        self._data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.ndim = data.ndim
        self.size = data.size
        self.reads: list = []

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        self.reads.append(key)
        return self._data[key]

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the whole lazy array was loaded")


# -- the layer helpers (no viewer) ----------------------------------------------------------


class _FakeLayer:
    def __init__(self, data, *, rgb=False, multiscale=False) -> None:
        self.name = "fake"
        self.data = data
        self.rgb = rgb
        self.multiscale = multiscale
        ndim = (data[0] if multiscale else data).ndim - (1 if rgb else 0)
        self.scale = (1.0,) * ndim
        self.translate = (0.0,) * ndim
        self.contrast_limits = (0.0, 1.0)


def test_plane_stack_maps_flat_index_onto_leading_axes(rng):
    data = rng.random((2, 3, 8, 9)).astype(np.float32)
    planes = PlaneStack(describe_layer(_FakeLayer(data)))
    assert planes.shape == (6, 8, 9)
    np.testing.assert_array_equal(planes[4], data[1, 1])


def test_plane_stack_drops_alpha_and_keeps_the_dtype(rng):
    rgba = (rng.random((8, 9, 4)) * 100).astype(">i8")  # NumPy's default integer, big-endian too
    planes = PlaneStack(describe_layer(_FakeLayer(rgba, rgb=True)), [()])
    assert planes.shape == (1, 8, 9, 3)
    assert planes[0].dtype == rgba.dtype == planes.dtype
    np.testing.assert_array_equal(planes[0], rgba[..., :3])


def test_int64_and_big_endian_layers_are_deblurred(viewer_widget, qtbot, rng):
    viewer, widget = viewer_widget
    viewer.add_image(_blurred(rng, (40, 40)).astype(">i8"), name="wide")
    _configure(widget)
    _run_to_end(qtbot, widget)
    assert viewer.layers["wide deblurred"].data.dtype == np.float32
    assert widget.status.value.startswith("done")


def test_plane_stack_names_the_plane_holding_nan(rng):
    data = rng.random((3, 8, 8))
    data[1, 2, 2] = np.nan
    planes = PlaneStack(describe_layer(_FakeLayer(data)))
    np.testing.assert_array_equal(planes[0], data[0])
    with pytest.raises(ValueError, match=r"plane \(1,\) of layer 'fake': image contains NaN"):
        planes[1]


def test_describe_layer_takes_level_zero_of_multiscale(rng):
    levels = [rng.random((16, 16)), rng.random((8, 8))]
    source = describe_layer(_FakeLayer(levels, multiscale=True))
    assert source.multiscale
    assert source.spatial_shape == (16, 16)
    assert not source.is_stack


# -- the widget ---------------------------------------------------------------------------


@pytest.mark.parametrize("imports", [False, True], ids=["schema", "imports"])
def test_manifest_validates(imports):
    """``npe2 validate napari-selfmsnet``; with ``--imports`` every python_name is imported too."""
    npe2 = Path(sys.executable).with_name("npe2")
    command = [str(npe2)] if npe2.exists() else [sys.executable, "-m", "npe2"]
    command += ["validate", PLUGIN] + (["--imports"] if imports else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid!" in done.stdout


def test_only_image_layers_are_offered_and_active_one_is_default(viewer_widget, rng):
    viewer, widget = viewer_widget
    viewer.add_labels(np.zeros((32, 32), dtype=np.int32), name="labels")
    viewer.add_image(_blurred(rng, (32, 32)), name="first")
    viewer.add_image(_blurred(rng, (32, 32)), name="second")
    viewer.add_points(np.zeros((1, 2)), name="points")
    offered = [label for label, _ in widget.image_layer._default_choices(widget.image_layer)]
    assert sorted(widget.image_layer.choices, key=lambda c: c.name) == [viewer.layers["first"], viewer.layers["second"]]
    assert offered == ["first", "second"]
    viewer.layers.selection.active = viewer.layers["first"]
    assert widget.image_layer.value.name == "first"
    assert not _shown(widget.stack_mode)


def test_run_adds_deblurred_image_and_kernel(viewer_widget, qtbot, rng):
    viewer, widget = viewer_widget
    data = _blurred(rng, (48, 48))
    original = data.copy()
    layer = viewer.add_image(
        data, name="cells", scale=(0.5, 0.25), translate=(3.0, 4.0), contrast_limits=(10, 3000), axis_labels=("y", "x")
    )
    _configure(widget, kernel_size=7, iterations=5)
    yielded = []
    worker = widget.run()
    worker.yielded.connect(yielded.append)
    with qtbot.waitSignal(worker.finished, timeout=RUN_TIMEOUT_MS):
        pass

    result = viewer.layers["cells deblurred"]
    kernel = viewer.layers["cells kernel"]
    assert result.data.shape == (48, 48) and result.data.dtype == np.float32
    assert kernel.data.shape == (7, 7) and kernel.data.dtype == np.float32
    assert kernel.data.min() >= 0 and np.isclose(kernel.data.sum(), 1.0, atol=1e-5)
    np.testing.assert_allclose(result.scale, (0.5, 0.25))
    np.testing.assert_allclose(result.translate, (3.0, 4.0))
    assert tuple(result.axis_labels) == ("y", "x")
    np.testing.assert_allclose(result.contrast_limits, (10, 3000))
    assert kernel.colormap.name == "inferno"
    # Intensities stay in the input's units (uint16 counts), not rescaled to [0, 1].
    assert 0.25 * original.max() < result.data.max() < 4 * original.max()
    for new in (result, kernel):
        meta = new.metadata
        assert meta["source_layer"] == "cells" and meta["method"] == "self-msnet-s"
        assert meta["iterations"] == 5 and meta["device"] == "cpu"
        assert meta["kernel_size"] == 7 and meta["kernel_size_requested"] == 7 and meta["kernel_size_source"] == "given"
        # The layer has a scale but names no unit: the size in its scale units too (7 x 0.25).
        assert meta["kernel_extent"] == pytest.approx(1.75) and meta["kernel_extent_unit"] == "scale units"
        assert meta["elapsed_s"] > 0 and np.isfinite(meta["final_loss"]) and meta["cancelled"] is False
        assert meta["params"]["preset"] == "fast" and meta["params"]["kernel_size"] == [7, 7]
        assert isinstance(meta["warnings"], list)
    np.testing.assert_array_equal(layer.data, original)
    assert layer.data.dtype == np.uint16
    assert "cells preview" not in viewer.layers
    assert widget.worker is None and widget.run_button.enabled and not widget.cancel_button.enabled
    assert widget.progress_bar.value == widget.progress_bar.max
    assert widget.status.value.startswith("done") and "kernel 7 x 7 px (given)" in widget.status.value
    assert yielded[0] == "started" and any(getattr(record, "step", 0) >= 1 for record in yielded)
    # Every stage of the run reached the GUI (the first record of each always goes through).
    assert [s for s, _ in itertools.groupby(r.stage for r in yielded[1:])][:3] == ["blind", "polish", "deconvolve"]
    # The active layer moved to the results, but the widget keeps the input selected.
    assert widget.image_layer.value.name == "cells"


def test_kernel_is_shown_beside_the_image_at_a_readable_size(viewer_widget, qtbot, rng):
    viewer, widget = viewer_widget
    viewer.add_image(_blurred(rng, (48, 64)), name="cells", scale=(0.5, 0.25), translate=(3.0, 4.0))
    _configure(widget, kernel_size=5, iterations=1)
    _run_to_end(qtbot, widget)
    image, kernel = viewer.layers["cells deblurred"], viewer.layers["cells kernel"]
    (image_top, image_left), (image_bottom, image_right) = _edges(image)
    (kernel_top, kernel_left), (kernel_bottom, kernel_right) = _edges(kernel)
    # Right of the image (not over its corner), top edges level, a third of its height.
    assert kernel_left > image_right
    assert kernel_top == pytest.approx(image_top)
    assert (kernel_bottom - kernel_top) / (image_bottom - image_top) == pytest.approx(1 / 3, abs=0.06)
    zoom = kernel.metadata["kernel_display_zoom"]
    assert zoom == 3 and kernel.data.shape == (5, 5)  # round(48 / 3 / 5)
    np.testing.assert_allclose(kernel.scale, (0.5 * zoom, 0.25 * zoom))
    # What one kernel pixel really is: the image's pixel.
    assert kernel.metadata["kernel_pixel_size"] == [0.5, 0.25]


@pytest.mark.parametrize("where", ["widget", "activity dock"])
def test_cancel_stops_quickly_and_keeps_the_estimate(viewer_widget, qtbot, rng, notifications, where):
    viewer, widget = viewer_widget
    viewer.add_image(_blurred(rng, (48, 48)), name="long")
    _configure(widget, kernel_size=7, iterations=5000)
    worker = widget.run()
    cancelled_at = []

    def cancel_on_first_progress(record) -> None:
        if not cancelled_at and hasattr(record, "step"):
            cancelled_at.append(time.monotonic())
            if where == "widget":
                widget.cancel_button.clicked.emit()
            else:
                # What the Cancel button of napari's activity dock calls on the progress bar.
                widget._pbar.cancel()

    worker.yielded.connect(cancel_on_first_progress)
    with qtbot.waitSignal(worker.finished, timeout=RUN_TIMEOUT_MS):
        pass
    assert cancelled_at, "no progress record arrived before the run ended"
    assert time.monotonic() - cancelled_at[0] < 10
    meta = viewer.layers["long deblurred (cancelled)"].metadata
    assert meta["cancelled"] is True and meta["iterations_run"] < 5000
    assert np.isclose(viewer.layers["long kernel (cancelled)"].data.sum(), 1.0, atol=1e-5)
    assert widget.status.value.startswith("cancelled")
    assert any("cancelled" in n.message for n in notifications)
    assert widget.worker is None and widget.run_button.enabled


@pytest.mark.parametrize("mode", ["current", "shared", "per-plane"])
def test_stack_modes(viewer_widget, qtbot, rng, mode):
    viewer, widget = viewer_widget
    stack = _blurred(rng, (3, 40, 40))
    original = stack.copy()
    viewer.add_image(stack, name="z", scale=(2.0, 0.5, 0.25), translate=(1.0, 3.0, 4.0))
    viewer.dims.set_current_step(0, 2)
    assert _shown(widget.stack_mode)
    _configure(widget, kernel_size=5)
    widget.stack_mode.value = mode
    _run_to_end(qtbot, widget)

    result = viewer.layers["z deblurred"]
    kernel = viewer.layers["z kernel"]
    assert result.data.dtype == np.float32
    if mode == "current":
        assert result.data.shape == (40, 40) and kernel.data.shape == (5, 5)
        np.testing.assert_allclose(result.scale, (0.5, 0.25))
        np.testing.assert_allclose(result.translate, (3.0, 4.0))
        assert result.metadata["plane"] == [2]
    else:
        assert result.data.shape == (3, 40, 40)
        np.testing.assert_allclose(result.scale, (2.0, 0.5, 0.25))
        np.testing.assert_allclose(result.translate, (1.0, 3.0, 4.0))
    if mode != "current":
        assert all(plane["preset"] == "fast" for plane in result.metadata["params"]["plane_params"] if plane)
    if mode == "shared":
        assert kernel.data.shape == (5, 5)
        assert result.metadata["params"]["reference_plane"] in (0, 1, 2)
    if mode == "per-plane":
        assert kernel.data.shape == (3, 5, 5)
        np.testing.assert_allclose(kernel.data.sum(axis=(1, 2)), 1.0, atol=1e-5)
        # The stack of kernels follows the image's sliders; its planes are drawn beside the image.
        zoom = kernel.metadata["kernel_display_zoom"]
        np.testing.assert_allclose(kernel.scale, (2.0, 0.5 * zoom, 0.25 * zoom))
        assert kernel.translate[0] == 1.0 and kernel.metadata["kernel_pixel_size"] == [0.5, 0.25]
        # Planes after the first start from the one before (the checkbox's default).
        assert result.metadata["warm_planes"] is True
        assert [p["warm_started"] for p in result.metadata["params"]["plane_params"]] == [False, True, True]
    else:
        assert np.isclose(kernel.data.sum(), 1.0, atol=1e-5)
    assert result.metadata["mode"] == mode
    np.testing.assert_array_equal(viewer.layers["z"].data, original)


def test_lazy_4d_stack_is_read_plane_by_plane(viewer_widget, qtbot, rng):
    viewer, widget = viewer_widget
    lazy = _PlaneReadArray(_blurred(rng, (2, 2, 40, 40), dtype=np.float32))
    viewer.add_image(lazy, name="tz", contrast_limits=(0.0, 1.0), multiscale=False)
    _configure(widget, kernel_size=5)
    widget.stack_mode.value = "shared"
    lazy.reads.clear()
    _run_to_end(qtbot, widget)
    assert viewer.layers["tz deblurred"].data.shape == (2, 2, 40, 40)
    assert viewer.layers["tz kernel"].data.shape == (5, 5)
    # Every read the run made was of one whole plane (an int index on both leading axes).
    plane_reads = [key for key in lazy.reads if isinstance(key, tuple) and len(key) == 2]
    assert {tuple(k) for k in plane_reads} == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_rgb_layer_gives_rgb_result(viewer_widget, qtbot, rng):
    viewer, widget = viewer_widget
    rgb = _blurred(rng, (40, 40, 3), dtype=np.uint8)
    viewer.add_image(rgb, name="photo", rgb=True)
    assert not _shown(widget.stack_mode)
    _configure(widget, kernel_size=5)
    _run_to_end(qtbot, widget)
    result = viewer.layers["photo deblurred"]
    assert result.rgb and result.data.shape == (40, 40, 3) and result.data.dtype == np.float32
    np.testing.assert_allclose(result.contrast_limits, viewer.layers["photo"].contrast_limits)


def test_multiscale_layer_uses_level_zero(viewer_widget, qtbot, rng, notifications):
    viewer, widget = viewer_widget
    base = _blurred(rng, (64, 64))
    viewer.add_image([base, base[::2, ::2]], name="pyramid", multiscale=True)
    _configure(widget, kernel_size=5)
    _run_to_end(qtbot, widget)
    assert viewer.layers["pyramid deblurred"].data.shape == (64, 64)
    assert viewer.layers["pyramid deblurred"].metadata["data_level"] == 0
    assert any("level 0" in n.message for n in notifications)


@pytest.mark.parametrize(
    ("kernel_size", "method", "expected"),
    [
        (31, "self-msnet-s", "too large for a 40x40 image"),
        (8, "self-msnet-s", "kernel_size must be odd"),
    ],
)
def test_bad_settings_are_refused_with_a_notification(viewer_widget, rng, notifications, kernel_size, method, expected):
    viewer, widget = viewer_widget
    viewer.add_image(_blurred(rng, (40, 40)), name="small")
    _configure(widget, kernel_size=kernel_size, method=method)
    assert widget.run() is None
    assert widget.worker is None
    errors = _errors(notifications)
    assert len(errors) == 1
    assert re.search(expected, errors[0]), errors[0]
    assert [layer.name for layer in viewer.layers] == ["small"]


def test_nan_in_memory_is_refused_before_starting(viewer_widget, rng, notifications):
    viewer, widget = viewer_widget
    data = _blurred(rng, (40, 40), dtype=np.float32)
    data[5, 5] = np.nan
    viewer.add_image(data, name="holes", contrast_limits=(0.0, 1.0))
    _configure(widget)
    assert widget.run() is None
    assert any("contains NaN" in message for message in _errors(notifications))
    assert widget.status.value.startswith("error")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (lambda image: image * 1e300, "layer 'odd': image values reach 1e+300, beyond the range of float32"),
        (lambda image: image + 1e12, "layer 'odd': image values span only 1 at a magnitude of 1e+12"),
        (lambda image: np.full_like(image, 7.0), "layer 'odd': image is constant"),
    ],
    ids=["beyond-float32", "offset", "constant"],
)
def test_values_the_engine_refuses_are_refused_before_starting(viewer_widget, rng, notifications, values, expected):
    # Like NaN: the engine's own check, before a thread starts, not "failed" once it has.
    viewer, widget = viewer_widget
    viewer.add_image(values(_blurred(rng, (40, 40), dtype=np.float64)), name="odd")
    _configure(widget)
    assert widget.run() is None and widget.worker is None
    errors = _errors(notifications)
    assert len(errors) == 1 and errors[0].startswith(expected), errors
    assert widget.status.value == f"error: {errors[0]}"
    assert [layer.name for layer in viewer.layers] == ["odd"]


@pytest.mark.parametrize(("lazy", "mode"), [(True, "per-plane"), (False, "shared")])
def test_a_nan_plane_of_a_stack_is_passed_through_and_named(viewer_widget, qtbot, rng, notifications, lazy, mode):
    from napari.utils.notifications import NotificationSeverity

    viewer, widget = viewer_widget
    data = _blurred(rng, (3, 40, 40), dtype=np.float32)
    data[1, 5, 5] = np.nan
    viewer.add_image(_PlaneReadArray(data) if lazy else data, name="holes", contrast_limits=(0.0, 1.0))
    _configure(widget)
    widget.stack_mode.value = mode
    _run_to_end(qtbot, widget)
    assert not _errors(notifications)
    warned = [n.message for n in notifications if n.severity == NotificationSeverity.WARNING]
    assert any(m.startswith("holes: plane 1: ") and "passed through unchanged" in m for m in warned), warned
    result = viewer.layers["holes deblurred"]
    np.testing.assert_array_equal(result.data[1], data[1])  # unchanged, NaN included
    assert np.all(np.isfinite(result.data[[0, 2]]))
    assert any(w.startswith("plane 1: ") for w in result.metadata["warnings"])
    assert widget.status.value.startswith("done") and widget.run_button.enabled


def test_nan_in_a_lazy_image_is_reported_from_the_worker(viewer_widget, qtbot, rng, notifications):
    viewer, widget = viewer_widget
    data = _blurred(rng, (2, 40, 40), dtype=np.float32)
    data[1, 5, 5] = np.nan
    viewer.add_image(_PlaneReadArray(data), name="lazy", contrast_limits=(0.0, 1.0))
    viewer.dims.set_current_step(0, 1)
    _configure(widget)
    widget.stack_mode.value = "current"
    _run_to_end(qtbot, widget)
    assert any("plane (1,) of layer 'lazy': image contains NaN" in m for m in _errors(notifications))
    assert "lazy deblurred" not in viewer.layers
    assert widget.status.value.startswith("failed") and widget.run_button.enabled


def test_no_image_layer_is_a_message_not_an_exception(viewer_widget, notifications):
    viewer, widget = viewer_widget
    viewer.add_labels(np.zeros((32, 32), dtype=np.int32), name="labels")
    assert widget.image_layer.value is None
    assert widget.run() is None
    assert any("no Image layer" in message for message in _errors(notifications))


def test_gui_stays_responsive_and_closing_the_viewer_stops_the_run(make_napari_viewer, qtbot, rng):
    from qtpy.QtCore import QTimer

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    viewer.add_image(_blurred(rng, (48, 48)), name="busy")
    _configure(widget, kernel_size=7, iterations=5000)
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)
    worker = widget.run()
    progress = []
    worker.yielded.connect(progress.append)
    qtbot.waitUntil(lambda: any(hasattr(record, "step") for record in progress), timeout=RUN_TIMEOUT_MS)
    qtbot.wait(1500)
    timer.stop()
    # The live preview and the progress bar follow the run.
    assert "busy preview" in viewer.layers
    assert viewer.layers["busy preview"].data.shape == (48, 48)
    assert 0 < widget.progress_bar.value < widget.progress_bar.max == 5000
    # The event loop kept turning while the engine ran in its thread.
    assert len(ticks) > 20 and np.max(np.diff(ticks)) < 2.0
    closed_at = time.monotonic()
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        viewer.close()
    assert time.monotonic() - closed_at < 10


# -- regions and warm starts ----------------------------------------------------------------


def _labels(combo) -> list[str]:
    """The texts the user sees in a magicgui ComboBox."""
    return [combo.native.itemText(i) for i in range(combo.native.count())]


def _rectangle(top: float, left: float, bottom: float, right: float, *lead: float) -> np.ndarray:
    return np.array([[*lead, y, x] for y, x in ((top, left), (top, right), (bottom, right), (bottom, left))])


@pytest.mark.parametrize(
    ("image_kwargs", "shapes_kwargs", "rectangle", "expected"),
    [
        # World y 8..20 and x 8..14 on an image at scale (0.5, 0.25), translate (3, 4): rows
        # (8 - 3) / 0.5 = 10 .. 34, columns (8 - 4) / 0.25 = 16 .. 40.
        ({"scale": (0.5, 0.25), "translate": (3.0, 4.0)}, {}, _rectangle(8, 8, 20, 14), (10, 16, 24, 24)),
        # The Shapes layer has its own transform: data (2.5, 4) .. (8.5, 7) is world (8, 8) .. (20, 14).
        (
            {"scale": (0.5, 0.25), "translate": (3.0, 4.0)},
            {"scale": (2.0, 2.0), "translate": (3.0, 0.0)},
            _rectangle(2.5, 4, 8.5, 7),
            (10, 16, 24, 24),
        ),
        # A stack, and a rectangle drawn on plane 2 of a 3-D Shapes layer: only Y and X count.
        (
            {"scale": (2.0, 0.5, 0.25), "translate": (1.0, 3.0, 4.0)},
            {"scale": (2.0, 1.0, 1.0), "translate": (1.0, 0.0, 0.0)},
            _rectangle(8, 8, 20, 14, 2),
            (10, 16, 24, 24),
        ),
        # Edges round to the nearest pixel boundary; the part outside the image is clipped.
        ({}, {}, _rectangle(-5.2, 30.3, 12.4, 60.0), (0, 30, 12, 18)),
    ],
    ids=["scaled-image", "scaled-shapes", "stack", "clipped"],
)
def test_shapes_region_maps_through_world_coordinates(image_kwargs, shapes_kwargs, rectangle, expected):
    from napari.layers import Image, Shapes

    ndim = len(image_kwargs.get("scale", (1, 1)))
    image = Image(np.zeros((3,) * (ndim - 2) + (48, 48), dtype=np.float32), **image_kwargs)
    shapes = Shapes([rectangle], shape_type="rectangle", **shapes_kwargs)
    region = shapes_region(shapes, image, (48, 48))
    assert region == expected
    assert all(type(v) is int for v in region)


def test_shapes_region_refuses_empty_layer_and_shape_off_the_image():
    from napari.layers import Image, Shapes

    image = Image(np.zeros((48, 48), dtype=np.float32), translate=(100.0, 0.0))
    with pytest.raises(ValueError, match=r"Shapes layer 'roi' holds no shape: draw a rectangle"):
        shapes_region(Shapes(name="roi"), image, (48, 48))
    with pytest.raises(ValueError, match=r"first shape of Shapes layer 'roi' does not overlap the 48x48 image"):
        shapes_region(Shapes([_rectangle(0, 0, 20, 20)], shape_type="rectangle", name="roi"), image, (48, 48))


def test_region_choices_follow_shapes_layers(viewer_widget, rng):
    viewer, widget = viewer_widget
    viewer.add_image(_blurred(rng, (48, 48)), name="cells")
    assert _labels(widget.region) == ["auto", "full frame"] and widget.region.value == "auto"
    roi = viewer.add_shapes(_rectangle(4, 4, 40, 40), shape_type="rectangle", name="roi")
    viewer.add_labels(np.zeros((48, 48), dtype=np.int32), name="labels")
    assert _labels(widget.region) == ["auto", "full frame", "roi"]
    widget.region.value = roi
    roi.name = "cell outline"
    assert _labels(widget.region) == ["auto", "full frame", "cell outline"]
    assert widget.region.value is roi
    viewer.layers["cells"].name = "nuclei"  # the image control keeps its choice too
    assert widget.image_layer.value is viewer.layers["nuclei"]
    viewer.layers.remove(roi)
    assert _labels(widget.region) == ["auto", "full frame"] and widget.region.value == "auto"


@pytest.mark.parametrize(
    ("shape", "method", "expected"),
    [
        (None, "self-msnet-s", r"Shapes layer 'roi' holds no shape: draw a rectangle"),
        (_rectangle(10, 10, 18, 30), "self-msnet-s", r"Shapes layer 'roi': region 8x20 is too small for a 5x5 kernel"),
        # Large enough for the kernel, too small for the multi-scale pyramid at 1/8.
        (
            _rectangle(10, 10, 30, 30),
            "self-msnet",
            r"Shapes layer 'roi': at scale 0.125 the image \(2x2\) is smaller .* \(region 20x20\)",
        ),
    ],
    ids=["empty", "too-small", "too-small-for-the-pyramid"],
)
def test_unusable_shapes_region_is_an_error_notification(viewer_widget, rng, notifications, shape, method, expected):
    viewer, widget = viewer_widget
    viewer.add_image(_blurred(rng, (48, 48)), name="cells")
    roi = viewer.add_shapes(None if shape is None else [shape], shape_type="rectangle", name="roi")
    _configure(widget, kernel_size=5, method=method)
    widget.region.value = roi
    assert widget.run() is None
    errors = _errors(notifications)
    assert len(errors) == 1 and re.search(expected, errors[0]), errors
    assert widget.status.value.startswith("error")
    assert [layer.name for layer in viewer.layers] == ["cells", "roi"]


def test_run_on_a_shapes_region_records_it_and_places_the_preview(viewer_widget, qtbot, rng):
    viewer, widget = viewer_widget
    viewer.add_image(_blurred(rng, (48, 48)), name="cells", scale=(0.5, 0.25), translate=(3.0, 4.0))
    viewer.add_shapes([_rectangle(8, 6, 24, 14)], shape_type="rectangle", name="roi")
    viewer.layers.selection.active = viewer.layers["cells"]
    _configure(widget, kernel_size=5, iterations=2)
    widget.region.value = viewer.layers["roi"]
    previews = []

    def look_at_preview(event) -> None:
        if event.value.name == "cells preview":
            previews.append((event.value.data.shape, tuple(event.value.translate), tuple(event.value.scale)))

    viewer.layers.events.inserted.connect(look_at_preview)
    _run_to_end(qtbot, widget)

    # World y 8..24, x 6..14 are rows 10..42 and columns 8..40. The preview covers that 32 x 32
    # region, moved by its offset (10, 8) times the pixel size (0.5, 0.25).
    assert previews and set(previews) == {((32, 32), (8.0, 6.0), (0.5, 0.25))}
    result = viewer.layers["cells deblurred"]
    assert result.data.shape == (48, 48)  # the whole frame, deconvolved with the region's kernel
    np.testing.assert_allclose(result.translate, (3.0, 4.0))
    for layer in (result, viewer.layers["cells kernel"]):
        meta = layer.metadata
        assert meta["region"] == [10, 8, 32, 32] and meta["region_layer"] == "roi"
        assert meta["params"]["region"] == [10, 8, 32, 32]
    assert "cells preview" not in viewer.layers


def test_preview_is_replaced_when_its_region_changes(viewer_widget, rng):
    viewer, widget = viewer_widget
    viewer.add_image(_blurred(rng, (2, 48, 48)), name="z", scale=(3.0, 0.5, 0.25), translate=(7.0, 3.0, 4.0))
    job = widget.build_job()
    widget._job = job  # as while the job runs: a preview outside its run is removed at once
    widget._show_preview(job, np.zeros((24, 30), np.float32), [10, 16, 24, 30])
    first = viewer.layers["z preview"]
    np.testing.assert_allclose(first.translate, (8.0, 8.0))
    np.testing.assert_allclose(first.scale, (0.5, 0.25))
    # The whole plane next (a stack's planes deconvolved after the region's blind run).
    widget._show_preview(job, np.ones((48, 48), np.float32), None)
    whole = viewer.layers["z preview"]
    assert whole is not first and whole.data.shape == (48, 48)
    np.testing.assert_allclose(whole.translate, (3.0, 4.0))
    # Same place and shape: the layer is reused, only its data changes.
    widget._show_preview(job, np.full((48, 48), 2, np.float32), None)
    assert viewer.layers["z preview"] is whole and whole.data.max() == 2
    assert [layer.name for layer in viewer.layers].count("z preview") == 1
    widget._job = None  # the run ended: a late preview does not outlive it
    widget._show_preview(job, np.full((48, 48), 3, np.float32), None)
    assert "z preview" not in viewer.layers


def test_per_plane_without_warm_start(viewer_widget, qtbot, rng):
    viewer, widget = viewer_widget
    viewer.add_image(_blurred(rng, (3, 40, 40)), name="z")
    _configure(widget, kernel_size=5, iterations=4)
    assert not _shown(widget.warm_planes)
    widget.stack_mode.value = "per-plane"
    assert _shown(widget.warm_planes) and widget.warm_planes.value is True
    widget.warm_planes.value = False
    widget.iterations.value = 2
    _run_to_end(qtbot, widget)
    meta = viewer.layers["z deblurred"].metadata
    assert meta["warm_planes"] is False and meta["params"]["warm_planes"] is False
    assert [plane["warm_started"] for plane in meta["params"]["plane_params"]] == [False] * 3
    assert [plane["config"]["iterations"] for plane in meta["params"]["plane_params"]] == [2] * 3
    assert widget.progress_bar.value == widget.progress_bar.max


def test_progress_records_are_sparser_on_a_gpu(viewer_widget, rng, monkeypatch):
    import torch

    from napari_selfmsnet._napari import job as job_module

    viewer, widget = viewer_widget
    viewer.add_image(_blurred(rng, (40, 40)), name="cells")
    _configure(widget)
    job = widget.build_job()
    assert job.engine_kwargs()["progress_every"] == 1
    # Reading the loss back every iteration would synchronise a GPU every iteration.
    monkeypatch.setattr(job_module, "resolve_device", lambda device: torch.device("cuda", 0))
    assert job.engine_kwargs()["progress_every"] == 10
    assert job.engine_kwargs()["preset"] == "fast"  # recorded by its name


# -- kernel size ------------------------------------------------------------------------------


def test_kernel_size_is_measured_by_default_and_recorded(viewer_widget, qtbot, rng):
    viewer, widget = viewer_widget
    viewer.add_image(_blurred(rng, (48, 48)), name="cells")
    assert widget.auto_kernel_size.value is True and not widget.kernel_size.enabled
    assert widget.kernel_size_request() == "auto"
    assert not _shown(widget.kernel_extent)  # plain pixels: no size in world units
    widget.method.value = "self-msnet-s"
    widget.iterations.value = 2
    widget.device.value = "cpu"
    yielded = []
    worker = widget.run()
    worker.yielded.connect(yielded.append)
    with qtbot.waitSignal(worker.finished, timeout=RUN_TIMEOUT_MS):
        pass
    assert yielded[1].stage == "size"  # the probes report before the blind fit
    meta = viewer.layers["cells deblurred"].metadata
    size = meta["kernel_size"]
    assert isinstance(size, int) and size % 2 == 1 and viewer.layers["cells kernel"].data.shape == (size, size)
    assert meta["kernel_size_requested"] == "auto" and meta["kernel_size_source"] == "measured"
    assert meta["params"]["kernel_size_source"] == "measured"
    assert f"kernel {size} x {size} px (measured)" in widget.status.value
    # The measured size is shown (greyed while auto stays ticked).
    assert widget.kernel_size.value == size and widget.auto_kernel_size.value is True


def test_an_explicit_size_wins_and_can_be_given_in_physical_units(viewer_widget, rng):
    viewer, widget = viewer_widget
    viewer.add_image(_blurred(rng, (64, 64)), name="cells", scale=(0.2, 0.25), units=("um", "um"))
    assert _shown(widget.kernel_extent) and widget.kernel_extent.label == "kernel size, µm"
    assert not widget.kernel_extent.enabled
    widget.auto_kernel_size.value = False
    assert widget.kernel_size.enabled and widget.kernel_extent.enabled
    # 1.1 µm over the smaller pixel (0.2 µm) is 5.5 pixels: the next odd size holds it.
    widget.kernel_extent.value = 1.1
    assert widget.kernel_size.value == 7 and widget.kernel_extent.value == pytest.approx(1.1)
    widget.kernel_extent.value = 1.0  # exactly 5 pixels: no rounding up by float error
    assert widget.kernel_size.value == 5
    widget.kernel_size.value = 9  # and the pixel size shows in µm
    assert widget.kernel_extent.value == pytest.approx(1.8)
    job = widget.build_job()
    assert job.kernel_size == 9
    metadata = job._kernel_size_metadata((9, 9))
    assert metadata["kernel_extent"] == pytest.approx(1.8) and metadata["kernel_extent_unit"] == "µm"


def test_a_layers_suggested_size_is_used_when_it_is_chosen(viewer_widget, rng):
    viewer, widget = viewer_widget
    viewer.open_sample(PLUGIN, "blurred")
    sample = viewer.layers["blurred sample"]
    assert widget.image_layer.value is sample
    assert widget.auto_kernel_size.value is False and widget.kernel_size.value == 15
    assert widget.build_job().kernel_size_source == "layer metadata"
    # Another layer without a suggestion: back to auto; the sample again: its size again.
    other = viewer.add_image(_blurred(rng, (48, 48)), name="other")
    widget.image_layer.value = other
    assert widget.auto_kernel_size.value is True
    widget.image_layer.value = sample
    assert widget.auto_kernel_size.value is False and widget.kernel_size.value == 15
    # A size the user sets stays when the layer changes.
    widget.kernel_size.value = 21
    widget.image_layer.value = other
    assert widget.auto_kernel_size.value is False and widget.kernel_size.value == 21
    assert widget.build_job().kernel_size_source == "given"


# -- progress -----------------------------------------------------------------------------------


def test_progress_is_told_stage_by_stage_with_time_left():
    from napari_selfmsnet._napari.progress import RunProgress
    from napari_selfmsnet.engine.records import Progress

    now = [100.0]
    progress = RunProgress(stack=False, clock=lambda: now[0])
    assert progress.describe().startswith("starting")

    def feed(stage, step, total, elapsed, **kw):
        now[0] = 100.0 + elapsed
        return progress.update(Progress(stage=stage, step=step, total=total, elapsed_s=elapsed, loss=0.5, **kw))

    assert feed("size", 1, 240, 1.0)
    assert not feed("size", 11, 240, 2.0)
    assert progress.describe().startswith("measuring the kernel size (short probe runs; they stop once the blur fits)")
    assert "about 23 s left in this stage" in progress.describe()  # 0.1 s a step, 229 to go
    now[0] += 3.0  # no record for 3 s: the time left still goes down
    assert "about 20 s left" in progress.describe()
    assert feed("blind", 1, 120, 30.0) and progress.maximum == 120 and progress.value == 1
    assert "estimating the time left" in progress.describe()
    feed("blind", 61, 120, 36.0)
    assert progress.describe().startswith("blind fit: iteration 61/120, loss 0.5 (36 s, about 6 s left")
    # The polish counts the rounds of all its starts (10 from each of two): steps, not rounds.
    assert feed("polish", 1, 20, 40.0) and progress.describe().startswith("polishing the kernel: step 1/20")
    assert feed("deconvolve", 10, 200, 45.0) and progress.maximum == 200
    # A second blind run (the self-check doubted the first): a new bar from 0, named so.
    assert feed("blind", 1, 120, 50.0)
    assert progress.value == 1 and progress.maximum == 120
    assert progress.stage_label().startswith("blind fit, run 2 from another seed")
    assert feed("deconvolve", 200, 200, 80.0)
    assert "about 0 s left" in progress.describe()

    stack = RunProgress(stack=True, clock=lambda: now[0])
    assert stack.cancelling().startswith("cancelling... (before the first stage")
    assert stack.cancelled() == "cancelled before the first stage"
    stack.update(Progress(stage="blind", step=3, total=10, plane=1, planes=5))
    assert stack.stage_label() == "plane 2/5: blind fit"
    assert stack.cancelling().startswith("cancelling... (plane 2/5: ending the blind fit with its estimate so far; ")
    assert stack.update(Progress(stage="blind", step=1, total=5, plane=2, planes=5))
    assert stack.stage_label() == "plane 3/5: blind fit"  # a new plane is not a second run
    stack.update(Progress(stage="planes", step=2, total=5, plane=1, planes=5))
    assert stack.describe().startswith("deconvolving the planes with the shared kernel: plane 2/5")


def test_the_first_record_of_every_stage_reaches_the_gui(monkeypatch):
    from napari_selfmsnet._napari import worker as worker_module
    from napari_selfmsnet.engine.records import Progress

    monkeypatch.setattr(worker_module, "PROGRESS_INTERVAL_S", 3600.0)
    throttle = worker_module._Throttle()
    records = [
        Progress(stage="blind", step=1, total=3),
        Progress(stage="blind", step=2, total=3),
        Progress(stage="polish", step=1, total=2),
        Progress(stage="polish", step=2, total=2),
        Progress(stage="blind", step=1, total=3),
        Progress(stage="blind", step=2, total=3, plane=1, planes=2),
    ]
    shown = [throttle(record) for record in records]
    assert [r is not None for r in shown] == [True, False, True, False, True, True]


def test_a_cancelled_run_is_said_to_have_stopped_in_the_stage_cancel_was_pressed_in():
    from napari_selfmsnet._napari.progress import RunProgress

    progress = RunProgress(stack=False)
    progress.update(Progress(stage="size", step=1, total=9))
    progress.cancel()
    # Each later stage still reports its first record before it ends.
    for stage in ("polish", "deconvolve"):
        progress.update(Progress(stage=stage, step=1, total=10))
        progress.cancel()  # (the status line asks again at every record; the first press counts)
    assert progress.cancelled() == "cancelled during the kernel-size probes"


# -- cancel at every stage ----------------------------------------------------------------------


class _Gate:
    """Wraps the engine's generator of every job: holds the run at the first record of the
    stage to cancel in until the GUI has pressed Cancel (so the stop lands in that stage however
    busy the machine is), and records what the engine yields once a stop was sent."""

    def __init__(self, monkeypatch, at) -> None:
        from napari_selfmsnet._napari.job import DeblurJob

        self.at = at
        self.cancelled = threading.Event()
        self.stop_stages: list[str] = []  # the stage of every record a stop was sent at
        self.held_stage: str | None = None
        steps = DeblurJob.steps

        def gated_steps(job):
            inner = steps(job)

            def relay():
                try:
                    record = next(inner)
                    while True:
                        stop = yield record
                        if stop:
                            self.stop_stages.append(record.stage)
                        elif self.held_stage is None and self.at(record):
                            self.held_stage = record.stage
                            self.cancelled.wait(timeout=60)
                        record = inner.send(stop)
                except StopIteration as done:
                    return done.value

            return relay()

        monkeypatch.setattr(DeblurJob, "steps", gated_steps)


@pytest.mark.parametrize(
    ("stage", "shape", "mode", "kernel_size"),
    [
        ("size", (48, 48), None, "auto"),
        ("blind", (48, 48), None, 5),
        ("polish", (48, 48), None, 5),
        ("deconvolve", (48, 48), None, 5),
        ("tiled", (160, 160), None, 5),
        ("planes", (5, 40, 40), "shared", 5),
        ("per-plane", (3, 40, 40), "per-plane", 5),
    ],
)
def test_cancel_at_each_stage_stops_within_two_seconds(
    viewer_widget, qtbot, rng, monkeypatch, stage, shape, mode, kernel_size
):
    from napari_selfmsnet.engine import nonblind

    viewer, widget = viewer_widget
    if stage in ("deconvolve", "tiled"):
        monkeypatch.setitem(nonblind.DEFAULT_ITERATIONS, "sparse", 60)  # records beyond the one held
    solved_tiled = []
    if stage == "tiled":
        # A memory budget so small that the frame's deconvolution is solved tile by tile.
        from napari_selfmsnet.engine import tiling

        # 1 MiB: the 160 x 160 frame needs about 3 MiB, a 69 x 69 tile (the smallest) 0.7 MiB.
        monkeypatch.setattr(tiling, "memory_budget", lambda device="auto": 2**20)
        solve_tiled = nonblind.solve_tiled
        monkeypatch.setattr(nonblind, "solve_tiled", lambda *a, **k: solved_tiled.append(1) or solve_tiled(*a, **k))
    target = {"tiled": "deconvolve", "per-plane": "blind"}.get(stage, stage)
    gate = _Gate(monkeypatch, lambda r: r.stage == target and (stage != "per-plane" or r.plane == 1))
    viewer.add_image(_blurred(rng, shape), name="x")
    _configure(widget, kernel_size=kernel_size, iterations=20)
    if mode is not None:
        widget.stack_mode.value = mode
    if stage == "tiled":
        # The kernel from a 48 x 48 region (quick); the whole frame then deconvolved in tiles.
        widget.region.value = viewer.add_shapes([_rectangle(10, 10, 58, 58)], shape_type="rectangle", name="roi")
        viewer.layers.selection.active = viewer.layers["x"]

    kernel_size_before = widget.kernel_size.value
    worker = widget.run()
    # Listening from the start: the run may end while the test waits for the held record.
    finished = qtbot.waitSignal(worker.finished, timeout=RUN_TIMEOUT_MS)
    cancelled_at, statuses = [], []

    def on_record(record) -> None:
        if not hasattr(record, "stage"):
            return
        if cancelled_at:
            statuses.append(widget.status.value)
        elif gate.held_stage is not None:
            cancelled_at.append((time.monotonic(), time.process_time()))
            widget.cancel_button.clicked.emit()
            statuses.append(widget.status.value)
            gate.cancelled.set()

    worker.yielded.connect(on_record)
    # The worker holds at the target stage until Cancel; a status tick may come first. Cancel is
    # pressed once the status line has seen that stage's record (queued to this thread, it may
    # arrive after the worker holds), as a user presses it on what the status shows. If that
    # record arrives after the hold, on_record has pressed Cancel on it, and the run may already
    # have moved past the stage: nothing is left to wait for.
    qtbot.waitUntil(lambda: gate.held_stage is not None, timeout=RUN_TIMEOUT_MS)
    seen = widget._progress
    qtbot.waitUntil(
        lambda: bool(cancelled_at) or (seen.segment is not None and seen.segment.stage == target),
        timeout=RUN_TIMEOUT_MS,
    )
    if not cancelled_at:
        on_record(Progress(stage=target, step=0, total=1))
    finished.wait()
    wall = time.monotonic() - cancelled_at[0][0]
    cpu = time.process_time() - cancelled_at[0][1]
    # The stop lands in the stage asked for; every solve after it ends at its first record, and
    # no stage comes round again (no second blind run, no next plane).
    assert gate.held_stage == target and gate.stop_stages[0] == target, gate.stop_stages
    order = [STAGES.index(name) for name in gate.stop_stages]
    assert order == sorted(order), gate.stop_stages
    # Two seconds of work from Cancel to the result layers (the whole process's CPU time, all
    # threads: what the wall clock shows on an idle machine; this one may be shared).
    assert cpu < 2.0, (cpu, wall)
    assert wall < 30.0
    # "cancelling..." from the click until the run has stopped, then "cancelled".
    assert statuses and all(s.startswith("cancelling...") for s in statuses), statuses
    # The status names the stage the stop landed in, and no loss a stopped run has not got.
    noun = STAGE_NOUNS[target]
    assert widget.status.value.startswith(f"cancelled during the {noun}: best estimate so far added"), widget.status.value
    assert "nan" not in widget.status.value
    if stage == "size":  # no size was measured: none is claimed, nor shown in the kernel size control
        assert "(measured)" not in widget.status.value and widget.kernel_size.value == kernel_size_before
        assert viewer.layers["x deblurred (cancelled)"].metadata["kernel_size_source"] == "probe stopped"
    result = viewer.layers["x deblurred (cancelled)"]
    kernel = viewer.layers["x kernel (cancelled)"]
    assert result.metadata["cancelled"] is True and kernel.metadata["cancelled"] is True
    assert result.data.shape == shape and np.all(np.isfinite(result.data))
    assert "x preview" not in viewer.layers
    assert widget.worker is None and widget.run_button.enabled and not widget.cancel_button.enabled
    assert widget.progress_bar.value < widget.progress_bar.max
    if stage == "tiled":
        assert solved_tiled
    if mode is not None:
        assert result.metadata["unfinished_planes"]  # the planes after the stop keep the input


# -- warnings, menus --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [None, "shared"])
def test_warnings_are_notified_shown_and_stored(viewer_widget, qtbot, rng, monkeypatch, notifications, mode):
    from napari.utils.notifications import NotificationSeverity

    from napari_selfmsnet._napari.job import DeblurJob

    viewer, widget = viewer_widget
    outcome = DeblurJob.outcome

    def with_warning(job, result):
        result.warnings = ["plane 2: the kernel is probably wrong; try another seed"]
        return outcome(job, result)

    monkeypatch.setattr(DeblurJob, "outcome", with_warning)
    viewer.add_image(_blurred(rng, (40, 40) if mode is None else (2, 40, 40)), name="w")
    _configure(widget)
    if mode is not None:
        widget.stack_mode.value = mode
    _run_to_end(qtbot, widget)
    warned = [n.message for n in notifications if n.severity == NotificationSeverity.WARNING]
    assert warned == ["w: plane 2: the kernel is probably wrong; try another seed"]
    assert widget.status.value.startswith("done") and "1 warning: plane 2: the kernel" in widget.status.value
    for name in ("w deblurred", "w kernel"):
        assert viewer.layers[name].metadata["warnings"] == ["plane 2: the kernel is probably wrong; try another seed"]


def test_results_without_warnings_attribute_are_accepted(rng):
    """A StackResult from an engine without plane checks has no ``warnings``: none are reported."""
    from napari_selfmsnet._napari.job import make_job
    from napari_selfmsnet.engine.records import StackResult

    class Layer(_FakeLayer):
        metadata: dict = {}

        def world_to_data(self, point):
            return np.zeros(3)

    job = make_job(
        Layer(rng.random((2, 40, 40)).astype(np.float32)), region="auto", kernel_size=5, method="self-msnet-s",
        preset="fast", iterations=1, device="cpu", seed=0, stack_mode="shared", warm_planes=True, world_point=(0, 0, 0),
    )  # fmt: skip
    result = StackResult(
        image=np.zeros((2, 40, 40), np.float32), kernels=np.zeros((2, 5, 5), np.float32),
        params={"kernel_size": [5, 5]}, device="cpu", elapsed_s=1.0, kernel=np.zeros((5, 5), np.float32),
    )  # fmt: skip
    if hasattr(result, "warnings"):
        del result.warnings
    outcome = job.outcome(result)
    assert outcome.warnings == [] and outcome.metadata["warnings"] == []


def _menu_paths(viewer) -> list[str]:
    """Every menu entry of the viewer's menu bar as napari shows it, "File > Open Sample > ..."."""
    found = []

    def walk(menu, prefix):
        menu.aboutToShow.emit()  # napari fills some menus when they open
        for action in menu.actions():
            path = f"{prefix} > {action.text().replace('&', '')}"
            found.append(path)
            if action.menu() is not None:
                walk(action.menu(), path)

    for action in viewer.window._qt_window.menuBar().actions():
        if action.menu() is not None:
            walk(action.menu(), action.text().replace("&", ""))
    return found


def test_the_dock_title_a_script_gets_is_the_one_the_docs_give(make_napari_viewer):
    # napari names a dock opened by plugin name after the package, unlike the menus (display name).
    viewer = make_napari_viewer()
    dock, _ = viewer.window.add_plugin_dock_widget("napari-selfmsnet", "Blind deblur")
    docs = (Path(__file__).parents[1] / "docs" / "usage.md").read_text(encoding="utf-8")
    assert f"dock is titled **{dock.name}**" in docs, dock.name


def test_menus_read_as_the_docs_say(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    paths = _menu_paths(viewer)
    ours = [p for p in paths if "Self-MSNet" in p or "deblur" in p.lower()]
    # docs/usage.md and the README name these entries exactly.
    assert set(ours) == {
        "File > Open Sample > Self-MSNet",
        "File > Open Sample > Self-MSNet > Blurred filaments and beads (uint16, drift blur)",
        "File > Open Sample > Self-MSNet > Sharp original and true kernel (for comparison)",
        "Plugins > Blind deblur (Self-MSNet)",
        "Layers > Filter > Blind deblur (Self-MSNet)",
    }, ours
    docs = (Path(__file__).parents[1] / "docs" / "usage.md").read_text(encoding="utf-8")
    for entry in ("Plugins > Blind deblur (Self-MSNet)", "Layers > Filter > Blind deblur (Self-MSNet)",
                  "File > Open Sample > Self-MSNet > Blurred filaments and beads (uint16, drift blur)"):  # fmt: skip
        assert entry in docs, entry
    # Every page that sends a reader to the samples names the submenu napari shows (its display
    # name), not the package's name.
    submenus = {path.split(" > ")[2] for path in ours if path.startswith("File > Open Sample > ")}
    for page in ("README.md", "docs/usage.md", "docs/cli.md"):
        text = (Path(__file__).parents[1] / page).read_text(encoding="utf-8")
        named = re.findall(r"File > Open Sample >\s+([\w-]+)", text)
        assert named and set(named) <= submenus, (page, named)
    # The Layers > Filter entry opens the widget.
    menu_bar = viewer.window._qt_window.menuBar()
    layers_menu = next(a.menu() for a in menu_bar.actions() if a.text().replace("&", "") == "Layers")
    filter_menu = next(a.menu() for a in layers_menu.actions() if a.text().replace("&", "") == "Filter")
    entry = next(a for a in filter_menu.actions() if a.text() == "Blind deblur (Self-MSNet)")
    entry.trigger()
    qtbot.waitUntil(lambda: "Blind deblur (Self-MSNet)" in viewer.window._wrapped_dock_widgets, timeout=30_000)


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("self-msnet-s", "image 9x40 is too small to measure a kernel in: kernel 5x5"),  # no measure fits, a 3x3 would
        ("self-msnet", "a 9x40 image is too small to measure a blur in, even with the smallest kernel, 3x3: "),
    ],
)
def test_an_image_too_small_for_any_kernel_is_refused_before_starting(
    viewer_widget, rng, notifications, method, expected
):
    viewer, widget = viewer_widget
    viewer.add_image(_blurred(rng, (9, 40)), name="strip")
    widget.method.value = method
    assert widget.auto_kernel_size.value is True
    assert widget.run() is None
    errors = _errors(notifications)
    assert len(errors) == 1 and errors[0].startswith(expected) and errors[0].count("too small") == 1, errors
    assert widget.status.value.startswith("error")


def test_a_record_still_being_shown_when_the_run_ends_leaves_no_preview_and_no_stale_status(
    viewer_widget, qtbot, rng, monkeypatch
):
    """napari's activity-dock bar processes pending events when it is updated, so the run's end
    can be handled in the middle of showing its last record (this left a preview layer over the
    result and the status on the last plane, in shared-kernel stacks)."""
    from napari_selfmsnet._napari import widget as widget_module
    from napari_selfmsnet._napari import worker as worker_module

    monkeypatch.setattr(worker_module, "PROGRESS_INTERVAL_S", 0.0)  # every record reaches the GUI...
    monkeypatch.setattr(worker_module, "PREVIEW_INTERVAL_S", 0.0)  # ...with its image
    monkeypatch.setattr(widget_module, "PREVIEW_INTERVAL_S", 0.0)
    viewer, widget = viewer_widget
    viewer.add_image(_blurred(rng, (3, 40, 40)), name="z")
    _configure(widget)
    widget.stack_mode.value = "shared"
    worker = widget.run()
    pbar = widget._pbar
    held = []

    def slowly(method):
        def call(*args, **kwargs):
            progress = widget._progress
            if not held and progress is not None and progress.segment.stage == "planes" and progress.value == 3:
                held.append(method.__name__)
                # As if the bar's repaint took until the run had ended (events are processed meanwhile).
                qtbot.waitUntil(lambda: widget.worker is None, timeout=RUN_TIMEOUT_MS)
            return method(*args, **kwargs)

        return call

    for name in ("set_description", "reset", "update"):  # each processes events
        setattr(pbar, name, slowly(getattr(pbar, name)))
    with qtbot.waitSignal(worker.finished, timeout=RUN_TIMEOUT_MS):
        pass
    qtbot.waitUntil(lambda: widget.worker is None, timeout=RUN_TIMEOUT_MS)
    assert held, "the last plane's record never reached the activity bar"
    assert [layer.name for layer in viewer.layers] == ["z", "z deblurred", "z kernel"]
    assert widget.status.value.startswith("done"), widget.status.value
