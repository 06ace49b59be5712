#!/usr/bin/env bash
# The project's test command: lint, format check, then the test suite (slow end-to-end runs excluded;
# run them with `.venv/bin/python -m pytest -m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
