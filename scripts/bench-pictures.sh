#!/usr/bin/env bash
# Draws the pictures in docs/benchmarks.md from fresh runs on a 1 GiB tmpfs-backed loop device:
#   docs/img/sweep-ram.png       IOPS and p99 against iodepth (1..128), every engine (aiokit bench --sweep --compare)
#   docs/img/latency-ram-qd32.png completion-latency percentiles, aiokit io_uring and fio io_uring, 4k QD32
# The JSON each was drawn from is kept beside it. Needs root (losetup). Removes what it creates.
# Usage: scripts/bench-pictures.sh [RUNTIME_SECONDS_PER_POINT]   (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
runtime=${1:-2}
scripts/build.sh release >/dev/null
aiokit=build/release/tools/aiokit/aiokit
img=/dev/shm/aiokit-pictures.img
loop=""
cleanup() {
  if [ -n "$loop" ]; then losetup -d "$loop" 2>/dev/null || true; fi
  rm -f "$img"
}
trap cleanup EXIT INT TERM
if [ "$(id -u)" -ne 0 ]; then echo "bench-pictures.sh: needs root for the loop device" >&2; exit 2; fi
truncate -s 1G "$img"
loop=$(losetup -f --show "$img")
dd if=/dev/zero of="$loop" bs=1M count=1024 oflag=direct status=none
mkdir -p docs/img
# Debian's python3-matplotlib belongs to Debian's python3, which a pyenv or venv on PATH may hide.
py=python3
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then py=/usr/bin/python3; fi
"$aiokit" bench --filename="$loop" --rw=randread --bs=4k --direct=1 --runtime="$runtime" --time_based \
  --sweep=iodepth=1,2,4,8,16,32,64,128 --compare --output-format=json >docs/img/sweep-ram.json
"$py" scripts/plot-bench.py docs/img/sweep-ram.json docs/img/sweep-ram.png
"$aiokit" bench --name=aiokit-io_uring --filename="$loop" --rw=randread --bs=4k --direct=1 --iodepth=32 \
  --engine=io_uring --runtime=$((runtime * 3)) --time_based --output-format=json >docs/img/latency-aiokit.json
fio --name=fio-io_uring --filename="$loop" --rw=randread --bs=4k --direct=1 --iodepth=32 --ioengine=io_uring \
  --runtime=$((runtime * 3)) --time_based --output-format=json >docs/img/latency-fio.json
"$py" scripts/plot-bench.py docs/img/latency-aiokit.json docs/img/latency-fio.json docs/img/latency-ram-qd32.png
