#!/usr/bin/env bash
# CUDA build and GPU checks, for a machine with PyTorch's CUDA LibTorch, nvcc and CMake but no
# Debian development packages. Builds the tensor core (no OpenCV) against that LibTorch, runs the
# core tests (the CUDA-vs-CPU ones included) and the landmark-network benchmark on the GPU.
#   CSPN_DEPS_DIR  sources of yaml-cpp and googletest and nlohmann's headers (default ./gpu-deps,
#                  made by `scripts/gpu_check.sh --prepare` on a Debian machine)
#   OUT            where the results go (default ./gpu-out)
set -euo pipefail
cd "$(dirname "$0")/.."
deps=${CSPN_DEPS_DIR:-$PWD/gpu-deps}
if [ "${1:-}" = "--prepare" ]; then
  # Debian machine: gather the dependency sources so they can travel with the tree.
  tmp=$(mktemp -d)
  echo "Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" >/etc/apt/sources.list.d/cspn-src.sources
  apt-get update -qq && (cd "$tmp" && apt-get source --download-only yaml-cpp >/dev/null)
  rm /etc/apt/sources.list.d/cspn-src.sources
  rm -rf "$deps" && mkdir -p "$deps/include"
  tar -C "$deps" -xf "$tmp"/yaml-cpp_*.orig.tar.xz && mv "$deps"/yaml-cpp-* "$deps/yaml-cpp"
  cp -r /usr/include/nlohmann "$deps/include/" && cp -r /usr/src/googletest "$deps/googletest"
  exit 0
fi
out=${OUT:-$PWD/gpu-out}
mkdir -p "$out"
prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' | tee "$out/device.txt"
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_POLICY_VERSION_MINIMUM=3.5 -DCSPN_WITH_OPENCV=OFF -DCSPN_DEPS_DIR="$deps" \
  -DCMAKE_PREFIX_PATH="$prefix" >"$out/cmake.log" 2>&1 || { tail -40 "$out/cmake.log"; exit 1; }
cmake --build build-gpu -j "$(nproc)" --target cspn_core_tests cspn_bench >"$out/build.log" 2>&1 || { grep -m20 -E "error|Error" "$out/build.log"; exit 1; }
./build-gpu/cspn_core_tests --gtest_brief=1 2>&1 | tee "$out/tests.txt" | tail -30
./build-gpu/cspn_bench --device cuda --iters 10 --json "$out/bench_cuda.json" | tee "$out/bench_cuda.txt"
