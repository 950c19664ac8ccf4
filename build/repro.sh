#!/usr/bin/env bash
# How reproducible is the build? Exports one commit (default HEAD) twice into
# two different temporary folders, builds each (build/build.sh --static, with
# the project's venv and the commit's time as SOURCE_DATE_EPOCH) and compares
# the outputs byte for byte. Prints one line per output: identical or not.
# Usage: build/repro.sh [COMMIT]      (docs/BINARY.md, "Reproducibility")
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COMMIT=${1:-HEAD}
VENV=${VENV:-$ROOT/.venv}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/appliance-repro.XXXXXX")
[[ -n ${KEEP:-} ]] && echo "repro: keeping $TMP" >&2 || trap 'rm -rf "$TMP"' EXIT

SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct "$COMMIT")
export SOURCE_DATE_EPOCH VENV
for side in one two; do
    mkdir -p "$TMP/$side/src-$side"
    git -C "$ROOT" archive "$COMMIT" | tar -x -C "$TMP/$side/src-$side"
    (cd "$TMP/$side/src-$side" && build/build.sh --static --force)
done
status=0
for out in appliance appliance-static; do
    a=$TMP/one/src-one/dist/$out
    b=$TMP/two/src-two/dist/$out
    if cmp -s "$a" "$b"; then
        echo "repro: $out identical ($(stat -c %s "$a") bytes, $(cut -d' ' -f1 "$a.b3"))"
    else
        echo "repro: $out DIFFERS: $(cmp -l "$a" "$b" | wc -l) bytes differ of $(stat -c %s "$a")"
        status=1
    fi
done
exit $status
