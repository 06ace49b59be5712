"""experiments/ is grouped by purpose, and every script imports from where it now lives."""

from __future__ import annotations

import pytest
from experiment_scripts import EXPERIMENTS, load_experiment

SCRIPTS = sorted(path.stem for path in EXPERIMENTS.glob("*/*.py"))


def test_scripts_live_in_the_three_groups_and_share_one_helper():
    assert {path.parent.name for path in EXPERIMENTS.glob("*/*.py")} == {"paper", "benchmarks", "studies"}
    assert sorted(path.name for path in EXPERIMENTS.glob("*.py")) == ["experiment_paths.py"]
    assert len(SCRIPTS) == len(set(SCRIPTS))  # scripts import each other by name: names stay unique


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_imports_and_writes_to_the_results_folder(name):
    module = load_experiment(name)  # runs the module's top level: its paths and imports of other scripts
    results = EXPERIMENTS / "results"
    for attribute in ("RESULTS", "RESULTS_PATH"):
        value = getattr(module, attribute, None)
        if value is not None:
            assert value == results or value.parent == results, (name, value)
