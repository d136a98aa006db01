#!/usr/bin/env bash
# The whole cspn command on a machine that has PyTorch's (CUDA) LibTorch, a compiler and CMake but
# no Debian development packages: no OpenCV, libjpeg, yaml-cpp, spdlog, ... headers.
#   scripts/gpu_check.sh --prepare  on a Debian 12 machine: gathers the sources of everything the
#                                   build needs from Debian's source packages into CSPN_DEPS_DIR
#                                   (about 40 MB; it travels with the working tree)
#   scripts/gpu_check.sh --build    builds those (zlib, libpng, libjpeg-turbo, OpenCV's core,
#                                   imgproc and imgcodecs) into BUILD_DIR/deps, then cspn against them
#   scripts/gpu_check.sh --checks   the checks on the GPU (after --build); results in OUT
#   scripts/gpu_check.sh            both
# Environment: CSPN_DEPS_DIR (default ./gpu-deps), BUILD_DIR (build-gpu), OUT (gpu-out),
#   PYTHON (python3: its torch gives LibTorch's CMake prefix), JOBS (all cores),
#   TARGETS (default: the command, the core tests and the benchmark; "all" for the test suites too),
#   DEVICE (cuda; cpu for a dry run of the checks), SCENES (synthetic scenes to train on, 1500).
set -euo pipefail
cd "$(dirname "$0")/.."
deps=$(realpath -m "${CSPN_DEPS_DIR:-gpu-deps}")
build=$(realpath -m "${BUILD_DIR:-build-gpu}")
out=$(realpath -m "${OUT:-gpu-out}")
python=${PYTHON:-python3}
jobs=${JOBS:-$(nproc)}
mode=${1:-check}

prepare() {
  local tmp
  tmp=$(mktemp -d)
  echo "Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" >/etc/apt/sources.list.d/cspn-src.sources
  apt-get update -qq
  (cd "$tmp" && apt-get source --download-only yaml-cpp zlib libpng1.6 libjpeg-turbo opencv cpp-httplib >/dev/null)
  rm /etc/apt/sources.list.d/cspn-src.sources
  rm -rf "$deps" && mkdir -p "$deps/include"
  local name
  for name in yaml-cpp zlib libpng libjpeg-turbo; do
    tar -C "$deps" -xf "$tmp"/"${name/libpng/libpng1.6}"_*.orig.tar.*
    mv "$deps/$name"-* "$deps/$name"
  done
  # OpenCV: its build system and the three modules cspn uses, without their tests and bindings.
  tar -C "$tmp" -xf "$tmp"/opencv_*+dfsg.orig.tar.xz
  mkdir -p "$deps/opencv/modules" "$deps/opencv/doc" "$deps/opencv/data" "$deps/opencv/platforms"
  cp -r "$tmp"/opencv-*/{CMakeLists.txt,LICENSE,cmake,include} "$deps/opencv/"
  cp -r "$tmp"/opencv-*/platforms/scripts "$deps/opencv/platforms/"  # installed by its CMake
  cp "$tmp"/opencv-*/doc/CMakeLists.txt "$deps/opencv/doc/"
  cp "$tmp"/opencv-*/data/CMakeLists.txt "$deps/opencv/data/"
  for name in core imgproc imgcodecs; do
    cp -r "$tmp"/opencv-*/modules/$name "$deps/opencv/modules/"
    rm -rf "$deps/opencv/modules/$name"/{test,perf,misc,doc,samples}
  done
  tar -C "$tmp" -xf "$tmp"/cpp-httplib_*.orig.tar.xz
  cp "$tmp"/*cpp-httplib*/httplib.h "$deps/include/"  # the header-only library (Debian's is split)
  cp -r /usr/include/{nlohmann,CLI,spdlog,fmt} "$deps/include/"
  cp -r /usr/src/googletest "$deps/googletest"
  rm -rf "$tmp"
  du -sh "$deps"
}

# One dependency: configure, build and install into $prefix (static libraries only).
build_dep() {
  local name=$1
  shift
  echo "building $name"
  cmake -S "$deps/$name" -B "$build/deps-build/$name" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" \
    -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_INSTALL_LIBDIR=lib -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
    -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DBUILD_SHARED_LIBS=OFF -DCMAKE_C_FLAGS=-std=gnu17 "$@" >"$build/deps-build/$name.log" 2>&1 &&
    cmake --build "$build/deps-build/$name" -j "$jobs" >>"$build/deps-build/$name.log" 2>&1 &&
    cmake --install "$build/deps-build/$name" >>"$build/deps-build/$name.log" 2>&1 ||
    { tail -30 "$build/deps-build/$name.log"; echo "building $name failed: $build/deps-build/$name.log" >&2; exit 1; }
}

build_all() {
  [ -d "$deps/opencv" ] || { echo "no dependency sources in $deps: run scripts/gpu_check.sh --prepare on a Debian machine" >&2; exit 1; }
  prefix=$build/deps
  mkdir -p "$build/deps-build"
  # OpenCV's functions take std::string: its C++ ABI must be LibTorch's (pip's 1.x wheels used the old).
  local abi
  abi=$("$python" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
  if [ ! -f "$prefix/.complete" ]; then
    echo "building zlib"  # with its own configure: its CMake build needs files Debian's source lacks
    rm -rf "$build/deps-build/zlib" && cp -r "$deps/zlib" "$build/deps-build/zlib"
    # gnu17: zlib 1.2.13's old-style definitions are errors in C23, GCC 15's default.
    (cd "$build/deps-build/zlib" && CFLAGS="-O2 -fPIC -std=gnu17" ./configure --static --prefix="$prefix" && make -j "$jobs" &&
      make install) >"$build/deps-build/zlib.log" 2>&1 || { tail -30 "$build/deps-build/zlib.log"; exit 1; }
    build_dep libpng -DPNG_SHARED=OFF -DPNG_TESTS=OFF -DPNG_EXECUTABLES=OFF
    # SIMD where nasm is installed; its install folders are relative to the build folder otherwise.
    build_dep libjpeg-turbo -DENABLE_SHARED=OFF -DWITH_TURBOJPEG=OFF -DCMAKE_INSTALL_LIBDIR="$prefix/lib"
    build_dep opencv -DBUILD_LIST=core,imgproc,imgcodecs -DBUILD_ZLIB=OFF -DBUILD_PNG=OFF -DBUILD_JPEG=OFF \
      -DWITH_PNG=ON -DWITH_JPEG=ON -DWITH_TIFF=OFF -DWITH_WEBP=OFF -DWITH_OPENJPEG=OFF -DWITH_JASPER=OFF \
      -DWITH_OPENEXR=OFF -DWITH_IPP=OFF -DWITH_ITT=OFF -DWITH_OPENCL=OFF -DWITH_CUDA=OFF -DWITH_EIGEN=OFF \
      -DWITH_LAPACK=OFF -DWITH_PROTOBUF=OFF -DWITH_ADE=OFF -DWITH_QUIRC=OFF -DWITH_TBB=OFF -DWITH_OPENMP=OFF \
      -DWITH_GTK=OFF -DWITH_QT=OFF -DWITH_FFMPEG=OFF -DWITH_GSTREAMER=OFF -DWITH_V4L=OFF -DWITH_1394=OFF \
      -DWITH_VA=OFF -DWITH_VA_INTEL=OFF -DBUILD_TESTS=OFF -DBUILD_PERF_TESTS=OFF -DBUILD_opencv_apps=OFF \
      -DBUILD_DOCS=OFF -DBUILD_JAVA=OFF -DBUILD_opencv_python3=OFF -DOPENCV_GENERATE_PKGCONFIG=OFF \
      -DCPU_DISPATCH=AVX2 -DCMAKE_CXX_FLAGS=-D_GLIBCXX_USE_CXX11_ABI="$abi"
    touch "$prefix/.complete"
  fi
  local torch_prefix nccl
  torch_prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
  # NCCL's header comes with pip's nvidia-nccl wheel, not with torch.
  nccl=$("$python" -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "include"))' 2>/dev/null || true)
  if [ -n "$nccl" ] && [ ! -f "$nccl/nccl.h" ]; then
    echo "warning: $nccl has no nccl.h: building without NCCL" >&2
    nccl=""
  fi
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_POLICY_VERSION_MINIMUM=3.5 -DCSPN_DEPS_DIR="$deps" \
    -DCMAKE_PREFIX_PATH="$prefix;$torch_prefix" ${nccl:+-DNCCL_INCLUDE_DIR="$nccl"} >"$build/cmake.log" 2>&1 ||
    { tail -40 "$build/cmake.log"; exit 1; }
  grep -E "warning|Warning" -A2 "$build/cmake.log" | head -20 || true
  # shellcheck disable=SC2086
  cmake --build "$build" -j "$jobs" --target ${TARGETS:-cspn_cli cspn_core_tests cspn_bench} >"$build/build.log" 2>&1 ||
    { grep -m20 -E "error|Error" "$build/build.log"; exit 1; }
  echo "built $build/cspn"
}

# The GPU checks, each logged to $out; a failing step is reported and the next one still runs.
step() {
  local name=$1
  shift
  echo "== $name: $*"
  local start=$SECONDS
  if "$@" >"$out/$name.log" 2>&1; then
    echo "   ok in $((SECONDS - start)) s; $(tail -n 2 "$out/$name.log" | tr '\n' ' ' | cut -c1-300)"
  else
    echo "   FAILED (exit $?) in $((SECONDS - start)) s:"
    tail -n 15 "$out/$name.log"
  fi
}

# Runs a command and kills it after $1 seconds; succeeds only when it was still running by then.
killed_after() {
  local seconds=$1 status=0
  shift
  timeout -s KILL "$seconds" "$@" || status=$?
  [ "$status" -eq 137 ]
}

checks() {
  mkdir -p "$out"
  local cspn=$build/cspn work=$build/check
  rm -rf "$work" && mkdir -p "$work"
  local device=${DEVICE:-cuda}
  "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.device_count(), "GPUs",
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' | tee "$out/device.txt"
  step synth "$cspn" synth --out "$work/scenes" --scenes --count "${SCENES:-1500}" --seed 1
  # Crops/s of the data pipeline on the calling thread and on 8 workers, against the training runs'
  # examples/s below (which use 8 workers).
  step data_pipeline "$cspn" bench --parts data --data "$work/scenes" --config configs/scenes.yaml \
    --set data.workers=8 --json "$out/data_pipeline.json"
  # Both halves on the GPU, half a minute each, in float32 and with autocast.
  local precision
  for precision in float32 bfloat16 float16; do
    step "train_$precision" "$cspn" train --config configs/scenes.yaml --data "$work/scenes" --out "$work/run_$precision" --set data.workers=8 \
      --device "$device" --set train.time_limit_minutes=0.5 --set train_detector.time_limit_minutes=0.5 \
      --set train.precision=$precision --set train_detector.precision=$precision --quiet
    cp "$work/run_$precision/log.jsonl" "$out/train_$precision.jsonl" 2>/dev/null || true
  done
  # NCCL: one rank per GPU under torchrun (flags spelled as PyTorch 1.13 and 2 both take them).
  step "train_nccl" "$python" -m torch.distributed.run --no_python --redirects 2 --tee 2 --nproc_per_node "$("$python" -c 'import torch; print(max(1, torch.cuda.device_count()))')" \
    "$cspn" train --config configs/scenes.yaml --data "$work/scenes" --out "$work/run_nccl" --device "$device" \
    --set train.time_limit_minutes=0.5 --set model.detector.enabled=false --quiet
  cp "$work/run_nccl/log.jsonl" "$out/train_nccl.jsonl" 2>/dev/null || true
  # Killed mid-way (after the first epoch's checkpoint), then resumed on the GPU.
  local landmarks_only=(--config configs/scenes.yaml --data "$work/scenes" --out "$work/run_resume" --device "$device"
    --set model.detector.enabled=false --set train.time_limit_minutes=0.5 --quiet)
  step train_killed killed_after 20 "$cspn" train "${landmarks_only[@]}"
  step train_resumed "$cspn" train "${landmarks_only[@]}" --resume
  local model=$work/run_float32/model.cspn
  step eval_cuda "$cspn" eval --model "$model" --data "$work/scenes" --device "$device" --json "$out/eval_cuda.json" --quiet
  step eval_cpu "$cspn" eval --model "$model" --data "$work/scenes" --device cpu --json "$out/eval_cpu.json" --quiet
  step eval_cuda_detector "$cspn" eval --model "$model" --data "$work/scenes" --device "$device" --boxes detector \
    --json "$out/eval_cuda_detector.json"
  step predict_cuda "$cspn" predict --model "$model" "$work/scenes/img" --out "$work/predictions" --device "$device" --quiet
  step bench_pipeline "$cspn" bench --parts pipeline --device "$device" --model "$model" --json "$out/bench_pipeline.json"
  step bench_landmarks "$build/cspn_bench" --device "$device" --iters 10 --json "$out/bench_cuda.json"
  step core_tests "$build/cspn_core_tests" --gtest_brief=1
  # Training examples/s per phase and precision (the median over the logged steps), and the NE.
  "$python" - "$out" <<'PY' | tee "$out/summary.txt"
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
for log in sorted(out.glob("train_*.jsonl")):
    rates = {}
    for line in log.read_text().splitlines():
        r = json.loads(line)
        if r.get("type") == "train":
            rates.setdefault(r["phase"], []).append(r["examples_per_s"])
    print(log.stem, {phase: round(statistics.median(v), 1) for phase, v in rates.items()})
for name in ("eval_cuda", "eval_cpu", "eval_cuda_detector"):
    f = out / (name + ".json")
    if f.exists():
        print(name, "ne_image", json.loads(f.read_text())["ne_image"]["avg"])
PY
}

case "$mode" in
  --prepare) prepare ;;
  --build) build_all ;;
  --checks) checks ;;
  check) build_all && checks ;;
  *) echo "unknown option '$mode' (--prepare | --build | --checks | nothing)" >&2; exit 2 ;;
esac
