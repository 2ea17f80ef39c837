"""How the engine's long computations report progress and stop: generators of records.

Every long-running part of the engine (the blind optimizer, the polish rounds, the non-blind
solvers, a stack's planes, the whole pipeline of :mod:`.pipeline`) is a generator that yields
a progress record every few steps and *returns* its outcome (``StopIteration.value``).
Whoever drives it may send a value at a yield: a true value asks the generator to stop there,
and it then returns at once the best outcome it has (its estimate so far), without yielding
again. A generator running another one inside passes the value down to it (``yield from``
or :func:`relay`), so a stop request reaches the loop that is running; what the outer
generator does once an inner one has stopped is its own to say (see :mod:`.pipeline`).

This is the one way the engine reports and is stopped: :func:`napari_selfmsnet.deblur`
drains the pipeline with :func:`drain`, sending back what its ``callback`` returns; the
napari widget's worker iterates it directly. No record ever needs mutating (records are
frozen).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

__all__ = ["drain", "relay", "returning"]

Record = TypeVar("Record")
Converted = TypeVar("Converted")
Outcome = TypeVar("Outcome")


def drain(steps: Generator[Record, Any, Outcome], callback: Callable[[Record], Any] | None = None) -> Outcome:
    """Run ``steps`` to its end and return its outcome.

    ``callback`` (optional) is called with every record; what it returns is sent back into
    ``steps``, so returning True asks it to stop at that record.
    """
    try:
        record = next(steps)
        while True:
            record = steps.send(None if callback is None else callback(record))
    except StopIteration as done:
        return done.value
    finally:
        steps.close()


def relay(
    steps: Generator[Record, Any, Outcome], convert: Callable[[Record], Converted]
) -> Generator[Converted, Any, tuple[Outcome, bool]]:
    """``yield from steps``, with every record converted; for use inside another generator.

    ``outcome, stopped = yield from relay(steps, convert)``: what the caller sends at a
    converted record is passed on to ``steps``; ``stopped`` tells whether a true value was
    sent at any of them (so the outcome may be a partial one).
    """
    stopped = False
    try:
        record = next(steps)
        while True:
            stop = yield convert(record)
            stopped = stopped or bool(stop)
            record = steps.send(stop)
    except StopIteration as done:
        return done.value, stopped
    finally:
        steps.close()


def returning(outcome: Outcome) -> Generator[Any, Any, Outcome]:
    """A stage generator with nothing to do: it yields no record and returns ``outcome``."""
    return outcome
    yield  # unreachable: makes this function a generator
