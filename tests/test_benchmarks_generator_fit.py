"""``benchmarks/generator_fit.py``: a tiny fit of the generator to a sharp Levin image."""

from __future__ import annotations

import json
import subprocess

from _benchmarks import needs_levin, run_script


def generator_fit(*args: str) -> subprocess.CompletedProcess:
    return run_script("generator_fit.py", "--threads", "1", *args)


@needs_levin
def test_tiny_fit_reports_every_scale_and_improves(tmp_path):
    out = tmp_path / "fit.json"
    done = generator_fit(
        "--image", "im1_kernel5", "--set", "width=8", "--lr", "0.01", "--iterations", "30", "--every", "10",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["run"]["lr"] == 0.01 and report["run"]["changes"] == {"width": 8}
    assert [point["iteration"] for point in report["trace"]] == [10, 20, 30]
    for point in report["trace"]:
        assert len(point["psnr_per_scale"]) == 4
        assert all(5 < p < 60 for p in point["psnr_per_scale"])
    # Fitting the sharp image directly: the finest output gets closer to it.
    assert report["trace"][-1]["psnr_per_scale"][-1] > report["trace"][0]["psnr_per_scale"][-1]


def test_bad_iterations_are_refused(tmp_path):
    done = generator_fit("--iterations", "0", "--out", str(tmp_path / "fit.json"))
    assert done.returncode == 2 and "--iterations" in done.stderr
