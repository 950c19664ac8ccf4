#!/usr/bin/env bash
# Start-up time of `appliance --version`: the frozen one-file binary, the static
# one, and the Python entry point, against `python -c "import blake3"` (the start-up
# target in docs/PERFORMANCE.md: at most 2.5x). Uses hyperfine; prints one line per command and the ratios.
# Usage: build/startup.sh [RUNS]     (make binary-static first; bench folds it in)
# Env:   DIST, VENV (defaults dist, .venv); STARTUP_JSON=FILE keeps hyperfine's JSON.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DIST=${DIST:-dist}
VENV=${VENV:-.venv}
RUNS=${1:-30}

if ! command -v hyperfine >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]]; then
        echo "startup: installing hyperfine" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq hyperfine >/dev/null
    else
        echo "startup: needs hyperfine (apt-get install -y hyperfine)" >&2
        exit 3
    fi
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/appliance-startup.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
JSON=${STARTUP_JSON:-$TMP/startup.json}

cmds=(-n "python -c 'import blake3'" "$VENV/bin/python -c 'import blake3'")
cmds+=(-n "python entry: appliance --version" "$VENV/bin/appliance --version")
cmds+=(-n "python -m appliance --version" "$VENV/bin/python -m appliance --version")
for b in appliance appliance-static; do
    if [[ -x $DIST/$b ]]; then
        cmds+=(-n "frozen $b --version" "$DIST/$b --version")
    else
        echo "startup: $DIST/$b missing (make binary-static); left out" >&2
    fi
done

hyperfine -N --style none --warmup 3 --runs "$RUNS" --export-json "$JSON" "${cmds[@]}" >/dev/null
"$VENV/bin/python" - "$JSON" <<'PY'
import json
import sys

results = json.load(open(sys.argv[1]))["results"]
base = results[0]["median"]
cpu_base = results[0]["user"] + results[0]["system"]
print(
    f"{'command':36} {'median ms':>9} {'stddev':>7} {'cpu ms':>7} {'x blake3':>9} {'cpu x':>6}"
)
for r in results:
    cpu = r["user"] + r["system"]
    print(
        f"{r['command']:36} {r['median'] * 1000:9.1f} {r['stddev'] * 1000:7.1f}"
        f" {cpu * 1000:7.1f} {r['median'] / base:9.2f} {cpu / cpu_base:6.2f}"
    )
print("(cpu ms: mean user+system time; 'x blake3' compares medians of wall time)")
print("target: appliance --version at most 2.50x python -c 'import blake3'")
PY
