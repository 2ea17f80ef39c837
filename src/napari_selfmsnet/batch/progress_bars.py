"""Progress records on the terminal: one tqdm bar per run that follows the run's stages.

A run reports stage after stage (:data:`~napari_selfmsnet.engine.records.STAGES`: the size
measure, the blind run, the polish, the deconvolution, a stack's planes), each with its own
``step`` of ``total``; the records do not say in advance how long the later stages will be.
So the bar restarts at every stage (and every plane of a stack), and its count, rate and
ETA are those of the stage running, named in its description; when the run ends, the bar
is filled (:meth:`StageBar.finish`), so a finished run always shows 100%.
"""

from __future__ import annotations

from tqdm import tqdm

from ..engine.records import Progress

__all__ = ["StageBar", "bar_callback"]


class StageBar:
    """A progress callback that shows a run's records on ``bar``, stage by stage.

    Parameters
    ----------
    bar : tqdm
        The bar to drive (its total and count are set from the records).
    label : str
        Put before the stage in the description (for example the file's name).
    """

    def __init__(self, bar: tqdm, label: str = "") -> None:
        self.bar = bar
        self.label = label
        self.stages: list[str] = []  # every stage seen, in order (for the summary and tests)
        self._current: tuple[str, int | None] | None = None

    def __call__(self, progress: Progress) -> None:
        where = (progress.stage, progress.plane)
        plane = f"plane {progress.plane + 1}/{progress.planes} " if progress.planes else ""
        self.bar.set_description(f"{self.label}{': ' if self.label else ''}{plane}{progress.stage}", refresh=False)
        if where != self._current or self.bar.total != progress.total:
            # A new stage (or plane): the bar, its rate and its ETA start again. The earlier
            # stage's loss goes (a later stage may report none); the description is already the
            # new stage's, as reset() draws the bar at once.
            self.bar.set_postfix_str("", refresh=False)
            self.bar.reset(total=progress.total)
            self._current = where
            if not self.stages or self.stages[-1] != progress.stage:
                self.stages.append(progress.stage)
        if progress.loss is not None:
            self.bar.set_postfix(loss=f"{progress.loss:.4g}", refresh=False)
        self.bar.update(max(0, min(progress.step, progress.total) - self.bar.n))

    def finish(self) -> None:
        """Show the run as done: the bar at its total (a stage may end before its last step)."""
        if self.bar.total:
            self.bar.update(self.bar.total - self.bar.n)
        self.bar.refresh()


def bar_callback(bar: tqdm, label: str = "") -> StageBar:
    """A callback that shows progress records on ``bar``: the stage, its steps, the plane."""
    return StageBar(bar, label)

