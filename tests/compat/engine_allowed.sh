#!/usr/bin/env bash
# Exit 0 if `aiokit info` says this engine is allowed here (used to tell a refusal from a failure).
engine=$1
info=${AIOKIT_INFO_BIN:-}
[ -n "$info" ] || exit 0
"$info" info --output-format=json | python3 -c "
import json, sys
d = json.load(sys.stdin)
for e in d.get('engines', []):
    if e.get('engine') == sys.argv[1]:
        sys.exit(0 if e.get('allowed') else 1)
sys.exit(0)" "$engine"
