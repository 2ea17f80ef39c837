"""The napari-selfmsnet command: arguments, inputs, outputs, skip/overwrite, failures, demo."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from _tiny_run import FAST, KSIZE, counts
from scipy import ndimage, signal

from napari_selfmsnet import io
from napari_selfmsnet.batch.cli import build_parser, main
from napari_selfmsnet.batch.jobs import RunOptions, expand_inputs, plan_jobs


def _blurred(rng: np.random.Generator, shape: tuple[int, ...], peak: float = 1000.0) -> np.ndarray:
    """Blobs blurred by a small motion kernel, in counts: (..., 40, 40) from a larger object."""
    kernel = np.zeros((KSIZE, KSIZE))
    kernel[2, :] = 1.0 / KSIZE
    planes = []
    for _ in range(int(np.prod(shape[:-2]))):
        obj = ndimage.gaussian_filter((rng.random((shape[-2] + KSIZE - 1, shape[-1] + KSIZE - 1)) > 0.97) * 1.0, 1.0)
        planes.append(signal.convolve2d(obj, kernel, mode="valid"))
    out = np.stack(planes).reshape(shape)
    return out / out.max() * peak + 100


@pytest.fixture
def files(tmp_path, rng):
    """A ZYX ImageJ stack with pixel sizes, a grey PNG and an RGB JPEG."""
    folder = tmp_path / "in"
    folder.mkdir()
    stack = _blurred(rng, (3, 40, 40)).astype(np.uint16)
    tifffile.imwrite(
        folder / "stack.tif",
        stack,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.25),
        metadata={"axes": "ZYX", "spacing": 0.8, "unit": "micron"},
    )
    iio.imwrite(folder / "grey.png", _blurred(rng, (40, 40), 200).astype(np.uint8))
    rgb = np.stack([_blurred(rng, (40, 40), 200)] * 3, axis=-1).astype(np.uint8)
    iio.imwrite(folder / "colour.jpg", rgb)
    return folder


class TestArguments:
    @pytest.mark.parametrize(("text", "expected"), [("15", (15, 15)), ("15,21", (15, 21)), ("15x21", (15, 21))])
    def test_kernel_size(self, text, expected):
        args = build_parser().parse_args(["deblur", "x.tif", "--output-dir", "o", "--kernel-size", text])
        assert args.kernel_size == expected

    @pytest.mark.parametrize("text", ["14", "0", "a", "3,4,5"])
    def test_bad_kernel_size(self, capsys, text):
        with pytest.raises(SystemExit) as exit_info:
            main(["deblur", "x.tif", "--output-dir", "o", "--kernel-size", text])
        assert exit_info.value.code == 2
        assert "kernel size must be" in capsys.readouterr().err

    def test_bad_axes(self, capsys):
        with pytest.raises(SystemExit, match="2"):
            main(["deblur", "x.tif", "--output-dir", "o", "--kernel-size", "5", "--axes", "ZZX"])
        assert "axes must be distinct letters including Y and X" in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("text", "expected"),
        [("auto", "auto"), ("FULL", "full"), ("0,8,32,24", (0, 8, 32, 24)), (" 1, 2,30,40", (1, 2, 30, 40))],
    )
    def test_region(self, text, expected):
        args = build_parser().parse_args(
            ["deblur", "x.tif", "--output-dir", "o", "--kernel-size", "5", "--region", text]
        )
        assert args.region == expected

    @pytest.mark.parametrize(
        ("text", "why"),
        [
            ("middle", "got 'middle'"),
            ("1,2,3", "got 3 number"),
            ("1,2,3,4,5", "got 5 number"),
            ("a,b,c,d", "got 'a,b,c,d'"),
            ("-1,0,10,10", "TOP and LEFT must be >= 0"),
            ("0,0,0,10", "HEIGHT and WIDTH >= 1"),
        ],
    )
    def test_bad_region(self, capsys, text, why):
        with pytest.raises(SystemExit, match="2"):
            # "--region=" form: argparse takes a separate "-1,..." for an option.
            main(["deblur", "x.tif", "--output-dir", "o", "--kernel-size", "5", f"--region={text}"])
        err = capsys.readouterr().err
        assert "--region" in err and "region must be auto, full or TOP,LEFT,HEIGHT,WIDTH" in err and why in err

    @pytest.mark.parametrize("text", ["0", "-2", "two"])
    def test_bad_warm_iterations(self, capsys, text):
        with pytest.raises(SystemExit, match="2"):
            main(["deblur", "x.tif", "--output-dir", "o", "--kernel-size", "5", "--warm-iterations", text])
        assert "--warm-iterations: expected a positive integer" in capsys.readouterr().err

    def test_unknown_device(self, capsys):
        with pytest.raises(SystemExit, match="2"):
            main(["deblur", "x.tif", "--output-dir", "o", "--kernel-size", "5", "--device", "tpu"])
        assert "--device: unknown device 'tpu'" in capsys.readouterr().err

    def test_defaults(self):
        args = build_parser().parse_args(["deblur", "x.tif", "--output-dir", "o", "--kernel-size", "5"])
        assert (args.preset, args.method, args.stack_mode, args.seed, args.scheduler, args.overwrite) == (
            "fast",
            "self-msnet",
            "shared",
            0,
            None,
            False,
        )
        assert (args.region, args.warm_planes, args.warm_iterations) == ("auto", True, None)
        assert build_parser().parse_args(["demo"]).output_dir.name == "selfmsnet-demo"

    @pytest.mark.parametrize(
        ("command", "option"), [("demo", "--preset"), ("deblur", "--preset"), ("deblur", "--method")]
    )
    def test_docs_list_every_choice_the_parser_takes(self, command, option):
        # Read from the parser, so a preset added to the engine cannot be missing from the docs again.
        commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
        choices = next(a.choices for a in commands.choices[command]._actions if option in a.option_strings)
        docs = (Path(__file__).parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
        section = docs.split(f"## `{command}`", 1)[1].split("\n## ", 1)[0]
        row = next(line for line in section.splitlines() if line.startswith(f"| `{option} "))
        listed = set(re.findall(r"`([^`]+)`", row.split(" | ")[-1]))
        assert set(choices) <= listed, (sorted(choices), row)


class TestInputsAndPlanning:
    def test_expand_files_folders_globs(self, files):
        found, problems, _ = expand_inputs(
            [
                str(files / "stack.tif"),
                str(files),
                str(files / "*.png"),
                str(files / "none*.tif"),
                str(files / "gone.tif"),
            ],
            files,
        )
        assert [f.name for f in found] == ["stack.tif", "colour.jpg", "grey.png"]  # no repeats
        assert problems == [f"{files / 'none*.tif'}: no such file matches", f"{files / 'gone.tif'}: no such file"]

    def test_refuses_outputs_that_are_inputs_and_collisions(self, files, tmp_path):
        (files / "grey_kernel.tif").write_bytes(b"")
        iio.imwrite(files / "grey.jpg", np.zeros((8, 8), np.uint8))
        todo, skipped, refused = plan_jobs(
            [files / "grey.png", files / "grey.jpg", files / "grey_kernel.tif"],
            files,
            RunOptions((5, 5)),
            overwrite=False,
        )
        reasons = {f.name: why for f, why in refused}
        # grey.png and grey.jpg would both write grey_kernel.tif, which is an input here.
        assert "grey_kernel.tif is an input file" in reasons["grey.png"] and "is an input file" in reasons["grey.jpg"]
        assert [j.input.name for j in todo] == ["grey_kernel.tif"]
        todo, _, refused = plan_jobs(
            [files / "grey.jpg", files / "grey.png"], tmp_path / "out", RunOptions((5, 5)), overwrite=False
        )
        assert [f.name for f, _ in refused] == ["grey.png"] and "same name stem as" in refused[0][1]

    def test_ome_tiff_stem(self, tmp_path):
        todo, _, _ = plan_jobs([tmp_path / "cells.ome.tif"], tmp_path / "o", RunOptions((5, 5)), overwrite=False)
        assert todo[0].outputs["image"].name == "cells_deblurred.tif"


class TestDeblurCommand:
    def test_stack_png_and_rgb_jpeg(self, files, tmp_path, capsys):
        out = tmp_path / "out"
        assert main(["deblur", str(files), "--output-dir", str(out), *FAST]) == 0
        assert counts(capsys.readouterr().out) == (3, 0, 0)
        # The stack: float32, same shape, axes and pixel sizes as the input.
        image, meta = io.read_image_with_metadata(out / "stack_deblurred.tif")
        assert image.shape == (3, 40, 40) and image.dtype == np.float32 and meta.axes == "ZYX"
        assert (
            meta.pixel_size == pytest.approx((0.25, 0.25))
            and meta.z_spacing == pytest.approx(0.8)
            and meta.unit == "µm"
        )
        kernel = tifffile.imread(out / "stack_kernel.tif")
        assert (
            kernel.shape == (KSIZE, KSIZE) and kernel.dtype == np.float32 and kernel.sum() == pytest.approx(1, abs=1e-4)
        )
        report = json.loads((out / "stack.json").read_text())
        assert report["mode"] == "shared" and report["planes"] == 3 and report["device"] == "cpu"
        assert 0 <= report["params"]["reference_plane"] < 3 and np.isfinite(report["final_loss"])
        assert report["options"]["seed"] == 0 and report["input_metadata"]["axes"] == "ZYX"
        # Deblurring keeps the intensity units: the mean stays near the input's.
        original = tifffile.imread(files / "stack.tif")
        assert abs(image.mean() - original.mean()) < 0.2 * original.mean()
        assert tifffile.imread(out / "grey_deblurred.tif").shape == (40, 40)
        colour, cmeta = io.read_image_with_metadata(out / "colour_deblurred.tif")
        assert colour.shape == (40, 40, 3) and cmeta.axes == "YXS"
        assert not list(out.glob("*.partial*"))

    def test_per_plane_tzyx(self, tmp_path, rng):
        path = tmp_path / "tz.tif"
        tifffile.imwrite(path, _blurred(rng, (2, 2, 40, 40)).astype(np.uint16), imagej=True, metadata={"axes": "TZYX"})
        assert main(["deblur", str(path), "--output-dir", str(tmp_path / "o"), "--stack-mode", "per-plane", *FAST]) == 0
        kernels, kmeta = io.read_image_with_metadata(tmp_path / "o" / "tz_kernel.tif")
        assert kernels.shape == (2, 2, KSIZE, KSIZE) and kmeta.axes == "TZYX"
        np.testing.assert_allclose(kernels.sum(axis=(-1, -2)), 1.0, atol=1e-4)
        report = json.loads((tmp_path / "o" / "tz.json").read_text())
        assert report["mode"] == "per-plane" and len(report["params"]["plane_params"]) == 4

    def test_region_is_used_and_recorded(self, files, tmp_path):
        out = tmp_path / "out"
        assert main(["deblur", str(files / "grey.png"), "--output-dir", str(out), "--region", "4,6,32,30", *FAST]) == 0
        # The kernel comes from the region; the whole frame is deblurred with it.
        assert tifffile.imread(out / "grey_deblurred.tif").shape == (40, 40)
        report = json.loads((out / "grey.json").read_text())
        assert report["params"]["region"] == [4, 6, 32, 30]
        assert report["options"]["region"] == [4, 6, 32, 30]

    def test_region_outside_a_file_fails_that_file(self, files, tmp_path, capsys):
        out = tmp_path / "out"
        status = main(["deblur", str(files / "grey.png"), "--output-dir", str(out), "--region", "30,30,20,20", *FAST])
        assert status == 1
        assert "does not lie inside the 40x40 image" in capsys.readouterr().err
        assert not list(out.glob("grey*"))

    @pytest.mark.parametrize(
        ("flags", "iterations", "warm"),
        [
            (["--warm-iterations", "2"], [3, 2, 2], [False, True, True]),
            (["--no-warm-start", "--warm-iterations", "2"], [3, 3, 3], [False, False, False]),
        ],
        ids=["warm", "cold"],
    )
    def test_per_plane_warm_start(self, files, tmp_path, flags, iterations, warm):
        out = tmp_path / "out"
        args = ["deblur", str(files / "stack.tif"), "--output-dir", str(out), "--stack-mode", "per-plane", *flags]
        assert main([*args, *FAST]) == 0
        report = json.loads((out / "stack.json").read_text())
        planes = report["params"]["plane_params"]
        assert [plane["config"]["iterations"] for plane in planes] == iterations
        assert [plane["warm_started"] for plane in planes] == warm
        assert report["params"]["warm_planes"] is warm[-1]
        assert report["options"]["warm_iterations"] == 2

    def test_current_plane_and_axes_override(self, tmp_path, rng):
        path = tmp_path / "t.tif"
        tifffile.imwrite(path, _blurred(rng, (3, 40, 40)).astype(np.float32), photometric="minisblack", metadata=None)
        args = [
            "deblur",
            str(path),
            "--output-dir",
            str(tmp_path / "o"),
            "--stack-mode",
            "current",
            "--plane",
            "2",
            "--axes",
            "TYX",
            *FAST,
        ]
        assert main(args) == 0
        image, meta = io.read_image_with_metadata(tmp_path / "o" / "t_deblurred.tif")
        assert image.shape == (40, 40) and meta.axes == "YX"
        report = json.loads((tmp_path / "o" / "t.json").read_text())
        assert report["params"]["plane"] == 2 and report["params"]["plane_index"] == {"T": 2}

    def test_plane_out_of_range_fails_that_file(self, tmp_path, rng, capsys):
        path = tmp_path / "t.tif"
        tifffile.imwrite(path, _blurred(rng, (2, 40, 40)).astype(np.float32), imagej=True, metadata={"axes": "ZYX"})
        assert main(["deblur", str(path), "--output-dir", str(tmp_path / "o"), "--plane", "5", *FAST]) == 1
        assert "--plane 5 is out of range" in capsys.readouterr().err

    def test_skip_then_overwrite(self, files, tmp_path, capsys):
        out = tmp_path / "out"
        png = str(files / "grey.png")
        assert main(["deblur", png, "--output-dir", str(out), *FAST]) == 0
        first = (out / "grey_deblurred.tif").stat().st_mtime_ns
        capsys.readouterr()
        assert main(["deblur", png, "--output-dir", str(out), *FAST]) == 0
        assert "skipped" in capsys.readouterr().out and (out / "grey_deblurred.tif").stat().st_mtime_ns == first
        assert main(["deblur", png, "--output-dir", str(out), "--overwrite", *FAST]) == 0
        assert (out / "grey_deblurred.tif").stat().st_mtime_ns != first
        # An incomplete earlier result (no report) is redone without --overwrite.
        (out / "grey.json").unlink()
        assert main(["deblur", png, "--output-dir", str(out), *FAST]) == 0
        assert (out / "grey.json").exists()

    def test_bad_file_among_good_ones(self, files, tmp_path, capsys):
        (files / "broken.tif").write_bytes(b"this is not a TIFF")
        out = tmp_path / "out"
        status = main(
            [
                "deblur",
                str(files / "broken.tif"),
                str(files / "grey.png"),
                str(files / "missing.png"),
                "--output-dir",
                str(out),
                *FAST,
            ]
        )
        captured = capsys.readouterr()
        assert status == 1
        assert "broken.tif: cannot read it as a TIFF image: the file is not a TIFF" in captured.err
        assert "missing.png: no such file" in captured.err
        assert counts(captured.out) == (1, 0, 2)
        assert (out / "grey_deblurred.tif").exists() and not list(out.glob("broken*"))

    def test_refuses_to_write_over_an_input(self, files, capsys):
        shutil.copy(files / "grey.png", files / "x.png")
        (files / "x_kernel.tif").write_bytes(b"precious")
        status = main(["deblur", str(files / "x.png"), str(files / "x_kernel.tif"), "--output-dir", str(files), *FAST])
        assert status == 1
        assert "is an input file" in capsys.readouterr().err
        assert (files / "x_kernel.tif").read_bytes() == b"precious"

    def test_ome_zarr_output(self, files, tmp_path):
        zarr = pytest.importorskip("zarr")
        out = tmp_path / "out"
        assert main(["deblur", str(files / "stack.tif"), "--output-dir", str(out), "--ome-zarr", *FAST]) == 0
        group = zarr.open_group(str(out / "stack_deblurred.ome.zarr"), mode="r")
        assert group["0"].shape == (3, 40, 40) and group["0"].dtype == np.float32
        scale = group.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
        assert scale == pytest.approx([0.8, 0.25, 0.25])
        assert (out / "stack_kernel.tif").exists() and (out / "stack.json").exists()


def test_console_script_runs(files, tmp_path):
    """The installed entry point, in its own process."""
    script = shutil.which("napari-selfmsnet") or pytest.skip("the console script is not installed")
    out = tmp_path / "out"
    proc = subprocess.run(
        [script, "deblur", str(files / "grey.png"), "--output-dir", str(out), *FAST],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert counts(proc.stdout) == (1, 0, 0)
    assert tifffile.imread(out / "grey_deblurred.tif").dtype == np.float32


def test_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), "--iterations", "3", "--device", "cpu", "--torch-threads", "1"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "PSNR against the sharp original" in printed and "dB" in printed
    from napari_selfmsnet.evaluation.sample import blurred_sample

    assert tifffile.imread(out / "demo_deblurred.tif").shape == blurred_sample().shape
    picture = iio.imread(out / "demo_comparison.png")
    # blurred | deblurred | kernel, labelled, enlarged for viewing: side_by_side of what was written
    # (its layout and labels are tested in test_demo.py).
    from napari_selfmsnet.batch.demo import side_by_side

    deblurred, kernel = tifffile.imread(out / "demo_deblurred.tif"), tifffile.imread(out / "demo_kernel.tif")
    written = side_by_side(blurred_sample(), deblurred, kernel)
    np.testing.assert_array_equal(picture, written)
    assert picture.shape[0] > 2 * blurred_sample().shape[0] and picture.dtype == np.uint8
    report = json.loads((out / "demo.json").read_text())
    assert report["scores"]["deblurred"]["psnr"] > 0
    # The run's warnings are reported (and printed on stderr), as for deblur.
    assert isinstance(report["warnings"], list)
    assert all(f"warning: {w}" in captured.err for w in report["warnings"])


def test_samples_are_fixed_and_read_only():
    """The demo's sample: the same pixels from make_case's fixed seed, shared read-only."""
    from napari_selfmsnet.evaluation.sample import (
        SAMPLE_KERNEL_SIZE,
        SAMPLE_PHOTONS,
        SAMPLE_SEED,
        SAMPLE_SHAPE,
        blurred_sample,
        sample_kernel,
        sharp_sample,
    )
    from napari_selfmsnet.evaluation.synth import make_case

    blurred, sharp, kernel = blurred_sample(), sharp_sample(), sample_kernel()
    assert blurred.dtype == np.uint16 and blurred.shape == SAMPLE_SHAPE == sharp.shape
    assert kernel.shape == (SAMPLE_KERNEL_SIZE, SAMPLE_KERNEL_SIZE) and kernel.sum() == pytest.approx(1, abs=1e-5)
    expected = make_case(
        SAMPLE_SHAPE, SAMPLE_SEED, kernel="motion", kernel_size=SAMPLE_KERNEL_SIZE, photons=SAMPLE_PHOTONS
    )
    np.testing.assert_array_equal(blurred, expected.blurred)
    with pytest.raises(ValueError, match="read-only"):
        blurred[0, 0] = 1


def _report(folder, stem):
    return json.loads((folder / f"{stem}.json").read_text())


class TestKernelSizeSeedAndOutputDir:
    """Arguments checked before any file is read or computed."""

    def test_kernel_size_is_auto_by_default_and_takes_auto(self):
        parse = build_parser().parse_args
        assert parse(["deblur", "x.tif", "--output-dir", "o"]).kernel_size == "auto"
        assert parse(["deblur", "x.tif", "--output-dir", "o", "--kernel-size", "AUTO"]).kernel_size == "auto"

    @pytest.mark.parametrize("text", ["1", "1,5", "3,1"])
    def test_kernel_size_below_3_is_refused_by_the_parser(self, capsys, text):
        with pytest.raises(SystemExit) as exit_info:
            main(["deblur", "x.tif", "--output-dir", "o", "--kernel-size", text])
        assert exit_info.value.code == 2
        assert "--kernel-size: kernel size must be odd and at least 3" in capsys.readouterr().err

    @pytest.mark.parametrize("text", [str(2**70), "-1", "x"])
    def test_seed_torch_cannot_take_is_refused_by_the_parser(self, capsys, text):
        with pytest.raises(SystemExit, match="2"):
            main(["deblur", "x.tif", "--output-dir", "o", f"--seed={text}"])
        assert "--seed: expected an integer from 0 to 2**63 - 1" in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("output", "expected"),
        [
            ("a_file", "--output-dir {a_file} is a file, not a folder; give the path of a folder"),
            ("a_file/out", "--output-dir {a_file}/out is inside {a_file}, which is a file, not a folder"),
        ],
    )
    def test_an_output_dir_that_is_a_file_is_refused_before_any_computation(
        self, files, tmp_path, capsys, monkeypatch, output, expected
    ):
        # Not the OS's bare "File exists" / "Not a directory": the message says which path is a file.
        (tmp_path / "a_file").write_text("")
        monkeypatch.setattr("napari_selfmsnet.batch.serial.process_file", pytest.fail)  # must never run
        with pytest.raises(SystemExit) as exit_info:
            main(["deblur", str(files), "--output-dir", str(tmp_path / output), *FAST])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert expected.format(a_file=tmp_path / "a_file") in err and "cannot write there" not in err, err

    def test_unwritable_output_dir_is_refused_before_any_computation(self, files, tmp_path, capsys, monkeypatch):
        def refuse(self, *args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(Path, "mkdir", refuse)
        monkeypatch.setattr("napari_selfmsnet.batch.serial.process_file", pytest.fail)  # must never run
        with pytest.raises(SystemExit) as exit_info:
            main(["deblur", str(files), "--output-dir", str(tmp_path / "out"), *FAST])
        assert exit_info.value.code == 2
        assert f"--output-dir {tmp_path / 'out'}: cannot write there (Permission denied)" in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("size", "method", "expected"),
        [
            ("7", "self-msnet", "--kernel-size 7,7 does not fit the 20x20 image with --method self-msnet"),
            ("auto", "self-msnet", "a kernel of at least 3 pixels does not fit the 20x20 image with --method"),
            ("11", "self-msnet-s", "--kernel-size 11,11 does not fit the 20x20 image with --method self-msnet-s"),
        ],
    )
    def test_a_kernel_that_cannot_fit_fails_its_file_at_once_in_cli_words(
        self, tmp_path, rng, capsys, monkeypatch, size, method, expected
    ):
        tifffile.imwrite(tmp_path / "small.tif", _blurred(rng, (20, 20)).astype(np.uint16))
        monkeypatch.setattr("napari_selfmsnet.batch.serial.deblur", pytest.fail)  # nothing is computed
        args = ["deblur", str(tmp_path / "small.tif"), "--output-dir", str(tmp_path / "o"), "--device", "cpu"]
        assert main([*args, "--kernel-size", size, "--method", method]) == 1
        err = capsys.readouterr().err
        assert expected in err and "kernel_size=" not in err and "method=" not in err
        assert "--method self-msnet-s" in err if method == "self-msnet" else "--kernel-size 9 or smaller" in err


class TestInputsTheEngineNowTakesOrRefusesClearly:
    @pytest.mark.parametrize("dtype", ["int64", ">u2", ">f4"])
    def test_int64_and_big_endian_tiffs(self, tmp_path, rng, dtype):
        path = tmp_path / "x.tif"
        data = _blurred(rng, (40, 40)).astype(dtype)
        tifffile.imwrite(path, data, byteorder=np.dtype(dtype).byteorder.replace("=", "<"))
        assert main(["deblur", str(path), "--output-dir", str(tmp_path / "o"), *FAST]) == 0
        assert tifffile.imread(tmp_path / "o" / "x_deblurred.tif").dtype == np.float32

    def test_values_a_float32_result_cannot_hold_fail_their_file_with_the_remedy(self, tmp_path, rng, capsys):
        tifffile.imwrite(tmp_path / "offset.tif", _blurred(rng, (40, 40)) / 1000 + 1e12)  # float64
        assert main(["deblur", str(tmp_path / "offset.tif"), "--output-dir", str(tmp_path / "o"), *FAST]) == 1
        assert "float32, the result's dtype, resolves steps of" in capsys.readouterr().err

    @pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n broken"])
    def test_empty_or_corrupt_png(self, tmp_path, capsys, content):
        (tmp_path / "x.png").write_bytes(content)
        assert main(["deblur", str(tmp_path / "x.png"), "--output-dir", str(tmp_path / "o"), *FAST]) == 1
        err = capsys.readouterr().err
        assert ("the file is empty" if not content else "the file is corrupt or not a PNG") in err
        assert "pip install" not in err
        assert err.count(str(tmp_path / "x.png")) == 1, err  # the reader's message names it already

    def test_a_text_file_named_tif_is_said_not_to_be_a_tiff(self, tmp_path, capsys):
        (tmp_path / "x.tif").write_text("hello")
        assert main(["deblur", str(tmp_path / "x.tif"), "--output-dir", str(tmp_path / "o"), *FAST]) == 1
        err = capsys.readouterr().err
        assert f"{tmp_path / 'x.tif'}: cannot read it as a TIFF image: the file is not a TIFF" in err, err
        assert "header=" not in err

    def test_a_reader_error_without_the_path_is_given_it(self, tmp_path, capsys):
        (tmp_path / "x.tif").write_bytes(b"II*\x00 not a TIFF")
        assert main(["deblur", str(tmp_path / "x.tif"), "--output-dir", str(tmp_path / "o"), *FAST]) == 1
        err = capsys.readouterr().err
        assert f"error: {tmp_path / 'x.tif'}: " in err and err.count(str(tmp_path / "x.tif")) == 1, err

    @pytest.mark.parametrize(("channels", "shape", "what"), [(4, (40, 40, 3), "RGBA"), (2, (40, 40), "grey and alpha")])
    def test_alpha_channel_is_left_out_with_a_warning(self, tmp_path, rng, capsys, channels, shape, what):
        grey = _blurred(rng, (40, 40), 200)
        colour = [grey, grey * 0.8, grey * 0.6][: channels - 1]
        data = np.stack([*colour, np.full_like(grey, 255)], axis=-1)
        iio.imwrite(tmp_path / "a.png", data.astype(np.uint8))
        assert main(["deblur", str(tmp_path / "a.png"), "--output-dir", str(tmp_path / "o"), *FAST]) == 0
        assert tifffile.imread(tmp_path / "o" / "a_deblurred.tif").shape == shape
        report = _report(tmp_path / "o", "a")
        assert report["warnings"][0].startswith(f"the file is {what}: its alpha channel was left out")
        assert report["input_metadata"]["notes"] == report["warnings"][:1]
        assert f"warning: {tmp_path / 'a.png'}: the file is {what}" in capsys.readouterr().err


class TestBadPlanesInFiles:
    @pytest.mark.parametrize("mode", ["shared", "per-plane"])
    def test_blank_and_nan_planes_are_passed_through_and_named(self, tmp_path, rng, capsys, mode):
        stack = _blurred(rng, (4, 40, 40)).astype(np.float32)
        stack[1] = 5.0
        stack[2, :4, :4] = np.nan
        tifffile.imwrite(tmp_path / "s.tif", stack, imagej=True, metadata={"axes": "ZYX"})
        args = ["deblur", str(tmp_path / "s.tif"), "--output-dir", str(tmp_path / "o"), "--stack-mode", mode]
        assert main([*args, "--plane", "2", *FAST]) == 0  # shared: plane 2 is asked for as the reference
        out = tifffile.imread(tmp_path / "o" / "s_deblurred.tif")
        np.testing.assert_array_equal(out[1:3], stack[1:3])
        assert np.isfinite(out[[0, 3]]).all()
        report = _report(tmp_path / "o", "s")
        assert report["params"]["passed_through_planes"] == [1, 2]
        passed = [w for w in report["warnings"] if "passed through unchanged" in w]
        assert [w.split(":")[0] for w in passed] == ["plane 1", "plane 2"]
        err = capsys.readouterr().err
        assert f"warning: {tmp_path / 's.tif'}: plane 1: image is constant" in err
        if mode == "shared":
            assert report["params"]["reference_plane"] in (0, 3)
            assert "plane 2, the reference plane asked for, cannot be deblurred" in report["warnings"][0]

    def test_current_mode_names_a_bad_plane_asked_for(self, tmp_path, rng, capsys):
        stack = _blurred(rng, (2, 40, 40)).astype(np.float32)
        stack[1] = np.nan
        tifffile.imwrite(tmp_path / "s.tif", stack, imagej=True, metadata={"axes": "ZYX"})
        args = ["deblur", str(tmp_path / "s.tif"), "--output-dir", str(tmp_path / "o"), "--stack-mode", "current"]
        assert main([*args, "--plane", "1", *FAST]) == 1
        assert "--plane 1 cannot be deblurred: image contains NaN" in capsys.readouterr().err


class TestRerunIntoTheInputFolder:
    def test_own_outputs_are_never_taken_as_inputs(self, files, capsys):
        assert main(["deblur", str(files / "grey.png"), "--output-dir", str(files), *FAST]) == 0
        capsys.readouterr()
        # The folder now holds grey_deblurred.tif, grey_kernel.tif and grey.json beside the inputs.
        assert main(["deblur", str(files), "--output-dir", str(files), *FAST]) == 0
        printed = capsys.readouterr()
        note = "left out 2 file(s) that are this command's own outputs (grey_deblurred.tif, grey_kernel.tif)"
        assert note in printed.out
        assert f"skipped {files / 'grey.png'}" in printed.out and counts(printed.out) == (2, 1, 0)
        assert not list(files.glob("*_deblurred_deblurred*")) and not list(files.glob("*kernel_deblurred*"))

    def test_a_glob_the_shell_expanded_leaves_out_the_outputs_of_its_other_files(self, files, capsys):
        # `deblur in/* --output-dir in` run twice: the shell names the first run's outputs.
        assert main(["deblur", str(files / "grey.png"), "--output-dir", str(files), *FAST]) == 0
        capsys.readouterr()
        shell_expanded = sorted(str(p) for p in files.iterdir())
        assert main(["deblur", *shell_expanded, "--output-dir", str(files), *FAST]) == 0
        printed = capsys.readouterr()
        note = "left out 3 file(s) that are this command's own outputs (grey.json, grey_deblurred.tif, grey_kernel.tif)"
        assert note in printed.out and "error" not in printed.err
        assert f"skipped {files / 'grey.png'}" in printed.out and counts(printed.out) == (2, 1, 0)
        assert not list(files.glob("*_deblurred_deblurred*")) and not list(files.glob("*kernel_deblurred*"))

    def test_an_output_named_as_a_file_is_taken(self, files, tmp_path):
        # A file named on purpose is an input, even if it looks like an output.
        assert main(["deblur", str(files / "grey.png"), "--output-dir", str(files), *FAST]) == 0
        found, _, left_out = expand_inputs([str(files / "grey_deblurred.tif"), str(files / "*.tif")], files)
        assert [f.name for f in found] == ["grey_deblurred.tif", "stack.tif"] and [f.name for f in left_out] == [
            "grey_kernel.tif"
        ]

    def test_partial_files_are_left_out(self, files):
        (files / "x_deblurred.partial.tif").write_bytes(b"")
        found, _, left_out = expand_inputs([str(files)], files)
        assert "x_deblurred.partial.tif" not in [f.name for f in found] and len(left_out) == 1


class TestWarningsAndProgress:
    def test_warnings_are_printed_reported_and_counted(self, files, tmp_path, capsys, monkeypatch):
        from napari_selfmsnet.engine import pipeline

        real = pipeline._run

        def doubtful(*args, **kwargs):
            result = yield from real(*args, **kwargs)
            result.warnings[:] = ["the kernel is doubtful: try a longer preset"]
            return result

        monkeypatch.setattr(pipeline, "_run", doubtful)
        out = tmp_path / "out"
        inputs = [str(files / "grey.png"), str(files / "colour.jpg")]
        assert main(["deblur", *inputs, "--output-dir", str(out), *FAST]) == 0
        printed = capsys.readouterr()
        assert f"warning: {files / 'grey.png'}: the kernel is doubtful: try a longer preset" in printed.err
        assert "2 deblurred (2 with warnings), 0 skipped, 0 failed" in printed.out
        assert _report(out, "grey")["warnings"] == ["the kernel is doubtful: try a longer preset"]

    def test_the_bar_follows_every_stage_and_ends_full(self, rng):
        import io as text_io

        from tqdm import tqdm

        from napari_selfmsnet import deblur_stack
        from napari_selfmsnet.batch.progress_bars import bar_callback

        shown = []
        stream = text_io.StringIO()
        with tqdm(file=stream, disable=False, mininterval=0) as bar:
            stages = bar_callback(bar, "x")

            def callback(record):
                stages(record)
                shown.append((bar.desc.removesuffix(": "), bar.n, bar.total))

            deblur_stack(
                _blurred(rng, (2, 40, 40)), KSIZE, mode="shared", nonblind_method="wiener", callback=callback,
                method="self-msnet-s", iterations=3, device="cpu",
            )  # fmt: skip
            stages.finish()
            assert bar.n == bar.total
        assert stages.stages == ["blind", "polish", "deconvolve", "planes"]
        # Every stage's own steps: the blind stage reports its last iteration, the planes their count.
        assert ("x: plane 1/2 blind", 3, 3) in shown or ("x: plane 2/2 blind", 3, 3) in shown
        assert shown[-1] == ("x: plane 2/2 planes", 2, 2)
        assert "<" in stream.getvalue()  # tqdm's elapsed<remaining: an ETA is shown

    def test_the_bar_restarts_at_each_stage_and_plane(self):
        import io as text_io

        from tqdm import tqdm

        from napari_selfmsnet import Progress
        from napari_selfmsnet.batch.progress_bars import StageBar

        bar = tqdm(file=text_io.StringIO(), disable=False)
        stages = StageBar(bar)
        for record in [
            Progress("size", 10, 240), Progress("size", 80, 240),  # ends early: the measure was found
            Progress("blind", 10, 12), Progress("blind", 12, 12),
            Progress("polish", 1, 10, plane=0, planes=2), Progress("polish", 1, 10, plane=1, planes=2),
        ]:  # fmt: skip
            stages(record)
        assert (bar.n, bar.total) == (1, 10) and stages.stages == ["size", "blind", "polish"]
        stages.finish()
        assert bar.n == 10


def _interrupt(tmp_path, rng, signum):
    """Start a long run in its own process, send ``signum`` once a plane is being deblurred."""
    import os
    import sys
    import time

    stack = _blurred(rng, (3, 40, 40)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    out = tmp_path / "o"
    args = [*FAST[:2], "--iterations", "100000", *FAST[4:]]
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_selfmsnet.batch.launch", "deblur", str(tmp_path / "s.tif"), "--output-dir", str(out),
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(out.glob("*.partial*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(2.0)  # into the blind run
    sent = time.monotonic()
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, time.monotonic() - sent, stdout, stderr, out


@pytest.mark.parametrize(("signame", "status"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_stops_the_run_cleanly(tmp_path, rng, signame, status):
    import signal

    code, seconds, stdout, stderr, out = _interrupt(tmp_path, rng, getattr(signal, signame))
    assert code == status, stderr
    assert "Traceback" not in stderr and f"stopped by {signame}: 1 file(s) interrupted and 0 not started" in stderr
    assert counts(stdout) == (0, 0, 0)
    assert not list(out.iterdir())  # no partial file, no output
    # The engine stops at its next record; the process then exits (a generous bound for a busy machine).
    assert seconds < 20, f"{seconds:.1f} s"


def test_a_stop_is_asked_of_the_engine_then_enforced_at_the_next_record():
    from napari_selfmsnet import Progress
    from napari_selfmsnet.batch.jobs import RunInterrupted
    from napari_selfmsnet.batch.serial import stopping_callback

    asked = []
    stop = [False]
    callback = stopping_callback(lambda record: asked.append(record.step), lambda: stop[0])
    assert callback(Progress("blind", 1, 9)) is False
    stop[0] = True
    assert callback(Progress("blind", 2, 9)) is True  # the engine's own stop first
    with pytest.raises(RunInterrupted):
        callback(Progress("polish", 1, 9))  # a stopped file is not kept: no need to wait for its stages
    assert asked == [1, 2, 1]
