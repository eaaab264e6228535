"""Sharded runs (gradcam_lib.shards, Experiment.run under torchrun, python -m gradcam_lib.experiments):
each rank runs a disjoint share into its own shard, the merge yields exactly the rows of a
single-process run, a killed rank resumes without a duplicate, and bad shard sets are refused."""

from __future__ import annotations

import ast
import builtins
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
from shard_fixture import SumExperiment, experiment

from gradcam_lib.experiments.__main__ import main as experiments_main
from gradcam_lib.experiments.__main__ import run_cells
from gradcam_lib.results import run_resumable
from gradcam_lib.runner import Book
from gradcam_lib.shards import ShardError, merge_shards, share, shard_path

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def _single(tmp_path: Path, n: int) -> pd.DataFrame:
    return experiment(n).run(tmp_path / "single", batch_size=2)


def _write_shards(folder: Path, n: int, world: int, ranks=None) -> Path:
    """The shards a sharded run writes, each rank's share through run_resumable (one process)."""
    run = experiment(n)
    path = run.path(folder)
    for rank in range(world) if ranks is None else ranks:
        run_resumable(run.dataset, run.batch, shard_path(path, rank, world), batch_size=2,
                      positions=share(n, rank, world))
    return path


def test_shares_are_disjoint_cover_every_item_and_are_not_padded() -> None:
    assert [list(share(5, r, 2)) for r in range(2)] == [[0, 2, 4], [1, 3]]
    assert [list(share(2, r, 4)) for r in range(4)] == [[0], [1], [], []]  # more ranks than items: no repeats
    for n, world in [(0, 3), (7, 3), (100, 8)]:
        owned = [p for r in range(world) for p in share(n, r, world)]
        assert sorted(owned) == list(range(n))
    with pytest.raises(ValueError, match="rank 2 is not in 0 .. 1"):
        share(5, 2, 2)


def test_merged_shards_are_the_single_process_rows_and_the_shards_are_gone(tmp_path) -> None:
    single = _single(tmp_path, 11)
    path = _write_shards(tmp_path / "sharded", 11, 3)
    assert merge_shards(path, 11) == 11
    merged = experiment(11).run(tmp_path / "sharded", batch_size=4)  # finds the run done: computes nothing
    pd.testing.assert_frame_equal(merged, single)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".done"]


def test_a_chapter_run_in_one_process_merges_complete_shards_first(tmp_path) -> None:
    path = _write_shards(tmp_path, 6, 2)
    SumExperiment.evaluated = 0
    rows = experiment(6).run(tmp_path, batch_size=2)
    assert SumExperiment.evaluated == 0 and len(rows) == sum(i % 3 for i in range(6))
    assert not list(tmp_path.glob("*.rank*"))
    assert path.exists()


def test_a_missing_rank_is_refused_naming_it_and_shards_of_another_key(tmp_path) -> None:
    path = _write_shards(tmp_path, 6, 3, ranks=[0, 2])
    other = experiment(6, scale=2.0)  # another setting: another run key, as on a node with other data
    run_resumable(other.dataset, other.batch, shard_path(other.path(tmp_path), 1, 3), positions=share(6, 1, 3))
    with pytest.raises(ShardError, match=r"rank\(s\) \[1\] of 3 are missing; shards under another run key") as error:
        merge_shards(path, 6)
    assert shard_path(other.path(tmp_path), 1, 3).name in str(error.value)


def test_an_unfinished_shard_is_refused_with_the_count_per_rank(tmp_path) -> None:
    run = experiment(6)
    path = _write_shards(tmp_path, 6, 2, ranks=[0])
    run_resumable(run.dataset, run.batch, shard_path(path, 1, 2), positions=[1, 3])  # item 5 not done
    with pytest.raises(ShardError, match=r"hold 5 of 6 items \(per rank: \{0: 3, 1: 2\}\); run the sharded command"):
        merge_shards(path, 6)


def test_an_item_in_two_shards_and_mixed_world_sizes_are_refused(tmp_path) -> None:
    run = experiment(4)
    path = run.path(tmp_path)
    run_resumable(run.dataset, run.batch, shard_path(path, 0, 2), positions=[0, 1, 2])
    run_resumable(run.dataset, run.batch, shard_path(path, 1, 2), positions=[2, 3])
    with pytest.raises(ShardError, match="image_id 'img2' is in the shards of rank 0 and rank 1"):
        merge_shards(path, 4)
    run_resumable(run.dataset, run.batch, shard_path(path, 0, 3), positions=[0])
    with pytest.raises(ShardError, match=r"several world sizes \[2, 3\]"):
        merge_shards(path, 4)


def test_shards_beside_a_partial_single_process_run_are_refused(tmp_path) -> None:
    run = experiment(6)
    path = _write_shards(tmp_path, 6, 2)
    run_resumable(run.dataset, run.batch, path, positions=[0, 1])
    with pytest.raises(ShardError, match="holds a partial single-process run"):
        merge_shards(path, 6)


# --------------------------------------------------------------------------------------------
# python -m gradcam_lib.experiments, in one process and under torchrun (2 CPU processes, gloo)
# --------------------------------------------------------------------------------------------

TOY_CELLS = [
    (["parameters"], "n_items = 5\nprofile = 'default'\nresults_dir = '../results'\nbatch_size = 2"),
    (["setup"], "from pathlib import Path\nfrom shard_fixture import experiment"),
    (["run"], "rows = experiment(n_items).run(Path(results_dir) / profile / '90_toy', batch_size=batch_size)\n"
              "print('rows of the run:', len(rows))"),
    ([], "raise RuntimeError('a report cell must not run')"),
]


def _toy_book(root: Path, n_items: int) -> Book:
    (root / "book" / "params" / "default").mkdir(parents=True)
    (root / "book" / "intro.md").write_text("# Toy\n")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n- file: book/90_toy\n")
    (root / "book" / "params" / "default" / "90_toy.yaml").write_text(yaml.safe_dump({"n_items": n_items}))
    notebook = nbformat.v4.new_notebook()
    for tags, source in TOY_CELLS:
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = tags
        notebook.cells.append(cell)
    nbformat.write(notebook, root / "book" / "90_toy.ipynb")
    return Book(root)


def test_the_command_runs_parameters_setup_and_run_cells_only(tmp_path, capsys) -> None:
    book = _toy_book(tmp_path, 7)
    assert experiments_main(["90_toy", "-p", "batch_size", "3"], book=book) == 0
    assert "rows of the run: 6" in capsys.readouterr().out  # 7 items (the profile's), 0+1+2+0+1+2+0 rows
    (csv,) = (tmp_path / "results" / "default" / "90_toy").glob("*.csv")
    assert len(pd.read_csv(csv)) == 6
    assert len(Path(f"{csv}.done").read_text().splitlines()) == 3  # batches of -p batch_size 3: 3 + 3 + 1
    with pytest.raises(SystemExit, match="unknown chapter 'nope'"):
        experiments_main(["nope"], book=book)


def test_a_chapter_without_run_cells_is_refused() -> None:
    with pytest.raises(SystemExit, match="04_user_study has no cells tagged 'run'.*01_localization"):
        experiments_main(["04_user_study"])


def _torchrun(book_root: Path, n_items: int, die: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    env.pop("SHARD_TEST_DIE", None)
    if die:
        env["SHARD_TEST_DIE"] = die
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "gradcam_lib.experiments", "90_toy", "--book", str(book_root), "-p", "n_items", str(n_items)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_two_processes_give_the_single_process_rows_and_a_killed_rank_resumes(tmp_path) -> None:
    n = 13
    single = experiment(n).run(tmp_path / "single", batch_size=2)
    book = _toy_book(tmp_path / "book_root", n)
    out = tmp_path / "book_root" / "results" / "default" / "90_toy"

    killed = _torchrun(book.root, n, die="1:2")  # rank 1 dies after committing 2 of its 3 batches (6 items)
    assert killed.returncode != 0, killed.stdout + killed.stderr
    assert all(".rank" in p.name for p in out.glob("*.csv")), "no merged file after a failed rank"
    shard = next(out.glob("*.rank1-of-2.csv"))
    assert len(pd.read_csv(shard)) == sum(i % 3 for i in (1, 3, 5, 7))  # its first two batches only

    finished = _torchrun(book.root, n)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "runs complete on 2 process(es)" in finished.stdout
    assert finished.stdout.count("rows of the run:") == 1  # ranks other than 0 print nothing
    (merged,) = [p for p in out.glob("*.csv") if ".rank" not in p.name]
    assert not list(out.glob("*.rank*")), "the shards are removed after the merge"
    rows = experiment(n).run(out, batch_size=5)
    pd.testing.assert_frame_equal(rows, single)  # exactly the single-process rows: none lost, none twice
    assert not rows.duplicated(["image_id", "part"]).any()


# --------------------------------------------------------------------------------------------
# The book's chapters: their setup and run cells are self-contained
# --------------------------------------------------------------------------------------------


def _names(source: str) -> tuple[set[str], set[str]]:
    """Names a cell binds and names it reads (a cell-level approximation, conservative on reads)."""
    bound, read = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, ast.Store) else read).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.comprehension):
            bound |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
    return bound, read


@pytest.mark.parametrize("notebook", sorted((ROOT / "book").glob("0*.ipynb")), ids=lambda p: p.stem)
def test_a_chapters_run_cells_need_only_its_parameters_setup_and_run_cells(notebook: Path) -> None:
    """What ``python -m gradcam_lib.experiments`` executes reads no name that only a report cell binds."""
    cells = run_cells(notebook)
    if not any("run" in tags for _, tags, _ in cells):
        assert "Experiment(" not in notebook.read_text(), f"{notebook.name} runs experiments in untagged cells"
        return
    known = set(dir(builtins))
    for index, _, source in cells:
        bound, read = _names(source)
        unknown = read - bound - known
        assert not unknown, f"{notebook.name} cell {index} reads {sorted(unknown)}, bound by no earlier run cell"
        known |= bound
    every = nbformat.read(notebook, as_version=4).cells
    executed = {index for index, _, _ in cells}
    untagged_runs = [i for i, cell in enumerate(every)
                     if cell.cell_type == "code" and ".run(" in cell.source and i not in executed]
    assert not untagged_runs, f"{notebook.name}: cells {untagged_runs} call .run( but are not tagged 'run'"
