#!/usr/bin/env bash
# The benchmark guard (issue 13). Builds its own virtual environment from the declared,
# pinned dependencies (pyproject's [bench] extra, with Huey for the peer column, under
# scripts/constraints.txt), then runs every workload of benchmarks/run.py with the raw
# sqlite3 baselines in the same run and prints the table.
#
#   ./scripts/bench.sh [run.py args]          record: writes benchmarks/results/<date>.json
#   ./scripts/bench.sh --check [run.py args]  compare the ratios to the raw baselines with
#                                             the last recorded results; exit 1 on a
#                                             regression beyond the noise band
#
# Not in CI (a shared VM is too noisy for absolute figures); run it before and after any
# change to the engine or a storage backend (docs/contributing.md). QANAT_BENCH_VENV=dir
# picks where the venv goes (default .venv-bench, reused while the pins are unchanged).
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
args=()
for a in "$@"; do
    if [ "$a" = "--check" ]; then check=1; else args+=("$a"); fi
done

venv="${QANAT_BENCH_VENV:-$PWD/.venv-bench}"
stamp="$venv/.qanat-pins"
pins="$(cat pyproject.toml scripts/constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$pins" ]; then
    echo "== venv $venv"
    python3 -m venv --clear "$venv"
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
    "$venv/bin/python" -m pip install -q -c scripts/constraints.txt -e '.[bench]'
    echo "$pins" > "$stamp"
fi

results=benchmarks/results
if [ "$check" = 1 ]; then
    exec "$venv/bin/python" benchmarks/run.py --check "$results" "${args[@]}"
fi
exec "$venv/bin/python" benchmarks/run.py --save "$results" "${args[@]}"
