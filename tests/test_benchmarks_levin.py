"""``benchmarks/levin.py``: a tiny run on one Levin image, with preset changes from ``--set`` and a trace."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from _benchmarks import needs_levin, run_script

from napari_selfmsnet import PRESETS


def levin(*args: str) -> subprocess.CompletedProcess:
    return run_script("levin.py", "--threads", "1", *args)


@needs_levin
def test_tiny_run_applies_the_set_changes_and_scores_the_image(tmp_path):
    out, table = tmp_path / "levin.json", tmp_path / "levin.md"
    done = levin(
        "--images", "im1_kernel5", "--preset", "quality", "--set", "iterations=6;width=8",
        "--set", "amp='bf16'", "--trace", "2",
        "--out", str(out), "--markdown", str(table), "--save", str(tmp_path / "saved"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["run"]["preset"] == "quality"
    assert report["run"]["changes"] == {"iterations": 6, "width": 8, "amp": "bf16"}
    (record,) = report["images"]
    assert record["name"] == "im1_kernel5"
    assert record["result"]["iterations"] == 6
    # Scored along the way; the last iteration is the result itself, not a trace point.
    first = [point["iteration"] for point in record["trace"] if point["attempt"] == 0]
    assert first == [2, 4]
    attempts = {point["attempt"] for point in record["trace"]}
    assert attempts <= set(range(1 + PRESETS["quality"].retries)) and len(attempts) == record["result"]["attempts"]
    for point in record["trace"]:
        assert 5 < point["psnr"] < 45 and 0 < point["kernel_similarity"] <= 1 and point["loss"] > 0
    assert 5 < record["result"]["psnr"] < 45
    assert 0 < record["result"]["kernel_similarity"] <= 1
    # The anchors do not depend on the method: the blurred input and the true-kernel reference.
    assert record["true_kernel"]["psnr"] > record["blurred"]["psnr"] > 20
    assert report["summary"]["psnr"] == pytest.approx(record["result"]["psnr"])
    assert "im1_kernel5" in table.read_text()
    with np.load(tmp_path / "saved" / "im1_kernel5.npz") as saved:
        assert saved["image"].shape == (255, 255)
        assert saved["kernel"].shape == tuple(record["kernel_size"])
        assert saved["kernel"].sum() == pytest.approx(1, abs=1e-5)


def test_a_set_that_names_no_config_field_is_refused(tmp_path):
    done = levin("--set", "support=4", "--out", str(tmp_path / "never.json"))
    assert done.returncode == 2
    assert "'support=4' is not FIELD=VALUE with a SolverConfig field" in done.stderr
    assert not (tmp_path / "never.json").exists()


def test_a_trace_of_no_iterations_is_refused(tmp_path):
    # The trace sets how often the run reports (progress_every), so any positive count works.
    done = levin("--preset", "fast", "--trace", "0", "--out", str(tmp_path / "never.json"))
    assert done.returncode == 2
    assert "--trace must be a positive number of iterations, got 0" in done.stderr
