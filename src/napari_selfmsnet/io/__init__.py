"""Files in and out: microscopy images with their axes and pixel sizes, and a run's results.

The only part of the package that reads or writes image files (tifffile, imageio, zarr).
Read with :func:`read_image_with_metadata` (or :func:`read_metadata` for the header alone),
view any N-D image as planes with :class:`Planes`, write results with :func:`write_result`,
or plane by plane with :func:`create_image` / :func:`open_image`.
"""

from .metadata import (
    IMAGE_SUFFIXES,
    TIFF_SUFFIXES,
    UNIT_IN_UM,
    ImageMetadata,
    kernel_metadata,
    normalise_axes,
    output_metadata,
    plane_count,
    stack_axes_of,
)
from .ome_zarr import require_zarr
from .planes import Planes
from .read import read_image, read_image_with_metadata, read_metadata
from .write import create_image, open_image, output_paths, write_image, write_json, write_picture, write_result

__all__ = [
    "IMAGE_SUFFIXES",
    "TIFF_SUFFIXES",
    "UNIT_IN_UM",
    "ImageMetadata",
    "Planes",
    "create_image",
    "kernel_metadata",
    "normalise_axes",
    "open_image",
    "output_metadata",
    "output_paths",
    "plane_count",
    "read_image",
    "read_image_with_metadata",
    "read_metadata",
    "require_zarr",
    "stack_axes_of",
    "write_image",
    "write_json",
    "write_picture",
    "write_result",
]
