#!/usr/bin/env bash
# The project's test command: lint, format check, then the test suite (slow end-to-end runs excluded;
# run them with `.venv/bin/python -m pytest -m slow`) on two pytest-xdist workers: most of a test's time is
# tracing and XLA compilation, which use one core, so two workers keep the 2-core CI machine busy
# (PYTEST_WORKERS=0 runs in one process).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist load "$@"
