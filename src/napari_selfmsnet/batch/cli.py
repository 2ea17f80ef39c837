"""The ``napari-selfmsnet`` command: ``demo`` (the bundled sample) and ``deblur`` (your files).

See ``docs/cli.md`` for every option. Exit status: 0 when every input was deblurred or
skipped, 1 when at least one input failed (the others are still processed), 2 for bad
arguments (an output folder that cannot be written to included), 130 or 143 when Ctrl-C
(SIGINT) or SIGTERM stopped the run (:mod:`.stopping`: the file running is dropped with its
partial outputs, the summary is printed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from .. import __version__, io
from ..engine.config import METHOD_SCALES, PRESETS
from ..engine.devices import resolve_device
from ..engine.nonblind import METHODS as NONBLIND_METHODS
from ..engine.stack_plan import STACK_CHOICES
from .clusters import start_client
from .dask_runner import run_dask
from .demo import run_demo
from .jobs import FileJob, Outcome, RunOptions, expand_inputs, file_stem, plan_jobs
from .plan import clean_partial
from .progress_bars import StageBar, bar_callback
from .serial import run_serial
from .stopping import StopRequest

__all__ = ["build_parser", "main"]


def _kernel_size(text: str) -> tuple[int, int] | str:
    """``"auto"`` -> "auto"; ``"15"`` -> (15, 15); ``"15,21"`` or ``"15x21"`` -> (15, 21); odd, at least 3."""
    if text.strip().lower() == "auto":
        return "auto"
    parts = text.lower().replace("x", ",").split(",")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"kernel size must be auto, an odd integer K or KH,KW, got {text!r}"
        ) from None
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or any(k < 3 or k % 2 == 0 for k in size):
        raise argparse.ArgumentTypeError(
            f"kernel size must be odd and at least 3 (the kernel needs a centre pixel; e.g. 15 or 15,21), or auto, "
            f"got {text!r}"
        )
    return size  # type: ignore[return-value]


def _seed(text: str) -> int:
    """A seed torch accepts: an integer from 0 to 2**63 - 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**63 - 1, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**63 - 1, got {value}")
    return value


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
        default="auto",
        metavar="auto|K|KH,KW",
        help="the blur kernel's support: auto (default: measured from each image) or an odd size K or KH,KW, "
        "a little larger than the blur",
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
        "--seed", type=_seed, default=0,
        help="random seed, 0 to 2**63 - 1 (default: 0); the same seed, device and --torch-threads give the same "
        "result on CPU",
    )  # fmt: skip
    run.add_argument(
        "--axes", type=_axes, default=None, help="axes of the files when their metadata is missing or wrong, e.g. ZYX"
    )
    run.add_argument(
        "--stack-mode",
        default="shared",
        choices=STACK_CHOICES,
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
        dest="warm_planes",
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
    try:
        resolve_device(device)
    except (ValueError, TypeError) as err:
        parser.error(f"--device: {err}")


def _file_in_the_way(folder: Path) -> Path | None:
    """The existing file (not a folder) that ``folder`` is, or that one of its parents is, or None."""
    for path in (folder, *folder.parents):
        if path.exists():
            return None if path.is_dir() else path
    return None


def _check_output_dir(parser: argparse.ArgumentParser, folder: Path) -> None:
    """Create ``folder`` if missing and write a file into it, before any computation: a folder
    that cannot hold the results is a bad argument, not a failure after every file's run."""
    blocker = _file_in_the_way(folder)
    if blocker is not None:
        # The OS says only "File exists" or "Not a directory", which does not say which path is wrong.
        where = "is a file" if blocker == folder else f"is inside {blocker}, which is a file"
        parser.error(f"--output-dir {folder} {where}, not a folder; give the path of a folder (created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        parser.error(f"--output-dir {folder}: cannot write there ({reason}); choose a folder you can write to")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``napari-selfmsnet`` command (the console script runs it through :mod:`.launch`);
    returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "scheduler", None) in (None, "local"):
        # A remote cluster's workers may have devices this machine lacks: they check there.
        _check_device(parser, args.device)
    _check_output_dir(parser, args.output_dir)
    if args.command == "demo":
        return run_demo(args)
    return run_deblur(parser, args)


# --- deblur -----------------------------------------------------------------------------------


def _options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        kernel_size=args.kernel_size, method=args.method, preset=args.preset, iterations=args.iterations,
        device=args.device, seed=args.seed, stack_mode=args.stack_mode, plane=args.plane, nonblind=args.nonblind,
        axes=args.axes, ome_zarr=args.ome_zarr, region=args.region, warm_planes=args.warm_planes,
        warm_iterations=args.warm_iterations,
    )  # fmt: skip


def _describe(error: BaseException, path: Path) -> str:
    """``PATH: reason``, naming ``path`` once (the file readers' messages start with it)."""
    text = (str(error) or type(error).__name__).removeprefix(f"{path}: ")
    if not isinstance(error, (ValueError, TypeError, FileNotFoundError, ImportError, OSError)):
        text = f"{type(error).__name__}: {text}"
    return f"{path}: {text}"


def run_deblur(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The ``deblur`` command."""
    if args.ome_zarr:
        try:
            io.require_zarr()
        except ImportError as err:
            parser.error(str(err))
    if args.scheduler and args.stack_mode == "per-plane" and (args.warm_iterations or not args.warm_planes):
        # Each plane is its own Dask task there, so no plane can start from another.
        print("note: on Dask every plane runs from scratch; --warm-iterations and --no-warm-start do nothing")
    files, problems, left_out = expand_inputs(args.inputs, args.output_dir, ome_zarr=args.ome_zarr)
    if left_out:
        names = ", ".join(p.name for p in left_out[:3])
        names += f" and {len(left_out) - 3} more" if len(left_out) > 3 else ""
        print(f"note: left out {len(left_out)} file(s) that are this command's own outputs ({names})")
    options = _options(args)
    todo, skipped, refused = plan_jobs(files, args.output_dir, options, overwrite=args.overwrite)
    failures = [*problems, *(f"{f}: {why}" for f, why in refused)]
    for message in failures:
        print(f"error: {message}", file=sys.stderr)
    for job in skipped:
        print(f"skipped {job.input}: its outputs exist in {args.output_dir} (use --overwrite to redo)")
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="file", desc="deblurring", disable=None, file=sys.stderr)
    reported: list[Outcome] = []

    def report(outcome: Outcome) -> None:
        reported.append(outcome)
        bar.update(1)
        if outcome.interrupted:
            tqdm.write(f"stopped {outcome.job.input}: nothing was written for it", file=sys.stderr)
        elif outcome.error is None:
            s = outcome.summary
            tqdm.write(
                f"done {s['input']} -> {s['outputs']['image']} ({s['elapsed_s']:.1f} s, {s['device']}, "
                f"final loss {s['final_loss']:.4g})",
                file=sys.stdout,
            )
            for warning in outcome.warnings:
                tqdm.write(f"warning: {outcome.job.input}: {warning}", file=sys.stderr)
        else:
            tqdm.write(f"error: {_describe(outcome.error, outcome.job.input)}", file=sys.stderr)

    with StopRequest(raise_at_once=bool(args.scheduler)) as stop:
        try:
            if args.scheduler and todo:
                outcomes = _run_on_dask(args, todo, report)
            else:
                outcomes = _run_here(args, todo, report, stop)
        except KeyboardInterrupt:  # a second signal, between two files' runs
            if not stop:
                raise
            outcomes = reported
        bar.close()
    failed = len(failures) + sum(o.error is not None for o in outcomes)
    finished = [o for o in outcomes if o.summary is not None]
    warned = sum(bool(o.warnings) for o in finished)
    if stop:
        interrupted = sum(o.interrupted for o in outcomes)
        print(
            f"stopped by {stop.name}: {interrupted} file(s) interrupted and {len(todo) - len(outcomes)} not started; "
            "nothing was written for them",
            file=sys.stderr,
        )
    print(
        f"{len(finished)} deblurred{f' ({warned} with warnings)' if warned else ''}, {len(skipped)} skipped, "
        f"{failed} failed in {time.perf_counter() - start:.1f} s"
    )
    if stop:
        return stop.exit_status
    return 1 if failed else 0


def _run_here(args: argparse.Namespace, todo: list[FileJob], report, stop: StopRequest) -> list[Outcome]:
    """Process the files one after the other in this process, a progress bar per file that
    follows the run's stages."""
    bars: list[StageBar] = []

    def progress(job: FileJob) -> StageBar:
        bar = tqdm(unit="step", leave=False, disable=None, file=sys.stderr)
        bars.append(bar_callback(bar, file_stem(job.input)))
        return bars[-1]

    def done(outcome: Outcome) -> None:
        stage_bar = bars.pop()
        if outcome.summary is not None:
            stage_bar.finish()
        stage_bar.bar.close()
        report(outcome)

    threads = torch.get_num_threads()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    try:
        return run_serial(todo, progress=progress, on_done=done, stop=stop)
    finally:
        torch.set_num_threads(threads)  # main() may run inside a longer-lived process


def _run_on_dask(args: argparse.Namespace, jobs: list[FileJob], report) -> list[Outcome]:
    try:
        client, cluster = start_client(
            args.scheduler, workers=args.workers, device=args.device, torch_threads=args.torch_threads
        )
    except (OSError, TimeoutError, ValueError) as err:
        print(f"error: cannot start or reach the Dask scheduler {args.scheduler!r}: {err}", file=sys.stderr)
        return [Outcome(job, error=err) for job in jobs]
    except KeyboardInterrupt:
        return []
    outcomes: list[Outcome] = []
    try:
        workers = client.scheduler_info().get("workers", {})
        print(f"Dask: {len(workers)} worker(s) at {client.scheduler.address}; dashboard {client.dashboard_link}")
        outcomes = run_dask(client, jobs, on_done=report)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        # Workers may have written on after the files' tasks were cancelled: clean once they are gone.
        for outcome in outcomes:
            if outcome.interrupted:
                clean_partial(outcome.job)
    return outcomes


if __name__ == "__main__":
    sys.exit(main())
