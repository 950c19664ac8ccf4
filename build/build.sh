#!/usr/bin/env bash
# Build the one-file binary dist/appliance (PyInstaller) and, with --static,
# dist/appliance-static (staticx over it). Records BLAKE3 and SHA-256 digests
# beside each output (NAME.b3 in b3sum format, NAME.sha256 in sha256sum format).
# Usage: build/build.sh [--static] [--force]    (make binary / make binary-static)
# Env:   APPLIANCE_BINARY_COMPRESS=1 (smaller binaries that start slower; default 0),
#        PYINSTALLER, PYTHON (default: the project's .venv), SOURCE_DATE_EPOCH
#        (default: the commit time of HEAD), DIST (default: dist), WORK (default: build/work).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

STATIC=0
FORCE=0
for arg in "$@"; do
    case "$arg" in
        --static) STATIC=1 ;;
        --force) FORCE=1 ;;
        *) echo "build.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$VENV/bin/python}
PYINSTALLER=${PYINSTALLER:-$VENV/bin/pyinstaller}
# Absolute (not resolved: the venv's python is a symlink that must stay one).
[[ $PYTHON == /* ]] || PYTHON=$ROOT/$PYTHON
DIST=${DIST:-dist}
# 1: compress the bundled objects (smaller files, slower start); read by the spec too.
COMPRESS=${APPLIANCE_BINARY_COMPRESS:-0}
export APPLIANCE_BINARY_COMPRESS=$COMPRESS
WORK=${WORK:-build/work}

log() { echo "build: $*" >&2; }
# Seconds since a `date +%s%N` stamp, one decimal.
elapsed() {
    local ms=$((($(date +%s%N) - $1) / 1000000))
    printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
}

for tool in "$PYTHON" "$PYINSTALLER"; do
    if [[ ! -x $tool ]]; then
        log "$tool missing: run 'make venv' first (it installs the [build] extra)"
        exit 3
    fi
done

# Reproducibility: a fixed timestamp (the commit's) and hash seed for everything
# the build writes. Two builds of one commit are compared in docs/BINARY.md.
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH
export PYTHONHASHSEED=0
export TZ=UTC LC_ALL=C.UTF-8

write_digests() {
    local file=$1 dir base
    dir=$(dirname "$file")
    base=$(basename "$file")
    (
        cd "$dir"
        "$PYTHON" - "$base" <<'PY'
import hashlib
import sys

import blake3

name = sys.argv[1]
b3 = blake3.blake3(max_threads=blake3.blake3.AUTO)
sha = hashlib.sha256()
with open(name, "rb") as f:
    while chunk := f.read(1 << 20):
        b3.update(chunk)
        sha.update(chunk)
with open(name + ".b3", "w") as out:
    out.write(f"{b3.hexdigest()}  {name}\n")
with open(name + ".sha256", "w") as out:
    out.write(f"{sha.hexdigest()}  {name}\n")
PY
    )
    log "$file: $(stat -c %s "$file") bytes, blake3 $(cut -d' ' -f1 "$file.b3")"
}

build_onefile() {
    local start end
    start=$(date +%s%N)
    log "PyInstaller (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH) -> $DIST/appliance"
    mkdir -p "$WORK" "$DIST"
    # The log goes to a file in the (git-ignored) work folder; shown on failure.
    if ! "$PYINSTALLER" --noconfirm --clean --log-level WARN \
        --workpath "$WORK" --distpath "$DIST" build/appliance.spec >"$WORK/pyinstaller.log" 2>&1; then
        cat "$WORK/pyinstaller.log" >&2
        log "PyInstaller failed"
        exit 3
    fi
    log "PyInstaller took $(elapsed "$start") s"
    write_digests "$DIST/appliance"
}

ensure_patchelf() {
    command -v patchelf >/dev/null 2>&1 && return 0
    if [[ $(id -u) -ne 0 ]]; then
        log "staticx needs patchelf: apt-get install -y patchelf (as root)"
        exit 3
    fi
    log "installing patchelf (staticx needs it)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq patchelf >/dev/null
}

build_static() {
    local start end
    ensure_patchelf
    if ! "$PYTHON" -c 'import staticx' 2>/dev/null; then
        log "staticx missing from $PYTHON: run 'make venv' first (it installs the [build] extra)"
        exit 3
    fi
    start=$(date +%s%N)
    log "staticx -> $DIST/appliance-static"
    # Through build/staticx_repro.py: staticx itself stamps its archive with
    # temporary files' mtimes; the wrapper pins them to SOURCE_DATE_EPOCH.
    # Not compressed again by default: xz-decoding 20 MB at every start doubled
    # the static binary's start-up (docs/BINARY.md); APPLIANCE_BINARY_COMPRESS=1
    # gives the small one.
    local nocompress=--no-compress
    [[ $COMPRESS == 1 ]] && nocompress=""
    "$PYTHON" build/staticx_repro.py $nocompress "$DIST/appliance" "$DIST/appliance-static.partial"
    chmod 0755 "$DIST/appliance-static.partial"
    mv -f "$DIST/appliance-static.partial" "$DIST/appliance-static"
    log "staticx took $(elapsed "$start") s"
    write_digests "$DIST/appliance-static"
}

# Rebuild only when an input is newer than the output (or --force).
inputs_newer_than() {
    local out=$1
    [[ -e $out ]] || return 0
    local inputs=(appliance bundles tui pyproject.toml build/appliance.spec build/entry.py
        build/appliance_selftest.py build/build.sh)
    [[ -e $VENV/.installed ]] && inputs+=("$VENV/.installed") # dependencies reinstalled
    [[ -n $(find "${inputs[@]}" -type f -newer "$out" ! -name '*.pyc' -print 2>/dev/null |
        head -1) ]]
}

if [[ $FORCE -eq 1 ]] || inputs_newer_than "$DIST/appliance"; then
    build_onefile
else
    log "$DIST/appliance is up to date"
fi
if [[ $STATIC -eq 1 ]]; then
    if [[ $FORCE -eq 1 ]] || [[ ! -e $DIST/appliance-static ]] ||
        [[ $DIST/appliance -nt $DIST/appliance-static ]] ||
        [[ build/staticx_repro.py -nt $DIST/appliance-static ]]; then
        build_static
    else
        log "$DIST/appliance-static is up to date"
    fi
fi
