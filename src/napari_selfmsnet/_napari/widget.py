"""The napari dock widget "Blind deblur (Self-MSNet)".

A thin shell: named magicgui controls, a validation step that turns them into a
:class:`~napari_selfmsnet._napari.job.DeblurJob`, and a napari generator worker that iterates
the engine's generator for that job in a thread. Each progress record the engine yields goes
to the GUI through the worker's ``yielded`` signal (thinned, so a fast run does not flood the
event loop), and at each record the worker sends the engine whether Cancel was pressed: a
stop ends the running stage at once and the run finishes from there (see
:mod:`napari_selfmsnet.engine.pipeline`). The status line and bar follow one stage at a time
(:mod:`.progress`). Registered only through ``napari.yaml``; the package's ``__init__`` never
imports this module.

napari's activity-dock progress bar processes pending Qt events when it is updated, so the
worker's ``returned`` and ``finished`` signals can be handled in the middle of
:meth:`DeblurWidget._on_yielded`; every handler therefore checks that its run is still the
current one after each call that may process events.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Shapes
from napari.utils import cancelable_progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer

from ..engine.config import METHOD_SCALES, PRESETS
from ..engine.devices import available_devices
from ..engine.kernel_size import AUTO
from ..engine.records import Progress
from ..engine.stack_plan import STACK_CHOICES
from .job import DeblurJob, JobOutcome, make_job
from .layers import (
    PhysicalPixel,
    deblurred_layer_kwargs,
    describe_layer,
    kernel_layer_kwargs,
    physical_pixel,
    pixels_for_extent,
    preview_layer_kwargs,
    suggested_kernel_size,
)
from .progress import RunProgress
from .worker import PREVIEW_INTERVAL_S, run_job

if TYPE_CHECKING:
    import napari

__all__ = ["DeblurWidget"]

#: What the method and stack-mode choices are called in the widget (the names are the engine's).
_METHOD_LABELS = {"self-msnet": "Self-MSNet", "self-msnet-s": "Self-MSNet-S"}
_STACK_CHOICE_LABELS = {
    "current": "current plane only",
    "shared": "all planes, one shared kernel",
    "per-plane": "all planes, one kernel each",
}
_STACK_MODE_TOOLTIP = (
    "For layers with more than two (non-colour) dimensions.\n"
    "current plane only: deblur the plane shown by the sliders; the result is 2-D.\n"
    "all planes, one shared kernel: estimate the kernel by a blind run on the plane with the\n"
    "  strongest edges (the reference plane), then deblur every plane with that kernel by fast\n"
    "  non-blind deconvolution; right when the blur is the same throughout the stack.\n"
    "all planes, one kernel each: a blind run per plane (slowest), each plane warm-started from\n"
    "  the previous one unless 'warm start planes' is unticked."
)
#: The fixed choices of the region control; every Shapes layer of the viewer follows them.
REGIONS = (("auto", "auto"), ("full frame", "full"))
_REGION_TOOLTIP = (
    "Where the kernel is estimated (the whole frame is always deblurred).\n"
    "auto: the whole frame up to 512 x 512 pixels; on larger frames the 384 x 384 window\n"
    "  richest in strong edges.\n"
    "full frame: the whole frame, whatever its size (slow on large frames).\n"
    "A Shapes layer: the bounding box of its first shape (draw a rectangle over sharp,\n"
    "  high-contrast structure, at least twice the kernel size); on a stack it applies to every plane.\n"
    "When the region is smaller than the frame, the frame is deconvolved with the kernel found there."
)


_KERNEL_SIZE_TOOLTIP = (
    "Ticked: the blur kernel's size is measured from the image by short probe runs before the\n"
    "  blind fit (recorded in the results' metadata), so you need not guess it.\n"
    "Unticked: the size below is used. Err on the large side; the image must be at least twice as large.\n"
    "A layer that suggests a size (the bundled sample) sets it when chosen."
)
#: How the status line says where the kernel size came from (``metadata["kernel_size_source"]``).
_KERNEL_SIZE_SOURCES = {"measured": "measured", "given": "given", "layer metadata": "suggested by the layer"}
#: How often the status line's clock and time left are refreshed between progress records.
_TICK_MS = 500


class DeblurWidget(Container):
    """Blind deblurring of an Image layer with Self-MSNet, as a napari dock widget.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose Image layers are offered and where results are added.

    Notes
    -----
    Controls are attributes (``image_layer``, ``region``, ``auto_kernel_size``,
    ``kernel_size``, ``kernel_extent``, ``method``, ``preset``, ``iterations``, ``device``,
    ``seed``, ``stack_mode``, ``warm_planes``, ``run_button``, ``cancel_button``,
    ``progress_bar``, ``status``), so scripts and tests set ``.value`` and call :meth:`run` /
    :meth:`cancel`. The running worker is ``self.worker`` (None when idle).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.worker = None
        self._job: DeblurJob | None = None
        self._pbar: cancelable_progress | None = None
        self._progress: RunProgress | None = None
        self._cancel_requested = False
        self._ended = False  # the worker returned or raised: the status says how the run ended
        self._last_preview = -np.inf
        self._adding_layers = False
        self._closed = False
        # Kernel-size controls: whether a change comes from the widget itself, whether the
        # size shown is the chosen layer's suggestion, and the layer the size was set for.
        self._syncing = False
        self._suggested = False
        self._size_layer: Any = None

        self.image_layer = ComboBox(
            name="image_layer",
            label="image",
            choices=self._image_layer_choices,
            tooltip="The Image layer to deblur (Labels, Points... are not offered). Never modified.",
        )
        self.region = ComboBox(name="region", choices=self._region_choices, tooltip=_REGION_TOOLTIP)
        # A check box has no label column in magicgui: its text says what it is.
        self.auto_kernel_size = CheckBox(
            name="auto_kernel_size",
            text="kernel size: auto (measured from the image)",
            value=True,
            tooltip=_KERNEL_SIZE_TOOLTIP,
        )
        self.kernel_size = SpinBox(
            name="kernel_size",
            label="kernel size, px",
            value=15,
            min=3,
            max=255,
            step=2,
            enabled=False,
            tooltip="Odd size in pixels of the blur kernel's support (untick 'auto' to set it). Err on the "
            "large side; the image must be at least twice as large.",
        )
        self.kernel_extent = FloatSpinBox(
            name="kernel_extent",
            label="kernel size, units",
            value=15.0,
            min=0.0,
            max=1e9,
            enabled=False,
            tooltip="The kernel's size in the layer's units (its scale): converted to the odd number of "
            "pixels above that spans it.",
        )
        self.kernel_extent.native.setDecimals(3)
        self.method = ComboBox(
            name="method",
            choices=[(_METHOD_LABELS.get(name, name), name) for name in METHOD_SCALES],
            value="self-msnet",
            tooltip="Self-MSNet: multi-scale generator (scales 1/8 to 1). "
            "Self-MSNet-S: single scale (faster, for small images or kernels).",
        )
        self.preset = ComboBox(
            name="preset",
            choices=list(PRESETS),
            value="fast",
            tooltip="fast: about a minute for 255 x 255 on a CPU core. "
            "balanced: about twice the iterations and time of fast, for a better kernel. "
            "quality: the paper's settings (128 channels, 2000 iterations; use a GPU).",
        )
        self.iterations = SpinBox(
            name="iterations",
            value=0,
            min=0,
            max=100_000,
            tooltip="Number of iterations; 0 uses the preset's.",
        )
        self.device = ComboBox(
            name="device",
            choices=[(label, value) for value, label in available_devices()],
            value="auto",
            tooltip="auto: the first CUDA GPU, else Apple MPS, else the CPU.",
        )
        self.seed = SpinBox(
            name="seed", value=0, min=0, max=2**31 - 1, tooltip="Seeds the network and its input noise."
        )
        self.stack_mode = ComboBox(
            name="stack_mode",
            label="stack",
            choices=[(_STACK_CHOICE_LABELS[name], name) for name in STACK_CHOICES],
            value="current",
            tooltip=_STACK_MODE_TOOLTIP,
        )
        self.warm_planes = CheckBox(
            name="warm_planes",
            label="warm start planes",
            value=True,
            tooltip="One kernel per plane: start each plane from the previous plane's network and kernel, "
            "with half the iterations (neighbouring planes differ little). "
            "Untick for independent runs from scratch.",
        )
        self.run_button = PushButton(name="run_button", text="Run")
        self.cancel_button = PushButton(name="cancel_button", text="Cancel", enabled=False)
        self.progress_bar = ProgressBar(name="progress_bar", label="stage", value=0, min=0, max=1)
        self.status = Label(name="status", label="", value="ready")
        self.status.native.setWordWrap(True)  # long error messages must not widen the dock
        self.extend(
            [
                self.image_layer,
                self.region,
                self.auto_kernel_size,
                self.kernel_size,
                self.kernel_extent,
                self.method,
                self.preset,
                self.iterations,
                self.device,
                self.seed,
                self.stack_mode,
                self.warm_planes,
                self.run_button,
                self.cancel_button,
                self.progress_bar,
                self.status,
            ]
        )
        # Between records the status line's clock and time left still move. Not a child of the
        # dock: it must outlive a closed dock until the run's last signal.
        self._ticker = QTimer()
        self._ticker.setInterval(_TICK_MS)
        self._ticker.timeout.connect(self._write_status)

        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.image_layer.changed.connect(self._on_layer_changed)
        self.stack_mode.changed.connect(self._on_layer_changed)
        self.auto_kernel_size.changed.connect(self._on_auto_kernel_size)
        self.kernel_size.changed.connect(self._on_kernel_size)
        self.kernel_extent.changed.connect(self._on_kernel_extent)
        layers = self.viewer.layers
        for event in (layers.events.inserted, layers.events.removed, layers.events.moved):
            event.connect(self.reset_choices)
        # Choices are labelled with layer names, so a rename must refresh them too.
        layers.events.inserted.connect(self._watch_name)
        layers.events.removed.connect(self._unwatch_name)
        for layer in layers:
            layer.events.name.connect(self.reset_choices)
        layers.selection.events.active.connect(self._on_active_layer)
        self.native.destroyed.connect(self._on_closed)
        self.reset_choices()
        self._on_active_layer()
        self._on_layer_changed()

    # -- layer choice ---------------------------------------------------------------------

    def _image_layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _region_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [*REGIONS, *((layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Shapes))]

    def _watch_name(self, event: Any) -> None:
        event.value.events.name.connect(self.reset_choices)

    def _unwatch_name(self, event: Any) -> None:
        event.value.events.name.disconnect(self.reset_choices)

    def reset_choices(self, *_: Any) -> None:
        """Rebuild the layer choices (napari also calls this on layer changes), keeping the chosen layers."""
        # magicgui keeps a selection by its label, so a renamed layer would fall back to the first choice.
        chosen = {combo: combo.value for combo in (self.image_layer, self.region)}
        super().reset_choices()
        for combo, value in chosen.items():
            if combo.value is not value and any(choice is value for choice in combo.choices):
                combo.value = value

    def _on_active_layer(self, _event: Any = None) -> None:
        """Follow the active layer, except when it is one this widget just added."""
        active = self.viewer.layers.selection.active
        if self._adding_layers or not isinstance(active, Image):
            return
        if any(choice is active or choice == active for choice in self.image_layer.choices):
            self.image_layer.value = active

    def _on_layer_changed(self, _value: Any = None) -> None:
        layer = self.image_layer.value
        is_stack = layer is not None and describe_layer(layer).is_stack
        self.stack_mode.visible = is_stack
        self.warm_planes.visible = is_stack and self.stack_mode.value == "per-plane"
        if layer is not self._size_layer:
            self._size_layer = layer
            self._kernel_size_for_layer(layer)

    # -- kernel size ---------------------------------------------------------------------------

    @contextmanager
    def _sync(self):
        """Changes the widget makes to its own kernel-size controls (not the user's)."""
        self._syncing, before = True, self._syncing
        try:
            yield
        finally:
            self._syncing = before

    def _pixel(self) -> PhysicalPixel | None:
        """The chosen layer's pixel size in its units (None: no layer, or plain pixels)."""
        layer = self.image_layer.value
        return None if layer is None else physical_pixel(describe_layer(layer))

    def _kernel_size_for_layer(self, layer: Any) -> None:
        """A newly chosen layer: its physical units, and its suggested size if it has one.

        A suggestion replaces the size (and unticks auto); choosing a layer without one
        afterwards goes back to auto, unless the user changed the size in between.
        """
        pixel = self._pixel()
        self.kernel_extent.visible = pixel is not None
        if pixel is not None:
            self.kernel_extent.label = f"kernel size, {pixel.unit}"
            with self._sync():
                self.kernel_extent.step = 2 * pixel.size
        suggestion = None if layer is None else suggested_kernel_size(layer)
        with self._sync():
            if suggestion is not None:
                self.kernel_size.value = suggestion
                self.auto_kernel_size.value = False
                self._suggested = True
            elif self._suggested:
                self.auto_kernel_size.value = True
                self._suggested = False
        self._show_extent()
        self._enable_size_controls()

    def _enable_size_controls(self) -> None:
        manual = not self.auto_kernel_size.value
        self.kernel_size.enabled = manual
        self.kernel_extent.enabled = manual

    def _show_extent(self) -> None:
        """Show the pixel size in the layer's units too."""
        pixel = self._pixel()
        if pixel is not None:
            with self._sync():
                self.kernel_extent.value = int(self.kernel_size.value) * pixel.size

    def _on_auto_kernel_size(self, _value: Any = None) -> None:
        if not self._syncing:
            self._suggested = False
        self._enable_size_controls()

    def _on_kernel_size(self, _value: Any = None) -> None:
        if self._syncing:
            return
        self._suggested = False
        self._show_extent()

    def _on_kernel_extent(self, value: float) -> None:
        """A size typed in the layer's units: the odd number of pixels that spans it."""
        if self._syncing:
            return
        pixel = self._pixel()
        if pixel is None or not value > 0:
            return
        self._suggested = False
        with self._sync():
            self.kernel_size.value = min(pixels_for_extent(value, pixel), int(self.kernel_size.max))

    def kernel_size_request(self) -> int | str:
        """What the controls ask for: ``"auto"``, or the odd size in pixels."""
        return AUTO if self.auto_kernel_size.value else int(self.kernel_size.value)

    # -- run ---------------------------------------------------------------------------------

    def build_job(self) -> DeblurJob:
        """Check the controls and the chosen layer; the job to run (:func:`.job.make_job`).

        Raises
        ------
        ValueError, TypeError
            With a message for the user (no layer, even kernel size, kernel too large for the
            image, unsupported dtype, NaN in in-memory data, no such device...).
        """
        iterations = int(self.iterations.value)
        return make_job(
            self.image_layer.value,
            region=self.region.value,
            kernel_size=self.kernel_size_request(),
            kernel_size_source="layer metadata" if self._suggested else "given",
            method=self.method.value,
            preset=self.preset.value,
            iterations=iterations if iterations > 0 else None,
            device=self.device.value,
            seed=int(self.seed.value),
            stack_mode=self.stack_mode.value,
            warm_planes=bool(self.warm_planes.value),
            world_point=self.viewer.dims.point,
        )

    def run(self, _value: Any = None):
        """Validate the inputs and start the worker.

        Returns the worker (None when the inputs were refused); it starts at the next turn of
        the Qt event loop, so its signals can be connected first.
        """
        if self.worker is not None:
            show_info("a deblurring run is already in progress; cancel it first")
            return None
        try:
            job = self.build_job()
        except (ValueError, TypeError) as err:
            self._report_error(str(err))
            return None
        if job.source.multiscale:
            show_info(f"{job.source.name!r} is multiscale: deblurring its full-resolution level 0 {job.source.shape}")
        if job.source.rgb and job.source.channels == 4:
            show_info(f"{job.source.name!r} is RGBA: the alpha channel is ignored and the result is RGB")

        self._job = job
        self._cancel_requested = False
        self._ended = False
        self._last_preview = -np.inf
        self._progress = RunProgress(stack=job.all_planes)
        self._pbar = cancelable_progress(total=1, desc=f"Deblurring {job.source.name}")
        pbar = self._pbar
        self.progress_bar.max = 1
        self.progress_bar.value = 0

        worker = run_job(job, lambda: self._cancel_requested or worker.abort_requested or pbar.is_canceled)
        worker.yielded.connect(self._on_yielded)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = "starting..."
        self._ticker.start()
        # Started from the event loop, as a click on Run does anyway: a caller that got the
        # worker back (a script, a test) can connect to its signals before any is emitted.
        QTimer.singleShot(0, worker.start)
        return worker

    def cancel(self, _value: Any = None) -> None:
        """Ask the running job to stop: each stage of the engine ends at its next record, and
        the status says "cancelling..." until the run has returned its estimate so far."""
        if self.worker is None:
            return
        self._cancel_requested = True
        self.cancel_button.enabled = False
        self._write_status()

    def _on_closed(self, _obj: Any = None) -> None:
        """The dock was closed: stop a running job, and touch no Qt control from now on."""
        self._closed = True
        self._cancel_requested = True
        self._ticker.stop()

    # -- worker signals (main thread) --------------------------------------------------------

    def _write_status(self) -> None:
        """The status line of the running job: its stage, or that it is being cancelled."""
        progress = self._progress
        if self._closed or self._job is None or progress is None:
            return
        if self._pbar is not None and self._pbar.is_canceled:
            self._cancel_requested = True  # the activity dock's cancel button
        if self._cancel_requested:
            self.status.value = progress.cancelling()
        else:
            self.status.value = progress.describe()

    def _on_yielded(self, record: Any) -> None:
        job, progress = self._job, self._progress
        if self._closed or job is None or progress is None or not isinstance(record, Progress):
            return
        new_segment = progress.update(record)
        self.progress_bar.max = progress.maximum
        self.progress_bar.value = progress.value
        self._write_status()
        now = time.monotonic()
        if record.image is not None and now - self._last_preview >= PREVIEW_INTERVAL_S:
            self._last_preview = now
            self._show_preview(job, np.asarray(record.image, dtype=np.float32), record.region)
        self._update_activity(job, new_segment)

    def _update_activity(self, job: DeblurJob, new_segment: bool) -> None:
        """napari's activity-dock bar: one stage at a time, like the widget's (it processes events)."""
        pbar, progress = self._pbar, self._progress
        if self._job is not job or pbar is None or progress is None:
            return
        if new_segment:
            pbar.set_description(f"Deblurring {job.source.name}: {progress.stage_label()}")
            if self._pbar is not pbar:
                return
            pbar.reset(total=progress.maximum)
            if self._pbar is not pbar:
                return
        if progress.value > pbar.n:
            pbar.update(progress.value - pbar.n)

    def _show_preview(self, job: DeblurJob, image: np.ndarray, region: list[int] | None = None) -> None:
        """Show ``image`` in the preview layer, over the ``region`` of the plane it covers."""
        name = f"{job.source.name} preview"
        kwargs = preview_layer_kwargs(job.source, region)
        self._adding_layers = True
        try:
            current = next((layer for layer in self.viewer.layers if layer.name == name), None)
            if (
                current is not None
                and current.data.shape == image.shape
                and np.allclose(current.translate, kwargs["translate"])
            ):
                current.data = image
            else:
                # Another region (or the whole plane, once a stack's planes are deconvolved):
                # a new layer, rather than a reused one of the wrong shape or place.
                if current is not None:
                    self.viewer.layers.remove(current)
                self.viewer.add_image(image, **kwargs)
        finally:
            self._adding_layers = False
        if self._job is not job:
            # The run ended while the layer was being added (adding one processes events):
            # no preview outlives its run.
            self._remove_preview(job)

    def _remove_preview(self, job: DeblurJob) -> None:
        name = f"{job.source.name} preview"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)

    def _on_returned(self, outcome: JobOutcome | None) -> None:
        job = self._job
        if self._closed or job is None or outcome is None:  # None: napari aborted the worker (viewer closed)
            return
        self._ended = True
        self._ticker.stop()
        if outcome.error is not None:
            self.status.value = f"failed: {outcome.error}"
            show_error(outcome.error)
            return
        self._remove_preview(job)
        stack = job.all_planes
        meta = outcome.metadata
        image_kwargs = deblurred_layer_kwargs(job.source, meta, stack=stack)
        kernel_kwargs = kernel_layer_kwargs(job.source, outcome.kernel, meta, stack=stack and outcome.kernel.ndim > 2)
        if outcome.cancelled:
            image_kwargs["name"] += " (cancelled)"
            kernel_kwargs["name"] += " (cancelled)"
        self._adding_layers = True
        try:
            self.viewer.add_image(outcome.image, **image_kwargs)
            self.viewer.add_image(outcome.kernel, **kernel_kwargs)
        finally:
            self._adding_layers = False
        size = meta["kernel_size"]
        size_text = f"{size} x {size}" if isinstance(size, int) else f"{size[0]} x {size[1]}"
        if job.kernel_size == AUTO:
            # Show the measured size (greyed while auto is ticked; the start if it is unticked).
            with self._sync():
                self.kernel_size.value = min(size if isinstance(size, int) else max(size), int(self.kernel_size.max))
            self._show_extent()
        source = _KERNEL_SIZE_SOURCES.get(meta["kernel_size_source"], meta["kernel_size_source"])
        summary = (
            f"{meta['elapsed_s']:.1f} s on {meta['device']}, kernel {size_text} px ({source}), "
            f"final loss {meta['final_loss']:.4g}"
        )
        if outcome.warnings:
            summary += f"; {len(outcome.warnings)} warning{'s' if len(outcome.warnings) > 1 else ''}: " + " | ".join(
                outcome.warnings
            )
        if outcome.cancelled:
            self.status.value = f"cancelled: best estimate so far added ({summary})"
            show_info(f"Deblurring of {job.source.name!r} cancelled; the estimate so far was added")
        else:
            self.status.value = f"done: {summary}"
            self.progress_bar.value = self.progress_bar.max
        for warning in outcome.warnings:
            show_warning(f"{job.source.name}: {warning}")

    def _on_errored(self, err: Exception) -> None:
        # napari's worker already shows the traceback as an error notification; say it here too.
        if self._closed:
            return
        self._ended = True
        self._ticker.stop()
        self.status.value = f"failed: {type(err).__name__}: {err}"

    def _on_finished(self) -> None:
        job = self._job
        pbar = self._pbar
        self._ticker.stop()
        self._pbar = None
        self._progress = None
        self.worker = None
        self._job = None
        if not self._closed and job is not None:
            self._remove_preview(job)
            if not self._ended:
                # Only when napari aborted the worker: the status never stays on a stage.
                self.status.value = "cancelled: the run stopped before returning a result"
            self.run_button.enabled = True
            self.cancel_button.enabled = False
        if pbar is not None:
            pbar.close()  # last: it processes events

    def _report_error(self, message: str) -> None:
        self.status.value = f"error: {message}"
        show_error(message)
