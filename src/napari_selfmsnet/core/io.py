"""Reading and writing images (PNG/JPEG through imageio, TIFF through tifffile)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["read_image"]

_TIFF_SUFFIXES = {".tif", ".tiff"}


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as stored (no rescaling, no dtype change)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    if path.suffix.lower() in _TIFF_SUFFIXES:
        import tifffile

        return tifffile.imread(path)
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))
