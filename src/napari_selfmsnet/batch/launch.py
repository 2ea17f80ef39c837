"""The ``napari-selfmsnet`` console script: Ctrl-C and SIGTERM while the command loads.

The command (:mod:`.cli`) imports torch, SciPy, Dask and the engine, seconds in which Python's
own handlers would print a KeyboardInterrupt traceback (SIGINT) or end the process without a
word (SIGTERM). :func:`main` catches both before that import (this module and the package's
``__init__`` load the standard library only) and ends with one line on standard error and
the shell's status, 130 or 143; once the command runs, :mod:`.stopping` handles them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .stopping import StopRequest

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Load the command, then run it (:func:`.cli.main`); returns the exit status."""
    stop = StopRequest(raise_at_once=True)
    try:
        with stop:
            # Imported here, not at the top: the handlers must be in place while torch loads.
            from .cli import main as command
    except KeyboardInterrupt:  # (also a Ctrl-C in the instant before the handlers were set)
        print(f"stopped by {stop.name or 'SIGINT'} during start-up; nothing was processed", file=sys.stderr)
        return stop.exit_status or 130
    return command(argv)


if __name__ == "__main__":
    sys.exit(main())
