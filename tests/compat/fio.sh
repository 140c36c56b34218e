#!/usr/bin/env bash
# fio as a libaio client: --ioengine=libaio with --verify=crc32c (write, then read back and check) through the
# drop-in on each engine, buffered and O_DIRECT, with and without --userspace_reap. fio must report no error.
# Usage: fio.sh COMPAT_LIB_DIR TEST_DIR
set -u
libdir=$1 dir=$2
if ! command -v fio >/dev/null; then
  echo "SKIP: fio is not installed (scripts/deps.sh test installs it)"; exit 0
fi
if ! LD_LIBRARY_PATH=$libdir ldd "$(command -v fio)" | grep -q "$libdir/libaio.so.1"; then
  echo "SKIP: this fio does not load libaio.so.1 dynamically"; exit 0
fi
file=$dir/compat-fio.dat
trap 'rm -f "$file"' EXIT
fail=0
for engine in linux-aio io_uring threads; do
  for direct in 1 0; do
    for reap in 0 1; do
      out=$(AIOKIT_ENGINE=$engine LD_LIBRARY_PATH=$libdir fio --name=verify --filename="$file" --size=8m \
        --rw=randwrite --bs=4k --iodepth=16 --ioengine=libaio --direct=$direct --userspace_reap=$reap \
        --verify=crc32c --do_verify=1 --output-format=json 2>&1)
      rc=$?
      summary=$(printf '%s' "$out" | python3 -c '
import json, sys
t = sys.stdin.read()
j = json.loads(t[t.index("{"):])["jobs"][0]
print(j["error"], j["write"]["total_ios"], j["read"]["total_ios"])' 2>/dev/null)
      if [ $rc -ne 0 ] || [ "$summary" != "0 2048 2048" ]; then
        echo "FAIL: fio on $engine direct=$direct userspace_reap=$reap: exit $rc, error/writes/verify reads: $summary"
        printf '%s\n' "$out" | tail -5
        fail=1
      else
        echo "ok: fio --verify=crc32c on $engine direct=$direct userspace_reap=$reap: 2048 written, 2048 verified"
      fi
      rm -f "$file"
    done
  done
done
exit $fail
