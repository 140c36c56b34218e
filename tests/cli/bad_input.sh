#!/usr/bin/env bash
# Every bad option or combination: exit status 2, one line naming the option, no file left behind.
set -u
aiokit=$1
dir=$2/cli-bad-input
rm -rf "$dir"; mkdir -p "$dir"
fail=0

expect_usage() {
  local want=$1; shift
  local err code
  err=$("$aiokit" bench "$@" 2>&1 >/dev/null)
  code=$?
  local lines
  lines=$(printf '%s\n' "$err" | grep -c .)
  if [ "$code" -ne 2 ]; then
    echo "FAIL: aiokit bench $* exited $code (want 2): $err"; fail=1
  elif ! printf '%s' "$err" | grep -q -- "$want"; then
    echo "FAIL: aiokit bench $*: message does not name '$want': $err"; fail=1
  elif [ "$lines" -gt 3 ]; then
    echo "FAIL: aiokit bench $*: $lines lines of error: $err"; fail=1
  fi
  if [ -n "$(ls -A "$dir")" ]; then
    echo "FAIL: aiokit bench $* left files behind: $(ls -A "$dir")"; fail=1
    rm -rf "${dir:?}"/*
  fi
}

expect_usage "--rw" --rw=randtrim --filename="$dir/f"
expect_usage "--bs" --bs=0 --filename="$dir/f"
expect_usage "--bs" --bs=12q
expect_usage "--size" --size=1k --bs=4k --filename="$dir/f"
expect_usage "--iodepth" --iodepth=0 --filename="$dir/f"
expect_usage "--engine" --engine=spdk --filename="$dir/f"
expect_usage "--output-format" --output-format=xml --filename="$dir/f"
expect_usage "--direct" --direct=2 --filename="$dir/f"
expect_usage "--runtime" --runtime=soon
expect_usage "--time_based" --time_based --filename="$dir/f"
expect_usage "--filename" --filename=/nonexistent-dir/f
expect_usage "--filename" --filename="$dir"
expect_usage "--nosuchoption" --nosuchoption=1
expect_usage "--fixedbufs" --fixedbufs --engine=linux-aio --size=1m --filename="$dir/f"
expect_usage "--registerfiles" --registerfiles --engine=linux-aio --size=1m --filename="$dir/f"
# bs not a multiple of the O_DIRECT alignment: a file created for the job is removed again.
expect_usage "--bs=1000" --bs=1000 --direct=1 --size=1m --filename="$dir/f"
expect_usage "--rwmixread" --rw=randrw --rwmixread=101 --filename="$dir/f"
expect_usage "--bsrange" --bsrange=8k-4k --filename="$dir/f"
expect_usage "--bsrange" --bsrange=1000-4000 --direct=1 --size=1m --filename="$dir/f"
expect_usage "--offset" --offset=1000 --direct=1 --size=1m --filename="$dir/f"
expect_usage "--iodepth_batch_submit" --iodepth=4 --iodepth_batch_submit=8 --filename="$dir/f"
expect_usage "--fsync" --fsync=4 --rw=read --filename="$dir/f"
expect_usage "--verify" --verify=sha1 --filename="$dir/f"
expect_usage "--verify_pattern" --verify_pattern=%o --filename="$dir/f"
expect_usage "--verify_only" --verify=md5 --verify_only --rw=write --filename="$dir/f"
expect_usage "--verify" --verify=xxh3 --bsrange=4k-8k --filename="$dir/f"
expect_usage "--sweep" --sweep=iodepth --filename="$dir/f"
expect_usage "--sweep" --sweep=runtime=1,2 --filename="$dir/f"
expect_usage "--compare" --compare --engine=threads --filename="$dir/f"
expect_usage "--numjobs" --numjobs=0 --filename="$dir/f"
expect_usage "--ioengine" --ioengine=mmap --filename="$dir/f"
expect_usage "--rwmixcycle" --rwmixcycle=500 --filename="$dir/f"
expect_usage "--rate_min" --rate=1m --rate_min=2m --filename="$dir/f"
expect_usage "--nrfiles" --nrfiles=2 --filename="$dir/f"
expect_usage "nosuch.fio" "$dir/nosuch.fio"
printf '[job]\nrw=randread\nsize=1m\nfilename=%s\nioscheduler=none\n' "$dir/f" > "$dir/../bad-job.fio"
expect_usage "bad-job.fio:5: ioscheduler" "$dir/../bad-job.fio"
rm -f "$dir/../bad-job.fio"
# A job that creates its file and is refused later (a second job's bad alignment) leaves nothing behind.
expect_usage "--bs=1000" --size=1m --name=ok --filename="$dir/a" --name=bad --filename="$dir/b" --bs=1000 \
  --direct=1
if [ $fail -eq 0 ]; then echo "cli_bad_input: all cases exit 2 with one clear line"; fi
rm -rf "$dir"
exit $fail
