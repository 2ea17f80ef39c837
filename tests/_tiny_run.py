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
