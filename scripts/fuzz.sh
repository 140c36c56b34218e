#!/usr/bin/env bash
# The libFuzzer targets (fuzz/): installs what is missing (clang, its sanitizer runtimes), builds them
# with clang under AddressSanitizer + UndefinedBehaviorSanitizer in build/fuzz, and runs each for
# SECONDS on a copy of its seed corpus (fuzz/corpus/TARGET; the checked-in corpus never grows).
# Exits 1 on a finding (a crash, a sanitizer report, a broken invariant, a hang, a leak) and prints
# the input that caused it, kept under build/fuzz/findings/.
# Usage: scripts/fuzz.sh [--time SECONDS] [--jobs N]
#   --time  seconds per target (default 30); a long run: scripts/fuzz.sh --time 3600
#   --jobs  fuzzing processes per target (default 1; libFuzzer's -jobs/-workers)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=30
jobs=1
usage() { echo "usage: scripts/fuzz.sh [--time SECONDS] [--jobs N]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --time) [ $# -ge 2 ] || usage; seconds=$2; shift 2 ;;
    --time=*) seconds=${1#--time=}; shift ;;
    --jobs) [ $# -ge 2 ] || usage; jobs=$2; shift 2 ;;
    --jobs=*) jobs=${1#--jobs=}; shift ;;
    *) usage ;;
  esac
done
[[ "$seconds" =~ ^[1-9][0-9]*$ && "$jobs" =~ ^[1-9][0-9]*$ ]] || usage

scripts/deps.sh fuzz
targets=(fuzz_libaio_dropin fuzz_bench_options)
dir=build/fuzz
if [ ! -f "$dir/CMakeCache.txt" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$dir" -DAIOKIT_FUZZ=ON >/dev/null
fi
# Only the targets and the library pieces they link.
cmake --build "$dir" -j"$(nproc 2>/dev/null || echo 2)" --target "${targets[@]}" >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TMPDIR=$work
export ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
stamp=$(date +%Y%m%d-%H%M%S)
failed=0
# The logs of one target's run (with --jobs, one per process).
logs() { find "$work/$1" -maxdepth 1 -name '*log' -type f -exec cat {} +; }
for t in "${targets[@]}"; do
  corpus=$work/$t/corpus
  findings=$root/$dir/findings/$t-$stamp
  mkdir -p "$corpus" "$findings"
  cp fuzz/corpus/"$t"/* "$corpus"/
  args=(-max_total_time="$seconds" -timeout=25 -print_final_stats=1 -artifact_prefix="$findings/")
  if [ "$jobs" -gt 1 ]; then args+=(-jobs="$jobs" -workers="$jobs"); fi
  echo "-- $t: ${seconds}s, $jobs process(es)"
  rc=0
  # -jobs writes one fuzz-N.log per process into the working directory.
  (cd "$work/$t" && "$root/$dir/fuzz/$t" "${args[@]}" "$corpus" >"$work/$t/log" 2>&1) || rc=$?
  runs=$(logs "$t" | sed -n 's/^stat::number_of_executed_units: *//p' | awk '{s += $1} END {print s + 0}')
  cov=$(logs "$t" | grep -o 'cov: [0-9]*' | tail -1 || true)
  mapfile -t found < <(find "$findings" -type f | sort)
  if [ "$rc" -ne 0 ] || [ ${#found[@]} -ne 0 ]; then
    failed=1
    echo "FINDING in $t (exit $rc):"
    logs "$t" | grep -v -E '^#[0-9]+|^\s+NEW_FUNC' | tail -60 || true
    for f in "${found[@]}"; do
      echo "  input: $f"
      echo "  replay: $dir/fuzz/$t $f$([ "$t" = fuzz_libaio_dropin ] && echo '   (AIOKIT_FUZZ_TRACE=1 shows the calls)')"
    done
  else
    rmdir "$findings"
    echo "   ok: $runs executions, ${cov:-cov: ?}, corpus $(find "$corpus" -type f | wc -l) inputs"
  fi
done
rmdir "$root/$dir/findings" 2>/dev/null || true
exit $failed
