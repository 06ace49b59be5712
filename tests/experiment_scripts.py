"""Experiment scripts imported as modules, for the tests that check them (``experiments/`` is not a package).

Example::

  figure4 = load_experiment("glue_figure4")  # experiments/paper/glue_figure4.py
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def experiment_script(name: str) -> Path:
    """The path of ``experiments/<group>/<name>.py`` (groups: paper, benchmarks, studies)."""
    (path,) = EXPERIMENTS.glob(f"*/{name}.py")
    return path


def load_experiment(name: str) -> types.ModuleType:
    """``experiments/<group>/<name>.py`` as module ``name``, imported once per test session."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, experiment_script(name))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve their module through sys.modules
        spec.loader.exec_module(module)
    return sys.modules[name]
