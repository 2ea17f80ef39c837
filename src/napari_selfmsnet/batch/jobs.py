"""What a batch runs: the options of a run, one job per input file, and how inputs are found.

One input file is one :class:`FileJob`: where it is, where its three outputs go
(``<stem>_deblurred.tif`` or ``.ome.zarr``, ``<stem>_kernel.tif``, ``<stem>.json``) and the
:class:`RunOptions` it is deblurred with. :func:`expand_inputs` turns files, folders and glob
patterns into files; :func:`plan_jobs` turns files into jobs, refusing clashing outputs.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import io

__all__ = ["FileJob", "Outcome", "RunOptions", "expand_inputs", "file_stem", "plan_jobs"]


@dataclass(frozen=True)
class RunOptions:
    """Everything a file's run needs besides the file (picklable, for Dask tasks).

    ``stack_mode`` is one of :data:`~napari_selfmsnet.engine.stack_plan.STACK_CHOICES`;
    ``warm_planes`` and ``warm_iterations`` apply to per-plane mode in this process (on Dask
    every plane runs from scratch).
    """

    kernel_size: tuple[int, int]
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
    """What happened to one job: a summary, or the error that stopped it."""

    job: FileJob
    summary: dict[str, Any] | None = None
    error: BaseException | None = None


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
