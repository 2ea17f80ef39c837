"""Smoke tests of ``benchmarks/speed.py``: case processes, failure records, the JSON layout.

Tiny settings (48-96 px frames, a 5 px kernel, a 4-channel single-scale network, a few
iterations): they check the plumbing, not the speed.
"""

from __future__ import annotations

import json
import sys

import pytest
from _benchmarks import BENCHMARKS, run_script

from napari_selfmsnet import PRESETS


@pytest.fixture(scope="module")
def speed():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        import speed as module

        yield module


def test_tiny_run_writes_every_section(tmp_path):
    out, markdown = tmp_path / "speed.json", tmp_path / "speed.md"
    args = [
        "--out", str(out), "--markdown", str(markdown),
        "--devices", "cpu", "--threads", "1", "--sections", "sweep", "kernel_step",
        "--sizes", "48", "--kernels", "5", "31", "--configs", "faithful", "fast",
        "--iterations", "1", "--width", "4", "--config-iterations", "8",
        "--method", "self-msnet-s", "--kernel-step-size", "48", "--kernel-step-repeats", "1", "--timeout", "120",
    ]  # fmt: skip
    done = run_script("speed.py", *args, timeout=170)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())

    assert set(report) >= {"settings", "machines", "configs", "sweep", "ratios", "switch_comparisons", "kernel_step"}
    statuses = [(r["kernel"], r["config"], r["status"]) for r in report["sweep"]]
    assert statuses == [(5, "faithful", "ok"), (5, "fast", "ok"), (31, "faithful", "skipped"), (31, "fast", "skipped")]
    fast = report["sweep"][1]
    assert fast["time_to_result_kind"] == "projected"
    assert fast["region"] == [0, 0, 48, 48]
    assert fast["seconds_per_iteration"] > 0 and fast["memory"]["peak"]["cpu_peak_rss_mib"] > 0
    assert fast["nonblind_stages"]["polish_rounds"] == PRESETS["fast"].polish_rounds
    assert fast["nonblind_stages"]["deconvolve_s"] > 0
    assert "too large for a 48x48 image" in report["sweep"][2]["reason"]
    assert [(r["size"], r["config"]) for r in report["ratios"]] == [(48, "fast")]
    assert [r["status"] for r in report["kernel_step"]] == ["ok", "ok"]
    assert "## Sweep" in markdown.read_text() and "describe no preset" in markdown.read_text()


def test_faithful_is_skipped_above_its_size_limit(speed):
    import torch

    reason = speed._sweep_skip_reason("faithful", torch.device("cpu"), 1024, 31, limit=512)
    assert "--faithful-max-size 512" in reason
    assert speed._sweep_skip_reason("fast", torch.device("cpu"), 1024, 31, limit=512) is None
    assert speed.faithful_limit(speed.parse_args(["--out", "x.json"]), torch.device("cuda")) is None


def test_case_errors_become_failed_records(speed, tmp_path):
    case = {"kind": "iterations", "device": "cpu", "threads": 1, "method": "self-msnet-s", "preset": "fast",
            "overrides": {}, "image": str(tmp_path / "missing.npy"), "kernel": 5, "region": "auto",
            "warmup": 1, "iterations": 1, "end_to_end": False}  # fmt: skip
    record = speed.run_case(case)
    assert record["status"] == "failed"
    assert record["error"].startswith("FileNotFoundError")
    assert record["out_of_memory"] is False


def test_subprocess_timeout_and_silent_exit_are_recorded(speed):
    slow = speed.run_json_subprocess([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert slow["status"] == "timeout"
    silent = speed.run_json_subprocess([sys.executable, "-c", "raise SystemExit(3)"], timeout=30)
    assert silent["status"] == "failed" and "exit code 3" in silent["error"]
    printed = speed.run_json_subprocess([sys.executable, "-c", "print('noise'); print('{\"a\": 1}')"], timeout=30)
    assert printed == {"a": 1}


def test_switches_off_cuda_force_bfloat16_and_drop_cudnn(speed):
    settings = [switch.setting for switch in speed.SWITCHES]
    cpu = {switch.setting: switch for switch in speed.switches_for("cpu", settings)}
    assert "cudnn_benchmark" not in cpu
    assert cpu["amp"].on == "bf16" and "forced" in cpu["amp"].note
    cuda = {switch.setting: switch for switch in speed.switches_for("cuda", settings)}
    assert cuda["amp"].on == "auto" and "cudnn_benchmark" in cuda


def test_ratios_and_switch_rows(speed):
    base = {"device": "cpu", "size": 256, "kernel": 31, "status": "ok", "time_to_result_kind": "projected"}
    sweep = [
        {**base, "config": "faithful", "time_to_result_s": 100.0, "seconds_per_iteration": 4.0},
        {**base, "config": "quality", "time_to_result_s": 100.0, "seconds_per_iteration": 4.0,
         "same_measurement_as": "sweep:cpu/faithful/256/31"},
        {**base, "config": "fast", "time_to_result_s": 20.0, "seconds_per_iteration": 0.5},
    ]  # fmt: skip
    (ratio,) = speed.sweep_ratios(sweep)
    assert ratio["config"] == "fast" and ratio["time_to_result_ratio"] == 5.0
    assert ratio["seconds_per_iteration_ratio"] == 8.0 and ratio["peak_memory_ratio"] is None

    switch = {"device": "cpu", "config": "fast", "switch": "torch.compile", "note": "", "status": "ok"}
    rows = speed.switch_comparisons(
        [
            {**switch, "state": "off", "seconds_per_iteration": 1.0},
            {**switch, "state": "on", "seconds_per_iteration": 0.5, "compile_overhead_s": 30.0},
        ]
    )
    assert rows == [
        {"device": "cpu", "config": "fast", "switch": "torch.compile", "note": "", "off_seconds_per_iteration": 1.0,
         "on_seconds_per_iteration": 0.5, "compile_overhead_s": 30.0, "speedup": 2.0}
    ]  # fmt: skip


def test_synthetic_inputs_are_camera_counts(speed):
    frame = speed.synthetic_frame(64, 7)
    stack = speed.synthetic_stack(3, 40, 5)
    assert frame.shape == (64, 64) and frame.dtype.name == "uint16" and frame.std() > 5
    assert stack.shape == (3, 40, 40) and stack.dtype.name == "uint16"
