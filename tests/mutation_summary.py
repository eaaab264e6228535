"""The score of the last ``mutmut run`` per core module, written to ``tests/mutation_score.txt``
(``make mutation`` runs both; the core is ``[tool.mutmut] only_mutate`` in pyproject.toml).

Score of a module = killed / (mutants - equivalent ones), in %. A surviving mutant is *equivalent*
when no input can tell it from the original (``tests/surviving_mutants.toml`` says why, under the
mutant's name, starting with ``equivalent:``); every other survivor is a gap in the tests and counts
against the score. The summary lists each survivor with its changed line and the recorded reason
(``NO REASON RECORDED`` for a new one: look at it, then kill it with a test or record why not).

Usage (from the repository root, after ``mutmut run``): ``python tests/mutation_summary.py``.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

from mutmut.__main__ import SourceFileMutationData, get_diff_for_mutant, status_by_exit_code, walk_mutatable_files

ROOT = Path(__file__).resolve().parents[1]
REASONS = ROOT / "tests" / "surviving_mutants.toml"
OUTPUT = ROOT / "tests" / "mutation_score.txt"
TARGET = 90.0
KILLED = {"killed", "timeout", "caught by type check"}


def _changed_line(name: str, path: Path) -> str:
    added = [line[1:].strip() for line in get_diff_for_mutant(name, path=path).splitlines()
             if line.startswith("+") and not line.startswith("+++")]
    return added[0] if added else "(line removed)"


def main() -> int:
    reasons: dict[str, str] = tomllib.loads(REASONS.read_text())["reasons"] if REASONS.exists() else {}
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    survivors: dict[str, list[str]] = defaultdict(list)
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        module = str(path)
        for name, exit_code in sorted(data.exit_code_by_key.items(), key=lambda item: _natural(item[0])):
            status = status_by_exit_code[exit_code]
            if status == "skipped":
                continue
            reason = reasons.get(name, "")
            counts[module]["mutants"] += 1
            if status in KILLED:
                counts[module]["killed"] += 1
                counts[module]["timeout"] += status == "timeout"
                continue
            if reason.startswith("equivalent:"):
                counts[module]["equivalent"] += 1
            survivors[module].append(f"    {name.split('.')[-1]} [{status}]: {_changed_line(name, path)}\n"
                                     f"        -> {reason or 'NO REASON RECORDED'}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    lines = [f"mutmut on the core, {datetime.date.today().isoformat()}, commit {commit.strip()}",
             f"score = killed / (mutants - equivalent); target >= {TARGET:.0f} % in every module",
             "killed includes the timeouts (a mutant that makes its tests run 16 x longer: an endless loop)", "",
             f"{'module':45s} {'mutants':>8s} {'killed':>7s} {'timeout':>8s} {'equiv.':>7s} {'score':>7s}"]
    worst = 100.0
    for module, c in sorted(counts.items()):
        tested = c["mutants"] - c["equivalent"]
        score = 100.0 * c["killed"] / tested if tested else 100.0
        worst = min(worst, score)
        lines.append(f"{module:45s} {c['mutants']:8d} {c['killed']:7d} {c['timeout']:8d} {c['equivalent']:7d} "
                     f"{score:6.1f}%")
    total = {key: sum(c[key] for c in counts.values()) for key in ("mutants", "killed", "timeout", "equivalent")}
    overall = 100.0 * total["killed"] / max(1, total["mutants"] - total["equivalent"])
    lines += [f"{'all':45s} {total['mutants']:8d} {total['killed']:7d} {total['timeout']:8d} {total['equivalent']:7d} "
              f"{overall:6.1f}%", ""]
    for module in sorted(survivors):
        lines += [f"surviving in {module}:", *survivors[module], ""]
    OUTPUT.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"lowest module score {worst:.1f} % ({'meets' if worst >= TARGET else 'misses'} the {TARGET:.0f} % target)")
    return 0 if worst >= TARGET else 1


def _natural(name: str) -> tuple[str, int]:
    stem, _, number = name.rpartition("_")
    return stem, int(number) if number.isdigit() else 0


if __name__ == "__main__":
    sys.exit(main())
