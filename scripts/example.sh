#!/usr/bin/env bash
# Runs the song-processing example end to end on SQLite, with all set-up: installs
# qanat into the current Python, then runs examples/songs/main.py with its database
# and output files in a fresh temporary directory. Usage: ./scripts/example.sh [song.mp3 ...]
set -euo pipefail
cd "$(dirname "$0")/.."

PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check -e .

work="$(mktemp -d "${TMPDIR:-/tmp}/qanat-songs.XXXXXX")"
export SONGS_DB="$work/songs.db"
export SONGS_OUT="$work/out"
unset QANAT_STORAGE
echo "database: $SONGS_DB"
python3 examples/songs/main.py "$@"

if python3 -c "import qanat.cli" 2>/dev/null; then
    echo
    echo "inspect it with the CLI (from $(pwd)):"
    echo "  SONGS_DB=$SONGS_DB QANAT_APP=examples.songs.app:queue qanat ls"
fi
