#!/usr/bin/env bash
# Configures (first time) and builds one build tree. Quick when nothing changed.
# Usage: scripts/build.sh release|test|asan|tsan
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:?usage: scripts/build.sh release|test|asan|tsan}
jobs=$(nproc 2>/dev/null || echo 2)
case "$kind" in
  release)
    scripts/deps.sh bench
    args=(-DCMAKE_BUILD_TYPE=Release -DAIOKIT_BUILD_TESTS=OFF -DAIOKIT_BUILD_EXAMPLES=OFF) ;;
  test)
    scripts/deps.sh test
    args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DAIOKIT_WERROR=ON -DAIOKIT_LINT_TESTS=ON
          -DAIOKIT_BUILD_BENCHMARKS=OFF) ;;
  asan)
    scripts/deps.sh test
    args=(-DCMAKE_BUILD_TYPE=Debug -DAIOKIT_WERROR=ON -DAIOKIT_SANITIZE=address,undefined
          -DAIOKIT_BUILD_BENCHMARKS=OFF) ;;
  tsan)
    # GCC warns that TSan does not model atomic_thread_fence (aiokit uses a
    # seq_cst RMW there under TSan), so no -Werror here.
    scripts/deps.sh test
    # Only the library and its tests: test.sh runs the unit label here.
    args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DAIOKIT_SANITIZE=thread -DAIOKIT_BUILD_TOOLS=OFF
          -DAIOKIT_BUILD_BENCHMARKS=OFF -DAIOKIT_BUILD_EXAMPLES=OFF) ;;
  *) echo "build.sh: unknown build '$kind' (release, test, asan or tsan)" >&2; exit 2 ;;
esac
dir=build/$kind
if [ ! -f "$dir/CMakeCache.txt" ]; then
  cmake -S . -B "$dir" "${args[@]}" >/dev/null
fi
cmake --build "$dir" -j"$jobs"
