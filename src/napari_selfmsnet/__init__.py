"""Blind deblurring with Self-MSNet: the deblurred image and the blur kernel from one image.

The engine (``napari_selfmsnet.core``) imports no Qt and no napari; the napari widget lives in
``napari_selfmsnet._widget`` and is registered only through ``napari.yaml``.
"""

from .api import deblur
from .core.config import PRESETS, SolverConfig
from .core.results import DeblurResult, Progress

try:
    from ._version import version as __version__
except ImportError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["deblur", "DeblurResult", "Progress", "SolverConfig", "PRESETS", "__version__"]
