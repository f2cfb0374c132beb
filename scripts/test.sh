#!/usr/bin/env bash
# test.sh - install dependencies, build with AddressSanitizer and
# UndefinedBehaviorSanitizer, and run every test with ctest.
# Golden tests read ../shared/testdata (or $SHRUTI_TESTDATA) and skip when
# it is absent. Extra arguments go to ctest (e.g. -L quick, -R mel).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD=${SHRUTI_TEST_BUILD:-build-asan}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHRUTI_SANITIZE=ON >/dev/null
cmake --build "$BUILD" -j "$(nproc)"
# Leaks are errors; UBSan stops at the first report. protect_shadow_gap=0
# lets the CUDA driver map its memory where a GPU is (the GPU suites).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1:protect_shadow_gap=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$BUILD"
ctest --output-on-failure -j "$(nproc)" "$@"
