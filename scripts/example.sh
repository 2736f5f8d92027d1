#!/usr/bin/env bash
# Runs the song-processing example end to end on SQLite, with all set-up: installs
# qanat into its own virtual environment (.venv, or $QANAT_VENV), then runs
# examples/songs/main.py with its database and output files in a fresh temporary
# directory. Usage: ./scripts/example.sh [song.mp3 ...]
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${QANAT_VENV:-$PWD/.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
PIP_ROOT_USER_ACTION=ignore "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    -c scripts/constraints.txt -e .
py="$venv/bin/python"

work="$(mktemp -d "${TMPDIR:-/tmp}/qanat-songs.XXXXXX")"
export SONGS_DB="$work/songs.db"
export SONGS_OUT="$work/out"
unset QANAT_STORAGE
echo "database: $SONGS_DB"
"$py" examples/songs/main.py "$@"

echo
echo "inspect it with the CLI (from $(pwd)):"
echo "  SONGS_DB=$SONGS_DB QANAT_APP=examples.songs.app:queue $venv/bin/qanat ls"
