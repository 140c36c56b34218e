#!/usr/bin/env bash
# A/B of two aiokit builds in one run: builds REV (a commit, default origin/main or the previous commit) in a
# temporary worktree, then runs compare-fio.sh with that build as the baseline, alternating, on the rows given
# (default: the no-regression rows of an engine change: ram QD1 and QD32 on linux-aio and io_uring, and the
# page-cached threads row). The ratio is this tree's IOPS over the baseline's, median of the rounds.
#
# Usage: scripts/ab-bench.sh [REV] [compare-fio.sh options...]
#   e.g. scripts/ab-bench.sh d5ef6dc --rounds 7 --runtime 4
# The worktree and its build are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=HEAD~1
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then rev=$1; shift; fi
base=$(mktemp -d /var/tmp/aiokit-ab.XXXXXX)
cleanup() { git worktree remove --force "$base" 2>/dev/null || rm -rf "$base"; }
trap cleanup EXIT INT TERM
git worktree add --detach "$base" "$rev" >/dev/null
echo "ab-bench: baseline $(git -C "$base" log --oneline -1)" >&2
(cd "$base" && scripts/build.sh release >/dev/null)
rows=ram-randread-qd1,ram-randread-qd32,ram-uring-qd1,ram-uring-qd32,pc-threads-vs-posixaio
has_rows=0
for a in "$@"; do case "$a" in --rows|--rows=*) has_rows=1 ;; esac; done
extra=()
[ $has_rows -eq 1 ] || extra=(--rows "$rows")
scripts/compare-fio.sh --baseline "$base/build/release/tools/aiokit/aiokit" "${extra[@]}" "$@"
