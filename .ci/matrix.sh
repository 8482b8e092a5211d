#!/usr/bin/env bash
# One row of cac's build matrix against a LibTorch from a pip wheel, on a clean clone:
#   .ci/matrix.sh cpu    LibTorch 2.13.0 (CPU wheel): full build (library, examples, tests,
#                        benchmarks, fuzz target), then the whole test suite
#   .ci/matrix.sh cuda   LibTorch 2.14.1 (CUDA wheel) with the machine's nvcc: configure and build
#                        the library, zoo, engine with NCCL, programs and tests (nothing CUDA runs
#                        without a GPU; the library suite and the package test run on the CPU)
# Row 1 (Debian's LibTorch 1.13.1) is the README's `cmake/quickstart.sh test`.
# The wheels go into virtual environments under CAC_TOOLCHAINS (default /opt/cac-toolchains);
# builds into build-<row> (CAC_BUILD_DIR overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
row=${1:-}
case "$row" in
  cpu) torch=2.13.0; venv_name=torch-2.13-cpu ;;
  cuda) torch=2.14.1; venv_name=torch-2.14-cuda ;;
  *) echo "usage: .ci/matrix.sh cpu|cuda" >&2; exit 2 ;;
esac
toolchains=${CAC_TOOLCHAINS:-/opt/cac-toolchains}
venv=$toolchains/$venv_name
build=${CAC_BUILD_DIR:-build-$row}
start=$(date +%s)

# Debian's packages the project builds with (the README's Quick start installs the same list),
# and for row 2 the compiler of the libFuzzer target.
if [[ $row == cpu ]]; then
  cmake/quickstart.sh deps clang-14 libclang-rt-14-dev
else
  cmake/quickstart.sh deps
fi

if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$torch')" 2>/dev/null; then
  echo "== installing torch==$torch into $venv"
  mkdir -p "$toolchains"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch==$torch 2>&1 | grep -v "^WARNING: Location" || true
fi
prefix=$("$venv/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
libdir=$(dirname "$(dirname "$prefix")")/lib
echo "== LibTorch $torch ($row) from $prefix ($(($(date +%s) - start)) s)"

# CMAKE_PREFIX_PATH picks the wheel's TorchConfig.cmake; TORCH_LIBRARY keeps its find_library
# from reporting Debian's /usr/lib/x86_64-linux-gnu/libtorch.so when libtorch-dev is installed.
options=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" -DTORCH_LIBRARY="$libdir/libtorch.so")
configured=$(date +%s)
if [[ $row == cpu ]]; then
  cmake -S . -B "$build" "${options[@]}"
  cmake --build "$build" -j "$(nproc)"
  cmake -S fuzz -B "$build/fuzz" "${options[@]}" -DCMAKE_CXX_COMPILER=clang++-14
  cmake --build "$build/fuzz"
  built=$(date +%s)
  echo "== build took $((built - configured)) s"
  # Other kernels than the machine's best (row 1 runs those) and both thread counts: the suite's
  # tolerances must hold on any x86-64 CPU (docs/testing.md).
  status=0
  for run in "avx2 1" "default 2"; do
    read -r capability threads <<<"$run"
    tested=$(date +%s)
    ATEN_CPU_CAPABILITY=$capability OMP_NUM_THREADS=$threads \
      ctest --test-dir "$build" --output-on-failure -j "$(nproc)" || status=$?
    echo "== tests took $(($(date +%s) - tested)) s (ATEN_CPU_CAPABILITY=$capability, OMP_NUM_THREADS=$threads)"
  done
  exit "$status"
else
  mkdir -p "$build"
  cuda_root=${CUDA_HOME:-/usr/local/cuda}  # the toolkit of the machine's nvcc
  [[ -x $cuda_root/bin/nvcc ]] || { echo "== no nvcc in $cuda_root/bin (set CUDA_HOME)" >&2; exit 1; }
  cmake -S . -B "$build" "${options[@]}" -DCAC_BUILD_BENCHMARKS=OFF -DCUDA_TOOLKIT_ROOT_DIR="$cuda_root" \
        -DCMAKE_CUDA_COMPILER="$cuda_root/bin/nvcc" -DTORCH_CUDA_ARCH_LIST=8.0 | tee "$build/cac-configure.log"
  # The row is about the CUDA paths: the engine must compile its NCCL backend.
  grep -q "cac: NCCL found" "$build/cac-configure.log" || { echo "== the engine's NCCL backend is not built" >&2; exit 1; }
  cmake --build "$build" -j "$(nproc)"
  built=$(date +%s)
  echo "== build took $((built - configured)) s (CUDA paths compiled and linked; no GPU here)"
  # A CUDA LibTorch also runs on the CPU: the library's suite, the version checks and the
  # find_package(cac) consumer run here on the CPU (the CUDA paths cannot).
  "$build/tests/cac_tests"
  ctest --test-dir "$build" --output-on-failure -R "^cac_package"
  echo "== CPU tests of the CUDA build took $(($(date +%s) - built)) s"
fi
