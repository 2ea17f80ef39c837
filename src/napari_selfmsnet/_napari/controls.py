"""The dock widget's form: its named controls, and the job they describe.

:class:`DeblurControls` builds the controls of a run (the image and region, the kernel size
in pixels and in the layer's units, method, preset, iterations, device, seed, stack mode),
keeps their choices in step with the viewer's layers, and reads them into a
:class:`~napari_selfmsnet._napari.job.DeblurJob` (:meth:`~DeblurControls.build_job`). Running
that job, and everything shown while it runs, is :class:`~napari_selfmsnet._napari.widget.DeblurWidget`'s.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, SpinBox
from napari.layers import Image, Shapes

from ..engine.config import METHOD_SCALES, PRESETS
from ..engine.devices import available_devices
from ..engine.kernel_size import AUTO
from ..engine.stack_plan import STACK_CHOICES
from .job import DeblurJob, make_job
from .layers import PhysicalPixel, describe_layer, physical_pixel, pixels_for_extent, suggested_kernel_size

if TYPE_CHECKING:
    import napari

__all__ = ["REGIONS", "DeblurControls"]

#: What the method and stack-mode choices are called in the widget (the names are the engine's).
_METHOD_LABELS = {"self-msnet": "Self-MSNet", "self-msnet-s": "Self-MSNet-S"}
_STACK_CHOICE_LABELS = {
    "current": "current plane only",
    "shared": "all planes, one shared kernel",
    "per-plane": "all planes, one kernel each",
}
_STACK_MODE_TOOLTIP = (
    "For layers with more than two (non-colour) dimensions.\n"
    "current plane only: deblur the plane shown by the sliders; the result is 2-D.\n"
    "all planes, one shared kernel: estimate the kernel by a blind run on the plane with the\n"
    "  strongest edges (the reference plane), then deblur every plane with that kernel by fast\n"
    "  non-blind deconvolution; right when the blur is the same throughout the stack.\n"
    "all planes, one kernel each: a blind run per plane (slowest), each plane warm-started from\n"
    "  the previous one unless 'warm start planes' is unticked."
)
#: The fixed choices of the region control; every Shapes layer of the viewer follows them.
REGIONS = (("auto", "auto"), ("full frame", "full"))
_REGION_TOOLTIP = (
    "Where the kernel is estimated (the whole frame is always deblurred).\n"
    "auto: the whole frame up to 512 x 512 pixels; on larger frames the 384 x 384 window\n"
    "  richest in strong edges.\n"
    "full frame: the whole frame, whatever its size (slow on large frames).\n"
    "A Shapes layer: the bounding box of its first shape (draw a rectangle over sharp,\n"
    "  high-contrast structure, at least twice the kernel size); on a stack it applies to every plane.\n"
    "When the region is smaller than the frame, the frame is deconvolved with the kernel found there."
)
_KERNEL_SIZE_TOOLTIP = (
    "Ticked: the blur kernel's size is measured from the image by short probe runs before the\n"
    "  blind fit (recorded in the results' metadata), so you need not guess it.\n"
    "Unticked: the size below is used. Err on the large side; the image must be at least twice as large.\n"
    "A layer that suggests a size (the bundled sample) sets it when chosen."
)


class DeblurControls(Container):
    """The controls of a deblurring run, following the layers of ``napari_viewer``.

    The controls are attributes (``image_layer``, ``region``, ``auto_kernel_size``,
    ``kernel_size``, ``kernel_extent``, ``method``, ``preset``, ``iterations``, ``device``,
    ``seed``, ``stack_mode``, ``warm_planes``); a subclass appends its own controls after them.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        # Set while the widget adds its own layers, which must not become the chosen image.
        self._adding_layers = False
        # Kernel-size controls: whether a change comes from the widget itself, whether the
        # size shown is the chosen layer's suggestion, and the layer the size was set for.
        self._syncing = False
        self._suggested = False
        self._size_layer: Any = None

        self.image_layer = ComboBox(
            name="image_layer",
            label="image",
            choices=self._image_layer_choices,
            tooltip="The Image layer to deblur (Labels, Points... are not offered). Never modified.",
        )
        self.region = ComboBox(name="region", choices=self._region_choices, tooltip=_REGION_TOOLTIP)
        # A check box has no label column in magicgui: its text says what it is.
        self.auto_kernel_size = CheckBox(
            name="auto_kernel_size",
            text="kernel size: auto (measured from the image)",
            value=True,
            tooltip=_KERNEL_SIZE_TOOLTIP,
        )
        self.kernel_size = SpinBox(
            name="kernel_size",
            label="kernel size, px",
            value=15,
            min=3,
            max=255,
            step=2,
            enabled=False,
            tooltip="Odd size in pixels of the blur kernel's support (untick 'auto' to set it). Err on the "
            "large side; the image must be at least twice as large.",
        )
        self.kernel_extent = FloatSpinBox(
            name="kernel_extent",
            label="kernel size, units",
            value=15.0,
            min=0.0,
            max=1e9,
            enabled=False,
            tooltip="The kernel's size in the layer's units (its scale): converted to the odd number of "
            "pixels above that spans it.",
        )
        self.kernel_extent.native.setDecimals(3)
        self.method = ComboBox(
            name="method",
            choices=[(_METHOD_LABELS.get(name, name), name) for name in METHOD_SCALES],
            value="self-msnet",
            tooltip="Self-MSNet: multi-scale generator (scales 1/8 to 1). "
            "Self-MSNet-S: single scale (faster, for small images or kernels).",
        )
        self.preset = ComboBox(
            name="preset",
            choices=list(PRESETS),
            value="fast",
            tooltip="fast: about a minute for 255 x 255 on a CPU core. "
            "balanced: about twice the iterations and time of fast, for a better kernel. "
            "quality: the paper's settings (128 channels, 2000 iterations; use a GPU).",
        )
        self.iterations = SpinBox(
            name="iterations",
            value=0,
            min=0,
            max=100_000,
            tooltip="Number of iterations; 0 uses the preset's.",
        )
        self.device = ComboBox(
            name="device",
            choices=[(label, value) for value, label in available_devices()],
            value="auto",
            tooltip="auto: the first CUDA GPU, else Apple MPS, else the CPU.",
        )
        self.seed = SpinBox(
            name="seed", value=0, min=0, max=2**31 - 1, tooltip="Seeds the network and its input noise."
        )
        self.stack_mode = ComboBox(
            name="stack_mode",
            label="stack",
            choices=[(_STACK_CHOICE_LABELS[name], name) for name in STACK_CHOICES],
            value="current",
            tooltip=_STACK_MODE_TOOLTIP,
        )
        self.warm_planes = CheckBox(
            name="warm_planes",
            label="warm start planes",
            value=True,
            tooltip="One kernel per plane: start each plane from the previous plane's network and kernel, "
            "with half the iterations (neighbouring planes differ little). "
            "Untick for independent runs from scratch.",
        )
        self.extend(
            [
                self.image_layer,
                self.region,
                self.auto_kernel_size,
                self.kernel_size,
                self.kernel_extent,
                self.method,
                self.preset,
                self.iterations,
                self.device,
                self.seed,
                self.stack_mode,
                self.warm_planes,
            ]
        )

        self.image_layer.changed.connect(self._on_layer_changed)
        self.stack_mode.changed.connect(self._on_layer_changed)
        self.auto_kernel_size.changed.connect(self._on_auto_kernel_size)
        self.kernel_size.changed.connect(self._on_kernel_size)
        self.kernel_extent.changed.connect(self._on_kernel_extent)
        layers = self.viewer.layers
        for event in (layers.events.inserted, layers.events.removed, layers.events.moved):
            event.connect(self.reset_choices)
        # Choices are labelled with layer names, so a rename must refresh them too.
        layers.events.inserted.connect(self._watch_name)
        layers.events.removed.connect(self._unwatch_name)
        for layer in layers:
            layer.events.name.connect(self.reset_choices)
        layers.selection.events.active.connect(self._on_active_layer)
        self.reset_choices()
        self._on_active_layer()
        self._on_layer_changed()

    # -- layer choice ---------------------------------------------------------------------

    def _image_layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _region_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [*REGIONS, *((layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Shapes))]

    def _watch_name(self, event: Any) -> None:
        event.value.events.name.connect(self.reset_choices)

    def _unwatch_name(self, event: Any) -> None:
        event.value.events.name.disconnect(self.reset_choices)

    def reset_choices(self, *_: Any) -> None:
        """Rebuild the layer choices (napari also calls this on layer changes), keeping the chosen layers."""
        # magicgui keeps a selection by its label, so a renamed layer would fall back to the first choice.
        chosen = {combo: combo.value for combo in (self.image_layer, self.region)}
        super().reset_choices()
        for combo, value in chosen.items():
            if combo.value is not value and any(choice is value for choice in combo.choices):
                combo.value = value

    def _on_active_layer(self, _event: Any = None) -> None:
        """Follow the active layer, except when it is one this widget just added."""
        active = self.viewer.layers.selection.active
        if self._adding_layers or not isinstance(active, Image):
            return
        if any(choice is active or choice == active for choice in self.image_layer.choices):
            self.image_layer.value = active

    def _on_layer_changed(self, _value: Any = None) -> None:
        layer = self.image_layer.value
        is_stack = layer is not None and describe_layer(layer).is_stack
        self.stack_mode.visible = is_stack
        self.warm_planes.visible = is_stack and self.stack_mode.value == "per-plane"
        if layer is not self._size_layer:
            self._size_layer = layer
            self._kernel_size_for_layer(layer)

    # -- kernel size ---------------------------------------------------------------------------

    @contextmanager
    def _sync(self):
        """Changes the widget makes to its own kernel-size controls (not the user's)."""
        self._syncing, before = True, self._syncing
        try:
            yield
        finally:
            self._syncing = before

    def _pixel(self) -> PhysicalPixel | None:
        """The chosen layer's pixel size in its units (None: no layer, or plain pixels)."""
        layer = self.image_layer.value
        return None if layer is None else physical_pixel(describe_layer(layer))

    def _kernel_size_for_layer(self, layer: Any) -> None:
        """A newly chosen layer: its physical units, and its suggested size if it has one.

        A suggestion replaces the size (and unticks auto); choosing a layer without one
        afterwards goes back to auto, unless the user changed the size in between.
        """
        pixel = self._pixel()
        self.kernel_extent.visible = pixel is not None
        if pixel is not None:
            self.kernel_extent.label = f"kernel size, {pixel.unit}"
            with self._sync():
                self.kernel_extent.step = 2 * pixel.size
        suggestion = None if layer is None else suggested_kernel_size(layer)
        with self._sync():
            if suggestion is not None:
                self.kernel_size.value = suggestion
                self.auto_kernel_size.value = False
                self._suggested = True
            elif self._suggested:
                self.auto_kernel_size.value = True
                self._suggested = False
        self._show_extent()
        self._enable_size_controls()

    def _enable_size_controls(self) -> None:
        manual = not self.auto_kernel_size.value
        self.kernel_size.enabled = manual
        self.kernel_extent.enabled = manual

    def _show_extent(self) -> None:
        """Show the pixel size in the layer's units too."""
        pixel = self._pixel()
        if pixel is not None:
            with self._sync():
                self.kernel_extent.value = int(self.kernel_size.value) * pixel.size

    def _on_auto_kernel_size(self, _value: Any = None) -> None:
        if not self._syncing:
            self._suggested = False
        self._enable_size_controls()

    def _on_kernel_size(self, _value: Any = None) -> None:
        if self._syncing:
            return
        self._suggested = False
        self._show_extent()

    def _on_kernel_extent(self, value: float) -> None:
        """A size typed in the layer's units: the odd number of pixels that spans it."""
        if self._syncing:
            return
        pixel = self._pixel()
        if pixel is None or not value > 0:
            return
        self._suggested = False
        with self._sync():
            self.kernel_size.value = min(pixels_for_extent(value, pixel), int(self.kernel_size.max))

    def _show_measured_size(self, size: int | tuple[int, int]) -> None:
        """Show the size a run measured (greyed while auto is ticked; the start if it is unticked)."""
        with self._sync():
            self.kernel_size.value = min(size if isinstance(size, int) else max(size), int(self.kernel_size.max))
        self._show_extent()

    def kernel_size_request(self) -> int | str:
        """What the controls ask for: ``"auto"``, or the odd size in pixels."""
        return AUTO if self.auto_kernel_size.value else int(self.kernel_size.value)

    # -- the job -------------------------------------------------------------------------------

    def build_job(self) -> DeblurJob:
        """Check the controls and the chosen layer; the job to run (:func:`.job.make_job`).

        Raises
        ------
        ValueError, TypeError
            With a message for the user (no layer, even kernel size, kernel too large for the
            image, unsupported dtype, NaN in in-memory data, no such device...).
        """
        iterations = int(self.iterations.value)
        return make_job(
            self.image_layer.value,
            region=self.region.value,
            kernel_size=self.kernel_size_request(),
            kernel_size_source="layer metadata" if self._suggested else "given",
            method=self.method.value,
            preset=self.preset.value,
            iterations=iterations if iterations > 0 else None,
            device=self.device.value,
            seed=int(self.seed.value),
            stack_mode=self.stack_mode.value,
            warm_planes=bool(self.warm_planes.value),
            world_point=self.viewer.dims.point,
        )
