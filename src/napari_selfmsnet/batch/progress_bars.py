"""Progress records on the terminal: a tqdm bar per run."""

from __future__ import annotations

from collections.abc import Callable

from tqdm import tqdm

from ..engine.records import Progress

__all__ = ["bar_callback"]


def bar_callback(bar: tqdm) -> Callable[[Progress], None]:
    """A callback that shows progress records on ``bar``: the stage, its steps, the plane."""

    def callback(progress: Progress) -> None:
        if bar.total != progress.total:
            bar.reset(total=progress.total)
        where = f"plane {progress.plane + 1}/{progress.planes} " if progress.planes else ""
        bar.set_description(f"{where}{progress.stage}", refresh=False)
        bar.n = progress.step
        if progress.loss is not None:
            bar.set_postfix(loss=f"{progress.loss:.4g}", refresh=False)
        bar.refresh()

    return callback
