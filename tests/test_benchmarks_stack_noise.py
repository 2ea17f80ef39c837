"""``benchmarks/stack_noise.py`` on one tiny stack (no Levin data)."""

from __future__ import annotations

import json

import pytest
from _benchmarks import run_script


def test_a_tiny_shared_stack_is_scored_plane_by_plane(tmp_path):
    out = tmp_path / "stack.json"
    args = [
        "--photons", "1000", "--kinds", "gaussian", "--planes", "2", "--size", "64",
        "--set", "iterations=3", "--threads", "1", "--out", str(out),
    ]  # fmt: skip
    done = run_script("stack_noise.py", *args)
    assert done.returncode == 0, done.stderr
    (stack,) = json.loads(out.read_text())["stacks"]
    assert stack["name"] == "gaussian@1000ph" and len(stack["planes"]) == 2
    for plane in stack["planes"]:
        assert plane["weight"] > 0 and plane["input"] < plane["true_kernel"]
    gain = sum(p["result"] - p["input"] for p in stack["planes"]) / 2
    assert stack["gain"] == pytest.approx(gain)
    assert 0 <= stack["kernel_similarity"] <= 1
