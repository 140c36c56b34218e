#!/usr/bin/env bash
# The group-commit log store beside a random reader (bench/logstore_mix.cc) on
# each engine, the engines alternating round by round (a b c, c b a, ...), and
# a Markdown table of the medians for docs/benchmarks.md: acknowledged records/s,
# reads/s, records per fdatasync, and each engine's ratio to linux-aio (the
# median of the per-round ratios).
#
# Usage: scripts/logstore-mix.sh [--rounds N] [--seconds S] [--dir D]
#                                [--engines a,b,...] [--prog engine|device|both]
#                                [-- extra options of the program]
# --prog=device runs the same store written on the device layer
# (examples/device_append_log.cc: Submit with ThenFlush, callbacks) instead of
# the engine interface (bench/logstore_mix.cc); --prog=both runs each engine
# with both programs in every round, alternating, and compares each with the
# first engine's engine-interface run.
# Defaults: 6 rounds of 5 s, /var/tmp, linux-aio,io_uring,threads. The program's
# files are unnamed temporary files: nothing is left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=6 seconds=5 dir=/var/tmp engines=linux-aio,io_uring,threads prog=engine
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --engines) engines=$2; shift 2 ;;
    --prog) prog=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "logstore-mix.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
scripts/build.sh release >/dev/null
case "$prog" in
  engine|device|both) ;;
  *) echo "logstore-mix.sh: --prog engine, device or both" >&2; exit 2 ;;
esac
python3 - "$rounds" "$seconds" "$dir" "$engines" "$prog" "$@" <<'EOF'
import re, statistics, subprocess, sys

rounds, seconds, where, engines = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].split(",")
which = sys.argv[5]
extra = sys.argv[6:]
progs = {"engine": "build/release/bench/logstore_mix", "device": "build/release/bench/device_append_log"}
kinds = ["engine", "device"] if which == "both" else [which]
runs = [(k, e) for e in engines for k in kinds]
pat = re.compile(r"([\d.]+) acknowledged records/s, ([\d.]+) reads/s, [\d.]+ syncs/s, ([\d.]+) records per sync")
res = {r: [] for r in runs}
for r in range(rounds):
    order = runs if r % 2 == 0 else runs[::-1]
    for kind, e in order:
        prog = progs[kind]
        # The example takes the directory as its argument, and logstore_mix's sizes.
        args = [f"--dir={where}"] if kind == "engine" else [where, "--log-mib=512", "--data-mib=256"]
        p = subprocess.run([prog, f"--engine={e}", f"--seconds={seconds}", *args, *extra],
                           capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"logstore-mix.sh: {kind} {e}: exit {p.returncode}: {p.stderr.strip()}")
        m = pat.search(p.stdout)
        res[(kind, e)].append(tuple(float(x) for x in m.groups()))
        print(f"round {r + 1} {kind} {e}: {m.group(1)} records/s, {m.group(2)} reads/s", file=sys.stderr)
base = runs[0]
name = lambda r: r[1] if len(kinds) == 1 else f"{r[1]} ({'engine API' if r[0] == 'engine' else 'device layer'})"
print(f"| engine | acknowledged records/s | reads/s | records per sync | records vs {name(base)} | "
      f"reads vs {name(base)} |")
print("| --- | --- | --- | --- | --- | --- |")
for r in runs:
    med = [statistics.median(x[i] for x in res[r]) for i in range(3)]
    rr = statistics.median(a[0] / b[0] for a, b in zip(res[r], res[base]))
    rd = statistics.median(a[1] / b[1] for a, b in zip(res[r], res[base]))
    print(f"| {name(r)} | {med[0]:.0f} | {med[1]:.0f} | {med[2]:.2f} | {rr:.3f} | {rd:.3f} |")
EOF
