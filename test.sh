#!/usr/bin/env bash
# The whole test suite in one command: the Rust tests, then the Python
# package built into a fresh virtual environment and its pytest suite
# (which also drives the `mmkit` CLI built here).
#
#   ./test.sh                 # what CI runs (.ci/run)
#   PYTEST_ARGS="-k queue" ./test.sh
#
# Needs cargo and python3 with the venv module; the venv gets numpy,
# pytest and maturin from PyPI.
set -euo pipefail
cd "$(dirname "$0")"

# Also builds target/release/mmkit (the CLI's integration tests need it),
# which the Python tests drive.
cargo test --release
rust_done=$SECONDS

target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
venv="$target/py-venv"
rm -rf "$venv"
python3 -m venv "$venv"
# The user's path: `pip install ./python`, which builds the extension with
# maturin (fetched into pip's isolated build environment).
"$venv/bin/python" -m pip install --quiet "./python[test]"

build_done=$SECONDS

MMKIT_CLI="$target/release/mmkit" "$venv/bin/python" -m pytest python/tests -q ${PYTEST_ARGS:-}
echo "test.sh: Rust tests ${rust_done}s, Python build $((build_done - rust_done))s, pytest $((SECONDS - build_done))s"
