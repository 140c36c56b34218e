#!/usr/bin/env bash
# Every test: installs what is missing, builds with -Werror and runs the whole ctest suite (unit,
# conformance, examples, CLI, packaging, clang-format and clang-tidy), runs the conformance and
# concurrency tests again with every CPU busy (stress-ng, see below), then builds again with
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

# The conformance and concurrency suites (ctest label concurrency) once more, with a busy loop on
# every CPU: their threads are then preempted anywhere and woken late, as on a loaded production
# machine, so a test that passes only because a thread usually runs first or a wake-up usually
# comes in time fails here, in CI, and not in production. stress-ng is stopped when the pass ends,
# fails or is interrupted (trap); its own --timeout, and its workers dying with it, cover a kill -9.
echo "== the concurrency and conformance tests again, every CPU busy (stress-ng --cpu $jobs)"
stress_pid=
stop_stress() {
  if [ -n "$stress_pid" ]; then
    kill "$stress_pid" 2>/dev/null || true
    wait "$stress_pid" 2>/dev/null || true
    stress_pid=
  fi
}
trap stop_stress EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
stress-ng --cpu "$jobs" --timeout 60m --quiet &
stress_pid=$!
stress_start=$(date +%s)
(cd build/test && ctest -j"$jobs" -L concurrency --output-on-failure --timeout 600)
stop_stress
echo "== under stress-ng: $(($(date +%s) - stress_start)) s"

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
