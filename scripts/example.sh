#!/usr/bin/env bash
# The main job: runs the examples on an embedded broker.
#   scripts/example.sh --all       every example
#   scripts/example.sh NAME...     the named ones
#   scripts/example.sh --list      what there is
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
export PATH="$PWD/.venv/bin:$PATH"
exec build/examples/slither-example "$@"
