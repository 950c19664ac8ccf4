"""SIGKILL real ``appliance`` processes at random moments: state is exactly old or new.

Three operations, each from the prepared site (reset with ``cp -a`` before
every kill): ``rollback m --authorization A`` (m@2.0 -> m@1.0), ``trust apply
U`` (version 4: add two keys, revoke one, change a threshold), and ``import B``
(a tar of three artifacts, one of 8 MiB split in parts, so kills land
mid-hash, mid-write and mid-promotion). The import-test engineer kills 110
imports of other shapes in ``tests/test_import_crash.py``; these add rollbacks
and trust applies, which no one else kills.

No test hook exists in the core: kills are timed from outside. Half the delays
are uniform over the whole unkilled run time (start-up included); the other
half wait until the process holds ``HOME/lock`` open (seen in
``/proc/PID/fd``) and then draw a short uniform delay, so they land inside the
locked, state-changing window. After each kill:

* the state (``list``, ``trust show``, the audit events, ``verify``) equals the
  old or the new state exactly; ``verify`` and ``audit verify`` exit 0;
* the operation is retried: from the old state it succeeds and gives the new
  state; from the new one it is refused as a replay (``authorization_reused``,
  ``trust_update_replayed``, ``sequence_replayed``), and staging is empty.

Set ``CRASH_REPORT=FILE`` to get the outcome counts as JSON Lines (the figures
in docs/SECURITY.md come from that).
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bundles.documents import AddKey, RevokeKey, SetThreshold

from .driver import (
    Site,
    cli_argv,
    cli_env,
    copy_home,
    remove_tree,
    run_in_process,
    stable_list,
    stable_trust,
    staging_files,
)

SEED = int(os.environ.get("CRASH_SEED", "7"))
# (operation, chunks, kills per chunk): 4*20 + 4*18 + 3*20 = 212 kills
PLAN = {"rollback": (4, 20), "trust": (4, 18), "import": (3, 20)}
REPLAY = {
    "rollback": "authorization_reused",
    "trust": "trust_update_replayed",
    "import": "sequence_replayed",
}


def fingerprint(home: Path) -> dict[str, Any]:
    """What a script sees, without clock-dependent fields."""
    rc, listing = run_in_process(home, "list")
    assert rc == 0, listing
    rc, trust = run_in_process(home, "trust", "show")
    assert rc == 0, trust
    rc, events = run_in_process(home, "audit", "show", "--limit", "0")
    assert rc == 0, events
    return {
        "list": stable_list(listing),
        "trust": stable_trust(trust),
        "audit": [
            (e["type"], e["outcome"], e["code"], e["name"], e["version"]) for e in events["events"]
        ],
    }


@dataclass
class Op:
    name: str
    template: Path
    args: list[str | os.PathLike[str]]
    old: dict[str, Any]
    new: dict[str, Any]
    duration: float  # median seconds of an unkilled run, start-up included


def _reset(template: Path, home: Path) -> None:
    if home.exists():
        remove_tree(home)
    copy_home(template, home)


def _timed_run(argv: list[str]) -> tuple[int, float]:
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, env=cli_env(), check=False)
    return p.returncode, time.monotonic() - t0


@pytest.fixture(scope="session")
def crash_ops(site: Site, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Op]:
    repo = site.repo
    root = tmp_path_factory.mktemp("crash-ref")
    auth = repo.write(repo.rollback_auth("m", "1.0", reason="crash test"), "auth")
    update = repo.trust_update(
        4,
        [
            AddKey(repo.key("crash-pub").public, "publisher", "models"),
            AddKey(repo.key("crash-rb").public, "rollback", None),
            RevokeKey(repo.key("pub2").keyid),
            SetThreshold("publisher", "other", 1),
        ],
    )
    big = os.urandom(8 << 20)
    bundle = repo.bundle(
        {"m@3.0": big, "tok@2.0": b"tok" * 5000, "cfg@1.0": b'{"layers": 12}\n'},
        sequence=3,
        tar=True,
        part_size=3 << 20,
    )
    args: dict[str, list[str | os.PathLike[str]]] = {
        "rollback": ["rollback", "m", "--authorization", auth],
        "trust": ["trust", "apply", repo.write(update, "trust")],
        "import": ["import", bundle.path],
    }
    old = fingerprint(site.home)
    ops: dict[str, Op] = {}
    for name, op_args in args.items():
        times = []
        new: dict[str, Any] | None = None
        for i in range(3):
            home = root / f"{name}-{i}"
            copy_home(site.home, home)
            rc, took = _timed_run(cli_argv(home, *op_args))
            assert rc == 0, f"{name} does not succeed unkilled"
            times.append(took)
            new = fingerprint(home)
        assert new is not None and new != old
        ops[name] = Op(name, site.home, op_args, old, new, statistics.median(times))
    return ops


def _holds_lock(pid: int, lock: str) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return True  # gone already
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == lock:
                return True
        except FileNotFoundError:
            continue
    return False


def _kill_once(op: Op, home: Path, rng: random.Random, triggered: bool) -> tuple[str, float]:
    """Start the operation, SIGKILL it; return how it ended and the delay used."""
    argv = cli_argv(home, *op.args)
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env()
    )
    t0 = time.monotonic()
    if triggered:
        lock = str(home / "lock")
        deadline = t0 + max(5.0, 5 * op.duration)
        while not _holds_lock(proc.pid, lock) and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.0005)
        time.sleep(rng.uniform(0, 0.12))
    else:
        time.sleep(rng.uniform(0, 1.1 * op.duration))
    delay = time.monotonic() - t0
    proc.send_signal(signal.SIGKILL)
    rc = proc.wait()
    if rc == 0:
        return "finished", delay
    assert rc == -signal.SIGKILL, f"{op.name} exited {rc} before the kill"
    return "killed", delay


def _check_after_kill(op: Op, home: Path) -> str:
    state = fingerprint(home)
    assert state in (op.old, op.new), f"{op.name}: torn state after SIGKILL"
    rc, v = run_in_process(home, "verify")
    assert rc == 0, v
    rc, a = run_in_process(home, "audit", "verify")
    assert rc == 0, a
    which = "old" if state == op.old else "new"
    # recoverable: the retry completes the operation, or is refused as a replay
    rc, out = run_in_process(home, *op.args)
    if which == "old":
        assert rc == 0, out
        assert fingerprint(home) == op.new
    else:
        assert (rc, out["error"]["code"]) == (1, REPLAY[op.name]), out
    assert staging_files(home) == [], "staging not cleaned by the next locked command"
    return which


def _report(record: dict[str, Any]) -> None:
    path = os.environ.get("CRASH_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
    print(json.dumps(record, sort_keys=True), file=sys.stderr)


CHUNKS = [(name, chunk) for name, (n, _) in PLAN.items() for chunk in range(n)]


@pytest.mark.slow
@pytest.mark.parametrize(("op_name", "chunk"), CHUNKS, ids=[f"{n}-{c}" for n, c in CHUNKS])
def test_sigkill_leaves_old_or_new_state(
    op_name: str, chunk: int, crash_ops: dict[str, Op], tmp_path: Path
) -> None:
    op = crash_ops[op_name]
    kills = PLAN[op_name][1]
    rng = random.Random(f"{SEED}-{op_name}-{chunk}")
    counts: Counter[str] = Counter()
    delays: list[float] = []
    home = tmp_path / "home"
    for i in range(kills):
        _reset(op.template, home)
        triggered = i % 2 == 1
        ended, delay = _kill_once(op, home, rng, triggered)
        which = _check_after_kill(op, home)
        counts[f"{'locked' if triggered else 'uniform'}:{ended}:{which}"] += 1
        delays.append(delay)
    assert sum(counts.values()) == kills
    _report(
        {
            "op": op_name,
            "chunk": chunk,
            "kills": kills,
            "unkilled_run_s": round(op.duration, 3),
            "delay_s": [round(min(delays), 3), round(max(delays), 3)],
            "outcomes": dict(sorted(counts.items())),
        }
    )
    # kills must land on both sides: some leave the old state, and every operation was
    # killed at least once (not only after it finished)
    assert any(k.endswith(":old") for k in counts), counts
    assert any(":killed:" in k for k in counts), counts
