"""The plane view stacks are processed in: any N-D image as ``(P, H, W[, 3])``, a plane at a time."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .metadata import normalise_axes

__all__ = ["Planes"]


class Planes:
    """A ``(P, H, W)`` or ``(P, H, W, 3)`` view of an N-D array, one plane per index.

    The plane axes are Y, X and S when S has size 3 (RGB); every other axis is a stack axis,
    and plane ``i`` is the ``i``-th combination of stack-axis indices in C order over
    ``stack_axes``. Reading and writing touch only that plane, so the array can be a NumPy
    array, a memory map, a Dask or a Zarr array.

    Parameters
    ----------
    data : array-like
        Anything with ``.shape`` and N-D indexing.
    axes : str
        One letter per dimension of ``data``.
    stack_axes : str, optional
        Enumeration order of the stack axes (default: their order in ``axes``); lets two
        arrays with the same axes in different orders share plane numbers.
    """

    def __init__(self, data: Any, axes: str, stack_axes: str | None = None) -> None:
        self.data = data
        self.axes = normalise_axes(axes, data.shape)
        sizes = dict(zip(self.axes, (int(s) for s in data.shape), strict=True))
        self.rgb = sizes.get("S") == 3
        self.plane_axes = "YXS" if self.rgb else "YX"
        default = "".join(a for a in self.axes if a not in self.plane_axes)
        if stack_axes is None:
            stack_axes = default
        elif sorted(stack_axes) != sorted(default):
            raise ValueError(f"stack_axes {stack_axes!r} must order the stack axes {default!r}")
        self.stack_axes = stack_axes
        self.stack_shape = tuple(sizes[a] for a in stack_axes)
        plane_shape = tuple(sizes[a] for a in self.plane_axes)
        self.shape = (math.prod(self.stack_shape), *plane_shape)
        self.dtype = getattr(data, "dtype", None)
        self.ndim = len(self.shape)
        # Order of the plane axes inside data[index], and the transpose to Y, X(, S).
        inner = [a for a in self.axes if a in self.plane_axes]
        self._to_plane = tuple(inner.index(a) for a in self.plane_axes)
        self._from_plane = tuple(self.plane_axes.index(a) for a in inner)

    def __len__(self) -> int:
        return self.shape[0]

    def index(self, i: int) -> tuple:
        """The N-D index into ``data`` of plane ``i``."""
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"Planes are indexed by one plane number, got {i!r}")
        if not -self.shape[0] <= i < self.shape[0]:
            raise IndexError(f"plane {i} out of range for {self.shape[0]} planes")
        coords = dict(zip(self.stack_axes, np.unravel_index(int(i) % self.shape[0], self.stack_shape), strict=True))
        return tuple(int(coords[a]) if a in coords else slice(None) for a in self.axes)

    def __getitem__(self, i: int) -> np.ndarray:
        plane = self.data[self.index(i)]
        if hasattr(plane, "compute"):
            # A lazy (Dask) plane: read it here, synchronously, even inside a Dask worker task.
            plane = plane.compute(scheduler="sync")
        return np.transpose(np.asarray(plane), self._to_plane)

    def __setitem__(self, i: int, plane: np.ndarray) -> None:
        self.data[self.index(i)] = np.transpose(np.asarray(plane), self._from_plane)

    def __array__(self, dtype=None, copy=None):
        out = np.stack([self[i] for i in range(len(self))])
        return out if dtype is None else out.astype(dtype)

    @property
    def output_axes(self) -> str:
        """Axes of the arrays written for this view: stack axes, then Y, X (and S)."""
        return self.stack_axes + self.plane_axes

    def flush(self) -> None:
        """Write what was assigned through to the file, where ``data`` is a memory map."""
        flush = getattr(self.data, "flush", None)
        if flush is not None:
            flush()
