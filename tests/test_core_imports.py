"""The engine and the public API load no GUI code: Qt, qtpy, magicgui and napari stay out.

Checked in a fresh interpreter, because this test session itself may already have imported
napari (the widget tests do).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

GUI_PACKAGES = ("napari", "magicgui", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "vispy")


@pytest.mark.parametrize("module", ["napari_selfmsnet", "napari_selfmsnet.core", "napari_selfmsnet.api"])
def test_import_loads_no_gui_modules(module):
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"roots = {GUI_PACKAGES!r}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in roots})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing {module} loaded GUI packages: {loaded}"


def test_engine_modules_load_no_gui_modules():
    """Every module of the engine, the stack API and the layer helpers, imported together."""
    code = (
        "import json, pkgutil, sys, importlib\n"
        "import napari_selfmsnet.core as core\n"
        "for info in pkgutil.iter_modules(core.__path__):\n"
        "    importlib.import_module('napari_selfmsnet.core.' + info.name)\n"
        "import napari_selfmsnet.stack, napari_selfmsnet._layers\n"
        f"roots = {GUI_PACKAGES!r}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in roots})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
