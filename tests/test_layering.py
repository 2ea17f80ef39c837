"""The floors of the package import only what docs/architecture.md allows them.

Checked in a fresh interpreter, because this test session itself may already have imported
napari, dask or tifffile (other tests do).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.parametrize("module", ["napari_selfmsnet", "napari_selfmsnet.batch.launch"])
def test_package_and_launcher_load_no_torch_until_a_name_is_used(module):
    # The console script's launcher must set its signal handlers before torch's seconds of loading.
    assert "torch" not in _loaded_roots(f"import {module}")
    assert "torch" in _loaded_roots("from napari_selfmsnet import deblur")


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


# What each floor of the package may import: its own modules, the floors listed, the standard
# library and the third-party packages listed (docs/architecture.md has the same table).
FLOORS = {
    "engine": ({"engine"}, {"numpy", "scipy", "torch"}),
    "io": ({"io"}, {"numpy", "tifffile", "imageio", "dask", "zarr"}),
    "evaluation": ({"engine", "io", "evaluation"}, {"numpy", "scipy", "skimage", "torch"}),
    "batch": ({"engine", "io", "evaluation", "batch"}, {"numpy", "torch", "tqdm", "distributed", "PIL"}),
    "_napari": ({"engine", "evaluation", "_napari"}, {"numpy", "napari", "magicgui", "qtpy"}),
}


def _imports(path):
    """(floor or None, top-level package) for every import statement of a module of the package."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = path.parent
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield None, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield None, (node.module or "").split(".")[0]
                continue
            base = package
            for _ in range(node.level - 1):
                base = base.parent
            target = (base / (node.module or "").replace(".", "/")) if node.module else base
            names = [] if node.module else [alias.name for alias in node.names]
            root = Path(__import__("napari_selfmsnet").__file__).parent
            parts = target.relative_to(root).parts
            if parts:
                yield parts[0].removesuffix(".py"), "napari_selfmsnet"
            else:  # "from .. import io": the floors named
                for name in names:
                    yield name, "napari_selfmsnet"


@pytest.mark.parametrize("floor", sorted(FLOORS))
def test_each_floor_imports_only_what_the_architecture_allows(floor):
    import napari_selfmsnet

    floors, third_party = FLOORS[floor]
    root = Path(napari_selfmsnet.__file__).parent
    allowed_names = {"__version__", "_version"}
    problems = []
    for path in sorted((root / floor).glob("*.py")):
        for target_floor, package in _imports(path):
            if package == "napari_selfmsnet":
                if target_floor not in floors and target_floor not in allowed_names:
                    problems.append(f"{path.name} imports the {target_floor} floor")
            elif package not in sys.stdlib_module_names and package not in third_party and package != "__future__":
                problems.append(f"{path.name} imports {package}")
    assert problems == []
