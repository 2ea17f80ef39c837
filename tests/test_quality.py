"""Quality on real data (Levin et al.'s benchmark). Minutes on a CPU: marked slow, so CI runs
the light check of ``test_deblur.py`` instead; run these with ``pytest -m slow``."""

from pathlib import Path

import numpy as np
import pytest

from napari_selfmsnet import deblur
from napari_selfmsnet.evaluation.levin import load_levin_case
from napari_selfmsnet.evaluation.metrics import kernel_similarity, levin_scores

LEVIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "levin"


@pytest.mark.slow
@pytest.mark.skipif(not LEVIN.is_dir(), reason=f"Levin data not found at {LEVIN}")
def test_fast_preset_on_levin_image():
    case = load_levin_case(LEVIN, 1, 2)
    result = deblur(case.blurred.astype(np.float32), case.kernel.shape[0], preset="fast")
    scores = levin_scores(np.clip(result.image, 0, 1), case.sharp)
    # Measured in the full Levin run: 32.39 dB and kernel similarity 0.83 (blurred 23.2 dB,
    # true kernel 34.4 dB).
    assert scores["psnr"] >= 31.0
    assert kernel_similarity(result.kernel, case.kernel) >= 0.8
