#!/usr/bin/env bash
# The main job: runs the examples on an embedded broker, beside their
# pure-Python baselines (sets the project up first if needed).
#   scripts/example.sh             what there is
#   scripts/example.sh --all       feature_store and the five demos
#   scripts/example.sh NAME...     the named ones
#   options: --no-baseline, --workers N, --scale F, --json (summary on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
export PATH="$PWD/.venv/bin:$PATH"
exec build/examples/slither-example "$@"
