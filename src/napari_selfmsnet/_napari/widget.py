"""The napari dock widget "Blind deblur (Self-MSNet)".

A thin shell around its form (:mod:`.controls`: the named controls and the
:class:`~napari_selfmsnet._napari.job.DeblurJob` they describe): Run starts a napari generator
worker that iterates the engine's generator for that job in a thread. Each progress record the
engine yields goes to the GUI through the worker's ``yielded`` signal (thinned, so a fast run
does not flood the event loop), and at each record the worker sends the engine whether Cancel
was pressed: a stop ends the running stage at once and the run finishes from there (see
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
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import Label, ProgressBar, PushButton
from napari.utils import cancelable_progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer

from ..engine.kernel_size import AUTO
from ..engine.records import Progress
from .controls import DeblurControls
from .job import DeblurJob, JobOutcome
from .layers import deblurred_layer_kwargs, kernel_layer_kwargs, preview_layer_kwargs
from .progress import RunProgress
from .worker import PREVIEW_INTERVAL_S, run_job

if TYPE_CHECKING:
    import napari

__all__ = ["DeblurWidget"]

#: How the status line says where the kernel size came from (``metadata["kernel_size_source"]``).
_KERNEL_SIZE_SOURCES = {"measured": "measured", "given": "given", "layer metadata": "suggested by the layer"}
#: How often the status line's clock and time left are refreshed between progress records.
_TICK_MS = 500


class DeblurWidget(DeblurControls):
    """Blind deblurring of an Image layer with Self-MSNet, as a napari dock widget.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose Image layers are offered and where results are added.

    Notes
    -----
    Controls are attributes (``image_layer``, ``region``, ``auto_kernel_size``,
    ``kernel_size``, ``kernel_extent``, ``method``, ``preset``, ``iterations``, ``device``,
    ``seed``, ``stack_mode``, ``warm_planes`` from :class:`~.controls.DeblurControls`, then
    ``run_button``, ``cancel_button``, ``progress_bar``, ``status``), so scripts and tests set
    ``.value`` and call :meth:`run` / :meth:`cancel`. The running worker is ``self.worker``
    (None when idle).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer)
        self.worker = None
        self._job: DeblurJob | None = None
        self._pbar: cancelable_progress | None = None
        self._progress: RunProgress | None = None
        self._cancel_requested = False
        self._ended = False  # the worker returned or raised: the status says how the run ended
        self._last_preview = -np.inf
        self._closed = False

        self.run_button = PushButton(name="run_button", text="Run")
        self.cancel_button = PushButton(name="cancel_button", text="Cancel", enabled=False)
        self.progress_bar = ProgressBar(name="progress_bar", label="stage", value=0, min=0, max=1)
        self.status = Label(name="status", label="", value="ready")
        self.status.native.setWordWrap(True)  # long error messages must not widen the dock
        self.extend([self.run_button, self.cancel_button, self.progress_bar, self.status])
        # Between records the status line's clock and time left still move. Not a child of the
        # dock: it must outlive a closed dock until the run's last signal.
        self._ticker = QTimer()
        self._ticker.setInterval(_TICK_MS)
        self._ticker.timeout.connect(self._write_status)

        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.native.destroyed.connect(self._on_closed)

    # -- run ---------------------------------------------------------------------------------

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
            progress.cancel()
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
        source = _KERNEL_SIZE_SOURCES.get(meta["kernel_size_source"], meta["kernel_size_source"])
        progress = self._progress
        if outcome.cancelled and progress is not None:
            progress.cancel()  # (in case the stop was seen by the worker before the status line)
        if job.kernel_size == AUTO:
            if progress is not None and progress.cancelled_in in ("", "size"):
                # Stopped before the probes ended: the size is the support they had reached.
                source = "the size probes' support when stopped, not a measure"
            else:
                self._show_measured_size(size)
        summary = f"{meta['elapsed_s']:.1f} s on {meta['device']}, kernel {size_text} px ({source})"
        if np.isfinite(meta["final_loss"]):  # (a run stopped before its blind fit has no loss)
            summary += f", final loss {meta['final_loss']:.4g}"
        if outcome.warnings:
            summary += f"; {len(outcome.warnings)} warning{'s' if len(outcome.warnings) > 1 else ''}: " + " | ".join(
                outcome.warnings
            )
        if outcome.cancelled:
            ended = progress.cancelled() if progress is not None else "cancelled"
            self.status.value = f"{ended}: best estimate so far added ({summary})"
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
