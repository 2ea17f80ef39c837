"""The command line's progress bar: what each frame it draws says, stage after stage."""

from __future__ import annotations

import io

from tqdm import tqdm

from napari_selfmsnet import Progress
from napari_selfmsnet.batch.progress_bars import StageBar


def _frames(records: list[Progress]) -> list[str]:
    """Every frame the bar draws while it shows ``records``, in order."""
    stream = io.StringIO()
    bar = tqdm(file=stream, disable=False, mininterval=0, ncols=120)
    start = len(stream.getvalue())  # the empty bar tqdm draws when made, before any record
    stages = StageBar(bar, "demo")
    for record in records:
        stages(record)
    stages.finish()
    bar.close()
    return [frame.strip() for frame in stream.getvalue()[start:].split("\r") if frame.strip()]


def test_a_new_stage_is_drawn_under_its_own_name_and_without_the_old_stages_loss():
    frames = _frames(
        [Progress("blind", 1, 5, loss=0.5), Progress("blind", 5, 5, loss=0.25), Progress("polish", 1, 20),
         Progress("polish", 20, 20), Progress("deconvolve", 3, 30)]
    )  # fmt: skip
    assert any("demo: blind" in f and "5/5" in f and "loss=0.25" in f for f in frames)
    for frame in frames:
        assert frame.startswith("demo: "), frame
        stage = frame.split(":")[1].split()[0]
        total = {"blind": "/5 ", "polish": "/20 ", "deconvolve": "/30 "}[stage]
        assert total in frame, frame  # never a stage's name with the next stage's count
        assert stage == "blind" or "loss=" not in frame, frame  # the blind stage's loss is not the others'
    assert "demo: deconvolve" in frames[-1] and "30/30" in frames[-1]
