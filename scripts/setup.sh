#!/usr/bin/env bash
# Installs everything the build, tests and examples need, then builds Release
# into build/. Safe to run twice; fast when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

debian_packages=(
  build-essential cmake ninja-build pkg-config git python3 python3-venv
  libboost-dev libzmq3-dev cppzmq-dev libcereal-dev libgtest-dev libgmock-dev libbenchmark-dev
  libtomlplusplus-dev libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libxxhash-dev
  liblmdb-dev libmsgpack-cxx-dev clang libclang-rt-14-dev clang-format prometheus-cpp-dev
)

missing=()
for p in "${debian_packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# The project's Python environment, with pinned dependencies.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
reqs=(py_client/requirements-dev.txt examples/requirements.txt)
# The stamp is compared whole: a stamp listing fewer files than reqs (one written
# before a requirements file was added) must not pass as up to date.
stamp=.venv/.requirements.sha1
reqs_sum=$(sha1sum "${reqs[@]}")
if [ "$(cat "$stamp" 2>/dev/null)" != "$reqs_sum" ]; then
  .venv/bin/pip install --quiet "${reqs[@]/#/--requirement=}"
  printf '%s\n' "$reqs_sum" >"$stamp"
fi

# The C++ tree, Release, with tests.
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DSLITHER_WERROR=ON >/dev/null
cmake --build build -j"$(nproc)"

# The Python package, rebuilt only when its sources (or the C++ it wraps) changed.
# SLITHER_PY_UNITY_BUILD=1 (scripts/test.sh sets it) compiles the libraries the
# extension links in unity batches: build/ above has just compiled each of their
# sources alone, and a clean CI machine would otherwise spend as much CPU again
# on the same sources. scripts/bench.sh runs this script with the default (each
# source alone, as a user's pip install builds it): the stamp tells the two
# apart, so switching rebuilds. The define is passed either way, or build/py's
# cache would keep the last one.
py_unity=OFF
[ "${SLITHER_PY_UNITY_BUILD:-0}" != 1 ] || py_unity=ON
if [ -f py_client/pyproject.toml ]; then
  src_hash=$({
    git ls-files -co --exclude-standard core shm broker py_client CMakeLists.txt cmake |
      sort | xargs sha1sum
    echo "unity=$py_unity"
  } | sha1sum | cut -d' ' -f1)
  if [ "$(cat .venv/.slither-src.sha1 2>/dev/null)" != "$src_hash" ]; then
    # Before the distribution was named slither-coordinator it was "slither": that
    # one owns the same files, so it goes first (any other "slither" in this
    # project's venv would shadow `import slither` all the same).
    if .venv/bin/python -m pip show --quiet slither >/dev/null 2>&1; then
      .venv/bin/python -m pip uninstall --quiet --yes slither
    fi
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) .venv/bin/pip install --quiet --no-build-isolation \
      --config-settings=build-dir="$root/build/py" \
      --config-settings=cmake.define.SLITHER_UNITY_BUILD="$py_unity" ./py_client
    echo "$src_hash" >.venv/.slither-src.sha1
  fi
fi
echo "setup: ok"
