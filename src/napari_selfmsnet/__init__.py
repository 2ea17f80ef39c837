"""Blind deblurring with Self-MSNet: the deblurred image and the blur kernel from one image.

The engine (``napari_selfmsnet.engine``) imports numpy, scipy and torch only; files are
``napari_selfmsnet.io``, batches and the command line ``napari_selfmsnet.batch``, the napari
widget ``napari_selfmsnet._napari`` (registered only through ``napari.yaml``), and scoring
``napari_selfmsnet.evaluation``. See ``docs/architecture.md``.
"""

from .engine.config import PRESETS, SolverConfig
from .engine.pipeline import deblur
from .engine.records import DeblurResult, Progress, StackResult
from .engine.stack import deblur_stack

try:
    from ._version import version as __version__
except ImportError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "deblur",
    "deblur_stack",
    "DeblurResult",
    "StackResult",
    "Progress",
    "SolverConfig",
    "PRESETS",
    "__version__",
]
