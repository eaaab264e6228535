"""The committed notebooks are a report: their outputs and metadata hold no paths of the machine
that ran them and no warnings (a warning in a committed output is a bug to fix where it arises)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "book").glob("*.ipynb"))
MACHINE_PATH = re.compile(r"(/tmp/|/work/|/root/|/home/|/Users/|site-packages|[A-Z]:\\\\)")


def _outputs_and_metadata(notebook: dict) -> str:
    parts = [json.dumps(notebook.get("metadata", {}))]
    for cell in notebook["cells"]:
        parts.append(json.dumps(cell.get("metadata", {})))
        for output in cell.get("outputs", []):
            parts.append("".join(output.get("text", "")))
            parts.append(json.dumps({k: v for k, v in output.get("data", {}).items() if not k.startswith("image/")}))
    return "\n".join(parts)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_machine_paths_and_no_warnings(notebook: Path) -> None:
    text = _outputs_and_metadata(json.loads(notebook.read_text(encoding="utf-8")))
    paths = sorted(set(MACHINE_PATH.findall(text)))
    assert paths == [], f"{notebook.name} carries this machine's paths: {paths}"
    warnings = re.findall(r"\w*Warning: [^\n]{0,80}", text)
    assert warnings == [], f"{notebook.name} shows warnings in its outputs: {warnings}"
