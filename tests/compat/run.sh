#!/usr/bin/env bash
# Runs a libaio program built against the system's libaio: first with the system's library (the kernel's
# answers), then with aiokit's drop-in on each engine. Checks that the drop-in was the library loaded, and,
# with --transcript, that every engine printed exactly what the kernel did; with --refused, that the drop-in
# said in one line on stderr why it gave the program the kernel's context instead of the engine named.
# AIOKIT_ENGINE=auto (the default) is run too.
# Usage: run.sh [--transcript] [--refused] PROGRAM COMPAT_LIB_DIR TEST_DIR
set -u
transcript=0 refused=0
if [ "$1" = "--transcript" ]; then transcript=1; shift; fi
if [ "$1" = "--refused" ]; then refused=1; shift; fi
prog=$1 libdir=$2 dir=$3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fail=0

"$prog" "$dir" >"$out/kernel" 2>"$out/kernel.err"
rc=$?
if [ $rc -ne 0 ]; then
  echo "FAIL: $(basename "$prog") with the system's libaio exited $rc"; cat "$out/kernel" "$out/kernel.err"; exit 1
fi
for engine in linux-aio io_uring threads auto; do
  AIOKIT_ENGINE=$engine LD_LIBRARY_PATH=$libdir "$prog" "$dir" >"$out/$engine" 2>"$out/$engine.err"
  rc=$?
  if ! grep -q "libaio: $libdir/libaio.so.1" "$out/$engine.err"; then
    echo "FAIL: $engine: the drop-in was not the library loaded: $(head -1 "$out/$engine.err")"; fail=1; continue
  fi
  # A kernel that refuses io_uring (or AIO) makes io_setup fail here, as it would with the system's libaio.
  if [ $rc -ne 0 ] && grep -q "io_setup" "$out/$engine" && [ "$engine" != linux-aio ] && \
     ! "$(dirname "$0")/engine_allowed.sh" "$engine"; then
    echo "SKIP: $engine: not allowed on this machine"; continue
  fi
  if [ $rc -ne 0 ]; then
    echo "FAIL: $(basename "$prog") on $engine exited $rc"; cat "$out/$engine" "$out/$engine.err"; fail=1; continue
  fi
  if [ $transcript -eq 1 ] && ! diff -u "$out/kernel" "$out/$engine" >"$out/diff"; then
    echo "FAIL: $engine answers differently from the kernel:"; cat "$out/diff"; fail=1; continue
  fi
  if [ $refused -eq 1 ]; then
    lines=$(grep -c "^aiokit libaio: AIOKIT_ENGINE=$engine refused: .*set AIOKIT_ENGINE=linux-aio" "$out/$engine.err")
    want=0
    case $engine in io_uring | threads) want=1 ;; esac
    if [ "$lines" -ne "$want" ]; then
      echo "FAIL: $engine: $want line(s) saying why the engine was refused expected, $lines printed:"
      cat "$out/$engine.err"; fail=1; continue
    fi
  fi
  # Every engine's context is a ring in the kernel's layout: programs reap it in user space.
  if grep -q "requests through a context" "$out/$engine" && \
     ! grep -q "from the kernel's ring in user space" "$out/$engine"; then
    echo "FAIL: $engine: a program could not reap the context's ring in user space"; fail=1; continue
  fi
  echo "ok: $(basename "$prog") on $engine$( [ $transcript -eq 1 ] && echo ', the same answers as the kernel')"
done
exit $fail
