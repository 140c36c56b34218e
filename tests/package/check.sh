#!/usr/bin/env bash
# Installs the build tree into a scratch prefix, then builds and runs a consumer with find_package(aiokit)
# and another with pkg-config. Usage: check.sh BUILD_DIR CONSUMER_SOURCE_DIR CMAKE
set -euo pipefail
build=$1 src=$2 cmake=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$cmake" --install "$build" --prefix "$work/prefix" >/dev/null
"$cmake" -S "$src" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
"$cmake" --build "$work/consumer" -j2 >/dev/null
LD_LIBRARY_PATH="$work/prefix/lib:$work/prefix/lib/x86_64-linux-gnu" "$work/consumer/consumer_shared"
"$work/consumer/consumer_static"
# pkg-config: the .pc file alone must be enough to compile and link.
pc=$(find "$work/prefix" -name aiokit.pc | head -n1)
PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --cflags --libs aiokit >/dev/null
flags=$(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --cflags --libs aiokit)
# shellcheck disable=SC2086
g++ -std=c++20 "$src/main.cc" -o "$work/pc_consumer" $flags -Wl,-rpath,"$(dirname "$(dirname "$pc")")"
"$work/pc_consumer"
echo "package_consumer: find_package and pkg-config consumers built and ran"
