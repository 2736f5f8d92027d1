#!/usr/bin/env bash
# The full test suite, with all set-up, on a fresh machine: builds its own virtual
# environment from the declared, pinned dependencies (pyproject.toml's [dev] extra under
# scripts/constraints.txt), so nothing that happens to be installed on the machine
# counts, then runs ruff, mypy, the import-layer check (lint-imports) and pytest (unit, contract,
# acceptance). Usage: ./scripts/test.sh [pytest args]
# QANAT_TEST_VENV=dir picks where the venv goes (default .venv-test, made anew each run).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use, installed with apt when missing (a fresh machine may
# need its package lists first): libfaketime (the clock-skew test runs a worker 10 s
# ahead), PostgreSQL 15's initdb/postgres and redis-server (tests/services.py starts
# servers of its own on 127.0.0.1), Chromium (the dashboard's browser tests drive it
# through Playwright; the Playwright package never downloads a browser of its own).
apt_install() {
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    echo "== apt-get install $*"
    $sudo apt-get install -y -q "$@" >/dev/null 2>&1 \
        || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "$@" >/dev/null; }
}
if command -v apt-get >/dev/null; then
    [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || apt_install faketime
    command -v initdb >/dev/null || [ -x /usr/lib/postgresql/15/bin/initdb ] \
        || apt_install postgresql-15
    command -v redis-server >/dev/null || apt_install redis-server
    command -v chromium >/dev/null || apt_install chromium
fi

venv="${QANAT_TEST_VENV:-$PWD/.venv-test}"
echo "== venv $venv (fresh)"
python3 -m venv --clear "$venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
"$venv/bin/python" -m pip install -q -c scripts/constraints.txt -e '.[dev]'
export PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv"
py="$venv/bin/python"

echo "== ruff"
"$py" -m ruff check src tests benchmarks examples
"$py" -m ruff format --check src tests benchmarks examples
echo "== mypy"
"$py" -m mypy
echo "== import layers"
"$venv/bin/lint-imports" --no-cache
echo "== pytest"
"$py" -m pytest -q -p no:cacheprovider "$@"
