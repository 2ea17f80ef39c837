"""Blind deblurring with Self-MSNet: the deblurred image and the blur kernel from one image.

The engine (``napari_selfmsnet.engine``) imports numpy, scipy and torch only; files are
``napari_selfmsnet.io``, batches and the command line ``napari_selfmsnet.batch``, the napari
widget ``napari_selfmsnet._napari`` (registered only through ``napari.yaml``), and scoring
``napari_selfmsnet.evaluation``. See ``docs/architecture.md``.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

try:
    from ._version import version as __version__
except ImportError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

if TYPE_CHECKING:
    from .engine.config import PRESETS, SolverConfig
    from .engine.pipeline import deblur
    from .engine.records import DeblurResult, Progress, StackResult
    from .engine.stack import deblur_stack

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

# The engine's names load on first use (PEP 562), not with the package: the engine brings
# torch, seconds in which the command line could not yet catch Ctrl-C (``batch.launch``
# handles it from before that import, and its own import runs this file).
_ENGINE_MODULES = {
    "deblur": ".engine.pipeline",
    "deblur_stack": ".engine.stack",
    "DeblurResult": ".engine.records",
    "StackResult": ".engine.records",
    "Progress": ".engine.records",
    "SolverConfig": ".engine.config",
    "PRESETS": ".engine.config",
}


def __getattr__(name: str) -> Any:
    if name not in _ENGINE_MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_ENGINE_MODULES[name], __name__), name)
    globals()[name] = value  # later look-ups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
