"""Where experiment scripts read and write, and how they import one another.

The scripts are grouped by purpose: ``paper/`` reproduces the paper's tables and figures (and holds the main
job, ``paper/glue.py``), ``benchmarks/`` measures speed and memory against references, ``studies/`` asks
questions the paper does not. Every group writes to one ``results/`` folder. A script imports this module
first (``sys.path.insert(0, str(Path(__file__).resolve().parents[1]))``); that puts every group on the import
path, so scripts import each other by name (``import glue_table``, ``from bench_machine import ...``).

Example::

  from experiment_paths import RESULTS, RUNS
  RESULTS / "glue_table.md", RUNS / "glue_table"
"""

from __future__ import annotations

import pathlib
import sys

EXPERIMENTS = pathlib.Path(__file__).resolve().parent
REPO = EXPERIMENTS.parent
RESULTS = EXPERIMENTS / "results"  # committed results files
RUNS = REPO / "runs"  # saved adapters and checkpoints (not versioned)
GROUPS = ("paper", "benchmarks", "studies")

for _group in GROUPS:
    if str(EXPERIMENTS / _group) not in sys.path:
        sys.path.append(str(EXPERIMENTS / _group))


def repo_relative(path: str | pathlib.Path) -> str:
    """``path`` relative to the repository root when inside it: records must not hold this machine's paths."""
    resolved = pathlib.Path(path).resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)
