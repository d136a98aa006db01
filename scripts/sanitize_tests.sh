#!/usr/bin/env bash
# Runs the whole test suite (ctest) built with clang, AddressSanitizer and UndefinedBehaviorSanitizer,
# in the instrumented build that scripts/fuzz.sh uses (build-fuzz/: the libraries are compiled once
# for both). Any sanitizer report fails the test that triggered it. Not part of CI (the instrumented
# build takes about 15 minutes on 2 cores and the run is 2-3x slower than the normal one).
#   scripts/sanitize_tests.sh [ctest arguments...]      e.g. -R Serve
# Environment: JOBS (build and test jobs, default 2), BUILD_DIR (default build-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-fuzz}
jobs=${JOBS:-2}

CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCSPN_FUZZ=ON \
  -DCSPN_BUILD_TESTS=ON >/dev/null
cmake --build "$build" -j "$jobs"

# Leaks are not checked: LibTorch keeps process-wide allocations (thread pools, registries) alive.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
start=$(date +%s)
status=0
ctest --test-dir "$build" --output-on-failure -j "$jobs" "$@" || status=$?
echo "sanitized test suite: exit $status after $(( $(date +%s) - start )) s"
exit $status
