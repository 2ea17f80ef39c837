"""Shared fixtures.

napari's own pytest plugin provides ``make_napari_viewer`` (used by the widget tests; they run
under Xvfb, which pytest-xvfb starts). Fixtures here are generic: a seeded random generator, the
devices to test on, and a recorder of napari notifications.
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed-seed NumPy generator, so test data is the same on every run."""
    return np.random.default_rng(1234)


def _devices() -> list[str]:
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda:0")
    return devices


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests (``pytest.mark.usefixtures``): tiny runs are
    fastest so, and immune to other processes on the cores (CPU results depend on the thread
    count, so reference values stay comparable)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=_devices())
def device(request) -> str:
    """Each device torch can use here: the CPU, plus the first CUDA GPU where there is one."""
    return request.param


@pytest.fixture
def notifications():
    """Every napari notification dispatched during the test, in order.

    Skips the test where napari is not installed (the engine's tests do not need it).
    """
    notifications_module = pytest.importorskip("napari.utils.notifications")
    manager = notifications_module.notification_manager
    received: list = []

    def record(notification) -> None:
        received.append(notification)

    manager.notification_ready.connect(record)
    yield received
    manager.notification_ready.disconnect(record)
