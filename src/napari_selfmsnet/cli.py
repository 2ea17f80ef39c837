"""The ``napari-selfmsnet`` command: ``demo`` (the bundled sample) and ``deblur`` (your files).

See ``docs/cli.md`` for every option. Exit status: 0 when every input was deblurred or
skipped, 1 when at least one input failed (the others are still processed), 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import io
from .distributed import FileJob, Outcome, RunOptions
from .engine.config import METHOD_SCALES, PRESETS

__all__ = ["build_parser", "expand_inputs", "main", "plan_jobs"]

STACK_MODES = ("current", "shared", "per-plane")
NONBLIND_METHODS = ("sparse", "wiener", "richardson-lucy")


def _kernel_size(text: str) -> tuple[int, int]:
    """``"15"`` -> (15, 15); ``"15,21"`` or ``"15x21"`` -> (15, 21); odd and positive."""
    parts = text.lower().replace("x", ",").split(",")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"kernel size must be an odd integer or KH,KW, got {text!r}") from None
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or any(k < 1 or k % 2 == 0 for k in size):
        raise argparse.ArgumentTypeError(f"kernel size must be odd and positive (e.g. 15 or 15,21), got {text!r}")
    return size  # type: ignore[return-value]


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, with a message naming ``what`` was expected."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_plane_index = _int_at_least(0, "a plane number (0, 1, ...; planes start at 0)")


def _region(text: str) -> str | tuple[int, int, int, int]:
    """``"auto"``, ``"full"`` or ``"TOP,LEFT,HEIGHT,WIDTH"`` (pixels) -> the engine's ``region``."""
    value = text.strip().lower()
    if value in ("auto", "full"):
        return value
    usage = "region must be auto, full or TOP,LEFT,HEIGHT,WIDTH in pixels (e.g. 100,200,384,384)"
    try:
        numbers = tuple(int(p) for p in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{usage}, got {text!r}") from None
    if len(numbers) != 4:
        raise argparse.ArgumentTypeError(f"{usage}, got {len(numbers)} number(s) in {text!r}")
    top, left, height, width = numbers
    if top < 0 or left < 0 or height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"{usage}: TOP and LEFT must be >= 0, HEIGHT and WIDTH >= 1, got {text!r}")
    return numbers  # type: ignore[return-value]


def _axes(text: str) -> str:
    axes = text.strip().upper()
    if not axes.isalpha() or len(set(axes)) != len(axes) or "Y" not in axes or "X" not in axes:
        raise argparse.ArgumentTypeError(
            f"axes must be distinct letters including Y and X (e.g. ZYX, TCYX, YXS), got {text!r}"
        )
    return axes


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS), help="solver preset (default: fast)")
    parser.add_argument(
        "--iterations", type=_positive_int, default=None, help="iterations of the blind run (default: the preset's)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument(
        "--torch-threads", type=_positive_int, default=None,
        help="torch threads per process or Dask worker (default: torch's choice; on Dask, cores / workers); "
        "CPU results are reproducible for the same seed and thread count",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``napari-selfmsnet`` (subcommands ``demo`` and ``deblur``)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="napari-selfmsnet",
        description="Blind deblurring with Self-MSNet: the sharp image and the blur kernel from one blurred image.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="deblur the bundled microscopy-like sample and show the result")
    demo.add_argument(
        "--output-dir",
        type=Path,
        default=Path("selfmsnet-demo"),
        help="folder for the results (default: ./selfmsnet-demo)",
    )
    _add_engine_options(demo)

    run = commands.add_parser("deblur", help="deblur TIFF / OME-TIFF / PNG / JPEG files")
    run.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders or glob patterns (quote globs)")
    run.add_argument(
        "--kernel-size",
        type=_kernel_size,
        required=True,
        help="odd kernel size K or KH,KW: a little larger than the blur",
    )
    run.add_argument("--output-dir", type=Path, required=True, help="folder for the results (created if missing)")
    run.add_argument(
        "--method",
        default="self-msnet",
        choices=sorted(METHOD_SCALES),
        help="self-msnet (multi-scale, default) or self-msnet-s (one scale)",
    )
    _add_engine_options(run)
    run.add_argument(
        "--seed", type=int, default=0, help="random seed (default: 0); the same seed gives the same result on CPU"
    )
    run.add_argument(
        "--axes", type=_axes, default=None, help="axes of the files when their metadata is missing or wrong, e.g. ZYX"
    )
    run.add_argument(
        "--stack-mode",
        default="shared",
        choices=STACK_MODES,
        help="stacks: one kernel for all planes (shared, default), one per plane, or one plane only (current)",
    )
    run.add_argument(
        "--region",
        type=_region,
        default="auto",
        metavar="auto|full|TOP,LEFT,HEIGHT,WIDTH",
        help="where the kernel is estimated (default: auto, the whole frame up to 512 x 512, else the "
        "384 x 384 window with the strongest edges); the whole frame is then deconvolved with it. "
        "A rectangle applies to every plane of a stack and must fit in every file",
    )
    run.add_argument(
        "--no-warm-start",
        dest="warm_start",
        action="store_false",
        help="per-plane mode: run every plane from scratch instead of from the previous plane's network",
    )
    run.add_argument(
        "--warm-iterations",
        type=_positive_int,
        default=None,
        help="per-plane mode: iterations of each warm-started plane (default: half of the first plane's)",
    )
    run.add_argument(
        "--nonblind",
        default="sparse",
        choices=NONBLIND_METHODS,
        help="shared mode: how planes are deconvolved with the shared kernel (default: sparse)",
    )
    run.add_argument(
        "--plane",
        type=_plane_index,
        default=None,
        help="reference plane (shared) or the plane to deblur (current); default: the plane with the strongest edges",
    )
    run.add_argument(
        "--scheduler",
        default=None,
        help="run on Dask: 'local' starts a cluster here, or a scheduler address such as tcp://host:8786",
    )
    run.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="with --scheduler local: number of worker processes (default: half the cores; one per GPU)",
    )
    run.add_argument(
        "--overwrite", action="store_true", help="redo inputs whose outputs already exist (default: skip them)"
    )
    run.add_argument(
        "--ome-zarr", action="store_true", help="write the deblurred image as OME-Zarr (needs the zarr package)"
    )
    return parser


def _check_device(parser: argparse.ArgumentParser, device: str) -> None:
    from .engine.devices import resolve_device

    try:
        resolve_device(device)
    except (ValueError, TypeError) as err:
        parser.error(f"--device: {err}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-selfmsnet`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "scheduler", None) in (None, "local"):
        # A remote cluster's workers may have devices this machine lacks: they check there.
        _check_device(parser, args.device)
    if args.command == "demo":
        return run_demo(args)
    return run_deblur(parser, args)


# --- deblur -----------------------------------------------------------------------------------


def expand_inputs(patterns: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files from files, folders (their images, not recursive) and glob patterns.

    Returns
    -------
    (files, problems)
        Files in the order given, without repeats; a message for every pattern that names
        nothing usable.
    """
    files: list[Path] = []
    problems: list[str] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in io.IMAGE_SUFFIXES)
            if not found:
                problems.append(f"{pattern}: the folder holds no {'/'.join(io.IMAGE_SUFFIXES)} file")
        elif path.is_file():
            found = [path]
        else:
            matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else []
            found = [Path(m) for m in matches if Path(m).is_file() and Path(m).suffix.lower() in io.IMAGE_SUFFIXES]
            if not found:
                problems.append(f"{pattern}: no such file" + (" matches" if matches or glob.has_magic(pattern) else ""))
        for f in found:
            if f.resolve() not in {g.resolve() for g in files}:
                files.append(f)
    return files, problems


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def plan_jobs(
    files: Sequence[Path], output_dir: Path, options: RunOptions, *, overwrite: bool
) -> tuple[list[FileJob], list[FileJob], list[tuple[Path, str]]]:
    """Sort inputs into jobs to run, jobs to skip (outputs exist) and refusals.

    An input is refused when one of its outputs would be an input file, or would be the
    output of an earlier input (two inputs with one stem).
    """
    inputs = {f.resolve() for f in files}
    claimed: dict[Path, Path] = {}
    todo, skipped, refused = [], [], []
    for f in files:
        job = FileJob(
            input=f, outputs=io.output_paths(output_dir, _stem(f), ome_zarr=options.ome_zarr), options=options
        )
        outputs = job.outputs
        clash = [p for p in (*outputs.values(), *job.partial.values()) if p.resolve() in inputs]
        if clash:
            refused.append((f, f"its output {clash[0]} is an input file; choose another --output-dir"))
            continue
        taken = [claimed[p.resolve()] for p in outputs.values() if p.resolve() in claimed]
        if taken:
            refused.append(
                (
                    f,
                    f"it has the same name stem as {taken[0]}, so their outputs would collide; deblur them into different folders",
                )
            )
            continue
        claimed.update({p.resolve(): f for p in outputs.values()})
        if not overwrite and all(p.exists() for p in outputs.values()):
            skipped.append(job)
        else:
            todo.append(job)
    return todo, skipped, refused


def _options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        kernel_size=args.kernel_size, method=args.method, preset=args.preset, iterations=args.iterations,
        device=args.device, seed=args.seed, stack_mode=args.stack_mode, plane=args.plane, nonblind=args.nonblind,
        axes=args.axes, ome_zarr=args.ome_zarr, region=args.region, warm_start=args.warm_start,
        warm_iterations=args.warm_iterations,
    )  # fmt: skip


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return (
        text
        if isinstance(error, (ValueError, TypeError, FileNotFoundError, ImportError, OSError))
        else f"{type(error).__name__}: {text}"
    )


def run_deblur(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The ``deblur`` command."""
    from tqdm import tqdm

    if args.ome_zarr:
        try:
            io.require_zarr()
        except ImportError as err:
            parser.error(str(err))
    if args.scheduler and args.stack_mode == "per-plane" and (args.warm_iterations or not args.warm_start):
        # Each plane is its own Dask task there, so no plane can start from another.
        print("note: on Dask every plane runs from scratch; --warm-iterations and --no-warm-start do nothing")
    files, problems = expand_inputs(args.inputs)
    options = _options(args)
    todo, skipped, refused = plan_jobs(files, args.output_dir, options, overwrite=args.overwrite)
    failures = [*problems, *(f"{f}: {why}" for f, why in refused)]
    for message in failures:
        print(f"error: {message}", file=sys.stderr)
    for job in skipped:
        print(f"skipped {job.input}: its outputs exist in {args.output_dir} (use --overwrite to redo)")
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="file", desc="deblurring", disable=None, file=sys.stderr)

    def report(outcome: Outcome) -> None:
        bar.update(1)
        if outcome.error is None:
            s = outcome.summary
            tqdm.write(
                f"done {s['input']} -> {s['outputs']['image']} ({s['elapsed_s']:.1f} s, {s['device']}, final loss {s['final_loss']:.4g})",
                file=sys.stdout,
            )
        else:
            tqdm.write(f"error: {outcome.job.input}: {_describe(outcome.error)}", file=sys.stderr)

    if args.scheduler and todo:
        outcomes = _run_on_dask(args, todo, report)
    else:
        outcomes = _run_here(args, todo, report)
    bar.close()
    failed = len(failures) + sum(o.error is not None for o in outcomes)
    done = sum(o.error is None for o in outcomes)
    print(f"{done} deblurred, {len(skipped)} skipped, {failed} failed in {time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


def _run_here(args: argparse.Namespace, todo: list[FileJob], report) -> list[Outcome]:
    """Process the files one after the other in this process, a progress bar per file."""
    import torch
    from tqdm import tqdm

    from .distributed import run_serial

    bars: list[Any] = []

    def progress(job: FileJob):
        bars.append(tqdm(desc=_stem(job.input), unit="it", leave=False, disable=None, file=sys.stderr))
        return _bar_callback(bars[-1])

    def done(outcome: Outcome) -> None:
        bars.pop().close()
        report(outcome)

    threads = torch.get_num_threads()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    try:
        return run_serial(todo, progress=progress, on_done=done)
    finally:
        torch.set_num_threads(threads)  # main() may run inside a longer-lived process


def _bar_callback(bar: Any):
    """Progress records -> a tqdm bar (the steps of the current stage, and plane)."""

    def callback(progress) -> None:
        if bar.total != progress.total:
            bar.reset(total=progress.total)
        where = f"plane {progress.plane + 1}/{progress.planes} " if progress.planes else ""
        bar.set_description(f"{where}{progress.stage}", refresh=False)
        bar.n = progress.step
        if progress.loss is not None:
            bar.set_postfix(loss=f"{progress.loss:.4g}", refresh=False)
        bar.refresh()

    return callback


def _run_on_dask(args: argparse.Namespace, jobs: list[FileJob], report) -> list[Outcome]:
    from .distributed import run_dask, start_client

    try:
        client, cluster = start_client(
            args.scheduler, workers=args.workers, device=args.device, torch_threads=args.torch_threads
        )
    except (OSError, TimeoutError, ValueError) as err:
        print(f"error: cannot start or reach the Dask scheduler {args.scheduler!r}: {err}", file=sys.stderr)
        return [Outcome(job, error=err) for job in jobs]
    workers = client.scheduler_info().get("workers", {})
    print(f"Dask: {len(workers)} worker(s) at {client.scheduler.address}; dashboard {client.dashboard_link}")
    try:
        return run_dask(client, jobs, on_done=report)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# --- demo -------------------------------------------------------------------------------------


def stretch(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Contrast stretch for display only: percentiles ``low``/``high`` to 0/255 (uint8)."""
    image = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(image, [low, high])
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((image - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)


def side_by_side(blurred: np.ndarray, deblurred: np.ndarray, kernel: np.ndarray, gap: int = 8) -> np.ndarray:
    """blurred | deblurred | kernel, each stretched on its own, enlarged (nearest) for viewing.

    Images smaller than 256 pixels high are enlarged by a whole factor; the kernel is enlarged
    to about the image height. Returns uint8 (H, W) for grey images, (H, W, 3) for RGB.
    """
    zoom = max(1, 256 // blurred.shape[0])
    panels = [_enlarge(stretch(blurred, 0.1, 99.9), zoom), _enlarge(stretch(deblurred, 0.1, 99.9), zoom)]
    height = panels[0].shape[0]
    big_kernel = _enlarge(stretch(kernel, 0.0, 100.0), max(1, height // max(kernel.shape)))
    panel = np.zeros((height, big_kernel.shape[1], *panels[0].shape[2:]), dtype=np.uint8)
    top = (height - big_kernel.shape[0]) // 2
    panel[top : top + big_kernel.shape[0]] = big_kernel[:height, :, None] if panel.ndim == 3 else big_kernel[:height]
    spacer = np.full((height, gap, *panels[0].shape[2:]), 255, dtype=np.uint8)
    return np.concatenate([panels[0], spacer, panels[1], spacer, panel], axis=1)


def _enlarge(image: np.ndarray, zoom: int) -> np.ndarray:
    return np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1)


def run_demo(args: argparse.Namespace) -> int:
    """The ``demo`` command: deblur the bundled sample, write results and a comparison PNG."""
    import imageio.v3 as iio
    import torch
    from tqdm import tqdm

    from .engine.pipeline import deblur
    from .evaluation.metrics import levin_scores
    from .evaluation.sample import blurred_sample, sample_kernel, sharp_sample

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    blurred, sharp, true_kernel = blurred_sample(), sharp_sample(), sample_kernel()
    print(
        f"sample: {blurred.shape[1]} x {blurred.shape[0]} {blurred.dtype}, kernel {true_kernel.shape[1]} x {true_kernel.shape[0]}"
    )
    with tqdm(desc="demo", unit="it", disable=None, file=sys.stderr) as bar:
        result = deblur(
            blurred, true_kernel.shape, preset=args.preset, iterations=args.iterations,
            device=args.device, seed=0, callback=_bar_callback(bar),
        )  # fmt: skip
    meta = io.ImageMetadata(axes="YX", shape=blurred.shape, dtype=np.dtype(np.float32).str, source="tiff")
    report = {
        "input": "bundled sample (napari_selfmsnet.evaluation.sample.blurred_sample)",
        "device": result.device, "elapsed_s": result.elapsed_s, "final_loss": result.final_loss,
        "params": result.params,
    }  # fmt: skip
    before = levin_scores(blurred, sharp, fit_intensity=True)
    after = levin_scores(result.image, sharp, kernel=result.kernel, true_kernel=true_kernel, fit_intensity=True)
    report["scores"] = {"blurred": before, "deblurred": after}
    paths = io.write_result(args.output_dir, "demo", result.image, result.kernel, meta, report)
    comparison = Path(args.output_dir) / "demo_comparison.png"
    iio.imwrite(comparison, side_by_side(blurred, result.image, result.kernel))
    print(f"deblurred in {result.elapsed_s:.1f} s on {result.device}")
    print(
        f"PSNR against the sharp original (affine intensity fit): blurred {before['psnr']:.2f} dB -> deblurred {after['psnr']:.2f} dB"
    )
    print(f"kernel similarity to the true kernel: {after['kernel_similarity']:.3f}")
    print(f"wrote {paths['image']}, {paths['kernel']}, {paths['report']} and {comparison}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
