#!/usr/bin/env bash
# Runs every test: setup, build, ctest (unit + integration), pytest, a short
# fuzz smoke, and the sanitizer builds (address+undefined, thread) of the core and shm
# tests and the broker's unit tests.
# Exits non-zero on any failure.
#   SLITHER_FUZZ_SECONDS   seconds per fuzz target (default 20)
#   SLITHER_SKIP_SANITIZERS=1 skips the sanitizer builds (local iteration only)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
jobs=$(nproc)
failed=()

# Each step's wall time and the CPU time (user+sys) of the processes it ran,
# so that the CI budget can be read per step even on a busy machine.
step_name=""
step_start=0
step_cpu=0
times_file=$(mktemp)
trap 'rm -f "$times_file"' EXIT
# Sets cpu_now. The builtin `times` runs in this shell, never in a $(...)
# subshell (which has no children of its own): its second line is the time
# of the children this shell has waited for, and theirs.
read_cpu() {
  times >"$times_file"
  cpu_now=$(awk 'function s(t) { split(t, a, "m"); return a[1] * 60 + a[2] }
                 NR == 2 { printf "%.1f", s($1) + s($2) }' "$times_file")
}
end_step() {
  [ -n "$step_name" ] || return 0
  read_cpu
  printf '==== took %ds wall, %.0fs CPU: %s\n' $((SECONDS - step_start)) \
    "$(awk -v a="$cpu_now" -v b="$step_cpu" 'BEGIN { print a - b }')" "$step_name"
}
step() {
  end_step
  step_name="$*"
  step_start=$SECONDS
  read_cpu
  step_cpu=$cpu_now
  echo
  echo "==== $*"
}

# Runs a command with its output kept in a log, shown (the tail) only on failure.
quietly() {
  local log rc=0
  log=$(mktemp)
  "$@" >"$log" 2>&1 || rc=$?
  [ $rc -eq 0 ] || tail -60 "$log"
  rm -f "$log"
  return $rc
}

step "setup and build"
# The Python extension's copy of the libraries in unity batches (see setup.sh).
SLITHER_PY_UNITY_BUILD=1 scripts/setup.sh

step "format check (.clang-format)"
format_log=$(mktemp)
mapfile -t sources < <(git ls-files '*.cpp' '*.hpp')
if clang-format --dry-run --Werror "${sources[@]}" 2>"$format_log"; then
  echo "formatting: clean"
else
  head -20 "$format_log"
  failed+=(clang-format)
fi
rm -f "$format_log"

step "ctest (unit, integration, consumer)"
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 600 || failed+=(ctest)

if [ -f py_client/pyproject.toml ]; then
  step "pytest"
  set +e
  SLITHER_BROKER_BIN="$root/build/broker/slither-broker" \
    SLITHER_HAMMER_SECONDS="${SLITHER_HAMMER_SECONDS:-30}" \
    .venv/bin/python -m pytest tests/python -q
  rc=$?
  set -e
  # Exit code 5 means no tests were collected: that is a failure too.
  [ $rc -eq 0 ] || failed+=("pytest(rc=$rc)")
fi

if command -v clang++ >/dev/null; then
  step "fuzz smoke (libFuzzer)"
  # SLITHER_UNITY_BUILD: the instrumented libraries compile in batches of
  # sources, as in the sanitizer builds below (the Release build compiles each
  # source alone).
  quietly cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER=clang++ -DSLITHER_BUILD_FUZZ=ON -DSLITHER_BUILD_TESTS=OFF \
    -DSLITHER_BUILD_EXAMPLES=OFF -DSLITHER_UNITY_BUILD=ON
  # One target per tests/fuzz/<name>_fuzz.cpp, named fuzz_<name>. The list comes
  # from the tree, not from a pipeline over ninja's output, which a reader that
  # stops early (grep -q) can break under pipefail.
  fuzzers=()
  for src in tests/fuzz/*_fuzz.cpp; do
    base=${src##*/}
    fuzzers+=("fuzz_${base%_fuzz.cpp}")
  done
  quietly cmake --build build-fuzz -j"$jobs" --target "${fuzzers[@]}"
  # A target fuzzes on one thread for SLITHER_FUZZ_SECONDS of wall time: $jobs
  # of them at once take no CPU from one another, and the step takes a
  # fraction of the time one after the other would.
  fuzz_one() {  # <target> <log>
    local work rc=0
    work=$(mktemp -d)
    [ -d "tests/fuzz/corpus/${1#fuzz_}" ] && cp -r "tests/fuzz/corpus/${1#fuzz_}"/. "$work"/
    "build-fuzz/tests/fuzz/$1" -max_total_time="${SLITHER_FUZZ_SECONDS:-20}" -rss_limit_mb=2048 \
      -print_final_stats=1 "$work" >"$2" 2>&1 || rc=$?
    rm -rf "$work"
    return $rc
  }
  fuzz_logs=$(mktemp -d)
  for ((first = 0; first < ${#fuzzers[@]}; first += jobs)); do
    batch=("${fuzzers[@]:first:jobs}")
    pids=()
    for name in "${batch[@]}"; do
      fuzz_one "$name" "$fuzz_logs/$name.log" &
      pids+=($!)
    done
    for i in "${!batch[@]}"; do
      name=${batch[$i]}
      if wait "${pids[$i]}"; then
        echo "$name: $(grep -E 'stat::number_of_executed_units' "$fuzz_logs/$name.log" |
          awk '{print $2}') runs, no crash"
      else
        tail -40 "$fuzz_logs/$name.log"
        failed+=("$name")
      fi
    done
  done
  rm -rf "$fuzz_logs"
else
  echo "fuzz smoke skipped: clang++ not found"
fi

if [ "${SLITHER_SKIP_SANITIZERS:-0}" != 1 ]; then
  # -O1 with line tables only: what the sanitizers' reports need (file, line,
  # function of every frame), in about half the compile time of -O2 -g
  # (broker/src/lifecycle.cpp under ASan: 22 s of CPU instead of 41 s).
  # SLITHER_UNITY_BUILD: the libraries and the broker's unit tests compile in
  # batches of sources, parsing the headers they share once a batch.
  sanitizer_flags="-O1 -g1 -DNDEBUG"
  # What the sanitizer steps build and run. Every program that the labels
  # select must be in the list: one left out would fail its step as
  # <program>_NOT_BUILT. broker_latency_tests is not defined in sanitizer
  # builds (a latency measured under a sanitizer means nothing).
  sanitizer_targets=(core_unit_tests shm_unit_tests shm_alloc_tests shm_integration_tests
    broker_unit_tests)
  for san in address,undefined thread; do
    dir=build-${san//,/-}
    step "sanitizer build ($san): core, shm and broker unit tests"
    if quietly cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$sanitizer_flags" -DSLITHER_UNITY_BUILD=ON \
      -DSLITHER_SANITIZE="$san" -DSLITHER_BUILD_EXAMPLES=OFF &&
      quietly cmake --build "$dir" -j"$jobs" --target "${sanitizer_targets[@]}"; then
      # Two -L options: labelled broker and unit (the broker's integration
      # programs are labelled broker and integration).
      export SLITHER_SANITIZER_BUILD=1 \
        TSAN_OPTIONS="halt_on_error=1 suppressions=$root/tests/sanitizers/tsan.supp" \
        ASAN_OPTIONS="detect_leaks=1" UBSAN_OPTIONS="print_stacktrace=1"
      ctest --test-dir "$dir" -L 'core|shm' --output-on-failure -j"$jobs" --timeout 900 ||
        failed+=("sanitize-$san(core,shm)")
      # Under TSan a client's first connection and hello can take longer than
      # the 300 ms timeouts these tests give their clients (300-700 ms measured
      # on a loaded 2-core machine); they run under ASan and in Release.
      excluded='^$'
      [ "$san" != thread ] || excluded='UnreachableBrokerIsUnavailableWithinTheTimeout|MalformedMessagesAreAnsweredAndServingGoesOn|MessagesWithOtherThanTwoFramesAreAnsweredWithTheirRequestId|ACallThatOutlastsItsTimeoutOnALiveBrokerIsTimeout|AStoppedBrokerIsUnavailable|InterruptEndsABlockedCallPromptly'
      ctest --test-dir "$dir" -L broker -L unit -LE latency -E "$excluded" --output-on-failure \
        -j"$jobs" --timeout 900 || failed+=("sanitize-$san(broker)")
      unset SLITHER_SANITIZER_BUILD TSAN_OPTIONS ASAN_OPTIONS UBSAN_OPTIONS
    else
      failed+=("sanitize-$san(build)")
    fi
  done
fi

end_step
read_cpu
echo "==== test.sh took ${SECONDS}s wall, ${cpu_now}s CPU"
echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "test.sh: FAILED: ${failed[*]}"
  exit 1
fi
echo "test.sh: all test steps passed"
