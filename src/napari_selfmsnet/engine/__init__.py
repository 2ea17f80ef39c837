"""The engine: Self-MSNet blind deblurring on numpy, scipy and torch only.

No file formats, clusters or GUI here (``tests/test_layering.py`` checks it); the floors above
use it (see ``docs/architecture.md``). The public entry points are re-exported by the
package: :func:`napari_selfmsnet.deblur` and :func:`napari_selfmsnet.deblur_stack`.
"""
