"""Execute the book's chapters with papermill for a parameter profile, then build that profile's HTML.

    python -m gradcam_lib.runner --profile default             # every chapter -> _build/default/html
    python -m gradcam_lib.runner --profile full --chapters 01_localization --no-build
    python -m gradcam_lib.runner --update-committed           # refresh the committed notebooks (make notebooks)

Each profile builds its own book and never touches ``book/``: the sources (``book/``,
``_config.yml``, ``_toc.yml``) are copied to ``_build/<profile>/src/``, every chapter is executed
from that copy (its parameters from ``book/params/<profile>/<chapter>.yaml``), and Jupyter Book
compiles the copy into ``_build/<profile>/html``. ``results/`` and ``bench/`` are linked into the
copy, so the chapters' relative paths (``../results``) resume the same runs as before. A chapter
whose execution fails keeps its failed copy under ``_build/<profile>/src/book/`` (to read the
traceback), no HTML is built, and the command exits non-zero naming the chapter and the cell.

``--update-committed`` (``make notebooks``) executes the chapters with the ``default`` profile the
same way and then copies each notebook that succeeded over ``book/<chapter>.ipynb``: the only
command that writes the committed report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import papermill
import yaml
from papermill.exceptions import PapermillExecutionError

ROOT = Path(__file__).resolve().parent.parent
COMMITTED_PROFILE = "default"
LINKED = ("results", "bench")  # folders the chapters reach by relative paths, shared by all profiles


@dataclass(frozen=True)
class Book:
    """A book's sources: ``root`` holds ``_config.yml``, ``_toc.yml`` and ``book/``."""

    root: Path = ROOT

    @property
    def sources(self) -> Path:
        return self.root / "book"

    def chapters(self) -> list[Path]:
        """The notebooks in the order of ``_toc.yml`` (the one list of the book's pages; its
        Markdown pages are not executed).

        Raises:
            FileNotFoundError: a page of ``_toc.yml`` that has neither a notebook nor a Markdown file.
        """
        toc = yaml.safe_load((self.root / "_toc.yml").read_text())
        pages = [toc["root"], *(entry["file"] for entry in toc.get("chapters", []))]
        notebooks = []
        for page in pages:
            notebook, markdown = self.root / f"{page}.ipynb", self.root / f"{page}.md"
            if notebook.is_file():
                notebooks.append(notebook)
            elif not markdown.is_file():
                raise FileNotFoundError(f"_toc.yml lists {page!r}, but neither {notebook} nor {markdown} exists")
        return notebooks

    def parameters(self, profile: str, chapter: Path) -> dict:
        """The parameters of one chapter for one profile (empty when the profile has no file for it)."""
        params = self.sources / "params"
        profile_dir = params / profile
        if not profile_dir.is_dir():
            known = ", ".join(sorted(p.name for p in params.iterdir() if p.is_dir())) if params.is_dir() else "none"
            raise SystemExit(f"no parameter profile {profile!r} under book/params/ (known: {known})")
        path = profile_dir / f"{chapter.stem}.yaml"
        if not path.exists():
            return {}
        return yaml.safe_load(path.read_text()) or {}

    def build_dir(self, profile: str) -> Path:
        return self.root / "_build" / profile


class ChapterFailed(Exception):
    """A chapter raised while executing; the message names the chapter, the cell and the error."""


def prepare_copy(book: Book, profile: str) -> Path:
    """A fresh copy of the book's sources under ``_build/<profile>/src``; returns that folder. The
    intro page of the copy says which profile the built book shows."""
    src = book.build_dir(profile) / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    shutil.copytree(book.sources, src / "book", ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    for name in ("_config.yml", "_toc.yml"):
        if (book.root / name).exists():
            shutil.copy2(book.root / name, src / name)
    for name in LINKED:
        (book.root / name).mkdir(exist_ok=True)
        os.symlink(os.path.relpath(book.root / name, src), src / name, target_is_directory=True)
    intro = src / "book" / "intro.md"
    if intro.exists():
        lines = intro.read_text(encoding="utf-8").splitlines(keepends=True)
        heading = next((i for i, line in enumerate(lines) if line.startswith("# ")), -1)
        note = (f"\n```{{note}}\nThis build shows the **`{profile}`** profile: every chapter was executed with "
                f"`book/params/{profile}/`.\n```\n\n")
        lines.insert(heading + 1, note)
        intro.write_text("".join(lines), encoding="utf-8")
    return src


def run_chapter(book: Book, chapter: Path, profile: str, src: Path) -> float:
    """Execute one chapter from the copy in ``src``; returns its wall time in seconds.

    Raises:
        ChapterFailed: the chapter raised; its executed copy (with the traceback) stays in ``src``.
    """
    start = time.perf_counter()
    target = src / "book" / chapter.name
    try:
        papermill.execute_notebook(
            str(chapter),
            str(target),
            parameters=book.parameters(profile, chapter),
            cwd=str(target.parent),
            kernel_name="python3",
            language="python",  # also for a notebook without kernel metadata (a fresh jupytext pair)
            progress_bar=False,
            log_output=False,
            # a quiet kernel start: the kernel (on this machine's loopback) otherwise logs a warning
            # about unencrypted TCP for every chapter; errors are still shown
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    except PapermillExecutionError as error:
        first_line = next((line for line in str(error.source).splitlines() if line.strip()), "")
        raise ChapterFailed(
            f"{chapter.stem} ({profile}) failed in cell {error.cell_index} of the executed copy "
            f"(starting `{first_line.strip()[:60]}`): {error.ename}: {error.evalue}\n"
            f"  the executed copy with the traceback: {target.relative_to(book.root)}"
        ) from error
    target.write_text(json.dumps(tag_for_reading(json.loads(target.read_text(encoding="utf-8"))), indent=1,
                                 ensure_ascii=False) + "\n", encoding="utf-8")
    return time.perf_counter() - start


def tag_for_reading(notebook: dict) -> dict:
    """Tag the code cells so the rendered chapter reads as a report (Jupyter Book's cell tags):
    the defaults ``parameters`` cell is removed from the page (``remove-cell``), every other code
    cell -- papermill's ``injected-parameters`` of the run included -- shows its outputs with the
    code collapsed behind a toggle (``hide-input``). Cells already tagged to remove stay so."""
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        wanted = "remove-cell" if "parameters" in tags else "hide-input"
        if wanted not in tags and not {"remove-cell", "remove-input"} & set(tags):
            tags.append(wanted)
    return notebook


def commit_notebook(executed: Path, chapter: Path) -> None:
    """Copy an executed notebook over the committed one, without this machine's paths (papermill
    records the absolute input and output paths in the notebook's metadata) and without the run's
    details (:func:`without_run_details`), then rewrite its jupytext pair (``jupytext.toml``)."""
    notebook = json.loads(executed.read_text(encoding="utf-8"))
    record = notebook.get("metadata", {}).get("papermill", {})
    for key in ("input_path", "output_path"):
        if key in record:
            record[key] = chapter.name
    chapter.write_text(json.dumps(without_run_details(notebook), indent=1, ensure_ascii=False) + "\n",
                       encoding="utf-8")
    write_pair(chapter)


def without_run_details(notebook: dict) -> dict:
    """Drop what changes from run to run and says nothing about the results, so that refreshing an
    unchanged chapter leaves git clean: papermill's and the kernel's timings (per run and per cell),
    the random id papermill gives its injected-parameters cell (a fixed one instead), the progress
    bars of the cells tagged ``remove-stderr`` (never shown; their rates are the machine's), the
    empty ``tags`` papermill adds to every cell, and the chunking of printed text (consecutive stream
    outputs are joined)."""
    record = notebook.get("metadata", {}).get("papermill", {})
    for key in ("start_time", "end_time", "duration"):
        record.pop(key, None)
    for cell in notebook.get("cells", []):
        metadata = cell.setdefault("metadata", {})
        metadata.pop("papermill", None)
        metadata.pop("execution", None)
        tags = metadata.get("tags")
        if tags == []:
            del metadata["tags"]
        elif tags and "injected-parameters" in tags:
            cell["id"] = "injected-parameters"
        if tags and "remove-stderr" in tags:
            cell["outputs"] = [o for o in cell.get("outputs", [])
                               if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
        if "outputs" in cell:
            cell["outputs"] = _coalesce_streams(cell["outputs"])
    return notebook


def _coalesce_streams(outputs: list[dict]) -> list[dict]:
    """Join consecutive stream outputs of the same stream: how the kernel chunks a cell's printing
    varies from run to run, the text does not."""
    joined: list[dict] = []
    for output in outputs:
        previous = joined[-1] if joined else None
        if (previous is not None and output.get("output_type") == "stream"
                and previous.get("output_type") == "stream" and previous.get("name") == output.get("name")):
            text = "".join(previous["text"]) + "".join(output["text"])
            previous["text"] = text.splitlines(keepends=True)
        else:
            joined.append(dict(output))
    return joined


def paired_text(notebook: Path) -> str:
    """The py:percent text that jupytext pairs with ``notebook``, under the repository's
    ``jupytext.toml`` (code and prose, no outputs)."""
    import jupytext
    from jupytext.config import load_jupytext_config

    config = load_jupytext_config(str(notebook.parent))
    return jupytext.writes(jupytext.read(notebook), fmt="py:percent", config=config)


def write_pair(notebook: Path) -> Path:
    """Write ``notebook``'s jupytext pair beside it (``<chapter>.py``); returns its path."""
    pair = notebook.with_suffix(".py")
    pair.write_text(paired_text(notebook), encoding="utf-8")
    return pair


MATHJAX = "mathjax@3.2.2"  # the release Sphinx's default CDN address names (mathjax@3, es5/tex-mml-chtml.js)


def stage_mathjax(book: Book, src: Path) -> bool:
    """Serve MathJax from the built site, so that formulas render without network: the npm
    registry's ``mathjax`` package is fetched once into the repository's ``_build/mathjax`` (not committed),
    its CommonHTML bundle is copied into the copy (``_mathjax/``, served as ``_static/mathjax``) and the
    copy's ``_config.yml`` points Sphinx's ``mathjax_path`` there. Without npm the pages keep the CDN address (with a
    warning). Returns whether MathJax is served locally."""
    cache = ROOT / "_build" / "mathjax"
    bundle = cache / "node_modules" / "mathjax" / "es5"
    if not bundle.exists():
        npm = shutil.which("npm")
        if npm is None:
            print("warning: npm not found, so MathJax is loaded from its CDN (formulas need network)", file=sys.stderr)
            return False
        subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(cache), MATHJAX],
                       check=True)
    # Not under the copy's _static/: Jupyter Book adds every .js file found there to every page.
    shutil.copytree(bundle, src / "_mathjax" / "mathjax", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*svg*.js", "*-full*.js", "mml-*.js", "node-main.js"))
    config_path = src / "_config.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    sphinx = config.setdefault("sphinx", {}).setdefault("config", {})
    sphinx["mathjax_path"] = "mathjax/tex-mml-chtml.js"  # relative to _static
    sphinx["html_static_path"] = [*sphinx.get("html_static_path", []), "_mathjax"]  # -> _static/mathjax
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return True


def build_html(book: Book, profile: str, src: Path) -> Path:
    """Compile the executed copy into ``_build/<profile>/html`` with Jupyter Book 1.x (MathJax
    served from the site, :func:`stage_mathjax`)."""
    stage_mathjax(book, src)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    work = book.build_dir(profile) / "jupyter-book"
    subprocess.run([str(jupyter_book), "build", str(src), "--path-output", str(work)], check=True)
    html = book.build_dir(profile) / "html"
    if html.exists():
        shutil.rmtree(html)
    shutil.move(str(work / "_build" / "html"), html)
    fix_bibliography_roles(html)
    return html


def fix_bibliography_roles(html: Path) -> None:
    """Give the bibliography's entries the ARIA role their list requires: docutils writes
    ``<div role="list" class="citation-list">`` holding ``role="doc-biblioentry"`` entries, a role
    DPUB-ARIA 1.1 deprecated (no longer a ``listitem``), which axe-core reports as a critical
    violation (``aria-required-children``)."""
    for page in html.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        if 'role="doc-biblioentry"' in text:
            page.write_text(text.replace('role="doc-biblioentry"', 'role="listitem"'), encoding="utf-8")


def main(argv: list[str] | None = None, book: Book | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=COMMITTED_PROFILE, help="parameter profile under book/params/")
    parser.add_argument("--chapters", nargs="*", help="chapter names (e.g. 01_localization); default: all")
    parser.add_argument("--no-build", action="store_true", help="execute only, do not build the HTML")
    parser.add_argument("--update-committed", action="store_true",
                        help=f"copy every chapter that succeeded over book/ (profile {COMMITTED_PROFILE!r} only)")
    args = parser.parse_args(argv)
    book = book or Book()
    if args.update_committed and args.profile != COMMITTED_PROFILE:
        parser.error(f"the committed notebooks hold the {COMMITTED_PROFILE!r} profile; --update-committed "
                     f"cannot write {args.profile!r} outputs into book/")
    selected = [c for c in book.chapters() if not args.chapters or c.stem in args.chapters]
    if args.chapters and len(selected) != len(args.chapters):
        parser.error(f"unknown chapter in {args.chapters}; known: {[c.stem for c in book.chapters()]}")
    for chapter in selected:  # fail early on a missing profile
        book.parameters(args.profile, chapter)
    src = prepare_copy(book, args.profile)
    failures = []
    for chapter in selected:
        print(f"executing {chapter.name} ({args.profile}) ...", flush=True)
        try:
            print(f"  done in {run_chapter(book, chapter, args.profile, src):.0f} s", flush=True)
        except ChapterFailed as failure:
            print(f"  FAILED: {failure}", file=sys.stderr, flush=True)
            failures.append(str(failure))
            continue
        if args.update_committed:
            commit_notebook(src / "book" / chapter.name, chapter)
            print(f"  updated {chapter.relative_to(book.root)}", flush=True)
    if failures:
        print(f"{len(failures)} chapter(s) failed; no HTML built:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    if not args.no_build:
        html = build_html(book, args.profile, src)
        print(f"book ({args.profile}): {html.relative_to(book.root) / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
