#!/usr/bin/env bash
# The full test suite, with all set-up: installs qanat and its dev tools, then runs
# ruff, mypy and pytest (unit, contract, acceptance). Usage: ./scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install -q --disable-pip-version-check -e '.[dev]'

echo "== ruff"
python3 -m ruff check src tests benchmarks examples
python3 -m ruff format --check src tests benchmarks examples
echo "== mypy"
python3 -m mypy
echo "== pytest"
python3 -m pytest -q -p no:cacheprovider "$@"
