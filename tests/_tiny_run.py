"""Command-line options for tiny, reproducible runs, shared by the CLI and Dask tests."""

KSIZE = 5
# One scale, 3 iterations, 1 torch thread (reproducible), Wiener for shared planes.
FAST = [
    "--kernel-size",
    str(KSIZE),
    "--iterations",
    "3",
    "--method",
    "self-msnet-s",
    "--device",
    "cpu",
    "--torch-threads",
    "1",
    "--nonblind",
    "wiener",
]


def counts(printed: str) -> tuple[int, int, int]:
    """``(deblurred, skipped, failed)`` from the command's summary line, whatever the number of
    files with warnings (tiny runs often come back with some)."""
    import re

    match = re.search(r"(\d+) deblurred(?: \(\d+ with warnings\))?, (\d+) skipped, (\d+) failed", printed)
    assert match, f"no summary line in {printed!r}"
    return tuple(int(g) for g in match.groups())  # type: ignore[return-value]
