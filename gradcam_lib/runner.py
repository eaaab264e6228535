"""Execute the book's chapters with papermill for a parameter profile, then build the HTML.

    python -m gradcam_lib.runner --profile default            # every chapter, then jupyter-book
    python -m gradcam_lib.runner --profile full --chapters 01_localization --no-build

A chapter ``book/NN_name.ipynb`` takes its parameters from ``book/params/<profile>/NN_name.yaml``
(a chapter without such a file runs on its notebook's defaults). Notebooks are executed in place,
from inside ``book/``, so the executed notebooks are the report that Jupyter Book renders.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import papermill
import yaml

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"


def chapters() -> list[Path]:
    """The notebooks in book order: chapters (names start with two digits), then appendices."""
    return sorted(BOOK.glob("[0-9][0-9]_*.ipynb")) + sorted(BOOK.glob("appendix_*.ipynb"))


def parameters(profile: str, chapter: Path) -> dict:
    """The parameters of one chapter for one profile (empty when the profile has no file for it)."""
    profile_dir = BOOK / "params" / profile
    if not profile_dir.is_dir():
        known = ", ".join(sorted(p.name for p in (BOOK / "params").iterdir() if p.is_dir()))
        raise FileNotFoundError(f"no parameter profile {profile!r} under {BOOK / 'params'} (known: {known})")
    path = profile_dir / f"{chapter.stem}.yaml"
    if not path.exists():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def run_chapter(chapter: Path, profile: str) -> float:
    """Execute one chapter in place; returns its wall time in seconds."""
    start = time.perf_counter()
    papermill.execute_notebook(
        str(chapter),
        str(chapter),
        parameters=parameters(profile, chapter),
        cwd=str(BOOK),
        kernel_name="python3",
        progress_bar=False,
        log_output=False,
    )
    return time.perf_counter() - start


def build_html() -> None:
    """Compile the executed notebooks into ``_build/html`` with Jupyter Book 1.x."""
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    subprocess.run([str(jupyter_book), "build", str(ROOT), "--path-output", str(ROOT)], check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default", help="parameter profile under book/params/")
    parser.add_argument("--chapters", nargs="*", help="chapter names (e.g. 01_localization); default: all")
    parser.add_argument("--no-build", action="store_true", help="execute only, do not build the HTML")
    args = parser.parse_args(argv)
    selected = [c for c in chapters() if not args.chapters or c.stem in args.chapters]
    if args.chapters and len(selected) != len(args.chapters):
        raise SystemExit(f"unknown chapter in {args.chapters}; known: {[c.stem for c in chapters()]}")
    for chapter in selected:
        print(f"executing {chapter.name} ({args.profile}) ...", flush=True)
        print(f"  done in {run_chapter(chapter, args.profile):.0f} s", flush=True)
    if not args.no_build:
        build_html()
        print(f"book: {ROOT / '_build' / 'html' / 'index.html'}")


if __name__ == "__main__":
    main()
