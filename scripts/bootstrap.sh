#!/usr/bin/env bash
# Installs what is missing (Debian 12 packages), builds, and runs one job:
#   scripts/bootstrap.sh demo   synthesize data, train a small model, evaluate, write a report
#   scripts/bootstrap.sh test   the whole test suite, then each fuzz target for 30 s (ASan + UBSan)
#   scripts/bootstrap.sh build  just install and build
# Environment: BUILD_DIR (default build), JOBS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-demo}
build_dir=${BUILD_DIR:-build}
jobs=${JOBS:-2}

packages=(cmake ninja-build g++ ccache pkg-config
  libtorch-dev libgloo-dev libopenblas0-openmp libopencv-dev libjpeg-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev
  libspdlog-dev libcpp-httplib-dev libgtest-dev libbenchmark-dev
  chromium chromium-driver python3-selenium wrk curl clang libclang-rt-dev
  python3-torch python3-torchvision python3-matplotlib python3-numpy python3-dev python3-pytest python3-venv
  pybind11-dev pybind11-json-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# LibTorch takes matrix products from libblas.so.3: make sure it is OpenBLAS, not the reference BLAS.
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 || true)
case "$blas" in
  *openblas*) ;;
  *) echo "warning: libblas.so.3 is $blas, not OpenBLAS: matrix products will be slow" >&2 ;;
esac

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build_dir" -j "$jobs"

case "$mode" in
  demo) exec "$build_dir/cspn" demo ;;
  test)
    ctest --test-dir "$build_dir" --output-on-failure -j "$jobs"
    JOBS=$jobs exec scripts/fuzz.sh 30 ;;
  build) ;;
  *) echo "unknown mode '$mode' (demo | test | build)" >&2; exit 2 ;;
esac
