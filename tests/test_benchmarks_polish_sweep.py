"""``benchmarks/polish_sweep.py``: variant parsing, and a tiny sweep on one Levin image."""

from __future__ import annotations

import argparse
import json

import pytest
from _benchmarks import BENCHMARKS, needs_levin, run_script


@pytest.fixture(scope="module")
def sweep():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        import polish_sweep as module

        yield module


def test_variants_parse_to_config_fields(sweep):
    assert sweep.parse_config_changes("polish_support_factor=4; polish_weights=(2e-4, 2e-4)") == {
        "polish_support_factor": 4,
        "polish_weights": (2e-4, 2e-4),
    }
    with pytest.raises(argparse.ArgumentTypeError, match="not FIELD=VALUE"):
        sweep.parse_config_changes("support=4")
    with pytest.raises(argparse.ArgumentTypeError, match="not FIELD=VALUE"):
        sweep.parse_config_changes("polish_rounds")


@needs_levin
def test_tiny_sweep_caches_the_generator_kernel_and_scores_each_variant(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "sweep.json"
    args = [
        "--images", "im1_kernel5", "--iterations", "3", "--threads", "1", "--cache", str(cache), "--out", str(out),
        "--variant", "polish_rounds=1", "--variant", "polish_rounds=2;polish_support_factor=6",
    ]  # fmt: skip
    done = run_script("polish_sweep.py", *args)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert [p.name for p in cache.iterdir()] == ["balanced_3it_seed0_im1_kernel5.npy"]
    (record,) = report["images"]
    for label in ("polish_rounds=1", "polish_rounds=2;polish_support_factor=6"):
        assert 15 < record[label]["psnr"] < 45
        assert 0 < record[label]["kernel_similarity"] <= 1
        assert report["summary"][label]["psnr"] == pytest.approx(record[label]["psnr"])
    # A second sweep reuses the cached generator kernel instead of running the generator again.
    again = run_script("polish_sweep.py", *args)
    assert again.returncode == 0, again.stderr
    assert "generator stage" not in again.stderr
