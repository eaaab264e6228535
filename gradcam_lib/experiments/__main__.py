"""Run a chapter's experiments outside its notebook: in one process, or sharded over GPUs and nodes
by torchrun, so that the chapter then finds its results complete and only reports.

    python -m gradcam_lib.experiments 01_localization --profile full
    torchrun --nproc_per_node=8 -m gradcam_lib.experiments 01_localization --profile full
    torchrun --nnodes=4 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 --rdzv-id=gradcam \\
        -m gradcam_lib.experiments 01_localization --profile full        # on each of the 4 nodes

From ``book/<chapter>.ipynb`` it executes, in order, the ``parameters`` cell, then the profile's
parameters (``book/params/<profile>/<chapter>.yaml``, then any ``-p NAME VALUE``), then the code
cells tagged ``setup`` (what the runs need: imports, models, data sets) and ``run`` (the cells that
call :meth:`Experiment.run <gradcam_lib.experiments.base.Experiment.run>`); the report cells are
not executed. It runs in ``book/`` as papermill does, so the results land in the folder the
chapter reads (``results/<profile>/<chapter>/``). Under torchrun every rank executes the same
cells; each :meth:`~gradcam_lib.experiments.base.Experiment.run` then computes that rank's share
and rank 0 merges the shards (:mod:`gradcam_lib.shards`); a rank that dies leaves its shard
resumable, and the same command run again finishes it without a duplicate row. Ranks other than 0
print nothing but their progress bars.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import nbformat
import yaml

from gradcam_lib.runner import COMMITTED_PROFILE, Book
from gradcam_lib.shards import distributed

#: The tags of the cells executed here (the chapter's ``parameters`` cell always is).
TAGS = ("setup", "run")


def run_cells(notebook: Path) -> list[tuple[int, list[str], str]]:
    """``(index, tags, source)`` of the code cells executed for a chapter's runs, in order: the
    ``parameters`` cell and the cells tagged ``setup`` or ``run`` (never papermill's injected ones)."""
    cells = nbformat.read(notebook, as_version=4).cells
    return [(index, list(cell.metadata.get("tags", [])), cell.source) for index, cell in enumerate(cells)
            if cell.cell_type == "code" and {"parameters", *TAGS} & set(cell.metadata.get("tags", []))
            and "injected-parameters" not in cell.metadata.get("tags", [])]


def execute(book: Book, chapter: str, profile: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Execute a chapter's parameters, setup and run cells (see the module notes); returns the
    namespace they leave.

    Raises:
        SystemExit: an unknown chapter, or a chapter without run cells (the message lists them).
    """
    notebooks = {path.stem: path for path in book.chapters()}
    if chapter not in notebooks:
        raise SystemExit(f"unknown chapter {chapter!r}; known: {sorted(notebooks)}")
    cells = run_cells(notebooks[chapter])
    if not any("run" in tags for _, tags, _ in cells):
        runnable = sorted(name for name, path in notebooks.items() if any("run" in t for _, t, _ in run_cells(path)))
        raise SystemExit(f"{chapter} has no cells tagged 'run' (no experiments to run); chapters with runs: {runnable}")
    parameters = book.parameters(profile, notebooks[chapter]) | overrides
    namespace: dict[str, Any] = {"__name__": f"gradcam_lib.experiments.{chapter}"}
    os.environ.setdefault("MPLBACKEND", "Agg")
    with contextlib.chdir(notebooks[chapter].parent):
        for index, tags, source in cells:
            exec(compile(source, f"{chapter}.ipynb, cell {index}", "exec"), namespace)
            if "parameters" in tags:
                namespace.update(parameters)
    return namespace


def _value(text: str) -> Any:
    """A ``-p`` value as YAML reads it (``3`` -> int, ``[a, b]`` -> list, ``cpu`` -> str)."""
    return yaml.safe_load(text)


def main(argv: list[str] | None = None, book: Book | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradcam_lib.experiments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chapter", help="a chapter with runs, e.g. 01_localization")
    parser.add_argument("--profile", default=COMMITTED_PROFILE, help="parameter profile under book/params/")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override one parameter (the value is read as YAML), as papermill's -p")
    parser.add_argument("--book", type=Path, default=None, help="the book's root folder (default: this repository)")
    args = parser.parse_args(argv)
    overrides = {name: _value(value) for name, value in args.parameter}
    with distributed() as (rank, world):
        with open(os.devnull, "w") if rank else contextlib.nullcontext(sys.stdout) as out, \
                contextlib.redirect_stdout(out):
            execute(book or Book(args.book or Book().root), args.chapter, args.profile, overrides)
        if rank == 0:
            print(f"{args.chapter} ({args.profile}): runs complete on {world} process(es); "
                  "the chapter now only reports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
