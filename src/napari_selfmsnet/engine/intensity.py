"""The one intensity policy of the project: results stay in the input's units.

The engine works on the image mapped affinely to ``[0, 1 / headroom]`` and maps its result
back with the inverse map, so uint16 counts in give float32 counts out (never rescaled to
[0, 1], never clipped to the input's dtype range). The non-blind solver's weights are set for
that unit range, so the same weight regularises a dim and a bright image alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["IntensityMap"]


@dataclass(frozen=True)
class IntensityMap:
    """Affine map between the input's units and the engine's normalised units."""

    offset: float
    scale: float

    @classmethod
    def fit(cls, image: np.ndarray, headroom: float = 1.0) -> IntensityMap:
        lo = float(np.min(image))
        hi = float(np.max(image))
        return cls(offset=lo, scale=(hi - lo) * headroom)

    def to_unit(self, image: np.ndarray) -> np.ndarray:
        return ((np.asarray(image, dtype=np.float64) - self.offset) / self.scale).astype(np.float32)

    def to_input_units(self, image: np.ndarray) -> np.ndarray:
        return (np.asarray(image, dtype=np.float64) * self.scale + self.offset).astype(np.float32)
