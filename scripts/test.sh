#!/usr/bin/env bash
# Every test: installs what is missing, builds with -Werror and runs the whole ctest suite (unit,
# conformance, examples, CLI, packaging, clang-format and clang-tidy), then builds again with
# AddressSanitizer + UndefinedBehaviorSanitizer and runs the suite there, then with ThreadSanitizer
# and runs the unit and conformance tests (every concurrency test among them), then builds the
# libFuzzer targets with clang and runs each for 30 seconds (scripts/fuzz.sh).
# Quick when nothing changed: both trees build incrementally.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)

echo "== build and test (RelWithDebInfo, -Werror, lint)"
scripts/build.sh test
(cd build/test && ctest -j"$jobs" --output-on-failure --timeout 600)

echo "== build and test under AddressSanitizer + UndefinedBehaviorSanitizer"
scripts/build.sh asan
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build/asan && ctest -j"$jobs" --output-on-failure --timeout 600)

echo "== build and test under ThreadSanitizer (the unit and conformance tests)"
scripts/build.sh tsan
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
(cd build/tsan && ctest -j"$jobs" -L unit --output-on-failure --timeout 600)

echo "== fuzz (short)"
scripts/fuzz.sh --time 30
echo "== all tests passed"
