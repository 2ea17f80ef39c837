"""What a batch runs: the options of a run, one job per input file, and how inputs are found.

One input file is one :class:`FileJob`: where it is, where its three outputs go
(``<stem>_deblurred.tif`` or ``.ome.zarr``, ``<stem>_kernel.tif``, ``<stem>.json``) and the
:class:`RunOptions` it is deblurred with. :func:`expand_inputs` turns files, folders and glob
patterns into files (leaving out this command's own outputs, so a folder can be deblurred
into itself and the command run again); :func:`plan_jobs` turns files into jobs, refusing
clashing outputs.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import io

__all__ = [
    "FileJob",
    "Outcome",
    "RunInterrupted",
    "RunOptions",
    "expand_inputs",
    "file_stem",
    "is_own_output",
    "plan_jobs",
]


@dataclass(frozen=True)
class RunOptions:
    """Everything a file's run needs besides the file (picklable, for Dask tasks).

    ``kernel_size`` is ``"auto"`` (measured by the engine) or ``(kh, kw)``; ``stack_mode`` is
    one of :data:`~napari_selfmsnet.engine.stack_plan.STACK_CHOICES`; ``warm_planes`` and
    ``warm_iterations`` apply to per-plane mode in this process (on Dask every plane runs
    from scratch).
    """

    kernel_size: tuple[int, int] | str = "auto"
    method: str = "self-msnet"
    preset: str = "fast"
    iterations: int | None = None
    device: str = "auto"
    seed: int = 0
    stack_mode: str = "shared"
    plane: int | None = None
    nonblind: str = "sparse"
    axes: str | None = None
    ome_zarr: bool = False
    region: str | tuple[int, int, int, int] = "auto"
    warm_planes: bool = True
    warm_iterations: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The options as the JSON report records them."""
        size = self.kernel_size
        return {**self.__dict__, "kernel_size": size if isinstance(size, str) else list(size)}

    def deblur_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`napari_selfmsnet.deblur` these options set."""
        return {
            "method": self.method,
            "preset": self.preset,
            "iterations": self.iterations,
            "device": self.device,
            "seed": self.seed,
            "region": self.region,
        }


@dataclass(frozen=True)
class FileJob:
    """One input and where its results go."""

    input: Path
    outputs: dict[str, Path]
    options: RunOptions

    @property
    def partial(self) -> dict[str, Path]:
        """Names the outputs have while being written; renamed when the file is done."""
        return {k: p.with_name(p.name.replace(".", ".partial.", 1)) for k, p in self.outputs.items()}


@dataclass
class Outcome:
    """What happened to one job: a summary, or the error that stopped it, or an interruption
    (Ctrl-C, SIGTERM) that stopped it before it was done (its partial outputs removed)."""

    job: FileJob
    summary: dict[str, Any] | None = None
    error: BaseException | None = None
    interrupted: bool = False

    @property
    def warnings(self) -> list[str]:
        """The warnings of a finished file (its report's ``warnings``)."""
        return list((self.summary or {}).get("warnings", []))


class RunInterrupted(Exception):
    """A file's run was stopped by a request to stop (Ctrl-C, SIGTERM) before it was done."""


#: Names this command gives its outputs (see :func:`napari_selfmsnet.io.output_paths`), and
#: the ``.partial`` names they have while being written.
_OUTPUT_NAME = re.compile(r"^(?P<stem>.+)_(deblurred|kernel)\.tif$", re.IGNORECASE)


def is_own_output(path: Path) -> bool:
    """Whether ``path`` is an output of this command: a ``.partial`` file, or
    ``<stem>_deblurred.tif`` / ``<stem>_kernel.tif`` beside the ``<stem>.json`` report that
    marks a finished file."""
    if ".partial." in path.name:
        return True
    match = _OUTPUT_NAME.match(path.name)
    return bool(match) and (path.parent / f"{match['stem']}.json").is_file()


def expand_inputs(
    patterns: Sequence[str], output_dir: Path, *, ome_zarr: bool = False
) -> tuple[list[Path], list[str], list[Path]]:
    """Files from files, folders (their images, not recursive) and glob patterns.

    Folders and patterns leave out this command's own outputs (:func:`is_own_output`). A file
    or folder named as such is left out too when it is an output this command wrote in
    ``output_dir`` for another input given (that input's report is there), so a glob the
    shell expanded acts as a quoted one; any other file named is taken as it is.

    Returns
    -------
    (files, problems, left_out)
        Files in the order given, without repeats; a message for every pattern that names
        nothing usable; the outputs of earlier runs that were left out.
    """
    expanded = [(pattern, *_expand(pattern)) for pattern in patterns]
    outputs = _finished_outputs([f for _, found, _, _ in expanded for f in found], output_dir, ome_zarr)
    files: list[Path] = []
    problems: list[str] = []
    left_out: list[Path] = []
    for pattern, found, problem, own in expanded:
        if Path(pattern).exists() and Path(pattern).resolve() in outputs:
            left_out.append(Path(pattern))
            continue
        problems += problem
        left_out += own
        for f in found:
            if f.resolve() not in {g.resolve() for g in files}:
                files.append(f)
    return files, problems, [p for p in dict.fromkeys(left_out) if p.resolve() not in {f.resolve() for f in files}]


def _expand(pattern: str) -> tuple[list[Path], list[str], list[Path]]:
    """One pattern's files, its problem (if it names nothing usable) and the own outputs it left out."""
    path = Path(pattern)
    if path.is_file():
        return [path], [], []
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in io.IMAGE_SUFFIXES)
        found = [p for p in images if not is_own_output(p)]
        other = " other than this command's outputs" if images else ""
        problem = f"{pattern}: the folder holds no {'/'.join(io.IMAGE_SUFFIXES)} file{other}"
    else:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else []
        images = [Path(m) for m in matches if Path(m).is_file() and Path(m).suffix.lower() in io.IMAGE_SUFFIXES]
        found = [p for p in images if not is_own_output(p)]
        problem = (
            f"{pattern}: no such file"
            + (" matches" if matches or glob.has_magic(pattern) else "")
            + (" but this command's outputs" if images else "")
        )
    return found, [] if found else [problem], [p for p in images if is_own_output(p)]


def _finished_outputs(sources: Sequence[Path], output_dir: Path, ome_zarr: bool) -> set[Path]:
    """Every output (resolved) this command wrote in ``output_dir`` for an image file among
    ``sources``: all output names of each one whose report, written last, marks it finished
    there. (No image file is an output of itself: its outputs carry suffixes to its stem.)"""
    outputs: set[Path] = set()
    for source in sources:
        paths = io.output_paths(output_dir, file_stem(source), ome_zarr=ome_zarr)
        if source.suffix.lower() in io.IMAGE_SUFFIXES and paths["report"].is_file():
            outputs.update(p.resolve() for p in paths.values())
    return outputs


def file_stem(path: Path) -> str:
    """The name its outputs are named after: the file name without ``.ome.tif(f)`` or suffix."""
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
            input=f, outputs=io.output_paths(output_dir, file_stem(f), ome_zarr=options.ome_zarr), options=options
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
