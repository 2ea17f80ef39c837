"""``benchmarks/final_weight.py`` on a case ``benchmarks/noise.py --save`` kept (tiny, no Levin data)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _benchmarks import run_script


def test_a_saved_case_is_reproduced_and_scored_under_each_variant(tmp_path):
    saved, noise_out, out = tmp_path / "saved", tmp_path / "noise.json", tmp_path / "final_weight.json"
    args = [
        "--suite", "micro", "--photons", "1000", "--kinds", "gaussian", "--size", "64", "--seeds", "1",
        "--set", "iterations=3;ensemble_margin=0", "--threads", "1", "--save", str(saved), "--out", str(noise_out),
    ]  # fmt: skip
    done = run_script("noise.py", *args)
    assert done.returncode == 0, done.stderr
    (case,) = json.loads(noise_out.read_text())["cases"]
    assert [p.name for p in saved.iterdir()] == ["gaussian@1000ph_0.npz"]
    # What the finish depends on beyond the kernel is kept with it.
    kept = np.load(saved / "gaussian@1000ph_0.npz")
    assert bool(kept["smooth_psf"]) is case["smooth_psf"]
    agreement = case["self_check"]["agreement"]
    assert np.isnan(kept["agreement"]) if agreement is None else float(kept["agreement"]) == pytest.approx(agreement)

    variants = ["--variant", "final_noise_factor=3", "--variant", "residual_floor=0"]
    done = run_script("final_weight.py", str(saved), "--threads", "1", "--out", str(out), *variants)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    (row,) = report["cases"]
    assert row["group"] == case["group"] == "micro 1000 photons"
    assert row["ensemble"] == 1  # one kernel's deconvolution: a kernel alone replays it
    # The preset, finishing the saved kernel again, gives the saved result; noise.py scored the same.
    assert row["preset"] == pytest.approx(row["saved"], abs=1e-4)
    assert row["saved"] == pytest.approx(case["result"]["psnr"], abs=1e-6)
    assert row["input"] == pytest.approx(case["blurred"]["psnr"], abs=1e-6)
    summary = report["summary"]["micro 1000 photons"]
    assert set(summary) == {"saved", "preset", "final_noise_factor=3", "residual_floor=0"}
    assert summary["residual_floor=0"]["gain"] == pytest.approx(row["residual_floor=0"] - row["input"])
