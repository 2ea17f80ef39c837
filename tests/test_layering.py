"""The floors of the package import only what docs/architecture.md allows them.

Checked in a fresh interpreter, because this test session itself may already have imported
napari, dask or tifffile (other tests do).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

GUI = ("napari", "magicgui", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "vispy")
CLUSTER = ("dask", "distributed")
FILE_FORMATS = ("tifffile", "imageio", "zarr")


def _loaded_roots(code: str) -> set[str]:
    """The top-level packages in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_package_import_loads_no_gui_cluster_or_file_format():
    loaded = _loaded_roots("import napari_selfmsnet")
    assert loaded.isdisjoint(GUI + CLUSTER + FILE_FORMATS), sorted(loaded & set(GUI + CLUSTER + FILE_FORMATS))


def test_every_engine_module_loads_only_numpy_scipy_and_torch():
    code = (
        "import importlib, pkgutil\n"
        "import napari_selfmsnet.engine as engine\n"
        "for info in pkgutil.iter_modules(engine.__path__):\n"
        "    importlib.import_module('napari_selfmsnet.engine.' + info.name)\n"
    )
    loaded = _loaded_roots(code)
    assert loaded.isdisjoint(GUI + CLUSTER + FILE_FORMATS), sorted(loaded & set(GUI + CLUSTER + FILE_FORMATS))


@pytest.mark.parametrize("module", ["napari_selfmsnet._napari.layers", "napari_selfmsnet._napari.job"])
def test_layer_adapters_load_no_gui(module):
    loaded = _loaded_roots(f"import {module}")
    assert loaded.isdisjoint(GUI), sorted(loaded & set(GUI))
