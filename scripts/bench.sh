#!/usr/bin/env bash
# The main job: installs what is missing, builds aiokit (Release) and runs `aiokit bench`.
# With no arguments: 4k random O_DIRECT reads at depth 32 on a temporary file it creates and removes.
# Any `aiokit bench` option may be passed, e.g. scripts/bench.sh --rw=randwrite --runtime=10 --time_based
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh release >/dev/null
exec build/release/tools/aiokit/aiokit bench "$@"
