"""Make ``docs/images/napari-widget.png``: napari, the widget and a real run on the sample.

Opens the blurred sample, runs the widget with its defaults (Self-MSNet, fast preset, the
sample's suggested kernel size 15, device auto) and takes a picture of the whole window once the
result layers are in.
It also prints how long the run took, the figure quoted in ``docs/usage.md``.

Run it on a machine without a display under Xvfb (the canvas alone comes out black there, the
whole window does not)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshot.py

Options: ``--output PATH`` (default: ``docs/images/napari-widget.png`` next to this script),
``--preset NAME`` (default ``fast``), ``--iterations N`` (default 0: the preset's; a small
number checks the layout quickly), ``--threads N`` (torch CPU threads; default: torch's own).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "images" / "napari-widget.png")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--iterations", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    if args.threads:
        torch.set_num_threads(args.threads)

    viewer = napari.Viewer(title="napari-selfmsnet", show=True)
    viewer.window.resize(1500, 900)
    viewer.open_sample("napari-selfmsnet", "blurred")
    _, widget = viewer.window.add_plugin_dock_widget("napari-selfmsnet", "Blind deblur")
    widget.preset.value = args.preset
    widget.iterations.value = args.iterations
    app = QApplication.instance()

    start = time.perf_counter()
    worker = widget.run()
    if worker is None:
        raise SystemExit(f"the widget refused to run: {widget.status.value}")
    while widget.worker is not None:
        app.processEvents()
        time.sleep(0.02)
    wall = time.perf_counter() - start

    meta = viewer.layers["blurred sample deblurred"].metadata
    print(
        f"run: {meta['method']}, preset {meta['preset']}, {meta['iterations']} iterations, "
        f"kernel {meta['kernel_size']}, device {meta['device']}, torch threads {torch.get_num_threads()}, "
        f"CPU cores {os.cpu_count()}: engine {meta['elapsed_s']:.1f} s, wall {wall:.1f} s, "
        f"final loss {meta['final_loss']:.4g}, warnings {meta['warnings']}"
    )

    # Side by side: the blurred sample moved left of the result (for the picture only), and the
    # kernel where the widget puts it, beside the result.
    blurred = viewer.layers["blurred sample"]
    blurred.translate = (0.0, -1.1 * blurred.data.shape[1])
    viewer.layers.selection.active = blurred  # the widget follows it: the input stays chosen
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.05)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.output), canvas_only=False)
    print(f"wrote {args.output}")
    viewer.close()


if __name__ == "__main__":
    main()
