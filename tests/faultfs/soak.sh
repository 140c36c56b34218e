#!/usr/bin/env bash
# Soak (ctest -L soak, test soak_faultfs): `aiokit bench --verify=xxh3` with mixed reads, writes and
# fsyncs on every engine, for SECONDS each (default 600), twice per engine:
#  - faults: on a file of the fault file system (aiokit_faultfs, O_DIRECT through FUSE), with EIO on
#    reads, writes and fsyncs at random, the job going on past them (--continue_on_error=io);
#  - busy: on a plain file in DIR, with every CPU busy (stress-ng --cpu N).
# Each run must end with every request completed exactly once (the JSON's aiokit.requests), no verify
# failure, the faults seen as EIO (faults run) or no error at all (busy run), and the bench process's
# RSS and open descriptors flat (sampled from /proc every 5 s, every second in runs under two
# minutes: the last quarter's median RSS within 10% + 2 MiB of the second quarter's, the descriptor
# count never above its count after start-up).
# Usage: soak.sh AIOKIT_BINARY FAULTFS_BINARY DIR [SECONDS]
# Environment: AIOKIT_SOAK_SECONDS (default 600), AIOKIT_SOAK_ENGINES (default: the four engines),
# AIOKIT_SOAK_MODES (default "faults busy").
# Prints one line per run and writes them to DIR/soak-summary.txt. Exit 0, 1 on a failed run, 77 when
# it cannot run here (not root, no /dev/fuse, no stress-ng).
set -uo pipefail

aiokit=$1 faultfs=$2 dir=$3
secs=${4:-${AIOKIT_SOAK_SECONDS:-600}}
engines=${AIOKIT_SOAK_ENGINES:-"linux-aio io_uring threads sync"}
modes=${AIOKIT_SOAK_MODES:-"faults busy"}

[ "$(id -u)" -eq 0 ] || { echo "soak: mounting FUSE needs root"; exit 77; }
[ -w /dev/fuse ] || { echo "soak: /dev/fuse is not usable here"; exit 77; }
command -v stress-ng >/dev/null || { echo "soak: needs stress-ng (scripts/deps.sh test)"; exit 77; }

mkdir -p "$dir"
work=$(mktemp -d "$dir/soak.XXXXXX")
backing=$work/backing mnt=$work/mnt
mkdir -p "$backing" "$mnt"
fs_pid=
cleanup() {
  [ -n "$fs_pid" ] && { echo clear > "$mnt/.faults" 2>/dev/null; umount -l "$mnt" 2>/dev/null;
                        kill "$fs_pid" 2>/dev/null; wait "$fs_pid" 2>/dev/null; }
  pkill -P $$ stress-ng 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

"$faultfs" "$backing" "$mnt" -f > "$work/faultfs.log" 2>&1 &
fs_pid=$!
for _ in $(seq 1 200); do
  [ "$(stat -f -c %t "$mnt" 2>/dev/null)" = 65735546 ] && break
  kill -0 "$fs_pid" 2>/dev/null || { echo "soak: faultfs did not mount: $(cat "$work/faultfs.log")"; exit 77; }
  sleep 0.05
done
[ "$(stat -f -c %t "$mnt")" = 65735546 ] || { echo "soak: faultfs did not mount in 10 s"; exit 1; }

summary=$dir/soak-summary.txt
: > "$summary"
failed=0
ncpu=$(nproc)
every=5
[ "$secs" -lt 120 ] && every=1

# run MODE ENGINE FILE [bench options...]: one soak run, checked.
run() {
  local mode=$1 engine=$2 file=$3; shift 3
  local json=$work/$mode-$engine.json samples=$work/$mode-$engine.samples
  # Laid out without faults: the job then reads blocks it wrote, and blocks never written are zeros.
  echo clear > "$mnt/.faults"
  head -c 64M /dev/zero > "$file"
  [ "$mode" = faults ] && printf 'seed 42\neio_prob read 0.0005\neio_prob write 0.0005\neio_prob fsync 0.02\n' \
    > "$mnt/.faults"
  local before
  before=$(cat "$mnt/.faults")
  "$aiokit" bench --engine="$engine" --filename="$file" --size=64m --rw=randrw --bs=4k --iodepth=16 \
    --direct=1 --verify=xxh3 --fsync=32 --time_based --runtime="$secs" --output-format=json "$@" \
    > "$json" 2> "$work/$mode-$engine.err" &
  local pid=$! rss fds
  : > "$samples"
  while kill -0 "$pid" 2>/dev/null; do
    rss=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null) || true
    fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l) || true
    # A sample taken while the process exits (its descriptors closed) is not one.
    if [ -n "$rss" ] && [ "$fds" -gt 0 ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] &&
       kill -0 "$pid" 2>/dev/null; then
      echo "$rss $fds" >> "$samples"
    fi
    sleep "$every"
  done
  wait "$pid"
  local rc=$?
  echo clear > "$mnt/.faults"
  local line
  line=$(python3 - "$mode" "$engine" "$secs" "$rc" "$json" "$samples" "$before" "$(cat "$mnt/.faults")" \
           "$work/$mode-$engine.err" <<'EOF'
import json, statistics, sys
mode, engine, secs, rc, path, samples, before, after, err = sys.argv[1:]
bad = []
def counts(text):
    w = text.split()
    return {w[i]: int(w[i + 1]) for i in range(0, len(w) - 1, 2)}
try:
    job = json.load(open(path))["jobs"][0]
except Exception as e:
    print(f"{mode} {engine}: no JSON ({e}); stderr: {open(err).read()[:400]}")
    sys.exit(1)
ak = job["aiokit"]
req, ver, errs = ak["requests"], ak.get("verify", {}), ak.get("errors", {})
if rc != "0": bad.append(f"exit {rc}: {open(err).read()[:300]}")
if req["submitted"] != req["completed"] or req["reaped_twice"] or req["unfinished"]:
    bad.append(f"requests {req}")
if ver.get("failed", 1) != 0 or ver.get("checked", 0) == 0:
    bad.append(f"verify checked {ver.get('checked')} failed {ver.get('failed')}: {ver.get('mismatches', [])[:3]}")
injected = counts(after).get("eio", 0) - counts(before).get("eio", 0)
eio = errs.get("EIO", 0)
if mode == "faults":
    if eio == 0 or injected == 0: bad.append(f"no fault reached the job (EIO {eio}, injected {injected})")
    if set(errs) - {"EIO"}: bad.append(f"errors other than EIO: {errs}")
elif errs:
    bad.append(f"errors {errs}")
rows = [tuple(map(int, l.split())) for l in open(samples) if len(l.split()) == 2]
rows = rows[2:]  # start-up
rss_note = "too short to sample"
if len(rows) >= 8:
    q = len(rows) // 4
    early = statistics.median(r[0] for r in rows[q:2 * q])
    late = statistics.median(r[0] for r in rows[-q:])
    fds = [r[1] for r in rows]
    rss_note = f"RSS {early / 1024:.1f}->{late / 1024:.1f} MiB, fds {fds[0]}->{max(fds)}"
    if late > early * 1.10 + 2048: bad.append(f"RSS grew: {rss_note}")
    # Fewer at the end (the job closing its files) is not a leak; more is.
    if max(fds) > fds[0]: bad.append(f"descriptors grew: {fds[0]} -> {max(fds)}")
ios = job["read"]["total_ios"] + job["write"]["total_ios"]
syncs = job.get("sync", {}).get("total_ios", 0)
print(f"{mode} {engine} {secs} s: {req['completed']} requests ({ios} reads+writes, {syncs} fsyncs), "
      f"EIO {eio} (faultfs injected {injected}), verify checked {ver.get('checked')} failed "
      f"{ver.get('failed')}, {rss_note}: {'FAILED: ' + '; '.join(bad) if bad else 'ok'}")
sys.exit(1 if bad else 0)
EOF
  )
  local check=$?
  echo "$line" | tee -a "$summary"
  [ $check -eq 0 ] || failed=1
}

for engine in $engines; do
  case " $modes " in *" faults "*)
    run faults "$engine" "$mnt/soak-$engine" --continue_on_error=io
    rm -f "$mnt/soak-$engine" ;;
  esac
  case " $modes " in *" busy "*)
    stress-ng --cpu "$ncpu" --timeout "$((secs + 60))s" > /dev/null 2>&1 &
    stress=$!
    run busy "$engine" "$work/busy-$engine"
    kill "$stress" 2>/dev/null; wait "$stress" 2>/dev/null
    rm -f "$work/busy-$engine" ;;
  esac
done
exit $failed
