#!/usr/bin/env bash
# clang-format (Google style, .clang-format) and clang-tidy (.clang-tidy) over the project's sources.
# Usage: scripts/lint.sh format            check formatting, print the files that differ
#        scripts/lint.sh tidy BUILD_DIR    clang-tidy every source in BUILD_DIR/compile_commands.json
#        scripts/lint.sh fix               reformat in place
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-format}
mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*.cc' '*.h')
fmt=$(command -v clang-format-14 || command -v clang-format)
case "$mode" in
  format)
    bad=0
    for f in "${files[@]}"; do
      if ! "$fmt" --dry-run -Werror "$f" >/dev/null 2>&1; then echo "not clang-formatted: $f"; bad=1; fi
    done
    [ $bad -eq 0 ] && echo "clang-format: ${#files[@]} files clean"
    exit $bad ;;
  fix)
    "$fmt" -i "${files[@]}" ;;
  tidy)
    build=${2:?usage: scripts/lint.sh tidy BUILD_DIR}
    tidy=$(command -v clang-tidy-14 || command -v clang-tidy)
    # Translation units only (headers are checked through them, see HeaderFilterRegex).
    mapfile -t units < <(printf '%s\n' "${files[@]}" | grep '\.cc$')
    printf '%s\n' "${units[@]}" | xargs -P "$(nproc 2>/dev/null || echo 2)" -n 1 \
      "$tidy" -p "$build" --quiet 2>/dev/null
    echo "clang-tidy: ${#units[@]} translation units clean" ;;
  *) echo "lint.sh: unknown mode '$mode'" >&2; exit 2 ;;
esac
