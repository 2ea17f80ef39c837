"""The widget's worker: a napari generator worker that iterates the engine's generator.

It runs in a thread; each record the engine yields goes to the GUI through the worker's
``yielded`` signal (thinned by :class:`_Throttle`), and at each record the worker sends the
engine whether the run should stop (Cancel, the activity dock's cancel, a closed dock).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import replace
from typing import Any

import numpy as np
from napari.qt.threading import thread_worker

from ..engine.devices import release_memory, resolve_device
from ..engine.records import Progress
from .job import DeblurJob, JobOutcome

__all__ = ["run_job"]

#: On the CPU the engine makes a record every iteration (see ``DeblurJob.progress_every``);
#: the GUI is sent at most this many progress records per second...
PROGRESS_INTERVAL_S = 0.1
#: ...and the preview layer is refreshed at most this often, so a fast GPU run does not flood
#: the event loop with image copies.
PREVIEW_INTERVAL_S = 0.3


class _Throttle:
    """Which records go to the GUI: at most one per ``PROGRESS_INTERVAL_S``, and the preview
    image (and kernel) only if ``PREVIEW_INTERVAL_S`` passed since the last that carried one.

    The first record of a new stage, plane or run (its step went back) always goes, so the
    GUI knows at once what is running and times each stage from its start.
    """

    def __init__(self) -> None:
        self._last_sent = -np.inf
        self._last_image = -np.inf
        self._last: Progress | None = None

    def _starts_segment(self, record: Progress) -> bool:
        last, self._last = self._last, record
        return last is None or (record.stage, record.plane) != (last.stage, last.plane) or record.step < last.step

    def __call__(self, record: Progress) -> Progress | None:
        now = time.monotonic()
        if not self._starts_segment(record) and now - self._last_sent < PROGRESS_INTERVAL_S:
            return None
        self._last_sent = now
        if record.image is not None and now - self._last_image >= PREVIEW_INTERVAL_S:
            self._last_image = now
            return record
        return replace(record, image=None, kernel=None)


@thread_worker(start_thread=False)
def run_job(job: DeblurJob, stop_requested: Callable[[], bool]) -> Generator[Any, None, JobOutcome]:
    """The worker: announce the start, iterate the engine's generator, hand back the outcome.

    Yields ``"started"``, then the engine's records that :class:`_Throttle` lets through; at
    every record it sends the engine ``stop_requested()``. A refusal of the input by the
    engine (``ValueError``/``TypeError``, for example NaN found in a lazily read plane) comes
    back as an outcome with ``error`` set, to be shown as a notification. Anything else is a
    bug and propagates to napari's handler.
    """
    yield "started"
    throttle = _Throttle()
    try:
        steps = job.steps()
        record = next(steps)
        while True:
            shown = throttle(record)
            if shown is not None:
                yield shown
            record = steps.send(stop_requested())
    except StopIteration as done:
        return job.outcome(done.value)
    except (ValueError, TypeError) as err:
        return JobOutcome(image=None, kernel=None, error=str(err))
    finally:
        # Cached GPU memory goes back to the system whether the run ended, failed or was
        # cancelled (deblur releases its own; the non-blind stage of a stack may hold more).
        release_memory(resolve_device(job.device))
