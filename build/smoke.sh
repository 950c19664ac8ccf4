#!/usr/bin/env bash
# Smoke test of the frozen binaries (issue 6; docs/BINARY.md, "Smoke test").
#
# Each binary (dist/appliance, dist/appliance-static) runs inside an empty
# chroot that holds only the binary, /tmp, a mounted /proc, /dev/shm (POSIX
# semaphores for process pools) and a work folder /w; the dynamic one also
# gets the host's C library and loader (per ldd), the static one nothing at
# all. No Python and no project file is reachable there. In it, the binary
# goes through both sides' journey: keys, bundles, init, trust update, import,
# load, authorized rollback, load again, and the TUI in tmux.
#
# A step whose command is not built yet is reported "SKIP: command X not
# available yet" (detected by `appliance X --help` exiting 2, usage error); a
# built command that fails fails the smoke test. Closing line:
#   smoke: N passed, N failed, N skipped
# Usage: build/smoke.sh            (make smoke builds both binaries first)
# Env:   SMOKE_BINARIES  which to test (default "appliance appliance-static")
#        SMOKE_DIR       scratch folder (default build/work/smoke, git-ignored)
#        DIST, VENV      (defaults dist, .venv)
# Needs root (chroot, mount); runs itself in a private mount namespace so no
# mount outlives it, and unmounts in an EXIT trap as well.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DIST=${DIST:-dist}
VENV=${VENV:-.venv}
SMOKE_DIR=${SMOKE_DIR:-$ROOT/build/work/smoke}
SMOKE_BINARIES=${SMOKE_BINARIES:-appliance appliance-static}

if [[ $(id -u) -ne 0 ]]; then
    echo "smoke: needs root (chroot and mount); run it as root or in CI" >&2
    echo "smoke: 0 passed, 1 failed"
    exit 1
fi

# A private mount namespace: every mount below vanishes with this process.
if [[ -z ${SMOKE_IN_NS:-} ]] && command -v unshare >/dev/null 2>&1 &&
    unshare --mount --propagation private true 2>/dev/null; then
    SMOKE_IN_NS=1 exec unshare --mount --propagation private "$0" "$@"
fi

PASS=0
FAIL=0
SKIP=0
declare -A DONE=()   # step id -> 1 when it passed
declare -A WHY=()    # step id -> why it did not pass (for dependants' SKIP lines)
declare -A HAVE=()   # CLI command -> 0 built, 1 not built yet, 2 broken
MOUNTS=()
TMUX_SOCK="appliance-smoke-$$"
LOG=$SMOKE_DIR/smoke.log

cleanup() {
    local m
    tmux -L "$TMUX_SOCK" kill-server >/dev/null 2>&1 || true
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        m=${MOUNTS[$i]}
        umount -l "$m" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP # through the EXIT trap

say() { echo "$*"; }
pass() { PASS=$((PASS + 1)); DONE[$1]=1; say "PASS: $2"; }
fail() { FAIL=$((FAIL + 1)); WHY[$1]="step '$2' failed"; say "FAIL: $2${3:+: $3}"; }
skip() { SKIP=$((SKIP + 1)); WHY[$1]=$3; say "SKIP: $2: $3"; }

# Leftover mounts of an earlier run that was killed (only possible outside a
# private namespace): unmount them before removing anything.
if [[ -d $SMOKE_DIR ]]; then
    while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done < <(awk -v d="$SMOKE_DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
    # store objects made as root carry the immutable flag (docs/LOADING.md): clear it first
    chattr -R -i "$SMOKE_DIR" 2>/dev/null || true
    rm -rf --one-file-system "$SMOKE_DIR"
fi
mkdir -p "$SMOKE_DIR"
: >"$LOG"

# tmux drives the TUI steps; install it when missing (root in CI).
if ! command -v tmux >/dev/null 2>&1; then
    echo "smoke: installing tmux" >&2
    (export DEBIAN_FRONTEND=noninteractive && apt-get update -qq && apt-get install -y -qq tmux) \
        >>"$LOG" 2>&1 || echo "smoke: could not install tmux (see $LOG)" >&2
fi

# ---- which commands are built -------------------------------------------------

# have "bundle create": 0 built, 1 not built yet (usage error 2 on --help), 2 broken.
have() {
    local cmd=$1 rc=0
    if [[ -z ${HAVE[$cmd]:-} ]]; then
        # shellcheck disable=SC2086 # the command is words on purpose
        "$DIST/appliance" $cmd --help >>"$LOG" 2>&1 || rc=$?
        case $rc in
            0) HAVE[$cmd]=0 ;;
            2) HAVE[$cmd]=1 ;;
            *) HAVE[$cmd]=2 ;;
        esac
    fi
    return "${HAVE[$cmd]}"
}

# ---- the steps ----------------------------------------------------------------

# step ID LABEL "REQUIRES" FUNCTION ARGS...
# REQUIRES: space-separated "cmd:COMMAND_WORDS" (_ for spaces), "step:ID", "tool:PROGRAM".
# The function returns 0 (pass) or non-zero (fail); its output goes to the log.
step() {
    local id=$1 label=$2 requires=$3 req rc=0
    shift 3
    for req in $requires; do
        case $req in
            cmd:*)
                local cmd=${req#cmd:}
                cmd=${cmd//_/ }
                local h=0
                have "$cmd" || h=$?
                if [[ $h -eq 1 ]]; then
                    skip "$id" "$label" "command $cmd not available yet"
                    return 0
                elif [[ $h -eq 2 ]]; then
                    fail "$id" "$label" "'appliance $cmd --help' crashed (see $LOG)"
                    return 0
                fi
                ;;
            tool:*)
                if ! command -v "${req#tool:}" >/dev/null 2>&1; then
                    skip "$id" "$label" "${req#tool:} is not installed"
                    return 0
                fi
                ;;
            step:*)
                if [[ -z ${DONE[${req#step:}]:-} ]]; then
                    skip "$id" "$label" "${WHY[${req#step:}]:-needs step ${req#step:}}"
                    return 0
                fi
                ;;
        esac
    done
    echo "=== $label" >>"$LOG"
    local t0 took
    t0=$(date +%s%N)
    "$@" >>"$LOG" 2>&1 || rc=$?
    took=$((($(date +%s%N) - t0) / 1000000))
    echo "=== took $took ms, exit $rc" >>"$LOG"
    if [[ $rc -eq 0 ]]; then
        pass "$id" "$label ($took ms)"
    else
        fail "$id" "$label" "exit $rc after $took ms (see $LOG)"
    fi
}

# ---- chroots ------------------------------------------------------------------

CHROOT=$(command -v chroot) # env -i PATH=/ cannot find it
CH=""      # the current chroot
VARIANT="" # appliance or appliance-static

mount_into() { # mount_into TARGET MOUNT-ARGS...
    local target=$1
    shift
    mkdir -p "$target" || return
    mount "$@" "$target" || return
    MOUNTS+=("$target")
}

make_chroot() {
    local variant=$1 lib
    CH=$SMOKE_DIR/chroot-$variant
    mkdir -p "$CH/tmp" "$CH/proc" "$CH/dev/shm" "$CH/w/art" || return
    chmod 1777 "$CH/tmp" || return
    cp "$DIST/$variant" "$CH/appliance" || return
    if [[ $variant == appliance ]]; then
        # The host's libraries the bootloader and the bundled objects need.
        local libs
        libs=$("$VENV/bin/python" build/chroot_libs.py libs "$DIST/$variant") || return
        for lib in $libs; do
            cp -L --parents "$lib" "$CH/" || return
        done
    fi
    mount_into "$CH/proc" -t proc proc || return
    mount_into "$CH/dev/shm" -t tmpfs -o size=16m,mode=1777 tmpfs || return
    head -c 1500000 /dev/urandom >"$CH/w/art/model-v1.bin" &&
        head -c 2500000 /dev/urandom >"$CH/w/art/model-v2.bin" &&
        head -c 700000 /dev/urandom >"$CH/w/art/model-v3.bin"
}

# in_chroot ARGS...: the binary in the chroot, with an empty environment.
in_chroot() {
    env -i PATH=/ HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8 TERM=dumb \
        "$CHROOT" "$CH" /appliance --home /w/home "$@"
}

check_contents() {
    local found
    found=$(cd "$CH" && find . -path ./proc -prune -o \( -name 'python*' -o -name '*.py' \) -print)
    if [[ -n $found ]]; then
        echo "python files in the chroot: $found"
        return 1
    fi
    echo "chroot holds: $(cd "$CH" && find . -path ./proc -prune -o -type f -print | sort | tr '\n' ' ')"
    if [[ $VARIANT == appliance-static ]]; then
        found=$(cd "$CH" && find . -path ./proc -prune -o \( -name 'libc.so*' -o -name 'ld-linux*' -o -name '*.so*' \) -print)
        if [[ -n $found ]]; then
            echo "shared libraries in the static chroot: $found"
            return 1
        fi
        local interp
        interp=$("$VENV/bin/python" build/chroot_libs.py interp "$CH/appliance")
        if [[ -n $interp ]]; then
            echo "the static binary asks for a loader: $interp"
            return 1
        fi
    fi
}

t_version() {
    local out
    out=$(env -i PATH=/ HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8 "$CHROOT" "$CH" /appliance --version)
    echo "$out"
    [[ $out =~ ^appliance\ [0-9] ]]
}

t_selftest() {
    local out
    out=$(env -i PATH=/ HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8 APPLIANCE_SELFTEST=1 "$CHROOT" "$CH" /appliance) || return
    echo "$out"
    [[ $out == *'"ok": true'* ]] || return 1
    # process pools need /dev/shm (POSIX semaphores): show what happens without it
    umount "$CH/dev/shm"
    rmdir "$CH/dev/shm"
    local rc=0
    out=$(env -i PATH=/ HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8 APPLIANCE_SELFTEST=1 "$CHROOT" "$CH" /appliance 2>/dev/null) || rc=$?
    mkdir "$CH/dev/shm"
    mount -t tmpfs -o size=16m,mode=1777 tmpfs "$CH/dev/shm"
    echo "without /dev/shm (exit $rc): $out"
    NOSHM_NOTE=$(printf '%s' "$out" | "$VENV/bin/python" -c \
        'import json,sys; d=json.load(sys.stdin)["checks"]["process_pool"]; print("ok" if d["ok"] else d["detail"])' \
        2>/dev/null || echo "unknown")
}

t_noexec() {
    # /tmp of the chroot becomes a noexec tmpfs; then the binary, which
    # extracts itself to $TMPDIR (default /tmp), is run both ways.
    mount_into "$CH/tmp" -t tmpfs -o size=256m,mode=1777,noexec,nosuid,nodev tmpfs
    mkdir -p "$CH/w/run"
    local rc=0 err
    err=$(env -i PATH=/ HOME=/tmp LANG=C.UTF-8 "$CHROOT" "$CH" /appliance --version 2>&1 >/dev/null) || rc=$?
    NOEXEC_NOTE="noexec /tmp, no TMPDIR: exit $rc: $(echo "$err" | grep -v '^$' | head -2 | tr '\n' ' ')"
    echo "$NOEXEC_NOTE"
    local out
    out=$(env -i PATH=/ HOME=/tmp TMPDIR=/w/run LANG=C.UTF-8 "$CHROOT" "$CH" /appliance --version) || out="failed: exit $?"
    echo "noexec /tmp, TMPDIR=/w/run: $out"
    umount "$CH/tmp"
    [[ $out =~ ^appliance\ [0-9] ]]
}

t_keys() {
    local k
    for k in root publisher rollbacker; do
        in_chroot key new "$k" --out /w/keys || return
    done
    [[ -s $CH/w/keys/root.key && -s $CH/w/keys/publisher.pub && -s $CH/w/keys/rollbacker.key ]]
}

t_bundle() { # t_bundle SEQUENCE VERSION
    in_chroot bundle create "/w/bundle-$1" --stream models --sequence "$1" \
        --key /w/keys/publisher.key --any-site "model@$2=/w/art/model-v${2%%.*}.bin" &&
        [[ -e $CH/w/bundle-$1 ]]
}

t_init() { in_chroot init --root-key /w/keys/root.pub --site site-a; }

t_trust_update() {
    in_chroot trust update /w/trust-v2 --version 2 --key /w/keys/root.key \
        --add-key /w/keys/publisher.pub --role publisher --stream models \
        --add-key /w/keys/rollbacker.pub --role rollback &&
        [[ -s $CH/w/trust-v2 ]]
}

t_trust_apply() { in_chroot trust apply /w/trust-v2; }

t_import() { in_chroot import "/w/bundle-$1"; }

t_load() { # t_load EXPECTED-VERSION OUTNAME
    in_chroot load model -o "/w/$2" &&
        cmp "$CH/w/$2" "$CH/w/art/model-v$1.bin"
}

t_rb_authorize() {
    in_chroot rollback authorize /w/rollback-auth model --to 1.0 --key /w/keys/rollbacker.key \
        --reason "smoke test" &&
        [[ -s $CH/w/rollback-auth ]]
}

t_rollback() { in_chroot rollback model --authorization /w/rollback-auth; }

# expect_exit CODE ARGS...: the binary in the chroot must exit with CODE.
expect_exit() {
    local want=$1 rc=0
    shift
    in_chroot "$@" || rc=$?
    echo "exit $rc (want $want)"
    [[ $rc -eq $want ]]
}

t_tampered() {
    # sequence 3 with one bit flipped in its artifact: refused (exit 1)
    in_chroot bundle create /w/bundle-bad --stream models --sequence 3 \
        --key /w/keys/publisher.key --any-site model@3.0=/w/art/model-v3.bin || return
    local f
    f=$(find "$CH/w/bundle-bad" -type f -size +100k | head -1)
    [[ -n $f ]] || { echo "no artifact file found in the bundle"; return 1; }
    printf '\x01' | dd of="$f" bs=1 seek=1000 count=1 conv=notrunc status=none
    expect_exit 1 import /w/bundle-bad
}

t_json_ok() { # t_json_ok ARGS...: exit 0 and {"ok": true, ...} on stdout
    local out
    out=$(in_chroot --json "$@") || return
    echo "$out"
    [[ $out == '{'*'"ok": true'* ]]
}

t_tar() {
    in_chroot bundle create /w/bundle-3.tar --tar --stream models --sequence 3 \
        --key /w/keys/publisher.key --any-site model@3.0=/w/art/model-v3.bin &&
        in_chroot import /w/bundle-3.tar &&
        in_chroot load model -o /w/loaded-3.bin &&
        cmp "$CH/w/loaded-3.bin" "$CH/w/art/model-v3.bin"
}

t_exec() {
    # exec verifies, then becomes the command: here the binary itself again
    local out
    out=$(in_chroot exec model -- /appliance --version) || return
    echo "$out"
    [[ $out =~ ^appliance\ [0-9] ]]
}

t_demo() { env -i PATH=/ HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8 TERM=dumb "$CHROOT" "$CH" /appliance demo; }

# t_tmux LABEL ENV COMMAND...: run in tmux (80x24) inside the chroot, wait for a
# screen, press ctrl+q (then q, then escape q), expect exit 0. (textual draws on
# stderr, so that stays on the terminal.)
t_tmux() {
    local label=$1 extra_env=$2
    shift 2
    local exitf=$CH/w/tmux-$label.exit screen=$SMOKE_DIR/$VARIANT-$label.screen
    rm -f "$exitf"
    tmux -L "$TMUX_SOCK" -f /dev/null new-session -d -s "$label" -x 80 -y 24 \
        "env -i PATH=/ HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8 TERM=xterm-256color $extra_env \
         '$CHROOT' '$CH' /appliance $*; echo \$? >'$exitf'"
    local i content=""
    for ((i = 0; i < 100; i++)); do # up to 20 s for a screen
        sleep 0.2
        content=$(tmux -L "$TMUX_SOCK" capture-pane -p -t "$label" 2>/dev/null || true)
        [[ -e $exitf ]] && break
        [[ $(printf '%s' "$content" | tr -d ' \n' | wc -c) -gt 20 ]] && break
    done
    sleep 1 # let it finish drawing
    tmux -L "$TMUX_SOCK" capture-pane -p -t "$label" >"$screen" 2>/dev/null || true
    echo "--- screen"
    cat "$screen" 2>/dev/null || true
    local key
    for key in C-q q Escape; do
        [[ -e $exitf ]] && break
        tmux -L "$TMUX_SOCK" send-keys -t "$label" "$key" 2>/dev/null || true
        [[ $key == Escape ]] && tmux -L "$TMUX_SOCK" send-keys -t "$label" q 2>/dev/null || true
        for ((i = 0; i < 25; i++)); do
            [[ -e $exitf ]] && break
            sleep 0.2
        done
    done
    tmux -L "$TMUX_SOCK" kill-session -t "$label" >/dev/null 2>&1 || true
    [[ -e $exitf ]] || { echo "did not quit"; return 1; }
    echo "exit $(cat "$exitf")"
    [[ $(cat "$exitf") == 0 ]] && [[ $(tr -d ' \n' <"$screen" | wc -c) -gt 20 ]]
}

run_variant() {
    VARIANT=$1
    local p=$VARIANT: # step label prefix
    local s=${VARIANT}_
    say "--- $VARIANT ($(stat -c %s "$DIST/$VARIANT") bytes) in an empty chroot"
    if ! make_chroot "$VARIANT" >>"$LOG" 2>&1; then
        FAIL=$((FAIL + 1))
        say "FAIL: $VARIANT: could not set up the chroot (see $LOG)"
        return 0
    fi
    local what="no Python, only the C library per ldd"
    [[ $VARIANT == appliance-static ]] && what="no Python and no C library"
    step "${s}contents" "$p chroot holds $what" "" check_contents
    step "${s}version" "$p --version" "" t_version
    step "${s}selftest" "$p self-test (blake3, cryptography, sqlite, process pool, textual)" "" t_selftest
    step "${s}noexec" "$p runs with /tmp noexec and TMPDIR on an exec-allowed folder" "" t_noexec
    step "${s}keys" "$p key new (root, publisher, rollback)" "cmd:key_new" t_keys
    step "${s}bundle1" "$p bundle create (sequence 1, model 1.0)" "cmd:bundle_create step:${s}keys" t_bundle 1 1.0
    step "${s}bundle2" "$p bundle create (sequence 2, model 2.0)" "cmd:bundle_create step:${s}keys" t_bundle 2 2.0
    step "${s}init" "$p init" "cmd:init step:${s}keys" t_init
    step "${s}trust_update" "$p trust update (version 2: publisher, rollback)" \
        "cmd:trust_update step:${s}keys" t_trust_update
    step "${s}trust_apply" "$p trust apply" "cmd:trust_apply step:${s}init step:${s}trust_update" t_trust_apply
    step "${s}import1" "$p import bundle 1" "cmd:import step:${s}bundle1 step:${s}trust_apply" t_import 1
    step "${s}import2" "$p import bundle 2" "cmd:import step:${s}bundle2 step:${s}import1" t_import 2
    step "${s}load2" "$p load (model 2.0, bytes match)" "cmd:load step:${s}import2" t_load 2 loaded-2.bin
    step "${s}tampered" "$p import of a bundle with one flipped byte is refused (exit 1)" \
        "cmd:bundle_create cmd:import step:${s}import2" t_tampered
    step "${s}replay" "$p replay of bundle 1 is refused (exit 1)" "cmd:import step:${s}import2" \
        expect_exit 1 import /w/bundle-1
    step "${s}rb_auth" "$p rollback authorize (model to 1.0)" "cmd:rollback_authorize step:${s}keys" t_rb_authorize
    step "${s}rollback" "$p rollback (authorized)" "cmd:rollback step:${s}rb_auth step:${s}import2" t_rollback
    step "${s}load1" "$p load after rollback (model 1.0, bytes match)" "cmd:load step:${s}rollback" t_load 1 loaded-1.bin
    step "${s}verify" "$p verify --json (store re-hashed)" "cmd:verify step:${s}load1" t_json_ok verify
    step "${s}audit" "$p audit verify --json (chain intact)" "cmd:audit_verify step:${s}load1" \
        t_json_ok audit verify
    step "${s}history" "$p history model --json" "cmd:history step:${s}load1" t_json_ok history model
    step "${s}list" "$p list --json" "cmd:list step:${s}load1" t_json_ok list
    step "${s}trust_show" "$p trust show --json" "cmd:trust_show step:${s}trust_apply" t_json_ok trust show
    step "${s}media" "$p media --media /w --json (bundles found, unverified)" "cmd:media step:${s}bundle2" \
        t_json_ok media --media /w
    step "${s}exec" "$p exec model -- CMD (verified, then replaced by CMD)" "cmd:exec step:${s}load1" t_exec
    step "${s}tar" "$p bundle create --tar, import the tar, load (model 3.0)" \
        "cmd:bundle_create cmd:import cmd:load step:${s}load1" t_tar
    step "${s}demo" "$p demo (throwaway home)" "cmd:demo" t_demo
    step "${s}textual_tmux" "$p textual app in tmux (frozen self-test app)" "tool:tmux" \
        t_tmux selftest-tui "APPLIANCE_SELFTEST=tui"
    step "${s}tui" "$p tui in tmux, then quit" "tool:tmux cmd:tui step:${s}init" t_tmux tui "" --home /w/home tui
}

NOEXEC_NOTE=""
NOSHM_NOTE=""
start=$(date +%s)
for variant in $SMOKE_BINARIES; do
    if [[ ! -x $DIST/$variant ]]; then
        FAIL=$((FAIL + 1))
        say "FAIL: $DIST/$variant missing (make binary-static builds both)"
        continue
    fi
    run_variant "$variant"
    say "NOTE: $variant: $NOEXEC_NOTE"
    say "NOTE: $variant: process pool without /dev/shm: $NOSHM_NOTE"
    cleanup
    MOUNTS=()
done
say "smoke: log in $LOG; took $(($(date +%s) - start)) s"
line="smoke: $PASS passed, $FAIL failed"
[[ $SKIP -gt 0 ]] && line+=", $SKIP skipped"
echo "$line"
[[ $FAIL -eq 0 ]]
