#!/usr/bin/env bash
# The README's Quick start. On a fresh Debian 12 machine (as root):
#   cmake/quickstart.sh demo   installs what is missing, builds, runs the main job
#   cmake/quickstart.sh test   installs what is missing, builds, runs the whole test suite
#   cmake/quickstart.sh deps [PACKAGE...]   only installs what is missing (Debian's packages, and
#                                           the extra packages named)
# CAC_BUILD_DIR overrides the build directory (default: build).
set -euo pipefail

cd "$(dirname "$0")/.."
mode=${1:-}
case "$mode" in
  demo | test | deps) ;;
  *) echo "usage: cmake/quickstart.sh demo|test|deps [PACKAGE...]" >&2; exit 2 ;;
esac
build=${CAC_BUILD_DIR:-build}
packages=(libtorch-dev catch2 libfmt-dev libopenblas0-openmp libbenchmark-dev cmake g++ ninja-build ccache libcli11-dev
          libyaml-cpp-dev nlohmann-json3-dev libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev
          libgloo-dev)
[[ $mode == test ]] && packages+=(clang-format-14)  # the format check (tests/format.cmake)
[[ $mode == deps ]] && packages+=("${@:2}")

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[[ $mode == deps ]] && exit 0

start=$(date +%s)
echo "== configuring and building in $build"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
if [[ $mode == demo ]]; then
  cmake --build "$build" -j "$(nproc)" --target cac-demo   # only what the demo runs
else
  cmake --build "$build" -j "$(nproc)"
fi
built=$(date +%s)
echo "== build took $((built - start)) s"

if [[ $mode == demo ]]; then
  "$build/examples/programs/cac-demo" --work-dir work_dirs/demo
else
  status=0
  ctest --test-dir "$build" --output-on-failure -j "$(nproc)" || status=$?
  echo "== tests took $(($(date +%s) - built)) s (build $((built - start)) s)"
  exit "$status"
fi
