"""Shared by the tests of ``benchmarks/``: where the scripts and the Levin data are, and how to run one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
#: The shared data folder next to the repository; absent on CI, so the tests that need it skip.
LEVIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "levin"

needs_levin = pytest.mark.skipif(not LEVIN.is_dir(), reason=f"Levin data not found at {LEVIN}")


def run_script(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``benchmarks/<script>`` with this interpreter; the caller checks the return code."""
    command = [sys.executable, str(BENCHMARKS / script), *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout)
