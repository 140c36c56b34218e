#!/usr/bin/env bash
# Runs the same jobs with `aiokit bench` and with fio, alternating them (A B, B A, A B ...) in one run, and prints
# the median IOPS of each, the median of the per-round ratios, p50 latency and CPU per I/O, as a Markdown
# table for docs/benchmarks.md.
#
# Targets (see ../shared/BENCHMARKING.md):
#   ram   a 1 GiB tmpfs-backed loop device: per-I/O software cost shows (needs root for losetup)
#   disk  a 1 GiB file under /var/tmp, O_DIRECT
#   pc    the same file in the page cache (buffered reads; fio --invalidate=0)
#
# Usage: scripts/compare-fio.sh [--rounds N] [--runtime SECONDS] [--rows matrix|claims|dropin|device|coro|all|name,...] [--list]
#                               [--baseline PATH-TO-ANOTHER-AIOKIT]   (A/B instead of fio; see ab-bench.sh)
# The default is the matrix: ram 4k randread QD1/QD32, disk 4k randread QD32, disk 128k read QD8, disk 1M read
# and write QD4, disk 4k randwrite QD32, page-cached 4k randread QD32, each aiokit io_uring against fio io_uring.
# Everything it creates (loop device, image, files) is removed on exit, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh release >/dev/null

img=/dev/shm/aiokit-compare-ram.img
disk_file=/var/tmp/aiokit-compare-disk.dat
loop=""
cleanup() {
  if [ -n "$loop" ]; then losetup -d "$loop" 2>/dev/null || true; fi
  rm -f "$img" "$disk_file"
}
trap cleanup EXIT INT TERM

need_ram=1
for a in "$@"; do case "$a" in --list) need_ram=0 ;; esac; done
if [ $need_ram -eq 1 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "compare-fio.sh: needs root for the loop device" >&2; exit 2; fi
  truncate -s 1G "$img"
  loop=$(losetup -f --show "$img")
  dd if=/dev/zero of="$loop" bs=1M count=1024 oflag=direct status=none
fi

python3 scripts/compare_fio.py --aiokit build/release/tools/aiokit/aiokit --ram "${loop:-none}" \
  --disk-file "$disk_file" "$@"
