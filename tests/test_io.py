"""Reading and writing microscopy files: axes, pixel sizes, plane views, OME-Zarr."""

from __future__ import annotations

import json
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_selfmsnet import io


@pytest.fixture
def imagej_stack(tmp_path, rng):
    """A ZYX ImageJ hyperstack, 0.2 µm pixels, 0.5 µm Z spacing."""
    data = (rng.random((3, 20, 30)) * 1000).astype(np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(
        path, data, imagej=True, resolution=(5.0, 5.0), metadata={"axes": "ZYX", "spacing": 0.5, "unit": "micron"}
    )
    return path, data


class TestReadImageWithMetadata:
    def test_imagej_stack(self, imagej_stack):
        path, data = imagej_stack
        image, meta = io.read_image_with_metadata(path)
        np.testing.assert_array_equal(image, data)
        assert meta.axes == "ZYX" and meta.shape == (3, 20, 30) and meta.dtype == "<u2"
        assert meta.pixel_size == pytest.approx((0.2, 0.2))
        assert meta.z_spacing == 0.5 and meta.unit == "µm" and meta.source == "imagej-tiff"

    def test_lazy_reads_one_page_per_plane(self, imagej_stack):
        path, data = imagej_stack
        image, meta = io.read_image_with_metadata(path, lazy=True)
        assert not isinstance(image, np.ndarray)
        assert image.chunks[0] == (1, 1, 1)  # one task per page
        np.testing.assert_array_equal(np.asarray(image[2]), data[2])

    def test_metadata_alone_matches(self, imagej_stack):
        path, _ = imagej_stack
        assert io.read_metadata(path) == io.read_image_with_metadata(path)[1]

    def test_ome_tiff(self, tmp_path):
        data = np.zeros((2, 3, 16, 24), np.uint16)
        path = tmp_path / "x.ome.tif"
        tifffile.imwrite(
            path, data, ome=True, photometric="minisblack",
            metadata={"axes": "TZYX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.15, "PhysicalSizeZ": 1.0, "PhysicalSizeXUnit": "nm", "PhysicalSizeYUnit": "nm"},
        )  # fmt: skip
        meta = io.read_metadata(path)
        assert meta.axes == "TZYX" and meta.source == "ome-tiff"
        assert meta.pixel_size == (0.15, 0.1) and meta.unit == "nm" and meta.z_spacing == 1.0

    def test_plain_tiff_resolution_in_cm(self, tmp_path):
        path = tmp_path / "plain.tif"
        tifffile.imwrite(
            path, np.zeros((10, 12), np.float32), resolution=(10000.0, 5000.0), resolutionunit="CENTIMETER"
        )
        meta = io.read_metadata(path)
        assert meta.source == "tiff" and meta.unit == "µm"
        assert meta.pixel_size == pytest.approx((2.0, 1.0))  # (Y, X)

    def test_plain_tiff_without_resolution(self, tmp_path):
        path = tmp_path / "plain.tif"
        tifffile.imwrite(path, np.zeros((2, 10, 12), np.uint8), photometric="minisblack", metadata=None)
        meta = io.read_metadata(path)
        assert meta.pixel_size is None and meta.unit is None
        assert meta.axes.endswith("YX") and len(meta.axes) == 3

    def test_png_and_rgb_jpeg(self, tmp_path, rng):
        iio.imwrite(tmp_path / "g.png", (rng.random((10, 12)) * 255).astype(np.uint8))
        iio.imwrite(tmp_path / "c.jpg", (rng.random((10, 12, 3)) * 255).astype(np.uint8))
        grey, gmeta = io.read_image_with_metadata(tmp_path / "g.png")
        rgb, cmeta = io.read_image_with_metadata(tmp_path / "c.jpg")
        assert (gmeta.axes, gmeta.source, grey.shape) == ("YX", "png", (10, 12))
        assert (cmeta.axes, cmeta.source, rgb.shape) == ("YXS", "jpeg", (10, 12, 3))

    def test_axes_override(self, imagej_stack):
        path, _ = imagej_stack
        assert io.read_metadata(path, axes="tyx").axes == "TYX"

    @pytest.mark.parametrize(
        ("axes", "message"),
        [("YX", r"name 2 dimensions but the image has 3"), ("ZZX", "repeat a letter"), ("ZYQ", "must contain Y and X")],
    )
    def test_bad_axes_override(self, imagej_stack, axes, message):
        path, _ = imagej_stack
        with pytest.raises(ValueError, match=message):
            io.read_metadata(path, axes=axes)

    def test_unsupported_suffix(self, tmp_path):
        path = tmp_path / "x.bmp"
        path.write_bytes(b"BM")
        with pytest.raises(ValueError, match=r"unsupported file type '\.bmp'"):
            io.read_image_with_metadata(path)

    def test_missing_file(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="no such image file"):
            io.read_image_with_metadata(tmp_path / "nope.tif")

    @pytest.mark.parametrize("name", ["x.png", "x.jpg", "x.tif"])
    def test_empty_file_says_so(self, tmp_path, name):
        (tmp_path / name).write_bytes(b"")
        for read in (io.read_image_with_metadata, io.read_metadata, io.read_image):
            with pytest.raises(ValueError, match=r"x\.\w+: the file is empty \(0 bytes\)"):
                read(tmp_path / name)

    @pytest.mark.parametrize(("name", "kind"), [("x.png", "PNG"), ("x.jpg", "JPEG")])
    def test_corrupt_file_says_so_and_not_to_install_plugins(self, tmp_path, rng, name, kind):
        iio.imwrite(tmp_path / name, (rng.random((16, 16)) * 255).astype(np.uint8))
        (tmp_path / name).write_bytes((tmp_path / name).read_bytes()[:30])  # truncated
        for read in (io.read_image_with_metadata, io.read_metadata):
            with pytest.raises(ValueError, match=f"cannot decode it as a {kind} image: the file is corrupt") as info:
                read(tmp_path / name)
            assert "pip install" not in str(info.value)


    @pytest.mark.parametrize(
        ("content", "expected"),
        [
            (b"hello, a text file", "the file is not a TIFF file (it does not start with a TIFF header); check that"),
            (b"\x89PNG\r\n\x1a\n and the rest", "the file holds a PNG image, not a TIFF; rename it to x.png"),
            (b"II*\x00", "the file starts as a TIFF but is cut short; save or export the image again as TIFF"),
        ],
    )
    def test_a_tif_that_tifffile_cannot_parse_says_what_it_is_and_what_to_do(self, tmp_path, content, expected):
        # Not tifffile's "not a TIFF file: header=b'hell'".
        (tmp_path / "x.tif").write_bytes(content)
        for read in (io.read_image_with_metadata, io.read_metadata, io.read_image):
            with pytest.raises(ValueError, match=r"x\.tif: cannot read it as a TIFF image: ") as info:
                read(tmp_path / "x.tif")
            assert expected in str(info.value) and "header=" not in str(info.value), info.value


class TestAlphaIsLeftOut:
    def test_rgba_png(self, tmp_path, rng):
        rgba = (rng.random((10, 12, 4)) * 255).astype(np.uint8)
        iio.imwrite(tmp_path / "a.png", rgba)
        image, meta = io.read_image_with_metadata(tmp_path / "a.png")
        np.testing.assert_array_equal(image, rgba[..., :3])
        assert (meta.axes, meta.shape) == ("YXS", (10, 12, 3)) and "RGBA: its alpha channel was left out" in meta.notes[0]
        assert io.read_metadata(tmp_path / "a.png") == meta and meta.to_dict()["notes"] == list(meta.notes)

    def test_grey_alpha_png(self, tmp_path, rng):
        grey_alpha = (rng.random((10, 12, 2)) * 255).astype(np.uint8)
        iio.imwrite(tmp_path / "a.png", grey_alpha)
        image, meta = io.read_image_with_metadata(tmp_path / "a.png")
        np.testing.assert_array_equal(image, grey_alpha[..., 0])
        assert (meta.axes, meta.shape) == ("YX", (10, 12)) and "grey and alpha" in meta.notes[0]

    def test_rgba_tiff_stack_stays_lazy(self, tmp_path, rng):
        data = (rng.random((3, 10, 12, 4)) * 255).astype(np.uint8)
        tifffile.imwrite(tmp_path / "s.tif", data, photometric="rgb", metadata={"axes": "ZYXS"})
        image, meta = io.read_image_with_metadata(tmp_path / "s.tif", lazy=True)
        assert hasattr(image, "compute") and image.shape == (3, 10, 12, 3) and meta.axes == "ZYXS"
        np.testing.assert_array_equal(np.asarray(image), data[..., :3])
        assert len(io.Planes(image, meta.axes)) == 3  # planes, not 4 sample "planes"


class TestDtypesAsStored:
    @pytest.mark.parametrize("dtype", ["int64", ">u2", ">f4"])
    def test_int64_and_big_endian_tiffs(self, tmp_path, rng, dtype):
        data = (rng.random((10, 12)) * 1000).astype(dtype)
        tifffile.imwrite(tmp_path / "x.tif", data, byteorder=np.dtype(dtype).byteorder.replace("=", "<"))
        image, meta = io.read_image_with_metadata(tmp_path / "x.tif")
        np.testing.assert_array_equal(image, data)
        assert np.dtype(meta.dtype).newbyteorder("=") == np.dtype(dtype).newbyteorder("=")


class TestPlanes:
    def test_flattens_stack_axes_in_order(self):
        data = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
        planes = io.Planes(data, "TZYX")
        assert planes.shape == (6, 4, 5) and planes.stack_axes == "TZ" and planes.output_axes == "TZYX"
        np.testing.assert_array_equal(planes[4], data[1, 1])
        np.testing.assert_array_equal(np.asarray(planes), data.reshape(6, 4, 5))

    def test_rgb_samples_stay_in_the_plane_and_move_last(self):
        data = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # Z, S (planar RGB), Y, X
        planes = io.Planes(data, "ZSYX")
        assert planes.shape == (2, 4, 5, 3) and planes.output_axes == "ZYXS"
        np.testing.assert_array_equal(planes[1], np.moveaxis(data[1], 0, -1))

    def test_channels_are_stack_axes(self):
        planes = io.Planes(np.zeros((3, 4, 5)), "CYX")
        assert planes.shape == (3, 4, 5) and planes.stack_axes == "C"

    def test_writes_through_with_another_stack_order(self):
        target = np.zeros((3, 2, 4, 5))  # Z, T, Y, X
        planes = io.Planes(target, "ZTYX", stack_axes="TZ")
        planes[4] = np.ones((4, 5))  # T=1, Z=1
        assert target[1, 1].sum() == 20 and target.sum() == 20

    def test_index_errors(self):
        planes = io.Planes(np.zeros((3, 4, 5)), "ZYX")
        with pytest.raises(IndexError, match="plane 3 out of range for 3 planes"):
            planes[3]
        with pytest.raises(TypeError, match="indexed by one plane number"):
            planes[0:2]
        with pytest.raises(ValueError, match="stack_axes 'T' must order the stack axes 'Z'"):
            io.Planes(np.zeros((3, 4, 5)), "ZYX", stack_axes="T")


def _meta(axes, shape, **kwargs):
    return io.ImageMetadata(axes=axes, shape=shape, dtype="<f4", **kwargs)


class TestWriting:
    def test_imagej_round_trip(self, tmp_path, imagej_stack):
        path, data = imagej_stack
        meta = io.read_metadata(path)
        io.write_image(tmp_path / "out.tif", data * 2.0, meta)
        image, back = io.read_image_with_metadata(tmp_path / "out.tif")
        assert image.dtype == np.float32 and back.source == "imagej-tiff"
        np.testing.assert_array_equal(image, data * 2.0)
        assert (back.axes, back.pixel_size, back.z_spacing, back.unit) == ("ZYX", pytest.approx((0.2, 0.2)), 0.5, "µm")

    def test_ome_round_trip(self, tmp_path):
        meta = _meta(
            "TZYX", (2, 3, 8, 9), pixel_size=(0.3, 0.2), z_spacing=1.5, unit="µm", time_interval=2.0, source="ome-tiff"
        )
        io.write_image(tmp_path / "o.tif", np.ones(meta.shape), meta)
        back = io.read_metadata(tmp_path / "o.tif")
        assert back.source == "ome-tiff" and back.axes == "TZYX"
        assert back.pixel_size == pytest.approx((0.3, 0.2)) and back.z_spacing == 1.5 and back.unit == "µm"
        assert back.time_interval == 2.0
        # The resolution tags carry the pixel size too (pixels per cm), for readers without OME.
        with tifffile.TiffFile(tmp_path / "o.tif") as tif:
            assert tif.pages[0].tags["XResolution"].value[0] / tif.pages[0].tags["XResolution"].value[
                1
            ] == pytest.approx(5e4)

    def test_axes_ome_cannot_hold_fall_back_to_shaped_tiff(self, tmp_path):
        meta = _meta("IQYX", (2, 2, 8, 9), source="tiff")
        io.write_image(tmp_path / "s.tif", np.zeros(meta.shape), meta)
        back = io.read_metadata(tmp_path / "s.tif")
        assert back.axes == "IQYX" and back.shape == (2, 2, 8, 9)

    def test_rgb_float(self, tmp_path):
        meta = _meta("YXS", (8, 9, 3), source="jpeg")
        data = np.random.default_rng(0).random((8, 9, 3))
        io.write_image(tmp_path / "c.tif", data, meta)
        image, back = io.read_image_with_metadata(tmp_path / "c.tif")
        assert back.axes == "YXS" and image.dtype == np.float32
        np.testing.assert_allclose(image, data, rtol=1e-6)

    def test_shape_mismatch(self, tmp_path):
        with pytest.raises(ValueError, match=r"data shape \(2, 2\) does not match the metadata's \(8, 9\)"):
            io.write_image(tmp_path / "x.tif", np.zeros((2, 2)), _meta("YX", (8, 9)))

    def test_create_and_reopen_from_elsewhere(self, tmp_path):
        meta = _meta("ZYX", (3, 8, 9), source="ome-tiff")
        created = io.create_image(tmp_path / "x.tif", meta)
        created[0] = np.full((8, 9), 1.0)
        del created
        reopened = io.open_image(tmp_path / "x.tif", meta)
        reopened[2] = np.full((8, 9), 3.0)
        reopened.data.flush()
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "x.tif")[:, 0, 0], [1.0, 0.0, 3.0])

    def test_write_result(self, tmp_path, imagej_stack):
        path, data = imagej_stack
        meta = io.read_metadata(path)
        kernels = np.full((3, 5, 5), 1 / 25, np.float32)
        paths = io.write_result(tmp_path / "out", "stack", data.astype(np.float32), kernels, meta, {"seed": 3})
        assert {p.name for p in paths.values()} == {"stack_deblurred.tif", "stack_kernel.tif", "stack.json"}
        kmeta = io.read_metadata(paths["kernel"])
        assert kmeta.axes == "ZYX" and kmeta.shape == (3, 5, 5) and kmeta.pixel_size == pytest.approx((0.2, 0.2))
        report = json.loads(paths["report"].read_text())
        assert report["seed"] == 3 and report["outputs"]["image"].endswith("stack_deblurred.tif")


class TestOmeZarr:
    def test_round_trip_metadata(self, tmp_path):
        zarr = pytest.importorskip("zarr")
        meta = _meta("ZTYX", (3, 2, 8, 9), pixel_size=(0.3, 0.2), z_spacing=1.5, unit="µm", time_interval=4.0)
        target = io.create_image(tmp_path / "x.ome.zarr", meta)
        target[3] = np.ones((8, 9))  # Z=1, T=1 in the input's plane order
        group = zarr.open_group(str(tmp_path / "x.ome.zarr"), mode="r")
        (multiscale,) = group.attrs["multiscales"]
        assert [a["name"] for a in multiscale["axes"]] == ["t", "z", "y", "x"]  # NGFF order
        assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [4.0, 1.5, 0.3, 0.2]
        assert multiscale["axes"][-1]["unit"] == "micrometer"
        array = group["0"]
        assert array.shape == (2, 3, 8, 9) and array.chunks == (1, 1, 8, 9)
        assert array[1, 1].sum() == 72 and np.asarray(array).sum() == 72
        np.testing.assert_array_equal(io.open_image(tmp_path / "x.ome.zarr", meta)[3], np.ones((8, 9)))

    def test_rgb_samples_become_channels(self, tmp_path):
        zarr = pytest.importorskip("zarr")
        meta = _meta("YXS", (8, 9, 3))
        io.write_image(tmp_path / "c.ome.zarr", np.ones((8, 9, 3)), meta)
        group = zarr.open_group(str(tmp_path / "c.ome.zarr"), mode="r")
        assert [a["name"] for a in group.attrs["multiscales"][0]["axes"]] == ["c", "y", "x"]
        assert group["0"].shape == (3, 8, 9)

    def test_axes_ngff_cannot_hold(self, tmp_path):
        pytest.importorskip("zarr")
        with pytest.raises(ValueError, match=r"OME-Zarr \(NGFF 0.4\) holds axes T, C, Z, Y, X only.*'QYX'"):
            io.create_image(tmp_path / "q.ome.zarr", _meta("QYX", (2, 8, 9)))

    def test_missing_zarr_is_explained(self, tmp_path, monkeypatch):
        monkeypatch.setitem(sys.modules, "zarr", None)  # makes `import zarr` fail
        with pytest.raises(ImportError, match=r"needs the zarr package: pip install 'napari-selfmsnet\[ome-zarr\]'"):
            io.create_image(tmp_path / "x.ome.zarr", _meta("YX", (8, 9)))
