#!/usr/bin/env bash
# Installs the Debian packages aiokit needs to build, test and benchmark, when they are missing.
# Quick when everything is present: one dpkg-query, no apt-get.
# Usage: scripts/deps.sh [build|test|bench|fuzz]   (default: build)
set -euo pipefail

what=${1:-build}
pkgs=(cmake make g++ pkg-config libcli11-dev nlohmann-json3-dev liburing-dev libxxhash-dev
      nettle-dev libisal-dev)
test_pkgs=(libgtest-dev libgmock-dev googletest clang-format clang-tidy python3 libaio-dev fio
           valgrind stress-ng xfsprogs libasio-dev libfuse3-dev)
case "$what" in
  build) ;;
  test) pkgs+=("${test_pkgs[@]}") ;;
  bench) pkgs+=(libbenchmark-dev fio python3 python3-matplotlib util-linux util-linux-extra libasio-dev) ;;
  # clang 14 with libFuzzer and the sanitizer runtimes (scripts/fuzz.sh).
  fuzz) pkgs+=("${test_pkgs[@]}" clang libclang-rt-14-dev) ;;
  *) echo "deps.sh: unknown set '$what' (build, test, bench or fuzz)" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps.sh: installing ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "deps.sh: need root or sudo to install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# A stale package index is the usual reason an install fails on a fresh machine.
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
