"""What the widget says about a run while it goes: the stage, its bar and its time left.

The engine's records are staged (:data:`~napari_selfmsnet.engine.records.STAGES`): each stage
counts its own steps, and some stages come round again (a second blind run from the next seed
when the self-check doubts the first; every plane of a per-plane stack). So the widget shows
one stage at a time: the bar is that stage's ``step`` of ``total``, and the time left is that
stage's, from its own pace so far. :class:`RunProgress` keeps that account; like
:mod:`.job` it imports no napari or Qt, so it is tested without a viewer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..engine.records import Progress

__all__ = ["STAGE_LABELS", "STAGE_NOUNS", "RunProgress", "Segment", "format_seconds"]

#: What each stage is called on the status line.
STAGE_LABELS = {
    "size": "measuring the kernel size",
    "blind": "blind fit",
    "polish": "polishing the kernel",
    "deconvolve": "deconvolving the frame",
    "planes": "deconvolving the planes with the shared kernel",
}
#: What a stage is called in "cancelling... (ending the <noun> ...)".
STAGE_NOUNS = {
    "size": "kernel-size probes",
    "blind": "blind fit",
    "polish": "polish",
    "deconvolve": "deconvolution",
    "planes": "planes' deconvolution",
}


def format_seconds(seconds: float) -> str:
    """``"42 s"`` below two minutes, ``"3 min 05 s"`` above."""
    seconds = max(0.0, float(seconds))
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


@dataclass
class Segment:
    """One uninterrupted run of a stage: its records' steps go up from ``first_step``.

    ``first_elapsed`` and ``elapsed`` are the engine's clock (``Progress.elapsed_s``) at the
    segment's first and latest record; ``seen`` is this process's clock at the latest.
    ``attempt`` counts the blind runs of the plane (2 for a second run from another seed).
    """

    stage: str
    plane: int | None
    attempt: int
    first_step: int
    first_elapsed: float
    step: int
    total: int
    elapsed: float
    seen: float

    def seconds_left(self, now: float) -> float | None:
        """Time left in this stage at ``now``, from its pace so far (None before any pace)."""
        done = self.step - self.first_step
        if done <= 0 or self.total <= self.step:
            return 0.0 if self.total <= self.step else None
        pace = (self.elapsed - self.first_elapsed) / done
        return max(0.0, pace * (self.total - self.step) - (now - self.seen))


class RunProgress:
    """The account of one run's progress, fed with the engine's records as they arrive.

    Parameters
    ----------
    stack : bool
        Whether the run covers a stack's planes (the status then names the plane).
    clock : callable
        Seconds, monotonic (``time.monotonic``; a test passes its own).
    """

    def __init__(self, *, stack: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.stack = stack
        self.clock = clock
        self.started = clock()
        self.segment: Segment | None = None
        self.record: Progress | None = None
        #: The stage running when Cancel was pressed ("" before the first record), None until then.
        self.cancelled_in: str | None = None
        self._blind_runs: dict[int | None, int] = {}

    def update(self, record: Progress) -> bool:
        """Take in a record; True when it starts a new segment (a new stage, plane or run)."""
        now = self.clock()
        current = self.segment
        new = (
            current is None
            or record.stage != current.stage
            or record.plane != current.plane
            or record.step < current.step
        )
        if new:
            attempt = 1
            if record.stage == "blind":
                attempt = self._blind_runs.get(record.plane, 0) + 1
                self._blind_runs[record.plane] = attempt
            self.segment = Segment(
                stage=record.stage, plane=record.plane, attempt=attempt, first_step=record.step,
                first_elapsed=record.elapsed_s, step=record.step, total=record.total,
                elapsed=record.elapsed_s, seen=now,
            )  # fmt: skip
        else:
            current.step, current.total, current.elapsed, current.seen = record.step, record.total, record.elapsed_s, now
        self.record = record
        return new

    @property
    def value(self) -> int:
        """The stage's bar position (0 before the first record)."""
        return 0 if self.segment is None else min(self.segment.step, self.segment.total)

    @property
    def maximum(self) -> int:
        """The stage's bar length (at least 1)."""
        return 1 if self.segment is None else max(1, self.segment.total)

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return self.clock() - self.started

    def stage_label(self) -> str:
        """The running stage, as the status line names it (with the plane of a stack)."""
        segment, record = self.segment, self.record
        if segment is None or record is None:
            return "starting"
        label = STAGE_LABELS[segment.stage]
        if segment.stage == "blind" and segment.attempt > 1:
            label = f"blind fit, run {segment.attempt} from another seed (the self-check doubted the last one)"
        elif segment.stage == "size":
            label = f"{label} (short probe runs; they stop once the blur fits)"
        return self._plane_prefix() + label

    def _plane_prefix(self) -> str:
        """``"plane 2/5: "`` while a stack's plane runs (not for the shared kernel's planes stage)."""
        segment, record = self.segment, self.record
        if self.stack and record is not None and record.planes and segment is not None and segment.stage != "planes":
            return f"plane {(record.plane or 0) + 1}/{record.planes}: "
        return ""

    def cancel(self) -> None:
        """Cancel was pressed: note the stage it stops (the first press counts; the later stages
        each report their first record before they end, so the running one by then is not it)."""
        if self.cancelled_in is None:
            self.cancelled_in = "" if self.segment is None else self.segment.stage

    def cancelled(self) -> str:
        """How the status line says where a cancelled run stopped: ``"cancelled during the polish"``."""
        if not self.cancelled_in:
            return "cancelled before the first stage"
        return f"cancelled during the {STAGE_NOUNS[self.cancelled_in]}"

    def cancelling(self) -> str:
        """The status line once Cancel was pressed, until the run has stopped."""
        if self.segment is None:
            return f"cancelling... (before the first stage; {format_seconds(self.elapsed())})"
        noun = STAGE_NOUNS[self.segment.stage]
        return (
            f"cancelling... ({self._plane_prefix()}ending the {noun} with its estimate so far; "
            f"{format_seconds(self.elapsed())})"
        )

    def describe(self) -> str:
        """The status line: stage, step of total (and loss), time so far and left in the stage."""
        segment, record = self.segment, self.record
        if segment is None or record is None:
            return f"starting... {format_seconds(self.elapsed())}"
        # A polish step is one round of one start; the polish counts the rounds of all its
        # starts together (docs/usage.md), so calling its steps rounds would miscount them.
        unit = {"polish": "step", "planes": "plane", "deconvolve": "solver iteration"}.get(segment.stage, "iteration")
        detail = f"{unit} {segment.step}/{segment.total}"
        if segment.stage in ("size", "blind") and record.loss is not None:
            detail += f", loss {record.loss:.4g}"
        left = segment.seconds_left(self.clock())
        timing = format_seconds(self.elapsed())
        timing += ", estimating the time left" if left is None else f", about {format_seconds(left)} left in this stage"
        return f"{self.stage_label()}: {detail} ({timing})"
