"""``benchmarks/polish_sweep.py``: variant parsing, and a tiny sweep on one Levin image."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
LEVIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "levin"


@pytest.fixture(scope="module")
def sweep():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        import polish_sweep as module

        yield module


def test_variants_parse_to_config_fields(sweep):
    assert sweep.parse_config_changes("refine_support_factor=4; refine_weights=(2e-4, 2e-4)") == {
        "refine_support_factor": 4,
        "refine_weights": (2e-4, 2e-4),
    }
    with pytest.raises(argparse.ArgumentTypeError, match="not FIELD=VALUE"):
        sweep.parse_config_changes("support=4")
    with pytest.raises(argparse.ArgumentTypeError, match="not FIELD=VALUE"):
        sweep.parse_config_changes("refine_rounds")


@pytest.mark.skipif(not LEVIN.is_dir(), reason=f"Levin data not found at {LEVIN}")
def test_tiny_sweep_caches_the_generator_kernel_and_scores_each_variant(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "sweep.json"
    command = [
        sys.executable, str(BENCHMARKS / "polish_sweep.py"), "--images", "im1_kernel5", "--iterations", "3",
        "--threads", "1", "--cache", str(cache), "--out", str(out),
        "--variant", "refine_rounds=1", "--variant", "refine_rounds=2;refine_support_factor=6",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    report = json.loads(out.read_text())
    assert [p.name for p in cache.iterdir()] == ["balanced_3it_seed0_im1_kernel5.npy"]
    (record,) = report["images"]
    for label in ("refine_rounds=1", "refine_rounds=2;refine_support_factor=6"):
        assert 15 < record[label]["psnr"] < 45
        assert 0 < record[label]["kernel_similarity"] <= 1
        assert report["summary"][label]["psnr"] == pytest.approx(record[label]["psnr"])
    # A second sweep reuses the cached generator kernel instead of running the generator again.
    again = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    assert "generator stage" not in again.stderr
