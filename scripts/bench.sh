#!/usr/bin/env bash
# Runs the benchmarks of one area (codec, store, dispatch, pipe, telemetry, python) or of all of them,
# and prints a markdown table of medians plus BENCH/RATIO lines.
#   scripts/bench.sh [area] [--repetitions N]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

areas=()
reps=${SLITHER_BENCH_REPETITIONS:-7}
while [ $# -gt 0 ]; do
  case "$1" in
    --repetitions) reps=$2; shift 2 ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) areas+=("$1"); shift ;;
  esac
done
[ ${#areas[@]} -gt 0 ] || areas=(codec store python)

scripts/setup.sh >/dev/null

# run_cxx AREA [TARGET REPORT]: a Google Benchmark executable of tests/bench/AREA
# (bench_AREA and report.json by default) and its report.
run_cxx() {
  local area=$1 target=${2:-bench_$1} spec=${3:-report.json}
  cmake --build build --target "$target" >/dev/null
  local out; out=$(mktemp)
  # The JSON goes to a file: the stdout of a bench with an embedded broker also
  # carries the broker's log (and its workers' output).
  "build/tests/bench/$area/$target" --benchmark_repetitions="$reps" \
    --benchmark_report_aggregates_only=true --benchmark_out="$out" \
    --benchmark_out_format=json >&2
  echo "## bench: $area, $target (medians of $reps repetitions)"
  python3 scripts/bench_report.py "tests/bench/$area/$spec" "$out"
  rm -f "$out"
}

# The codec's Python side: slither.encode/decode against pickle and orjson,
# and a Store get of a row against pickle.loads.
run_codec_python() {
  .venv/bin/pip install --quiet -r tests/bench/codec/requirements.txt
  SLITHER_BENCH_REPS="${SLITHER_BENCH_REPS:-$reps}" \
    SLITHER_BROKER_BIN="$root/build/broker/slither-broker" .venv/bin/python tests/bench/codec/bench_codec.py
}

# Dispatch: the C++ driver through a broker to Python workers (python -m
# slither.worker), then the Python client against Pool.imap, ProcessPoolExecutor,
# mpire and Ray (tests/bench/python/bench_dispatch.py), which also takes the C++
# figure for its RATIO against Pool.imap.
run_dispatch() {
  run_cxx dispatch
  .venv/bin/pip install --quiet -r tests/bench/python/requirements-dispatch.txt
  local cxx; cxx=$(mktemp)
  SLITHER_BENCH_WORKER="$root/.venv/bin/python -m slither.worker" \
    SLITHER_BENCH_FUNCTION="dispatch_bench_handlers:identity" \
    PYTHONPATH="$root/tests/bench/python${PYTHONPATH:+:$PYTHONPATH}" \
    run_cxx dispatch bench_dispatch_broker broker_report.json | tee "$cxx"
  echo "## bench: dispatch from Python"
  SLITHER_BENCH_REPS="${SLITHER_BENCH_REPS:-5}" SLITHER_BENCH_CXX_REPORT="$cxx" \
    SLITHER_BROKER_BIN="$root/build/broker/slither-broker" .venv/bin/python tests/bench/python/bench_dispatch.py
  rm -f "$cxx"
}

# The pipe driven from Python (local stage -> python stage -> router) against
# multiprocessing.Pool.imap plus plain Python for the local stages.
run_pipe_python() {
  echo "## bench: the pipe driven from Python"
  SLITHER_BENCH_REPS="${SLITHER_BENCH_REPS:-5}" \
    SLITHER_BROKER_BIN="$root/build/broker/slither-broker" .venv/bin/python tests/bench/python/bench_pipe.py
}

run_python() {
  local reqs=tests/bench/python/requirements.txt
  if ! command -v redis-server >/dev/null; then
    apt-get install -y --no-install-recommends redis-server >/dev/null
  fi
  .venv/bin/pip install --quiet -r "$reqs"
  echo "## bench: python"
  SLITHER_BROKER_BIN="$root/build/broker/slither-broker" .venv/bin/python tests/bench/python/bench_python.py
  echo "## bench: a 256 MiB array put from python against a memcpy into fresh shared memory"
  SLITHER_BROKER_BIN="$root/build/broker/slither-broker" .venv/bin/python tests/bench/python/bench_large_put.py
}

for area in "${areas[@]}"; do
  case "$area" in
    codec) run_cxx codec; run_codec_python ;;
    # The store at 100k keys against LMDB, then one table at 10^5 against 10^7 keys.
    store) run_cxx store; run_cxx store bench_scale scale_report.json ;;
    # The engine alone, then through a broker to Python worker processes, then
    # the Python client against its baselines.
    dispatch) run_dispatch ;;
    # Native stages against a plain loop, then a pipe with a python stage on
    # a broker's workers against raw dispatch (same worker variables), then
    # the same kind of pipe driven from Python against Pool.imap.
    pipe) run_cxx pipe; run_pipe_python ;;
    # What emitting costs with no handler, with one, with the broker's metrics.
    telemetry) run_cxx telemetry ;;
    python) run_python ;;
    *) echo "bench.sh: unknown area '$area' (codec, store, dispatch, pipe, telemetry, python)" >&2; exit 2 ;;
  esac
done
