#!/usr/bin/env bash
# The group-commit log store beside a random reader (bench/logstore_mix.cc) on
# each engine, the engines alternating round by round (a b c, c b a, ...), and
# a Markdown table of the medians for docs/benchmarks.md: acknowledged records/s,
# reads/s, records per fdatasync, and each engine's ratio to linux-aio (the
# median of the per-round ratios).
#
# Usage: scripts/logstore-mix.sh [--rounds N] [--seconds S] [--dir D]
#                                [--engines a,b,...] [-- extra logstore_mix options]
# Defaults: 6 rounds of 5 s, /var/tmp, linux-aio,io_uring,threads. The program's
# files are unnamed temporary files: nothing is left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=6 seconds=5 dir=/var/tmp engines=linux-aio,io_uring,threads
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --engines) engines=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "logstore-mix.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
scripts/build.sh release >/dev/null
python3 - "$rounds" "$seconds" "$dir" "$engines" "$@" <<'EOF'
import re, statistics, subprocess, sys

rounds, seconds, where, engines = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].split(",")
extra = sys.argv[5:]
prog = "build/release/bench/logstore_mix"
pat = re.compile(r"([\d.]+) acknowledged records/s, ([\d.]+) reads/s, [\d.]+ syncs/s, ([\d.]+) records per sync")
res = {e: [] for e in engines}
for r in range(rounds):
    order = engines if r % 2 == 0 else engines[::-1]
    for e in order:
        p = subprocess.run([prog, f"--engine={e}", f"--seconds={seconds}", f"--dir={where}", *extra],
                           capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"logstore-mix.sh: {e}: exit {p.returncode}: {p.stderr.strip()}")
        m = pat.search(p.stdout)
        res[e].append(tuple(float(x) for x in m.groups()))
        print(f"round {r + 1} {e}: {m.group(1)} records/s, {m.group(2)} reads/s", file=sys.stderr)
base = engines[0]
print(f"| engine | acknowledged records/s | reads/s | records per sync | records vs {base} | reads vs {base} |")
print("| --- | --- | --- | --- | --- | --- |")
for e in engines:
    med = [statistics.median(x[i] for x in res[e]) for i in range(3)]
    rr = statistics.median(a[0] / b[0] for a, b in zip(res[e], res[base]))
    rd = statistics.median(a[1] / b[1] for a, b in zip(res[e], res[base]))
    print(f"| {e} | {med[0]:.0f} | {med[1]:.0f} | {med[2]:.2f} | {rr:.3f} | {rd:.3f} |")
EOF
