"""The console script while it loads: a signal then ends it with one line, not a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _wait_until_torch_loads(pid: int) -> None:
    """Until the process maps torch's libraries: its launcher has set its handlers by then (it
    runs before the command's imports) and the command has seconds of loading left. Without
    /proc, the half second the launcher needs at most."""
    maps = Path(f"/proc/{pid}/maps")
    if not maps.exists():
        time.sleep(0.5)
        return
    deadline = time.monotonic() + 60
    while "/torch/" not in maps.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.parametrize(("signame", "status"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_during_start_up_ends_the_command_with_one_line(tmp_path, signame, status):
    (tmp_path / "x.tif").write_bytes(b"")  # never read: the command is stopped before
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_selfmsnet.batch.launch", "deblur", str(tmp_path / "x.tif"), "--output-dir",
         str(tmp_path / "out")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )  # fmt: skip
    _wait_until_torch_loads(proc.pid)
    proc.send_signal(getattr(signal, signame))
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status and stdout == ""
    assert stderr == f"stopped by {signame} during start-up; nothing was processed\n"
    assert not (tmp_path / "out").exists()


def test_the_console_script_is_the_launcher():
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert 'napari-selfmsnet = "napari_selfmsnet.batch.launch:main"' in pyproject
