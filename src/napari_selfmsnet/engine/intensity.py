"""The one intensity policy of the project: results stay in the input's units.

The engine works on the image mapped affinely to ``[0, 1 / headroom]`` and maps its result
back with the inverse map, so uint16 counts in give float32 counts out (never rescaled to
[0, 1], never clipped to the input's dtype range). The non-blind solver's weights are set for
that unit range, so the same weight regularises a dim and a bright image alike.

Both maps compute in float64, so every integer dtype up to 64 bits and float64 data keep their
precision on the way in. The result is float32, in the input's units: an image whose values
float32 cannot hold is refused (:func:`float32_problem`, checked by
:func:`~.inputs.check_image`) rather than returned as ``inf`` or as a constant. That is an
image beyond float32's range (about 3.4e38), or one whose range is so small against its
magnitude (a large offset) that float32's spacing there is coarser than a thousandth of the
range and than the data's own step (1 for integers): its detail would round away. The remedy
is the user's to choose, in their units: subtract the offset or rescale, and undo it on the
result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["IntensityMap", "float32_problem"]

#: The finest share of an image's range that the float32 result must resolve.
RESOLVED_SHARE = 1e-3
_FLOAT32_MAX = float(np.finfo(np.float32).max)


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


def float32_problem(image: np.ndarray) -> str | None:
    """Why a float32 result in ``image``'s units could not hold its values, or None when it can.

    ``image`` is a finite, non-constant integer or float array (see the module docstring for
    the rule).
    """
    lo, hi = np.min(image), np.max(image)
    integer = np.issubdtype(image.dtype, np.integer)
    span = float(int(hi) - int(lo)) if integer else float(hi) - float(lo)  # int64 exactly
    magnitude = max(abs(float(lo)), abs(float(hi)))
    if magnitude > _FLOAT32_MAX:
        divisor = 10 ** np.ceil(np.log10(magnitude / 1e30))
        return (
            f"image values reach {magnitude:.3g}, beyond the range of float32 (the result's dtype, up to "
            f"{_FLOAT32_MAX:.3g}); divide the image by a factor that brings it within that range (for example "
            f"{divisor:.0e}) before deblurring, and multiply the result by the same factor"
        )
    spacing = float(np.spacing(np.float32(magnitude)))
    if spacing > max(1.0 if integer else 0.0, RESOLVED_SHARE * span):
        return (
            f"image values span only {span:.3g} at a magnitude of {magnitude:.3g}: float32, the result's dtype, "
            f"resolves steps of {spacing:.3g} there, so the result would lose the image's detail; before deblurring, "
            "subtract the offset (for example the image's minimum) and divide by the range, computing in double "
            "precision (float64), then undo both on the result"
        )
    return None
