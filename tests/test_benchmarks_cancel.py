"""Smoke test of ``benchmarks/cancel.py``: every case stops its run, the JSON layout.

Tiny settings (a 128 px frame, a 5 px kernel, the single-scale method, 3 iterations, 80 px
tiles): they check the plumbing and that every stop is honoured, not the latency.
"""

from __future__ import annotations

import json

import pytest
from _benchmarks import run_script

#: The cases of benchmarks/cancel.py, one per place a stop can land.
CASES = ("size", "blind", "polish", "deconvolve", "discrepancy", "per-plane", "shared", "tiled")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("cancel") / "cancel.json"
    args = [
        "--out", str(out), "--size", "128", "--kernel", "5", "--iterations", "3", "--method", "self-msnet-s",
        "--tile", "80", "--planes", "3", "--threads", "1", "--machine-note", "test",
    ]  # fmt: skip
    done = run_script("cancel.py", *args, timeout=240)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


def test_the_json_has_every_case_and_the_machine(report):
    assert set(report) >= {"settings", "machine", "input", "limit_s", "cases", "record_gaps", "summary"}
    assert report["machine"]["torch_threads"] == 1 and report["machine"]["note"] == "test"
    assert len(report["machine"]["load_average_before"]) == 3
    assert [case["case"] for case in report["cases"]] == list(CASES)
    assert list(report["summary"]) == list(CASES)
    assert {"size", "blind", "polish", "deconvolve", "planes"} <= set(report["record_gaps"])


def test_every_stop_lands_where_its_case_says(report):
    cases = {case["case"]: case for case in report["cases"]}
    assert all(case["status"] == "ok" for case in cases.values()), [c for c in cases.values() if c["status"] != "ok"]
    expected = {"size": "size", "blind": "blind", "polish": "polish", "deconvolve": "deconvolve",
                "discrepancy": "deconvolve", "per-plane": "blind", "shared": "planes", "tiled": "deconvolve"}  # fmt: skip
    assert {name: case["stage"] for name, case in cases.items()} == expected
    assert cases["per-plane"]["stop_plane"] == 1 and cases["shared"]["stop_plane"] == 1
    assert cases["tiled"]["tiles"] == 9 and cases["tiled"]["stop_tile"] == 4
    for case in cases.values():
        assert case["latency_s"] >= 0 and case["time_to_stop_s"] > 0
        assert case["image_ok"] and case["kernel_ok"], case["case"]


@pytest.mark.parametrize("name", CASES)
def test_each_run_was_cancelled(report, name):
    (case,) = [c for c in report["cases"] if c["case"] == name]
    assert case["cancelled"] is True
    assert report["summary"][name]["cancelled"] is True


def test_a_stop_while_the_size_is_measured_starts_no_blind_fit(report):
    (case,) = [c for c in report["cases"] if c["case"] == "size"]
    assert "blind" not in {record["stage"] for record in case["after_stop"]}
