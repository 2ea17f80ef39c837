"""Ctrl-C and SIGTERM on the command line: a request to stop, not a traceback.

While a command runs, :class:`StopRequest` turns the first SIGINT (Ctrl-C) or SIGTERM into a
request that the runners honour at the engine's next progress record (the callback returns
True, see :mod:`napari_selfmsnet.engine.steps`), so the running file stops within a
record's time, its partial outputs are removed and the summary is printed. A second signal
raises KeyboardInterrupt at once, for a run that does not reach a record soon enough. The
command then exits with the shell's convention: 128 + the signal's number (130 for SIGINT,
143 for SIGTERM).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["StopRequest"]

_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)


class StopRequest:
    """A context manager that catches SIGINT and SIGTERM while it is open.

    ``raise_at_once``: the first signal raises KeyboardInterrupt too (for a runner that only
    waits, such as the Dask client, and has no progress record to stop at).

    Attributes
    ----------
    signal : int or None
        The first signal received, None while there was none.
    """

    def __init__(self, *, raise_at_once: bool = False) -> None:
        self.signal: int | None = None
        self.raise_at_once = raise_at_once
        self._previous: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self.signal is not None

    def __call__(self) -> bool:
        """Whether a stop was asked for (the runners' ``stop`` argument)."""
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else ""

    @property
    def exit_status(self) -> int:
        """128 + the signal's number (130 for SIGINT, 143 for SIGTERM), 0 without one."""
        return 128 + int(self.signal) if self.signal is not None else 0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.signal is None
        if first:
            self.signal = signum
        if self.raise_at_once or not first:
            raise KeyboardInterrupt

    def __enter__(self) -> StopRequest:
        # Signal handlers can only be set from the main thread (main() may run in another).
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
